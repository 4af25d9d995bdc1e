//! The counters: plain atomics, bumped on the request path without a lock, and only ever
//! added to. An interval's numbers are the difference between two readings
//! ([`super::Interval`]), so the stats route can read the totals at any time without
//! disturbing the interval the next EMF line covers.

use std::sync::atomic::{AtomicU64, Ordering};

use super::latency::LatencyRecorder;

/// The AWS operations lockbox calls, one counter each. A fixed set: metric names are
/// built from these, never from anything a request carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AwsOperation {
    /// SSM `GetParameter`.
    GetParameter,
    /// SSM `GetParameters`.
    GetParameters,
    /// SSM `GetParametersByPath` (one call per page).
    GetParametersByPath,
    /// Secrets Manager `GetSecretValue`.
    GetSecretValue,
    /// Secrets Manager `BatchGetSecretValue` (one call per page).
    BatchGetSecretValue,
    /// Any other operation (none today; counted rather than lost if one is added).
    Other,
}

impl AwsOperation {
    /// Every operation, in the order metrics are written.
    pub const ALL: [AwsOperation; 6] = [
        AwsOperation::GetParameter,
        AwsOperation::GetParameters,
        AwsOperation::GetParametersByPath,
        AwsOperation::GetSecretValue,
        AwsOperation::BatchGetSecretValue,
        AwsOperation::Other,
    ];

    /// AWS's name for the operation.
    pub fn name(self) -> &'static str {
        match self {
            AwsOperation::GetParameter => "GetParameter",
            AwsOperation::GetParameters => "GetParameters",
            AwsOperation::GetParametersByPath => "GetParametersByPath",
            AwsOperation::GetSecretValue => "GetSecretValue",
            AwsOperation::BatchGetSecretValue => "BatchGetSecretValue",
            AwsOperation::Other => "Other",
        }
    }

    /// The operation AWS's SDK names `name` (its operation metadata), `Other` if unknown.
    pub fn from_name(name: &str) -> Self {
        Self::ALL
            .into_iter()
            .find(|op| op.name() == name)
            .unwrap_or(AwsOperation::Other)
    }

    /// The name of the metric that counts this operation's calls.
    pub fn metric_name(self) -> &'static str {
        match self {
            AwsOperation::GetParameter => "AwsCallsGetParameter",
            AwsOperation::GetParameters => "AwsCallsGetParameters",
            AwsOperation::GetParametersByPath => "AwsCallsGetParametersByPath",
            AwsOperation::GetSecretValue => "AwsCallsGetSecretValue",
            AwsOperation::BatchGetSecretValue => "AwsCallsBatchGetSecretValue",
            AwsOperation::Other => "AwsCallsOther",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Every counter lockbox keeps. Only ever incremented; see the module comment.
#[derive(Debug, Default)]
pub struct Counters {
    pub(super) cache_hits: AtomicU64,
    pub(super) cache_misses: AtomicU64,
    pub(super) stale_served: AtomicU64,
    pub(super) aws_calls: [AtomicU64; AwsOperation::ALL.len()],
    pub(super) aws_errors: AtomicU64,
    pub(super) aws_throttles: AtomicU64,
    pub(super) reads_coalesced: AtomicU64,
    pub(super) refreshes: AtomicU64,
    pub(super) prefetch_values_loaded: AtomicU64,
    pub(super) aws_calls_avoided: AtomicU64,
    /// Every AWS call's time, from the request being sent to its answer.
    pub(super) aws_latency: LatencyRecorder,
    /// Each prefetch round's time (one at Init; one after each SnapStart restore).
    pub(super) prefetch_duration: LatencyRecorder,
}

/// Relaxed everywhere: the counters order nothing else, and a reading that misses an
/// increment in flight shows it in the next one.
fn bump(counter: &AtomicU64, by: u64) {
    counter.fetch_add(by, Ordering::Relaxed);
}

impl Counters {
    /// A read answered from a fresh cache entry.
    pub fn cache_hit(&self) {
        bump(&self.cache_hits, 1);
    }

    /// A read that had to ask AWS.
    pub fn cache_miss(&self) {
        bump(&self.cache_misses, 1);
    }

    /// A read answered with a value past its TTL because AWS failed transiently.
    pub fn stale_served(&self) {
        bump(&self.stale_served, 1);
    }

    /// One call to AWS (each attempt, retries included: each is a request AWS counts
    /// against the account's quota), how long it took, and how it ended.
    pub fn aws_call(&self, operation: AwsOperation, latency: std::time::Duration, end: CallEnd) {
        bump(&self.aws_calls[operation.index()], 1);
        self.aws_latency.record(latency);
        match end {
            CallEnd::Ok => {}
            CallEnd::Error => bump(&self.aws_errors, 1),
            CallEnd::Throttled => {
                bump(&self.aws_errors, 1);
                bump(&self.aws_throttles, 1);
            }
        }
    }

    /// A read that waited for another read's AWS call and used its answer.
    pub fn read_coalesced(&self) {
        bump(&self.reads_coalesced, 1);
    }

    /// An entry refreshed ahead of its expiry.
    pub fn refreshed(&self, entries: u64) {
        bump(&self.refreshes, entries);
    }

    /// A prefetch round: how long it took and how many values it loaded.
    pub fn prefetched(&self, took: std::time::Duration, values_loaded: u64) {
        self.prefetch_duration.record(took);
        bump(&self.prefetch_values_loaded, values_loaded);
    }

    /// A read that would have been an AWS call without the cache.
    pub fn aws_call_avoided(&self) {
        bump(&self.aws_calls_avoided, 1);
    }

    /// The totals since start.
    pub fn totals(&self) -> Totals {
        let read = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Totals {
            cache_hits: read(&self.cache_hits),
            cache_misses: read(&self.cache_misses),
            stale_served: read(&self.stale_served),
            aws_calls: std::array::from_fn(|i| read(&self.aws_calls[i])),
            aws_errors: read(&self.aws_errors),
            aws_throttles: read(&self.aws_throttles),
            reads_coalesced: read(&self.reads_coalesced),
            refreshes: read(&self.refreshes),
            prefetch_values_loaded: read(&self.prefetch_values_loaded),
            aws_calls_avoided: read(&self.aws_calls_avoided),
        }
    }
}

/// How an AWS call ended, as far as the counters care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallEnd {
    /// AWS answered with success.
    Ok,
    /// Any failure but throttling: an error answer, a timeout, no connection.
    Error,
    /// AWS said slow down (an error too).
    Throttled,
}

/// The counters' values at one moment, or the difference between two moments.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Totals {
    /// Reads answered from a fresh entry.
    pub cache_hits: u64,
    /// Reads that asked AWS.
    pub cache_misses: u64,
    /// Reads answered with a stale value because AWS failed transiently.
    pub stale_served: u64,
    /// AWS calls, by [`AwsOperation`] (in the order of [`AwsOperation::ALL`]).
    #[serde(serialize_with = "by_operation")]
    pub aws_calls: [u64; AwsOperation::ALL.len()],
    /// AWS calls that failed, throttles included.
    pub aws_errors: u64,
    /// AWS calls refused with a throttling error.
    pub aws_throttles: u64,
    /// Reads that used another read's AWS call.
    pub reads_coalesced: u64,
    /// Entries refreshed ahead of expiry.
    pub refreshes: u64,
    /// Values loaded by prefetch.
    pub prefetch_values_loaded: u64,
    /// Reads that would have been AWS calls without the cache.
    pub aws_calls_avoided: u64,
}

fn by_operation<S: serde::Serializer>(
    calls: &[u64; AwsOperation::ALL.len()],
    serializer: S,
) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap as _;
    let mut map = serializer.serialize_map(Some(calls.len()))?;
    for op in AwsOperation::ALL {
        map.serialize_entry(op.name(), &calls[op.index()])?;
    }
    map.end()
}

impl Totals {
    /// AWS calls of every operation.
    pub fn aws_calls_total(&self) -> u64 {
        self.aws_calls.iter().sum()
    }

    /// Calls of one operation.
    pub fn aws_calls_of(&self, operation: AwsOperation) -> u64 {
        self.aws_calls[operation.index()]
    }

    /// What happened between `earlier` and `self`. Counters only grow, so nothing wraps;
    /// saturating all the same, so a reading taken out of order cannot panic.
    pub fn since(&self, earlier: &Totals) -> Totals {
        let d = |now: u64, then: u64| now.saturating_sub(then);
        Totals {
            cache_hits: d(self.cache_hits, earlier.cache_hits),
            cache_misses: d(self.cache_misses, earlier.cache_misses),
            stale_served: d(self.stale_served, earlier.stale_served),
            aws_calls: std::array::from_fn(|i| d(self.aws_calls[i], earlier.aws_calls[i])),
            aws_errors: d(self.aws_errors, earlier.aws_errors),
            aws_throttles: d(self.aws_throttles, earlier.aws_throttles),
            reads_coalesced: d(self.reads_coalesced, earlier.reads_coalesced),
            refreshes: d(self.refreshes, earlier.refreshes),
            prefetch_values_loaded: d(self.prefetch_values_loaded, earlier.prefetch_values_loaded),
            aws_calls_avoided: d(self.aws_calls_avoided, earlier.aws_calls_avoided),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn operations_round_trip_through_their_names() {
        for op in AwsOperation::ALL {
            assert_eq!(AwsOperation::from_name(op.name()), op);
            assert_eq!(op.metric_name(), format!("AwsCalls{}", op.name()));
        }
        assert_eq!(AwsOperation::from_name("PutParameter"), AwsOperation::Other);
    }

    #[test]
    fn throttles_are_errors_and_every_call_is_timed() {
        let counters = Counters::default();
        let ms = Duration::from_millis(3);
        counters.aws_call(AwsOperation::GetParameter, ms, CallEnd::Ok);
        counters.aws_call(AwsOperation::GetParameter, ms, CallEnd::Throttled);
        counters.aws_call(AwsOperation::GetSecretValue, ms, CallEnd::Error);
        let totals = counters.totals();
        assert_eq!(totals.aws_calls_of(AwsOperation::GetParameter), 2);
        assert_eq!(totals.aws_calls_of(AwsOperation::GetSecretValue), 1);
        assert_eq!(totals.aws_calls_total(), 3);
        assert_eq!(totals.aws_errors, 2);
        assert_eq!(totals.aws_throttles, 1);
        assert_eq!(counters.aws_latency.totals().count, 3);
    }

    #[test]
    fn since_is_the_difference() {
        let counters = Counters::default();
        counters.cache_hit();
        let first = counters.totals();
        counters.cache_hit();
        counters.cache_miss();
        let delta = counters.totals().since(&first);
        assert_eq!(delta.cache_hits, 1);
        assert_eq!(delta.cache_misses, 1);
        assert_eq!(first.since(&counters.totals()), Totals::default());
    }
}
