//! lockbox's end-to-end tests, in one test binary so the AWS SDK and the harness are
//! compiled and linked once (each file directly under `tests/tests/` would be a binary of
//! its own). Each module runs the real binaries against moto, under the Lambda sandbox,
//! behind the fault proxy where faults are needed.
//!
//! Run one area with a filter: `cargo test -p lockbox-tests --test e2e -- prefetch::`.

mod deploy;
mod exec;
mod extension;
mod fleet;
mod hardening;
mod harness;
mod metrics;
mod prefetch;
mod rie;
mod roles;
mod rotator;
