//! The `lockbox` executable, installed as `/opt/extensions/lockbox` by the layer.

use std::process::ExitCode;
use std::time::Duration;

use lockbox_extension::config::RawConfig;
use lockbox_extension::{lifecycle, logging};

fn main() -> ExitCode {
    let raw = RawConfig::from_env();
    logging::init(raw.log_level_or_default());
    // One thread. The extension shares the function's vCPUs (a fraction of one below
    // 1,769 MB) and a cache hit is microseconds of work, so more workers buy no throughput
    // on Lambda; they cost resident memory (a stack and a malloc arena each) and cross-thread
    // wake-ups on every request. AWS calls are async and never block the thread.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            tracing::error!(error = %err, "lockbox could not start its runtime");
            return ExitCode::FAILURE;
        }
    };
    let code = runtime.block_on(async {
        match lifecycle::run(raw).await {
            Ok(()) => {
                // The last line of a clean stop; Lambda sees the exit status, and so do the
                // emulator tests, which cannot wait on a process that is not their child.
                tracing::info!(exit_status = 0, "lockbox exiting");
                ExitCode::SUCCESS
            }
            Err(err) => {
                tracing::error!(error = %err, "lockbox stopped");
                ExitCode::FAILURE
            }
        }
    });
    // A template read may still be blocked (a FIFO nobody writes): dropping the runtime
    // would wait for it forever.
    runtime.shutdown_timeout(Duration::from_millis(100));
    code
}
