//! lockbox's Lambda extension: SSM parameters and Secrets Manager secrets, cached and served
//! on `127.0.0.1:2773` with the AWS Parameters and Secrets Lambda Extension's interface.
//!
//! How a request flows:
//!
//! - [`lifecycle`] is the spine: register with Lambda, validate [`config`], start the
//!   [`server`], [`prefetch`], run the event loop ([`refresh`] ahead of expiry on each
//!   INVOKE), shut down.
//! - [`server`] checks the request (relay, host, method, token), [`request`] parses its
//!   query into a typed read, and [`cache`] answers it or asks the [`source`] (SSM or
//!   Secrets Manager through the AWS SDK); [`batch`] does the same for many values at
//!   once with the batch APIs.
//! - [`scope`] says whose credentials and which region a read uses (another account's
//!   role through STS, another region); each scope has its own clients and cache entries.
//! - [`model`] holds the values (zeroized on drop) and the AWS layer's JSON shapes;
//!   [`error`] turns every failure into one HTTP status and JSON body.
//! - [`json_key`] picks one key out of a JSON value for `jsonKey=` and references alike,
//!   wiping what it parsed.
//! - [`write_timeout`] bounds how long a response waits for a client that stopped reading.
//! - [`logging`] writes one JSON object per line, never a value.
//!
//! References (`{{resolve:ssm:...}}`, CloudFormation's syntax) for programs that cannot
//! call the API:
//!
//! - [`reference`] parses them; [`resolve`] reads a set of them in one round of batch reads,
//!   through the cache ([`resolve::CacheFetch`]) or over HTTP ([`local_api`]).
//! - [`exec`] is the exec wrapper (`lockbox-exec`): it resolves the references in the
//!   runtime's environment variables, then `exec`s the runtime.
//! - [`render`] writes template files with their references resolved under `/tmp`, during
//!   Init and again when a value changes.

pub mod batch;
pub mod cache;
pub mod config;
pub mod error;
pub mod exec;
pub mod json_key;
pub mod lifecycle;
pub mod local_api;
pub mod logging;
pub mod model;
pub mod prefetch;
pub mod reference;
pub mod refresh;
pub mod render;
pub mod request;
pub mod resolve;
pub mod scope;
pub mod server;
pub mod source;
pub mod write_timeout;
