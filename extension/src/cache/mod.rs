//! The cache: bounded (least recently used goes first), a TTL per backend, one AWS call for
//! any number of concurrent misses on the same key, and stale serving on transient failures.
//!
//! Storage and eviction order are the `lru` crate's, behind one mutex held only to look up,
//! insert or remove. Not moka: it keeps its own copy of the key, deque and timer nodes for
//! every entry, several times what `lru` keeps (the key and two links), and that took
//! lockbox past the memory `make bench` holds it to (the figures are in the benchmark
//! docs). The extension serves from one runtime thread, so the mutex is uncontended.
//! Freshness and retention are decided here, with `tokio::time::Instant`, so that tests can
//! pause and advance the clock: an entry is forgotten once it is past its TTL *and* past
//! the stale window.
//!
//! One fetch per key at a time, and one outcome for everyone who waits on it: a caller that
//! misses either leads the key's flight (an entry in a map that exists only while the key
//! is being fetched) or follows it. The leader looks again, fetches only if the entry is
//! still not fresh, and hands its outcome, value or error, to every follower: one AWS call
//! in all, also when AWS fails. Only a leader that is cancelled before it has an outcome
//! lets a follower lead a new fetch.
//!
//! Expiry is jittered: each entry's TTL is drawn within `±ttl_jitter` of the configured
//! one, so values fetched together (in one environment, or in a fleet of environments that
//! started together) expire, and are refreshed ahead of expiry, at different times.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::future::Future;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::Duration;

use bytes::Bytes;

use lru::LruCache;
use rand::Rng;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::aws::SourceError;
use crate::domain::{Keyring, Parameter, Scope, Secret, SecretVersion, Selector};
use crate::metrics::{CacheGauges, Metrics};

pub mod gate;

pub use gate::{GateOpener, PrefetchGate};

/// Everything that changes the answer, so two requests share an entry only when AWS would
/// give them the same answer. The [`Scope`] (role and region) is part of every key: a value
/// read through one role is a different entry from the same name read through another.
///
/// A lookup needs no `Key`: [`KeyRef`] borrows the same parts from the request, and the
/// store finds an entry by either (they hash and compare alike). A `Key` is built only to
/// store an entry or lead a fetch.
#[derive(Debug, Clone)]
pub enum Key {
    /// A parameter read.
    Parameter {
        /// Whose credentials, which region.
        scope: Scope,
        /// Name or ARN without selector (the cached parameter's own name when it was asked
        /// by name: one allocation for both).
        name: Arc<str>,
        /// Version or label; boxed, as few reads have one and every cached key would
        /// otherwise carry its room.
        selector: Option<Box<Selector>>,
        /// Decrypted or ciphertext.
        decrypt: bool,
    },
    /// A read of every parameter under a path (`GetParametersByPath`).
    Path {
        /// Whose credentials, which region.
        scope: Scope,
        /// The path, as asked.
        path: String,
        /// Whether deeper levels are included.
        recursive: bool,
        /// Decrypted or ciphertext.
        decrypt: bool,
    },
    /// A keyring read: the versions labelled `current`, `previous` and `pending` of one
    /// parameter, as one entry.
    Keyring {
        /// Whose credentials, which region.
        scope: Scope,
        /// Name or ARN, as asked.
        name: Box<str>,
        /// Decrypted or ciphertext.
        decrypt: bool,
    },
    /// A secret read.
    Secret {
        /// Whose credentials, which region.
        scope: Scope,
        /// Name or ARN (a `Box<str>`: a word less than a `String`, which with the boxed
        /// version keeps every key within [`KEY_BYTES`]).
        id: Box<str>,
        /// An explicit version id or staging label; `None` is `AWSCURRENT`. Boxed, for the
        /// same reason as a parameter's selector.
        version: Option<Box<SecretVersion>>,
    },
}

impl Key {
    /// The key of a parameter read. The name is an `Arc` so that a cached parameter asked
    /// by its own name can share it.
    pub fn parameter(
        scope: &Scope,
        name: Arc<str>,
        selector: Option<&Selector>,
        decrypt: bool,
    ) -> Self {
        Key::Parameter {
            scope: scope.clone(),
            name,
            selector: selector.cloned().map(Box::new),
            decrypt,
        }
    }

    /// The key of a secret read; the version is boxed only when one is asked for.
    pub fn secret(scope: &Scope, id: &str, version: Option<&SecretVersion>) -> Self {
        Key::Secret {
            scope: scope.clone(),
            id: id.into(),
            version: version.cloned().map(Box::new),
        }
    }

    /// The key of a keyring read.
    pub fn keyring(scope: &Scope, name: &str, decrypt: bool) -> Self {
        Key::Keyring {
            scope: scope.clone(),
            name: name.into(),
            decrypt,
        }
    }

    /// The role and region the entry was read with.
    pub fn scope(&self) -> &Scope {
        match self {
            Key::Parameter { scope, .. }
            | Key::Path { scope, .. }
            | Key::Keyring { scope, .. }
            | Key::Secret { scope, .. } => scope,
        }
    }

    /// The key's parts, borrowed: what it hashes and compares as.
    pub fn key_ref(&self) -> KeyRef<'_> {
        match self {
            Key::Parameter {
                scope,
                name,
                selector,
                decrypt,
            } => KeyRef::Parameter {
                scope,
                name,
                selector: selector.as_deref(),
                decrypt: *decrypt,
            },
            Key::Path {
                scope,
                path,
                recursive,
                decrypt,
            } => KeyRef::Path {
                scope,
                path,
                recursive: *recursive,
                decrypt: *decrypt,
            },
            Key::Keyring {
                scope,
                name,
                decrypt,
            } => KeyRef::Keyring {
                scope,
                name,
                decrypt: *decrypt,
            },
            Key::Secret { scope, id, version } => KeyRef::Secret {
                scope,
                id,
                version: version.as_deref(),
            },
        }
    }
}

/// A [`Key`]'s parts borrowed from wherever they are (a request's query, a batch's names):
/// a cache hit is found with this, without copying the name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyRef<'a> {
    /// A parameter read.
    Parameter {
        /// Whose credentials, which region.
        scope: &'a Scope,
        /// Name or ARN without selector.
        name: &'a str,
        /// Version or label.
        selector: Option<&'a Selector>,
        /// Decrypted or ciphertext.
        decrypt: bool,
    },
    /// A read of every parameter under a path.
    Path {
        /// Whose credentials, which region.
        scope: &'a Scope,
        /// The path, as asked.
        path: &'a str,
        /// Whether deeper levels are included.
        recursive: bool,
        /// Decrypted or ciphertext.
        decrypt: bool,
    },
    /// A keyring read.
    Keyring {
        /// Whose credentials, which region.
        scope: &'a Scope,
        /// Name or ARN, as asked.
        name: &'a str,
        /// Decrypted or ciphertext.
        decrypt: bool,
    },
    /// A secret read.
    Secret {
        /// Whose credentials, which region.
        scope: &'a Scope,
        /// Name or ARN.
        id: &'a str,
        /// An explicit version id or staging label; `None` is `AWSCURRENT`.
        version: Option<&'a SecretVersion>,
    },
}

impl KeyRef<'_> {
    /// The owned key, to store an entry under or to lead a fetch.
    pub fn to_key(self) -> Key {
        match self {
            KeyRef::Parameter {
                scope,
                name,
                selector,
                decrypt,
            } => Key::parameter(scope, name.into(), selector, decrypt),
            KeyRef::Path {
                scope,
                path,
                recursive,
                decrypt,
            } => Key::Path {
                scope: scope.clone(),
                path: path.to_owned(),
                recursive,
                decrypt,
            },
            KeyRef::Keyring {
                scope,
                name,
                decrypt,
            } => Key::keyring(scope, name, decrypt),
            KeyRef::Secret { scope, id, version } => Key::secret(scope, id, version),
        }
    }

    /// The role and region asked for.
    pub fn scope(&self) -> &Scope {
        match self {
            KeyRef::Parameter { scope, .. }
            | KeyRef::Path { scope, .. }
            | KeyRef::Keyring { scope, .. }
            | KeyRef::Secret { scope, .. } => scope,
        }
    }
}

// A `Key` is its borrowed parts: it hashes and compares as its `KeyRef`, which is what lets
// the maps below be searched with a `KeyRef` (through `Borrow<dyn AsKeyRef>`).
impl PartialEq for Key {
    fn eq(&self, other: &Self) -> bool {
        self.key_ref() == other.key_ref()
    }
}

impl Eq for Key {}

impl std::hash::Hash for Key {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.key_ref().hash(state);
    }
}

/// Anything that reads as a [`KeyRef`]: the form the store's maps are searched in, so that
/// a `Key` (stored) and a `KeyRef` (asked) find the same entry.
trait AsKeyRef {
    fn key_ref(&self) -> KeyRef<'_>;
}

impl AsKeyRef for Key {
    fn key_ref(&self) -> KeyRef<'_> {
        Key::key_ref(self)
    }
}

impl AsKeyRef for KeyRef<'_> {
    fn key_ref(&self) -> KeyRef<'_> {
        *self
    }
}

impl<'a> Borrow<dyn AsKeyRef + 'a> for Key {
    fn borrow(&self) -> &(dyn AsKeyRef + 'a) {
        self
    }
}

impl PartialEq for dyn AsKeyRef + '_ {
    fn eq(&self, other: &Self) -> bool {
        self.key_ref() == other.key_ref()
    }
}

impl Eq for dyn AsKeyRef + '_ {}

impl std::hash::Hash for dyn AsKeyRef + '_ {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.key_ref().hash(state);
    }
}

/// A cached value.
#[derive(Debug)]
pub enum Item {
    /// From SSM.
    Parameter(Parameter),
    /// From SSM, a path's parameters: each is the entry it is also cached as under its own
    /// name (an [`Item::Parameter`]), so a value read by path is held once.
    Parameters(Vec<Arc<Entry>>),
    /// From SSM, a parameter's `current`, `previous` and `pending` versions (boxed: three
    /// parameters would make every entry larger).
    Keyring(Box<Keyring>),
    /// From Secrets Manager.
    Secret(Secret),
}

impl Item {
    /// A path read's parameters, in the order SSM listed them.
    pub fn path_parameters(&self) -> impl Iterator<Item = &Parameter> {
        let entries = match self {
            Item::Parameters(entries) => entries.as_slice(),
            _ => &[],
        };
        entries.iter().filter_map(|entry| match &entry.item {
            Item::Parameter(parameter) => Some(parameter),
            _ => None,
        })
    }
}

/// The most a cache key may take: every cached value has one, so it is pinned here.
pub const KEY_BYTES: usize = 64;
const _: () = assert!(std::mem::size_of::<Key>() <= KEY_BYTES);

/// The most one entry's allocation may take (the `Arc`'s two counts and the [`Entry`]),
/// pinned for the same reason.
pub const ENTRY_ALLOCATION_BYTES: usize = 192;
const _: () = assert!(
    2 * std::mem::size_of::<usize>() + std::mem::size_of::<Entry>() <= ENTRY_ALLOCATION_BYTES
);

/// One cache entry: the value and when it was fetched.
#[derive(Debug)]
pub struct Entry {
    /// The value (zeroized when the last `Arc` to the entry goes).
    pub item: Item,
    /// The value as it was last answered, ready to send again (see [`Entry::prepared`]).
    /// Boxed: a pointer in every entry, the body only in those served this way.
    prepared: OnceLock<Box<Prepared>>,
    /// When AWS answered: nanoseconds since [`clock_base`]. Half an `Instant`, which (with
    /// the TTL below) keeps an entry's allocation within [`ENTRY_ALLOCATION_BYTES`].
    fetched_at: u64,
    /// How long the entry is fresh, in milliseconds: a quarter of a `Duration` in each of
    /// thousands of entries.
    ttl_ms: u32,
    /// Bit 0: whether function code read it since it was fetched (only such entries are
    /// worth refreshing ahead of expiry). The rest: how many reads it answered from the
    /// cache, for the stats route. One word for both keeps the entry's size.
    uses: AtomicU32,
}

impl Entry {
    fn new(item: Item, ttl: Duration) -> Self {
        Self {
            item,
            prepared: OnceLock::new(),
            fetched_at: since_base(Instant::now()),
            ttl_ms: u32::try_from(ttl.as_millis()).unwrap_or(u32::MAX),
            uses: AtomicU32::new(0),
        }
    }

    /// How long the entry is fresh.
    pub fn ttl(&self) -> Duration {
        Duration::from_millis(self.ttl_ms.into())
    }

    fn mark_read(&self) {
        // Relaxed: a hint for refresh scheduling, not a synchronisation point.
        if self.uses.load(Ordering::Relaxed) & READ == 0 {
            self.uses.fetch_or(READ, Ordering::Relaxed);
        }
    }

    /// A read answered from this entry: marks it read and counts the hit (saturating, so
    /// a very hot entry cannot wrap back to unread).
    fn mark_hit(&self) {
        let _ = self
            .uses
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |uses| {
                Some(uses.checked_add(HIT).unwrap_or(uses) | READ)
            });
    }

    /// Reads answered from this entry since it was fetched.
    pub fn hits(&self) -> u32 {
        self.uses.load(Ordering::Relaxed) / HIT
    }

    fn was_read(&self) -> bool {
        self.uses.load(Ordering::Relaxed) & READ != 0
    }

    /// Whether the entry is worth refreshing now: read since fetched, and in the last
    /// `fraction` of its TTL (or past it, while still kept for stale serving).
    fn due_for_refresh(&self, fraction: f64, now: Instant) -> bool {
        let threshold = self.ttl().mul_f64((1.0 - fraction).clamp(0.0, 1.0));
        self.was_read() && self.age_at(now) >= threshold
    }

    fn is_fresh(&self, now: Instant) -> bool {
        self.age_at(now) < self.ttl()
    }

    fn age_at(&self, now: Instant) -> Duration {
        Duration::from_nanos(since_base(now).saturating_sub(self.fetched_at))
    }

    /// Time since the entry was fetched.
    pub fn age(&self) -> Duration {
        self.age_at(Instant::now())
    }

    /// The entry's answer, ready to send: made by `make` from the value the first time
    /// (`None` when it should not be kept), then the same bytes for every later hit, with
    /// no encoding and no copy. The answer holds the value, so `make` writes it into a
    /// buffer wiped when the last copy goes (`Bytes::from_owner` over a `Zeroizing`
    /// buffer): when the entry is dropped and the last response holding it is sent.
    pub fn prepared(&self, make: impl FnOnce(&Item) -> Option<Bytes>) -> Option<Bytes> {
        if let Some(prepared) = self.prepared.get() {
            return Some(prepared.0.clone());
        }
        let made = make(&self.item)?;
        // Two first hits at once (another runtime thread) both make it; one is kept.
        let _ = self.prepared.set(Box::new(Prepared(made.clone())));
        Some(made)
    }
}

/// An entry's answer, ready to send. It contains the value, so its `Debug` says only its
/// length.
struct Prepared(Bytes);

impl std::fmt::Debug for Prepared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "<answer, {} bytes>", self.0.len())
    }
}

/// [`Entry::uses`]: the read flag, and one hit.
const READ: u32 = 1;
const HIT: u32 = 2;

impl Item {
    /// Bytes of the value (values only: what the stats and `CacheBytes` count).
    pub fn value_bytes(&self) -> usize {
        match self {
            Item::Parameter(p) => p.payload_len(),
            // A path's entry points at its parameters' own entries, which count their bytes.
            Item::Parameters(_) => 0,
            Item::Keyring(k) => k.payload_len(),
            Item::Secret(s) => s.payload_len(),
        }
    }
}

/// One entry as the stats route lists it: what it is and how it is used, never its value.
#[derive(Debug, Clone, serde::Serialize)]
pub struct EntryInfo {
    /// `parameter`, `path`, `keyring` or `secret`.
    pub kind: &'static str,
    /// The name, path or secret id as asked (a parameter's selector inline, a secret's
    /// version after `:`).
    pub name: String,
    /// The role and region it was read through (`home` for the function's own).
    pub scope: String,
    /// Milliseconds since AWS answered.
    pub age_ms: u64,
    /// Milliseconds it stays fresh; 0 once expired (kept for stale serving).
    pub ttl_left_ms: u64,
    /// Reads answered from it since it was fetched.
    pub hits: u32,
    /// Bytes of its value.
    pub size_bytes: usize,
}

impl EntryInfo {
    fn new(key: &Key, entry: &Entry, now: Instant) -> Self {
        let (kind, name) = match key {
            Key::Parameter { name, selector, .. } => (
                "parameter",
                match selector {
                    Some(selector) => format!("{name}{selector}"),
                    None => name.to_string(),
                },
            ),
            Key::Path { path, .. } => ("path", path.clone()),
            Key::Keyring { name, .. } => ("keyring", name.to_string()),
            Key::Secret { id, version, .. } => (
                "secret",
                match version.as_deref() {
                    Some(SecretVersion {
                        version_id: Some(v),
                        ..
                    })
                    | Some(SecretVersion { stage: Some(v), .. }) => format!("{id}:{v}"),
                    _ => id.to_string(),
                },
            ),
        };
        let age = entry.age_at(now);
        let millis = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        Self {
            kind,
            name,
            scope: key.scope().to_string(),
            age_ms: millis(age),
            ttl_left_ms: millis(entry.ttl().saturating_sub(age)),
            hits: entry.hits(),
            size_bytes: entry.item.value_bytes(),
        }
    }
}

/// The instant entries count their fetch time from: a minute before it is first asked, so
/// that an instant read a little earlier on another thread (or in another test's runtime)
/// still comes after it.
fn clock_base() -> Instant {
    static BASE: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *BASE.get_or_init(|| {
        let now = Instant::now();
        now.checked_sub(Duration::from_secs(60)).unwrap_or(now)
    })
}

/// Nanoseconds from [`clock_base`] to `at` (0 for an earlier instant; 584 years fit).
fn since_base(at: Instant) -> u64 {
    u64::try_from(at.saturating_duration_since(clock_base()).as_nanos()).unwrap_or(u64::MAX)
}

/// How an answer was obtained; reported in the `X-Lockbox-Cache` response header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Freshness {
    /// Served from the cache within its TTL.
    Hit,
    /// Fetched from AWS for this request (or a concurrent one it waited for).
    Miss,
    /// Past its TTL, served because AWS failed transiently.
    Stale,
    /// The cache is off for this kind of value.
    Bypass,
}

impl Freshness {
    /// The header value.
    pub fn as_str(self) -> &'static str {
        match self {
            Freshness::Hit => "hit",
            Freshness::Miss => "miss",
            Freshness::Stale => "stale",
            Freshness::Bypass => "bypass",
        }
    }
}

/// The answer to a lookup.
#[derive(Debug, Clone)]
pub struct Lookup {
    /// The entry served.
    pub entry: Arc<Entry>,
    /// Where it came from.
    pub freshness: Freshness,
}

/// Cache settings, from the configuration (`Config::cache_settings`).
#[derive(Debug, Clone, Copy)]
pub struct CacheSettings {
    /// Whether the cache is on at all.
    pub enabled: bool,
    /// Entries kept at most; 0 turns the cache off.
    pub capacity: usize,
    /// Fresh time of parameters; 0 bypasses the cache for them.
    pub parameter_ttl: Duration,
    /// Fresh time of secrets; 0 bypasses the cache for them.
    pub secret_ttl: Duration,
    /// How long past its TTL an entry may still be served when AWS fails transiently.
    pub max_stale: Duration,
}

/// The shared cache handle (cheap to clone).
#[derive(Clone)]
pub struct Cache {
    store: Option<Arc<Store>>,
    settings: CacheSettings,
    /// Each entry's TTL is drawn uniformly within this fraction of the configured TTL,
    /// either side.
    ttl_jitter: f64,
    /// Where reads that waited for another read's fetch are counted.
    metrics: Metrics,
}

/// The outcome of one fetch, as every caller waiting on it receives it.
type Outcome = Result<Lookup, SourceError>;

/// Entries in least-recently-used order, and the keys being fetched now.
struct Store {
    entries: Mutex<LruCache<Key, Arc<Entry>>>,
    /// One flight per key being fetched: followers watch it for the leader's outcome. The
    /// leader removes it when done (or cancelled), so the map holds only keys in flight.
    flights: Mutex<HashMap<Key, watch::Receiver<Option<Outcome>>>>,
    capacity: NonZeroUsize,
}

/// Locks a mutex whose holder cannot leave its data half-changed (every critical section
/// is one call into `LruCache` or `HashMap`), so a poisoned lock is still sound to use.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Store {
    fn new(capacity: NonZeroUsize) -> Self {
        Self {
            // Unbounded, with the bound enforced in `put`: `LruCache::new` would size its
            // table for the full capacity up front, memory an idle function does not need.
            entries: Mutex::new(LruCache::unbounded()),
            flights: Mutex::new(HashMap::new()),
            capacity,
        }
    }

    /// The entry for a key, marked most recently used.
    fn get(&self, key: KeyRef<'_>) -> Option<Arc<Entry>> {
        lock(&self.entries).get(&key as &dyn AsKeyRef).cloned()
    }

    /// Stores an entry; the least recently used go when the bound is passed. Evicted and
    /// replaced entries are dropped outside the lock (their values are zeroized then).
    fn put(&self, key: Key, entry: Arc<Entry>) {
        let mut gone = Vec::new();
        {
            let mut entries = lock(&self.entries);
            gone.extend(entries.put(key, entry));
            while entries.len() > self.capacity.get() {
                gone.extend(entries.pop_lru().map(|(_, old)| old));
            }
        }
        drop(gone);
    }

    /// Removes the entry for a key if it is still `entry` (a newer one stays).
    fn remove_if_same(&self, key: &Key, entry: &Arc<Entry>) {
        let removed = {
            let mut entries = lock(&self.entries);
            match entries.peek(key) {
                Some(current) if Arc::ptr_eq(current, entry) => entries.pop(key),
                _ => None,
            }
        };
        drop(removed);
    }

    /// Leads the key's flight, or follows the one in progress.
    fn join(&self, key: KeyRef<'_>) -> Flight<'_> {
        let mut flights = lock(&self.flights);
        if let Some(flight) = flights.get(&key as &dyn AsKeyRef) {
            return Flight::Follow(flight.clone());
        }
        let (tx, rx) = watch::channel(None);
        let key = key.to_key();
        flights.insert(key.clone(), rx);
        Flight::Lead(Leader {
            store: self,
            key,
            outcome: tx,
        })
    }
}

/// A caller's part in a key's fetch.
enum Flight<'a> {
    /// Fetch, then hand the outcome over.
    Lead(Leader<'a>),
    /// Wait for the leader's outcome.
    Follow(watch::Receiver<Option<Outcome>>),
}

/// The leader of a key's flight. Dropping it (done, or cancelled with its request) ends
/// the flight: followers then have the outcome, or find no leader and lead a new fetch.
struct Leader<'a> {
    store: &'a Store,
    key: Key,
    outcome: watch::Sender<Option<Outcome>>,
}

impl Leader<'_> {
    fn finish(self, outcome: &Outcome) {
        self.outcome.send_replace(Some(outcome.clone()));
    }
}

impl Drop for Leader<'_> {
    fn drop(&mut self) {
        lock(&self.store.flights).remove(&self.key);
    }
}

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache")
            .field(
                "entries",
                &self.store.as_ref().map(|s| lock(&s.entries).len()),
            )
            .field("settings", &self.settings)
            .finish()
    }
}

impl Cache {
    /// Builds the cache; with `enabled == false` or capacity 0 every lookup goes to AWS.
    pub fn new(settings: CacheSettings) -> Self {
        let store = NonZeroUsize::new(settings.capacity)
            .filter(|_| settings.enabled)
            .map(|capacity| Arc::new(Store::new(capacity)));
        Self {
            store,
            settings,
            ttl_jitter: 0.0,
            metrics: Metrics::default(),
        }
    }

    /// Draws each entry's TTL uniformly within `fraction` of the configured TTL, either
    /// side (0 to 0.5; 0 expires every entry exactly at its TTL).
    pub fn with_ttl_jitter(mut self, fraction: f64) -> Self {
        self.ttl_jitter = fraction.clamp(0.0, 0.5);
        self
    }

    /// A new entry, its TTL jittered.
    fn entry(&self, item: Item, ttl: Duration) -> Entry {
        let ttl = if self.ttl_jitter > 0.0 && !ttl.is_zero() {
            let factor = rand::rng().random_range(-self.ttl_jitter..=self.ttl_jitter);
            ttl.mul_f64(1.0 + factor)
        } else {
            ttl
        };
        Entry::new(item, ttl)
    }

    /// The counters reads through this cache count into.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The same cache, counting into `metrics` (the extension's shared counters).
    pub fn with_metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = metrics;
        self
    }

    /// The TTL that applies to a key.
    fn ttl(&self, key: KeyRef<'_>) -> Duration {
        match key {
            KeyRef::Parameter { .. } | KeyRef::Path { .. } | KeyRef::Keyring { .. } => {
                self.settings.parameter_ttl
            }
            KeyRef::Secret { .. } => self.settings.secret_ttl,
        }
    }

    /// Whether an entry is past its TTL and its stale window: never served again.
    fn past_retention(&self, entry: &Entry) -> bool {
        entry.age() > entry.ttl() + self.settings.max_stale
    }

    /// Number of entries.
    pub fn len(&self) -> u64 {
        self.store
            .as_ref()
            .map_or(0, |store| lock(&store.entries).len() as u64)
    }

    /// Whether the cache holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Returns the fresh cached entry, or fetches it. Concurrent callers of the same key
    /// wait for one fetch. With `force`, the cache is not read (but is updated), and a
    /// failure is returned rather than a stale value: the caller asked for AWS's answer.
    /// A hit copies nothing of the key; an owned [`Key`] is made only to fetch.
    pub async fn get_or_fetch<F, Fut>(
        &self,
        key: KeyRef<'_>,
        force: bool,
        fetch: F,
    ) -> Result<Lookup, SourceError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Item, SourceError>>,
    {
        let ttl = self.ttl(key);
        let Some(store) = self.store.as_ref().filter(|_| !ttl.is_zero()) else {
            let item = fetch().await?;
            return Ok(Lookup {
                entry: Arc::new(Entry::new(item, ttl)),
                freshness: Freshness::Bypass,
            });
        };

        if !force {
            if let Some(entry) = store.get(key) {
                if entry.is_fresh(Instant::now()) {
                    entry.mark_hit();
                    return Ok(Lookup {
                        entry,
                        freshness: Freshness::Hit,
                    });
                }
            }
        }

        // Slow path: one fetch per key at a time, its outcome shared by everyone waiting.
        loop {
            let leader = match store.join(key) {
                Flight::Lead(leader) => leader,
                Flight::Follow(mut flight) => {
                    let outcome = match flight.wait_for(Option::is_some).await {
                        Ok(outcome) => outcome.clone(),
                        // The leader was cancelled before it had an outcome.
                        Err(_) => continue,
                    };
                    match outcome {
                        // A forced read wants AWS's answer, not the cache's.
                        Some(Ok(lookup)) if force && lookup.freshness != Freshness::Miss => {
                            continue
                        }
                        Some(outcome) => {
                            // This read made no call of its own: it took another's answer.
                            self.metrics.counters().read_coalesced();
                            return outcome;
                        }
                        None => continue,
                    }
                }
            };
            let outcome = self.lead(store, &leader.key, force, ttl, fetch).await;
            leader.finish(&outcome);
            return outcome;
        }
    }

    /// The leader's part: look again (the previous flight may have just stored a fresh
    /// entry), fetch, store, or fall back to a stale entry.
    async fn lead<F, Fut>(
        &self,
        store: &Store,
        key: &Key,
        force: bool,
        ttl: Duration,
        fetch: F,
    ) -> Outcome
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Item, SourceError>>,
    {
        let current = store.get(key.key_ref());
        if let Some(entry) = current
            .as_ref()
            .filter(|e| !force && e.is_fresh(Instant::now()))
        {
            // Fresh now, not when this read looked first: it waited for another read's
            // AWS call and takes its answer.
            entry.mark_hit();
            self.metrics.counters().read_coalesced();
            return Ok(Lookup {
                entry: entry.clone(),
                freshness: Freshness::Hit,
            });
        }
        match fetch().await {
            Ok(item) => {
                let entry = Arc::new(self.entry(item, ttl));
                entry.mark_read();
                store.put(key.clone(), entry.clone());
                Ok(Lookup {
                    entry,
                    freshness: Freshness::Miss,
                })
            }
            Err(err) => {
                let stale_ok = !force
                    && err.is_transient()
                    && current.as_ref().is_some_and(|e| !self.past_retention(e));
                match current {
                    Some(entry) if stale_ok => {
                        entry.mark_read();
                        Ok(Lookup {
                            entry,
                            freshness: Freshness::Stale,
                        })
                    }
                    // A permanent failure means the old value is gone or no longer ours
                    // to read: forget it rather than serve it later.
                    Some(entry) if !err.is_transient() => {
                        store.remove_if_same(key, &entry);
                        Err(err)
                    }
                    _ => Err(err),
                }
            }
        }
    }

    /// The fresh entry for a key, if there is one (counts as a read).
    pub fn fresh(&self, key: KeyRef<'_>) -> Option<Arc<Entry>> {
        let entry = self.store.as_ref()?.get(key)?;
        entry.is_fresh(Instant::now()).then(|| {
            entry.mark_hit();
            entry
        })
    }

    /// The fresh entry for a key, without counting a read (for looking before choosing).
    pub fn peek_fresh(&self, key: KeyRef<'_>) -> Option<Arc<Entry>> {
        let entry = self.store.as_ref()?.get(key)?;
        entry.is_fresh(Instant::now()).then_some(entry)
    }

    /// Stores a value fetched outside [`Cache::get_or_fetch`] (batch reads, prefetch,
    /// refresh) and returns the entry. `read` says whether a caller is reading it now.
    pub fn insert(&self, key: Key, item: Item, read: bool) -> Arc<Entry> {
        let entry = Arc::new(self.entry(item, self.ttl(key.key_ref())));
        if read {
            entry.mark_read();
        }
        self.insert_entry(key, entry.clone());
        entry
    }

    /// Stores an existing entry under one more key (an ARN as well as a name, a String
    /// parameter for both decryption settings).
    pub fn insert_entry(&self, key: Key, entry: Arc<Entry>) {
        if let Some(store) = &self.store {
            if !self.ttl(key.key_ref()).is_zero() {
                store.put(key, entry);
            }
        }
    }

    /// Keys worth refreshing now (see [`Entry::due_for_refresh`]). Called once per invoke,
    /// it also forgets entries past their stale window: Lambda freezes the environment
    /// between invokes, so no timer could do it sooner.
    pub fn due_for_refresh(&self, fraction: f64) -> Vec<Key> {
        let Some(store) = &self.store else {
            return Vec::new();
        };
        let now = Instant::now();
        let (due, gone) = {
            let mut entries = lock(&store.entries);
            let expired: Vec<Key> = entries
                .iter()
                .filter(|(_, entry)| self.past_retention(entry))
                .map(|(key, _)| key.clone())
                .collect();
            let gone: Vec<_> = expired.iter().filter_map(|k| entries.pop(k)).collect();
            let due: Vec<Key> = entries
                .iter()
                .filter(|(_, entry)| entry.due_for_refresh(fraction, now))
                .map(|(key, _)| key.clone())
                .collect();
            (due, gone)
        };
        drop(gone);
        due
    }

    /// How many entries the cache holds and the bytes of their values (an entry stored
    /// under two keys, a name and an ARN, counts once in the bytes).
    pub fn gauges(&self) -> CacheGauges {
        let Some(store) = &self.store else {
            return CacheGauges::default();
        };
        let entries = lock(&store.entries);
        let mut seen = std::collections::HashSet::with_capacity(entries.len());
        let bytes = entries
            .iter()
            .filter(|(_, entry)| seen.insert(Arc::as_ptr(entry)))
            .map(|(_, entry)| entry.item.value_bytes() as u64)
            .sum();
        CacheGauges {
            entries: entries.len() as u64,
            bytes,
        }
    }

    /// Every entry, most recently used first, described without its value.
    pub fn entry_infos(&self) -> Vec<EntryInfo> {
        let Some(store) = &self.store else {
            return Vec::new();
        };
        let now = Instant::now();
        lock(&store.entries)
            .iter()
            .map(|(key, entry)| EntryInfo::new(key, entry, now))
            .collect()
    }

    /// Drops every entry (their values are zeroized as the last reference goes).
    pub fn clear(&self) {
        if let Some(store) = &self.store {
            let mut gone = LruCache::unbounded();
            std::mem::swap(&mut *lock(&store.entries), &mut gone);
            drop(gone);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aws::FailureKind;
    use crate::domain::SecretText;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn settings() -> CacheSettings {
        CacheSettings {
            enabled: true,
            capacity: 10,
            parameter_ttl: Duration::from_secs(300),
            secret_ttl: Duration::from_secs(60),
            max_stale: Duration::from_secs(3600),
        }
    }

    fn key(name: &str) -> Key {
        Key::Parameter {
            scope: Scope::default(),
            name: name.into(),
            selector: None,
            decrypt: true,
        }
    }

    fn item(value: &str) -> Item {
        Item::Parameter(Parameter {
            arn: None,
            data_type: None,
            last_modified_date: None,
            name: "n".into(),
            extra: None,
            kind: "String".into(),
            value: SecretText::new(value.into()),
            version: 1,
        })
    }

    fn value(l: &Lookup) -> String {
        match &l.entry.item {
            Item::Parameter(p) => p.value.expose().to_owned(),
            _ => unreachable!(),
        }
    }

    fn transient() -> SourceError {
        SourceError::new(FailureKind::Unreachable, "ConnectionError", "down")
    }

    #[tokio::test(start_paused = true)]
    async fn hit_until_ttl_then_refetch() {
        let cache = Cache::new(settings());
        let calls = AtomicUsize::new(0);
        let fetch = || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Ok(item("v"))
        };
        assert_eq!(
            cache
                .get_or_fetch(key("a").key_ref(), false, fetch)
                .await
                .unwrap()
                .freshness,
            Freshness::Miss
        );
        assert_eq!(
            cache
                .get_or_fetch(key("a").key_ref(), false, fetch)
                .await
                .unwrap()
                .freshness,
            Freshness::Hit
        );
        tokio::time::advance(Duration::from_secs(301)).await;
        assert_eq!(
            cache
                .get_or_fetch(key("a").key_ref(), false, fetch)
                .await
                .unwrap()
                .freshness,
            Freshness::Miss
        );
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn stale_only_on_transient_failures_and_within_window() {
        let cache = Cache::new(settings());
        cache
            .get_or_fetch(key("a").key_ref(), false, || async { Ok(item("old")) })
            .await
            .unwrap();
        tokio::time::advance(Duration::from_secs(400)).await;
        let l = cache
            .get_or_fetch(key("a").key_ref(), false, || async { Err(transient()) })
            .await
            .unwrap();
        assert_eq!(l.freshness, Freshness::Stale);
        assert_eq!(value(&l), "old");
        // refreshNow never serves stale.
        assert!(cache
            .get_or_fetch(key("a").key_ref(), true, || async { Err(transient()) })
            .await
            .is_err());
        // A permanent failure forgets the entry.
        let gone = SourceError::new(FailureKind::NotFound, "ParameterNotFound", "gone");
        assert!(cache
            .get_or_fetch(key("a").key_ref(), false, || async { Err(gone) })
            .await
            .is_err());
        let err = cache
            .get_or_fetch(key("a").key_ref(), false, || async { Err(transient()) })
            .await
            .unwrap_err();
        assert_eq!(err.kind, FailureKind::Unreachable);
    }

    #[tokio::test(start_paused = true)]
    async fn stale_window_ends() {
        let cache = Cache::new(CacheSettings {
            max_stale: Duration::from_secs(10),
            ..settings()
        });
        cache
            .get_or_fetch(key("a").key_ref(), false, || async { Ok(item("old")) })
            .await
            .unwrap();
        tokio::time::advance(Duration::from_secs(311)).await;
        assert!(cache
            .get_or_fetch(key("a").key_ref(), false, || async { Err(transient()) })
            .await
            .is_err());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_misses_make_one_fetch() {
        let cache = Cache::new(settings());
        let calls = Arc::new(AtomicUsize::new(0));
        let tasks: Vec<_> = (0..50)
            .map(|_| {
                let cache = cache.clone();
                let calls = calls.clone();
                tokio::spawn(async move {
                    cache
                        .get_or_fetch(key("same").key_ref(), false, || async {
                            calls.fetch_add(1, Ordering::SeqCst);
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            Ok(item("v"))
                        })
                        .await
                        .map(|l| value(&l))
                })
            })
            .collect();
        for t in tasks {
            assert_eq!(t.await.unwrap().unwrap(), "v");
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_misses_share_one_fetchs_failure() {
        let cache = Cache::new(settings());
        let calls = Arc::new(AtomicUsize::new(0));
        let tasks: Vec<_> = (0..20)
            .map(|_| {
                let cache = cache.clone();
                let calls = calls.clone();
                tokio::spawn(async move {
                    cache
                        .get_or_fetch(key("down").key_ref(), false, || async {
                            calls.fetch_add(1, Ordering::SeqCst);
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            Err(SourceError::new(
                                FailureKind::Timeout,
                                "Timeout",
                                "no answer",
                            ))
                        })
                        .await
                })
            })
            .collect();
        for t in tasks {
            assert_eq!(t.await.unwrap().unwrap_err().code, "Timeout");
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert!(lock(&cache.store.as_ref().unwrap().flights).is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn entries_fetched_together_expire_apart_with_jitter() {
        let cache = Cache::new(CacheSettings {
            capacity: 100,
            ..settings()
        })
        .with_ttl_jitter(0.1);
        for i in 0..50 {
            cache.insert(key(&format!("k{i}")), item("v"), true);
        }
        let ttls: Vec<Duration> = (0..50)
            .map(|i| {
                let store = cache.store.as_ref().unwrap();
                store.get(key(&format!("k{i}")).key_ref()).unwrap().ttl()
            })
            .collect();
        let (min, max) = (ttls.iter().min().unwrap(), ttls.iter().max().unwrap());
        // 300 s +-10 %: within 270..330 s, and 50 draws are not all within a few seconds.
        assert!(*min >= Duration::from_secs(270) && *max <= Duration::from_secs(330));
        assert!(*max - *min > Duration::from_secs(20), "{min:?}..{max:?}");
        // Refresh-ahead follows each entry's own TTL: some are due before others.
        tokio::time::advance(Duration::from_secs(230)).await;
        let due = cache.due_for_refresh(0.2).len();
        assert!(0 < due && due < 50, "{due} of 50 due at 230 s");
    }

    #[tokio::test]
    async fn evicts_least_recently_used_at_capacity() {
        let cache = Cache::new(CacheSettings {
            capacity: 2,
            ..settings()
        });
        for name in ["a", "b"] {
            cache
                .get_or_fetch(key(name).key_ref(), false, || async { Ok(item(name)) })
                .await
                .unwrap();
        }
        // Touch a, so b is the least recently used when c arrives.
        cache
            .get_or_fetch(key("a").key_ref(), false, || async { Ok(item("a")) })
            .await
            .unwrap();
        cache
            .get_or_fetch(key("c").key_ref(), false, || async { Ok(item("c")) })
            .await
            .unwrap();
        assert_eq!(cache.len(), 2);
        let a = cache
            .get_or_fetch(key("a").key_ref(), false, || async { Ok(item("a2")) })
            .await
            .unwrap();
        assert_eq!(a.freshness, Freshness::Hit);
        let b = cache
            .get_or_fetch(key("b").key_ref(), false, || async { Ok(item("b2")) })
            .await
            .unwrap();
        assert_eq!(b.freshness, Freshness::Miss);
    }

    #[tokio::test(start_paused = true)]
    async fn only_read_entries_near_expiry_are_due_for_refresh() {
        let cache = Cache::new(settings());
        cache.insert(key("unread"), item("u"), false);
        cache
            .get_or_fetch(key("read").key_ref(), false, || async { Ok(item("r")) })
            .await
            .unwrap();
        assert!(cache.due_for_refresh(0.2).is_empty());
        // 300 s TTL, last 20 % starts at 240 s.
        tokio::time::advance(Duration::from_secs(241)).await;
        assert_eq!(cache.due_for_refresh(0.2), vec![key("read")]);
        assert!(cache.due_for_refresh(0.0).is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn entries_past_the_stale_window_are_forgotten_at_the_next_sweep() {
        let cache = Cache::new(CacheSettings {
            max_stale: Duration::from_secs(10),
            ..settings()
        });
        cache.insert(key("old"), item("o"), false);
        tokio::time::advance(Duration::from_secs(305)).await;
        cache.insert(key("young"), item("y"), false);
        // Past its TTL but within the stale window: kept.
        cache.due_for_refresh(0.2);
        assert_eq!(cache.len(), 2);
        tokio::time::advance(Duration::from_secs(6)).await;
        cache.due_for_refresh(0.2);
        assert_eq!(cache.len(), 1);
        assert!(cache.peek_fresh(key("young").key_ref()).is_some());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_cancelled_fetch_lets_the_next_caller_fetch_and_flights_are_not_kept() {
        let cache = Cache::new(settings());
        let started = Arc::new(tokio::sync::Notify::new());
        let leader = {
            let (cache, started) = (cache.clone(), started.clone());
            tokio::spawn(async move {
                cache
                    .get_or_fetch(key("k").key_ref(), false, || async move {
                        started.notify_one();
                        std::future::pending::<Result<Item, SourceError>>().await
                    })
                    .await
            })
        };
        started.notified().await;
        leader.abort();
        assert!(leader.await.unwrap_err().is_cancelled());
        let l = tokio::time::timeout(
            Duration::from_secs(5),
            cache.get_or_fetch(key("k").key_ref(), false, || async { Ok(item("v")) }),
        )
        .await
        .expect("the cancelled fetch still holds the key")
        .unwrap();
        assert_eq!(l.freshness, Freshness::Miss);
        assert!(lock(&cache.store.as_ref().unwrap().flights).is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn entries_are_listed_with_their_hits_and_sizes_and_never_their_values() {
        let cache = Cache::new(settings());
        cache
            .get_or_fetch(key("a").key_ref(), false, || async { Ok(item("four")) })
            .await
            .unwrap();
        for _ in 0..2 {
            cache
                .get_or_fetch(key("a").key_ref(), false, || async { Ok(item("x")) })
                .await
                .unwrap();
        }
        let entry = cache.insert(key("b"), item("sixsix"), false);
        // The same entry under a second key (an ARN): listed twice, its bytes counted once.
        cache.insert_entry(key("arn-of-b"), entry);
        tokio::time::advance(Duration::from_secs(100)).await;
        assert_eq!(
            cache.gauges(),
            CacheGauges {
                entries: 3,
                bytes: 4 + 6
            }
        );
        let infos = cache.entry_infos();
        assert_eq!(infos.len(), 3);
        let a = infos.iter().find(|i| i.name == "a").unwrap();
        assert_eq!(
            (a.kind, a.hits, a.size_bytes, a.scope.as_str()),
            ("parameter", 2, 4, "home")
        );
        assert_eq!((a.age_ms, a.ttl_left_ms), (100_000, 200_000));
        let listed = serde_json::to_string(&infos).unwrap();
        assert!(!listed.contains("four") && !listed.contains("sixsix"));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn reads_that_wait_for_another_reads_fetch_are_counted_as_coalesced() {
        let metrics = Metrics::new();
        let cache = Cache::new(settings()).with_metrics(metrics.clone());
        let fetches = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let tasks: Vec<_> = (0..10)
            .map(|_| {
                let (cache, fetches) = (cache.clone(), fetches.clone());
                tokio::spawn(async move {
                    cache
                        .get_or_fetch(key("same").key_ref(), false, || async move {
                            fetches.fetch_add(1, Ordering::SeqCst);
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            Ok(item("v"))
                        })
                        .await
                        .unwrap()
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        assert_eq!(fetches.load(Ordering::SeqCst), 1);
        // Every other read either waited for the fetch or came after it (a plain hit).
        let coalesced = metrics.stats().totals.reads_coalesced;
        assert!((1..=9).contains(&coalesced), "{coalesced}");
    }

    #[tokio::test]
    async fn disabled_or_zero_ttl_bypasses() {
        let off = Cache::new(CacheSettings {
            enabled: false,
            ..settings()
        });
        let l = off
            .get_or_fetch(key("a").key_ref(), false, || async { Ok(item("v")) })
            .await
            .unwrap();
        assert_eq!(l.freshness, Freshness::Bypass);
        let zero = Cache::new(CacheSettings {
            parameter_ttl: Duration::ZERO,
            ..settings()
        });
        let l = zero
            .get_or_fetch(key("a").key_ref(), false, || async { Ok(item("v")) })
            .await
            .unwrap();
        assert_eq!(l.freshness, Freshness::Bypass);
        assert!(zero.is_empty());
    }
}
