//! SnapStart: noticing a restore from the snapshot before serving anything from it.
//!
//! Under SnapStart, Init runs once when a version is published and ends in a snapshot of
//! the whole environment, lockbox's cache included. The snapshot is restored later, perhaps
//! days later, perhaps many times, and whatever function code read during Init would be
//! served from it as a cache `hit`, rotated or not.
//!
//! Lambda tells an external extension nothing when it restores: the Extensions API has no
//! RESTORE event, the Telemetry API's `platform.restoreStart` arrives through a buffer some
//! time later, and the first INVOKE comes only after the runtime's after-restore hooks,
//! which may read values. What an extension can see at once is the clocks: on restore
//! Lambda sets the wall clock to the real time, while the monotonic clock carries on from
//! where the snapshot stopped it. The distance between the two jumps by the time the
//! snapshot spent on the shelf.
//!
//! [`RestoreWatch`] measures that distance before each request is served (two clock reads
//! and a comparison; only under SnapStart). When it has moved by more than
//! [`JUMP_THRESHOLD`], the environment was restored (or its wall clock was stepped, which
//! costs a refetch and nothing else): the cache is cleared once, every request arriving
//! meanwhile waits for that, and nothing fetched before the jump is served after it. The
//! first INVOKE after a restore clears the cache as well, in case a restore ever keeps the
//! two clocks in step.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use crate::cache::Cache;

/// A change in the wall clock's distance from the monotonic clock larger than this is
/// taken for a restore. NTP slews a running clock by well under a millisecond per second;
/// a snapshot waits minutes at the least before a restore.
pub const JUMP_THRESHOLD: Duration = Duration::from_secs(1);

/// Watches the clocks for a restore and forgets the cache when one is seen.
#[derive(Debug)]
pub struct RestoreWatch {
    clocks: Mutex<Clocks>,
    /// Bumped each time the clocks jump.
    seen: AtomicU64,
    /// The last `seen` the cache was cleared for. Held across the clear, so requests that
    /// arrive during it wait for it.
    cleared: tokio::sync::Mutex<u64>,
}

/// The two clocks as last read.
#[derive(Debug)]
struct Clocks {
    wall: SystemTime,
    monotonic: Instant,
}

impl Clocks {
    fn now() -> Self {
        Self {
            wall: SystemTime::now(),
            monotonic: Instant::now(),
        }
    }

    /// How far the wall clock moved away from the monotonic clock since `self`, either way.
    fn drift_since(&self, now: &Clocks) -> Duration {
        let monotonic = now.monotonic.duration_since(self.monotonic);
        match now.wall.duration_since(self.wall) {
            Ok(wall) => wall.abs_diff(monotonic),
            // The wall clock went backwards.
            Err(back) => back.duration() + monotonic,
        }
    }
}

impl Default for RestoreWatch {
    fn default() -> Self {
        Self::new()
    }
}

impl RestoreWatch {
    /// Starts watching from the clocks as they read now.
    pub fn new() -> Self {
        Self {
            clocks: Mutex::new(Clocks::now()),
            seen: AtomicU64::new(0),
            cleared: tokio::sync::Mutex::new(0),
        }
    }

    /// How many restores were seen so far, looking at the clocks first.
    pub fn restores(&self) -> u64 {
        let now = Clocks::now();
        // The look and the bump are one step, so that of two requests arriving together
        // after a restore, neither can miss the jump the other one saw.
        let mut last = self.clocks.lock().unwrap_or_else(|p| p.into_inner());
        let drift = last.drift_since(&now);
        *last = now;
        if drift > JUMP_THRESHOLD {
            tracing::info!(
                drift_ms = drift.as_millis() as u64,
                "restored from a snapshot (the wall clock jumped): forgetting every cached value"
            );
            self.seen.fetch_add(1, Ordering::SeqCst) + 1
        } else {
            self.seen.load(Ordering::SeqCst)
        }
    }

    /// Before a request is served: clears `cache` if a restore happened since it was last
    /// cleared. Returns whether this call cleared it.
    pub async fn before_serving(&self, cache: &Cache) -> bool {
        let seen = self.restores();
        if seen == 0 {
            return false;
        }
        let mut cleared = self.cleared.lock().await;
        if *cleared >= seen {
            return false;
        }
        cache.clear();
        *cleared = seen;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clocks(wall_secs: u64, monotonic: Instant) -> Clocks {
        Clocks {
            wall: SystemTime::UNIX_EPOCH + Duration::from_secs(wall_secs),
            monotonic,
        }
    }

    #[test]
    fn clocks_moving_together_do_not_drift_and_a_jump_either_way_does() {
        let start = Instant::now();
        let later = start + Duration::from_secs(10);
        let before = clocks(1_000, start);
        assert_eq!(before.drift_since(&clocks(1_010, later)), Duration::ZERO);
        // Three days on the shelf: the wall clock moved, the monotonic one did not.
        assert_eq!(
            before.drift_since(&clocks(1_010 + 3 * 86_400, later)),
            Duration::from_secs(3 * 86_400)
        );
        assert_eq!(
            before.drift_since(&clocks(995, later)),
            Duration::from_secs(15)
        );
    }

    #[test]
    fn a_steady_clock_is_no_restore() {
        let watch = RestoreWatch::new();
        assert_eq!(watch.restores(), 0);
        assert_eq!(watch.restores(), 0);
    }

    #[test]
    fn a_jump_counts_once() {
        let watch = RestoreWatch::new();
        // As if the snapshot had been taken a day before the restore.
        watch.clocks.lock().unwrap().wall -= Duration::from_secs(86_400);
        assert_eq!(watch.restores(), 1);
        assert_eq!(
            watch.restores(),
            1,
            "the next look starts from the new clocks"
        );
    }
}
