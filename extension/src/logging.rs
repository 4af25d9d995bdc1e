//! Logs: one JSON object per line on stdout, which Lambda forwards to CloudWatch, where users
//! filter on fields. Nothing logged anywhere in lockbox carries a value: names, codes and
//! counts only.

use tracing_subscriber::filter::LevelFilter;

use crate::config::LogLevel;

/// Installs the global subscriber. `NONE` installs nothing, so logging costs nothing.
pub fn init(level: LogLevel) {
    init_to(level, "lockbox", std::io::stdout);
}

/// Installs the subscriber for one binary: lockbox's library events and `binary`'s own, as
/// JSON lines on `writer`. The exec wrapper logs on stderr, as stdout belongs to the runtime.
pub fn init_to<W>(level: LogLevel, binary: &str, writer: W)
where
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    let filter = match level {
        LogLevel::Debug => LevelFilter::DEBUG,
        LogLevel::Info => LevelFilter::INFO,
        LogLevel::Warn => LevelFilter::WARN,
        LogLevel::Error => LevelFilter::ERROR,
        LogLevel::None => return,
    };
    // Only lockbox's own events: the SDK's and hyper's debug output can include request
    // and response bodies, and a response body is a value.
    let targets = tracing_subscriber::filter::Targets::new()
        .with_target("lockbox_extension", filter)
        .with_target(binary, filter);
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let _ = tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .json()
                .flatten_event(true)
                .with_current_span(false)
                .with_span_list(false)
                .with_target(false)
                .with_writer(writer),
        )
        .with(targets)
        .try_init();
}
