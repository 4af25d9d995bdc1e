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
//! - [`model`] holds the values (zeroized on drop) and the AWS layer's JSON shapes;
//!   [`error`] turns every failure into one HTTP status and JSON body.
//! - [`logging`] writes one JSON object per line, never a value.

pub mod batch;
pub mod cache;
pub mod config;
pub mod error;
pub mod lifecycle;
pub mod logging;
pub mod model;
pub mod prefetch;
pub mod refresh;
pub mod request;
pub mod server;
pub mod source;
