//! lockbox's Lambda extension: SSM parameters and Secrets Manager secrets, cached and served
//! on the loopback port 2773 (`127.0.0.1` and `[::1]`) with the AWS Parameters and Secrets
//! Lambda Extension's interface.
//!
//! The modules are layers; each imports only the layers listed before it
//! (`ARCHITECTURE.md` draws them):
//!
//! 1. [`domain`]: values (zeroized on drop), parameters, secrets, selectors, names and
//!    scopes. No I/O. Beside it, [`metrics`]: the counters every layer counts into (cache
//!    hits, misses, AWS calls, latency) and the CloudWatch Embedded Metric Format lines
//!    written from them when `LOCKBOX_METRICS=emf`; it imports nothing of lockbox's.
//! 2. [`aws`]: the [`aws::Source`] trait, its SDK implementation, the classification of
//!    every AWS failure, and [`aws::Scopes`], one source per role and region.
//! 3. [`cache`]: bounded, TTL per kind, one fetch per key, stale serving on transient
//!    failures; the prefetch gate.
//! 4. [`read`]: reads through the cache (one value, many, a path) and [`read::Core`], the
//!    cache and the scopes every read works with.
//! 5. [`features`]: prefetch, refresh ahead, rendered files, references.
//! 6. [`http`]: the localhost API (routes, query parsing, envelopes, errors, server).
//! 7. [`config`]: the environment, raw then validated, and the settings each layer below
//!    is built with.
//! 8. [`lifecycle`] (the extension: register → validate → serve → prefetch → render →
//!    event loop → shutdown) and [`exec`] (the exec wrapper, `lockbox-exec`) are the two
//!    entry points; [`logging`] writes one JSON object per line, never a value;
//!    [`process`] says how long ago the process started (the Init deadline counts from then).

pub mod aws;
pub mod cache;
pub mod config;
pub mod domain;
pub mod exec;
pub mod features;
pub mod http;
pub mod lifecycle;
pub mod logging;
pub mod metrics;
pub mod process;
pub mod read;
