//! The exec wrapper, `/opt/lockbox-exec`: set as `AWS_LAMBDA_EXEC_WRAPPER`, Lambda runs it
//! as `/opt/lockbox-exec RUNTIME ARGS...` instead of the runtime. It
//!
//! 1. finds the environment variables whose values contain references ([`crate::features::reference`]);
//! 2. waits for the extension to answer `/ping` (at most `LOCKBOX_EXEC_WAIT_MS`);
//! 3. resolves every reference of every variable in one round of batch reads through the
//!    extension ([`resolve`] over [`client::LocalApi`]), so the values come from its
//!    prefetched cache;
//! 4. waits, within the same deadline, for the files `LOCKBOX_RENDER` names;
//! 5. `exec`s the runtime with its arguments unchanged and the variables replaced: no
//!    process of the wrapper's stays behind.
//!
//! Variables without references are passed through byte for byte. A reference that is
//! malformed or cannot be resolved stops the wrapper with a message naming the variable and
//! the reference (never a value), reported to Lambda as the runtime's init error, unless
//! `LOCKBOX_EXEC_ON_ERROR=keep`, which leaves such a variable as it was.

use std::ffi::OsString;
use std::fmt;
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::time::Instant;
use zeroize::Zeroizing;

pub mod client;
pub mod settings;

use client::LocalApi;
pub use settings::{ExecConfig, OnError};

use crate::config::{ConfigError, LogLevel, RawConfig};
use crate::features::reference::resolve::{self, ResolveError};
use crate::features::reference::{self, ReferenceError, Template};

/// Bound on the round of reads, on top of the wait for the extension: the extension's own
/// backend timeout is 10 s, Lambda's whole Init 10 s.
pub const RESOLVE_TIMEOUT: Duration = Duration::from_secs(9);
/// Pause between looks for a rendered file.
const FILE_POLL: Duration = Duration::from_millis(10);
/// The error type reported to Lambda when the wrapper stops.
const INIT_ERROR_TYPE: &str = "Lockbox.ExecFailed";
/// Bound on reporting the init error to the Runtime API.
const REPORT_TIMEOUT: Duration = Duration::from_secs(2);

/// Why one variable cannot be resolved. Names the variable and the reference, never a value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VariableError {
    /// A reference in it is malformed.
    #[error("{variable}: {error}")]
    Malformed {
        /// The variable's name.
        variable: String,
        /// The reference and what is wrong with it.
        error: ReferenceError,
    },
    /// A reference in it could not be resolved.
    #[error("{variable}: reference {reference:?}: {error}")]
    Unresolved {
        /// The variable's name.
        variable: String,
        /// The reference as written.
        reference: String,
        /// Why.
        error: ResolveError,
    },
    /// Its value mentions a reference but is not UTF-8.
    #[error("{variable}: the value is not UTF-8 text, so its references cannot be read")]
    NotUtf8 {
        /// The variable's name.
        variable: String,
    },
    /// A resolved value holds a NUL byte, which no environment variable can.
    #[error("{variable}: reference {reference:?} resolves to a value with a NUL byte")]
    Nul {
        /// The variable's name.
        variable: String,
        /// The reference as written.
        reference: String,
    },
}

/// Why the wrapper stopped instead of starting the runtime.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// No runtime to start.
    #[error(
        "usage: lockbox-exec RUNTIME [ARGS...] (set AWS_LAMBDA_EXEC_WRAPPER=/opt/lockbox-exec)"
    )]
    Usage,
    /// A setting is unusable.
    #[error("invalid configuration: {0}")]
    Config(#[from] ConfigError),
    /// Variables could not be resolved (all of them are listed).
    #[error("{}", Unresolved(.0))]
    Unresolved(Vec<VariableError>),
    /// The runtime could not be started.
    #[error("could not start {program}: {source}")]
    Exec {
        /// The runtime's path, as given.
        program: String,
        /// The OS error.
        source: std::io::Error,
    },
}

struct Unresolved<'a>(&'a [VariableError]);

impl fmt::Display for Unresolved<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let count = self.0.len();
        let plural = if count == 1 { "" } else { "s" };
        write!(
            f,
            "{count} environment variable{plural} could not be resolved: "
        )?;
        for (i, error) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

impl ExecError {
    /// The process's exit status: 2 for a usage error, 126/127 as a shell would for a
    /// runtime that cannot be run or found, 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            ExecError::Usage => 2,
            ExecError::Exec { source, .. } if source.kind() == std::io::ErrorKind::NotFound => 127,
            ExecError::Exec { .. } => 126,
            _ => 1,
        }
    }
}

/// A variable whose value has references.
struct Referencing {
    name: OsString,
    template: Template,
}

/// Finds the variables with references. Variables that mention none are left out (and so
/// pass through untouched); malformed ones are errors.
fn find_references(vars: &[(OsString, OsString)]) -> (Vec<Referencing>, Vec<VariableError>) {
    let mut found = Vec::new();
    let mut errors = Vec::new();
    for (name, value) in vars {
        if !reference::mentions_reference(value.as_bytes()) {
            continue;
        }
        let variable = name.to_string_lossy().into_owned();
        let Some(text) = value.to_str() else {
            errors.push(VariableError::NotUtf8 { variable });
            continue;
        };
        match reference::parse(text) {
            Ok(template) if template.is_plain() => {}
            Ok(template) => found.push(Referencing {
                name: name.clone(),
                template,
            }),
            Err(error) => errors.push(VariableError::Malformed { variable, error }),
        }
    }
    (found, errors)
}

/// Does everything up to the `exec` of the runtime, which does not return: so this returns
/// only why the runtime was not started. `args` are the wrapper's own (`args[0]` is the
/// wrapper), `vars` its environment.
pub async fn run(args: Vec<OsString>, vars: Vec<(OsString, OsString)>) -> ExecError {
    let Some(program) = args.get(1).cloned() else {
        return ExecError::Usage;
    };
    let config = match ExecConfig::from_raw(&raw_config(&vars)) {
        Ok(config) => config,
        Err(err) => return err.into(),
    };
    let started = Instant::now();
    let deadline = started + config.wait;
    let (referencing, mut errors) = find_references(&vars);
    let mut replaced: Vec<(OsString, Zeroizing<String>)> = Vec::new();
    if !referencing.is_empty() {
        let (values, failed) = resolve_variables(&config, &referencing, deadline).await;
        replaced = values;
        errors.extend(failed);
    }
    if !errors.is_empty() {
        match config.on_error {
            OnError::Fail => return ExecError::Unresolved(errors),
            OnError::Keep => {
                for error in &errors {
                    tracing::warn!(
                        problem = %error,
                        "lockbox-exec left a variable as it was (LOCKBOX_EXEC_ON_ERROR=keep)"
                    );
                }
            }
        }
    }
    if !replaced.is_empty() || !errors.is_empty() {
        tracing::info!(
            resolved = replaced.len(),
            kept = errors.len(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "lockbox-exec resolved the environment"
        );
    }
    wait_for_files(&config, deadline).await;

    let mut command = Command::new(&program);
    command.args(&args[2..]);
    for (name, value) in &replaced {
        command.env(name, value.as_str());
    }
    drop(replaced);
    // Only returns on failure.
    let source = command.exec();
    ExecError::Exec {
        program: program.to_string_lossy().into_owned(),
        source,
    }
}

/// The settings, from the UTF-8 variables (others cannot be settings).
fn raw_config(vars: &[(OsString, OsString)]) -> RawConfig {
    RawConfig::from_pairs(
        vars.iter()
            .filter_map(|(k, v)| Some((k.to_str()?.to_owned(), v.to_str()?.to_owned()))),
    )
}

/// Waits for the extension and resolves every variable's references in one round; the
/// new values, and the variables that could not be resolved.
async fn resolve_variables(
    config: &ExecConfig,
    referencing: &[Referencing],
    deadline: Instant,
) -> (Vec<(OsString, Zeroizing<String>)>, Vec<VariableError>) {
    let unresolved = |error: ResolveError| -> Vec<VariableError> {
        referencing
            .iter()
            .map(|r| {
                let written = r.template.references().next().map_or("", |(w, _)| w);
                VariableError::Unresolved {
                    variable: r.name.to_string_lossy().into_owned(),
                    reference: written.to_owned(),
                    error: error.clone(),
                }
            })
            .collect()
    };
    let Some(token) = config.token.clone() else {
        return (
            Vec::new(),
            unresolved(ResolveError::Unreachable(
                "no request token: neither AWS_SESSION_TOKEN nor \
                 AWS_CONTAINER_AUTHORIZATION_TOKEN is set"
                    .into(),
            )),
        );
    };
    let api = LocalApi::new(config.port, token, RESOLVE_TIMEOUT);
    if !api.wait_ready(deadline).await {
        return (
            Vec::new(),
            unresolved(ResolveError::Unreachable(format!(
                "nothing answered on 127.0.0.1:{} within LOCKBOX_EXEC_WAIT_MS={} \
                 (is the lockbox layer attached?)",
                config.port,
                config.wait.as_millis()
            ))),
        );
    }
    let references = referencing
        .iter()
        .flat_map(|r| r.template.references().map(|(_, reference)| reference));
    let resolved =
        match tokio::time::timeout(RESOLVE_TIMEOUT, resolve::resolve(&api, references)).await {
            Ok(resolved) => resolved,
            Err(_) => {
                return (
                    Vec::new(),
                    unresolved(ResolveError::Unreachable(format!(
                        "the values were not read within {} ms",
                        RESOLVE_TIMEOUT.as_millis()
                    ))),
                )
            }
        };

    let mut values = Vec::new();
    let mut errors = Vec::new();
    for r in referencing {
        let variable = || r.name.to_string_lossy().into_owned();
        let value = r.template.substitute(|written, reference| {
            let value = resolved
                .value(reference)
                .map_err(|error| VariableError::Unresolved {
                    variable: variable(),
                    reference: written.to_owned(),
                    error,
                })?;
            if value.contains('\0') {
                return Err(VariableError::Nul {
                    variable: variable(),
                    reference: written.to_owned(),
                });
            }
            Ok(value)
        });
        match value {
            Ok(value) => {
                tracing::debug!(variable = %variable(), "resolved");
                values.push((r.name.clone(), value));
            }
            Err(error) => errors.push(error),
        }
    }
    (values, errors)
}

/// Waits until every file the extension renders exists (it is renamed into place whole),
/// or the deadline passes, then goes on either way: the extension reports its own failures.
async fn wait_for_files(config: &ExecConfig, deadline: Instant) {
    let dests: Vec<&Path> = config
        .render
        .targets
        .iter()
        .map(|t| t.dest.as_path())
        .collect();
    if dests.is_empty() {
        return;
    }
    loop {
        let missing: Vec<&Path> = dests.iter().copied().filter(|d| !d.exists()).collect();
        if missing.is_empty() {
            return;
        }
        if Instant::now() + FILE_POLL >= deadline {
            for dest in missing {
                tracing::warn!(
                    dest = %dest.display(),
                    "lockbox-exec: the rendered file is not there yet; starting the runtime anyway"
                );
            }
            return;
        }
        tokio::time::sleep(FILE_POLL).await;
    }
}

/// Tells Lambda why Init failed, as a runtime does (`/runtime/init/error`), so the message
/// appears in the function's error and not only in its logs. Best effort.
pub async fn report_init_error(err: &ExecError) {
    let Some(api) = std::env::var_os("AWS_LAMBDA_RUNTIME_API") else {
        return;
    };
    let api = api.to_string_lossy().into_owned();
    let body = serde_json::json!({
        "errorMessage": err.to_string(),
        "errorType": INIT_ERROR_TYPE,
        "stackTrace": [],
    });
    let request = hyper::Request::post(format!("http://{api}/2018-06-01/runtime/init/error"))
        .header("lambda-runtime-function-error-type", INIT_ERROR_TYPE)
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body.to_string())));
    let Ok(request) = request else {
        return;
    };
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    match tokio::time::timeout(REPORT_TIMEOUT, client.request(request)).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "could not report the init error to Lambda"),
        Err(_) => tracing::warn!("reporting the init error to Lambda timed out"),
    }
}

/// Installs the wrapper's logging: JSON lines like the extension's, but on stderr, as
/// stdout belongs to the runtime it becomes.
pub fn init_logging(level: LogLevel) {
    crate::logging::init_to(level, "lockbox_exec", std::io::stderr);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::ffi::OsStringExt as _;

    fn vars(pairs: &[(&str, &str)]) -> Vec<(OsString, OsString)> {
        pairs
            .iter()
            .map(|(k, v)| (OsString::from(k), OsString::from(v)))
            .collect()
    }

    fn args(list: &[&str]) -> Vec<OsString> {
        list.iter().map(OsString::from).collect()
    }

    #[test]
    fn only_variables_with_references_are_picked() {
        let mut all = vars(&[
            ("PLAIN", "postgres://u:p@h/db"),
            ("MUSTACHE", "{{name}}"),
            ("DB", "postgres://app:{{resolve:ssm-secure:/db/pw}}@h/db"),
            ("BAD", "{{resolve:ssm:/a:latest}}"),
            ("EMPTY", ""),
        ]);
        all.push((
            OsString::from("BINARY"),
            OsString::from_vec(b"\xff{{ssm:/x}}".to_vec()),
        ));
        all.push((
            OsString::from("BINARY_PLAIN"),
            OsString::from_vec(b"\xff\xfe".to_vec()),
        ));
        let (found, errors) = find_references(&all);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].name, "DB");
        assert_eq!(errors.len(), 2);
        let messages: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert!(messages[0].starts_with("BAD: reference \"{{resolve:ssm:/a:latest}}\""));
        assert!(messages[1].starts_with("BINARY: the value is not UTF-8"));
    }

    #[tokio::test]
    async fn without_a_runtime_it_is_a_usage_error() {
        let err = run(args(&["lockbox-exec"]), vars(&[])).await;
        assert!(matches!(err, ExecError::Usage));
        assert_eq!(err.exit_code(), 2);
    }

    #[tokio::test]
    async fn a_bad_setting_is_named() {
        let err = run(
            args(&["lockbox-exec", "/nonexistent/runtime"]),
            vars(&[("LOCKBOX_EXEC_ON_ERROR", "ignore")]),
        )
        .await;
        let message = err.to_string();
        assert!(message.contains("LOCKBOX_EXEC_ON_ERROR") && message.contains("ignore"));
        assert_eq!(err.exit_code(), 1);
    }

    /// A port nothing listens on.
    fn closed_port() -> String {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port().to_string()
    }

    #[tokio::test]
    async fn no_extension_fails_naming_every_variable_within_the_wait() {
        let port = closed_port();
        let started = Instant::now();
        let err = run(
            args(&["lockbox-exec", "/nonexistent/runtime"]),
            vars(&[
                ("AWS_SESSION_TOKEN", "tok"),
                ("PARAMETERS_SECRETS_EXTENSION_HTTP_PORT", &port),
                ("LOCKBOX_EXEC_WAIT_MS", "200"),
                ("A", "{{resolve:ssm:/a}}"),
                ("B", "x{{resolve:secretsmanager:s:SecretString:k}}"),
                ("C", "{{ssm:/c:x}}"),
                ("PLAIN", "value"),
            ]),
        )
        .await;
        assert!(started.elapsed() < Duration::from_secs(3));
        let ExecError::Unresolved(errors) = &err else {
            panic!("{err}");
        };
        assert_eq!(errors.len(), 3);
        let message = err.to_string();
        assert!(message.starts_with("3 environment variables could not be resolved"));
        assert!(
            message.contains("A: reference \"{{resolve:ssm:/a}}\""),
            "{message}"
        );
        assert!(message.contains(&format!("127.0.0.1:{port}")), "{message}");
        assert!(message.contains("LOCKBOX_EXEC_WAIT_MS=200"), "{message}");
        assert!(message.contains("B: reference \"{{resolve:secretsmanager:s:SecretString:k}}\""));
        assert!(
            message.contains("C: reference \"{{ssm:/c:x}}\""),
            "{message}"
        );
        assert!(!message.contains("PLAIN"));
        assert_eq!(err.exit_code(), 1);
    }

    #[tokio::test]
    async fn keep_leaves_variables_and_starts_the_runtime() {
        let err = run(
            args(&["lockbox-exec", "/nonexistent/runtime", "arg"]),
            vars(&[
                ("AWS_SESSION_TOKEN", "tok"),
                ("PARAMETERS_SECRETS_EXTENSION_HTTP_PORT", &closed_port()),
                ("LOCKBOX_EXEC_WAIT_MS", "0"),
                ("LOCKBOX_EXEC_ON_ERROR", "keep"),
                ("A", "{{resolve:ssm:/a}}"),
                ("BAD", "{{resolve:nope:x}}"),
            ]),
        )
        .await;
        // It went as far as starting the runtime, which does not exist here.
        let ExecError::Exec { program, source } = &err else {
            panic!("{err}");
        };
        assert_eq!(program, "/nonexistent/runtime");
        assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
        assert_eq!(err.exit_code(), 127);
    }

    #[tokio::test]
    async fn with_no_references_the_extension_is_not_needed() {
        let started = Instant::now();
        let err = run(
            args(&["lockbox-exec", "/nonexistent/runtime"]),
            vars(&[
                ("PARAMETERS_SECRETS_EXTENSION_HTTP_PORT", &closed_port()),
                ("PLAIN", "value {{x}}"),
            ]),
        )
        .await;
        assert!(matches!(err, ExecError::Exec { .. }), "{err}");
        assert!(started.elapsed() < Duration::from_secs(1));
    }
}
