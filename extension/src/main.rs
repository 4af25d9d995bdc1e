//! The `lockbox` executable, installed as `/opt/extensions/lockbox` by the layer.

use std::process::ExitCode;

use lockbox_extension::config::RawConfig;
use lockbox_extension::{lifecycle, logging};

#[tokio::main]
async fn main() -> ExitCode {
    let raw = RawConfig::from_env();
    logging::init(raw.log_level_or_default());
    match lifecycle::run(raw).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error = %err, "lockbox stopped");
            ExitCode::FAILURE
        }
    }
}
