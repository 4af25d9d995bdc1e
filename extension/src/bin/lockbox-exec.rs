//! The `lockbox-exec` executable, installed as `/opt/lockbox-exec` by the layer and used as
//! `AWS_LAMBDA_EXEC_WRAPPER`: resolves the references in the environment, then becomes the
//! runtime. See [`lockbox_extension::exec`].

use std::process::ExitCode;

use lockbox_extension::config::RawConfig;
use lockbox_extension::exec;

fn main() -> ExitCode {
    let vars: Vec<_> = std::env::vars_os().collect();
    let level = RawConfig::from_pairs(
        vars.iter()
            .filter_map(|(k, v)| Some((k.to_str()?.to_owned(), v.to_str()?.to_owned()))),
    )
    .log_level_or_default();
    exec::init_logging(level);
    // One thread: nothing runs concurrently with the `exec` that ends the process image.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("lockbox-exec: could not start: {err}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let err = exec::run(std::env::args_os().collect(), vars).await;
        tracing::error!(error = %err, "lockbox-exec did not start the runtime");
        exec::report_init_error(&err).await;
        ExitCode::from(err.exit_code())
    })
}
