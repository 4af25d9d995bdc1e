//! Configuration in two stages: [`RawConfig`] holds the environment's strings as they are,
//! [`RawConfig::validate`] turns them into a typed [`Config`] or a [`ConfigError`] that names
//! the variable, the value and what is allowed.
//!
//! Variable names and defaults are those of the AWS Parameters and Secrets Lambda Extension,
//! so a function can swap layers without touching its configuration. Ranges are wider where
//! users asked for more (cache size, TTL).

use std::collections::HashMap;
use std::fmt;
use std::num::NonZeroUsize;
use std::time::Duration;

use lockbox_aws::SessionName;

use crate::aws::SourceSettings;
use crate::cache::CacheSettings;
use crate::domain::mode::LambdaMode;
use crate::domain::{AskedScope, ParameterName, RoleArn, RolePolicy};
use crate::features::prefetch::{PlanError, Planned, PrefetchEntry, PrefetchPlan};
use crate::features::render::{RenderPlan, RenderPlanError, DEFAULT_RENDER_ROOT};
use crate::http::query::{parse_parameter, parse_scope};
use crate::http::{AuthToken, ServerLimits};
use crate::metrics::MetricsSettings;

/// Port the AWS layer listens on; function code hard-codes it, so it is ours too.
pub const DEFAULT_PORT: u16 = 2773;
/// Entries kept at most, parameters and secrets together.
pub const DEFAULT_CACHE_SIZE: usize = 1000;
/// The AWS layer stops at 1000; a function with many values needs more.
pub const MAX_CACHE_SIZE: usize = 100_000;
/// How long a value is served from the cache before it is fetched again.
pub const DEFAULT_TTL: Duration = Duration::from_secs(300);
/// One day: past that a "cache" is a stale copy nobody meant to keep.
pub const MAX_TTL_SECS: u64 = 86_400;
/// Concurrent AWS requests per backend client, as in the AWS layer.
pub const DEFAULT_MAX_CONNECTIONS: usize = 3;
/// Used when a `*_TIMEOUT_MILLIS` variable is 0. The AWS layer waits forever there; a
/// function that waits forever only learns of the outage from its own timeout, so lockbox
/// gives up after this and answers 504 (or a stale value, where one is allowed).
pub const DEFAULT_BACKEND_TIMEOUT: Duration = Duration::from_secs(10);
/// How long Init waits for prefetch: well inside Lambda's 10 s Init limit.
pub const DEFAULT_PREFETCH_TIMEOUT: Duration = Duration::from_millis(2000);
/// Refresh entries in the last fifth of their TTL.
pub const DEFAULT_REFRESH_AHEAD: f64 = 0.2;
/// Each entry's TTL is drawn within 10 % of the configured TTL, either side: environments
/// that started together (a scale-out) then expire and refresh their values over a fifth
/// of the TTL instead of in the same second, and a value is never kept much longer than
/// asked.
pub const DEFAULT_TTL_JITTER: f64 = 0.1;
/// Upper bound of `LOCKBOX_TTL_JITTER`: half the TTL either side.
pub const MAX_TTL_JITTER: f64 = 0.5;
/// Connections from function code served at once; more get 429.
pub const DEFAULT_MAX_CLIENT_CONNECTIONS: usize = 128;
/// Time a client has to send a request head (idle keep-alive included); hyper's default.
pub const DEFAULT_CLIENT_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest request head accepted.
pub const MAX_HEADER_BYTES: usize = 16 * 1024;
/// Serve a value up to an hour past its TTL while AWS is unreachable.
pub const DEFAULT_MAX_STALE: Duration = Duration::from_secs(3600);

/// Roles one environment holds credentials for at most: each is a set of clients and an
/// STS session, and a function that reads through more is most likely building role ARNs
/// from input.
pub const DEFAULT_MAX_ROLES: usize = 16;
/// Upper bound of `LOCKBOX_MAX_ROLES`.
pub const MAX_MAX_ROLES: u64 = 100;

/// The variables read, in the order they are documented.
pub const VARIABLES: &[&str] = &[
    "PARAMETERS_SECRETS_EXTENSION_CACHE_ENABLED",
    "PARAMETERS_SECRETS_EXTENSION_CACHE_SIZE",
    "PARAMETERS_SECRETS_EXTENSION_HTTP_PORT",
    "PARAMETERS_SECRETS_EXTENSION_MAX_CONNECTIONS",
    "PARAMETERS_SECRETS_EXTENSION_LOG_LEVEL",
    "SSM_PARAMETER_STORE_TTL",
    "SECRETS_MANAGER_TTL",
    "SSM_PARAMETER_STORE_TIMEOUT_MILLIS",
    "SECRETS_MANAGER_TIMEOUT_MILLIS",
    "LOCKBOX_PREFETCH",
    "LOCKBOX_PREFETCH_TIMEOUT_MS",
    "LOCKBOX_PREFETCH_REQUIRED",
    "LOCKBOX_REFRESH_AHEAD",
    "LOCKBOX_MAX_STALE",
    "LOCKBOX_TTL_JITTER",
    "LOCKBOX_MAX_CLIENT_CONNECTIONS",
    "LOCKBOX_CLIENT_TIMEOUT_MS",
    "LOCKBOX_ALLOWED_ROLES",
    "LOCKBOX_ACCOUNT_ROLES",
    "LOCKBOX_MAX_ROLES",
    "LOCKBOX_RENDER",
    "LOCKBOX_RENDER_ROOT",
    "LOCKBOX_EXEC_WAIT_MS",
    "LOCKBOX_EXEC_ON_ERROR",
    "LOCKBOX_EXEC_SNAPSTART",
    "LOCKBOX_METRICS",
    "LOCKBOX_METRICS_NAMESPACE",
    "POWERTOOLS_METRICS_NAMESPACE",
    "AWS_LAMBDA_INITIALIZATION_TYPE",
    "AWS_LAMBDA_FUNCTION_NAME",
    "AWS_SESSION_TOKEN",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN",
];

/// The environment's values, unvalidated. Only the variables in [`VARIABLES`] are kept.
#[derive(Clone, Default)]
pub struct RawConfig {
    vars: HashMap<String, String>,
}

impl fmt::Debug for RawConfig {
    // The tokens are credentials: never printed.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut names: Vec<_> = self.vars.keys().collect();
        names.sort();
        f.debug_struct("RawConfig").field("set", &names).finish()
    }
}

/// Log verbosity, `PARAMETERS_SECRETS_EXTENSION_LOG_LEVEL`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLevel {
    /// Everything, including the effective configuration at start.
    Debug,
    /// Lifecycle steps and fetch failures.
    Info,
    /// Fetch failures and degraded service only.
    Warn,
    /// Errors only.
    Error,
    /// Nothing at all.
    None,
}

/// The validated configuration the extension runs with.
#[derive(Clone)]
pub struct Config {
    /// Whether values are cached at all (`false` forwards every request to AWS).
    pub cache_enabled: bool,
    /// Entries kept at most; 0 bypasses the cache.
    pub cache_size: usize,
    /// Loopback port of the HTTP server.
    pub port: u16,
    /// Concurrent AWS requests per backend.
    pub max_connections: NonZeroUsize,
    /// Log verbosity.
    pub log_level: LogLevel,
    /// TTL of SSM parameters; zero bypasses the cache for them.
    pub ssm_ttl: Duration,
    /// TTL of Secrets Manager secrets; zero bypasses the cache for them.
    pub secrets_ttl: Duration,
    /// Bound on one SSM request, retries included.
    pub ssm_timeout: Duration,
    /// Bound on one Secrets Manager request, retries included.
    pub secrets_timeout: Duration,
    /// The value function code must send in `X-Aws-Parameters-Secrets-Token`.
    pub token: AuthToken,
    /// What to load during Init.
    pub prefetch: PrefetchPlan,
    /// How long Init waits for prefetch.
    pub prefetch_timeout: Duration,
    /// Whether Init fails when prefetch could not load everything.
    pub prefetch_required: bool,
    /// Fraction of the TTL at its end during which read entries are refreshed on INVOKE;
    /// 0 turns refresh-ahead off.
    pub refresh_ahead: f64,
    /// How long past its TTL an entry may be served while AWS fails transiently.
    pub max_stale: Duration,
    /// Fraction of the TTL, either side, within which each entry's TTL is drawn.
    pub ttl_jitter: f64,
    /// Connections from function code served at once.
    pub max_client_connections: usize,
    /// Time a client has to send a request head, and to take any more of a response.
    pub client_timeout: Duration,
    /// The kind of environment (`AWS_LAMBDA_INITIALIZATION_TYPE`). Under SnapStart, Init
    /// runs once for a snapshot that is restored later, so nothing fetched during Init may
    /// be served after a restore; on Managed Instances only SHUTDOWN can be registered for.
    pub mode: LambdaMode,
    /// Files to render from templates (`LOCKBOX_RENDER`), under `LOCKBOX_RENDER_ROOT`.
    pub render: RenderPlan,
    /// Which roles may be read through, the role for each other account, and how many.
    pub roles: RolePolicy,
    /// The STS session name for assumed roles: shows in the owning account's CloudTrail
    /// which function read through its role.
    pub role_session_name: SessionName,
    /// Whether and where metrics are written (`LOCKBOX_METRICS`, the namespace).
    pub metrics: MetricsSettings,
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("cache_enabled", &self.cache_enabled)
            .field("cache_size", &self.cache_size)
            .field("port", &self.port)
            .field("max_connections", &self.max_connections)
            .field("log_level", &self.log_level)
            .field("ssm_ttl", &self.ssm_ttl)
            .field("secrets_ttl", &self.secrets_ttl)
            .field("ssm_timeout", &self.ssm_timeout)
            .field("secrets_timeout", &self.secrets_timeout)
            .field("token", &self.token)
            .field("prefetch", &self.prefetch)
            .field("prefetch_timeout", &self.prefetch_timeout)
            .field("prefetch_required", &self.prefetch_required)
            .field("refresh_ahead", &self.refresh_ahead)
            .field("max_stale", &self.max_stale)
            .field("ttl_jitter", &self.ttl_jitter)
            .field("max_client_connections", &self.max_client_connections)
            .field("client_timeout", &self.client_timeout)
            .field("mode", &self.mode)
            .field("render", &self.render)
            .field("roles", &self.roles)
            .field("role_session_name", &self.role_session_name)
            .field("metrics", &self.metrics)
            .finish()
    }
}

impl Config {
    /// What the cache is built with.
    pub fn cache_settings(&self) -> CacheSettings {
        CacheSettings {
            enabled: self.cache_enabled,
            capacity: self.cache_size,
            parameter_ttl: self.ssm_ttl,
            secret_ttl: self.secrets_ttl,
            max_stale: self.max_stale,
        }
    }

    /// What the AWS clients are built with.
    pub fn source_settings(&self) -> SourceSettings {
        SourceSettings {
            ssm_timeout: self.ssm_timeout,
            secrets_timeout: self.secrets_timeout,
            max_connections: self.max_connections,
        }
    }

    /// What the server holds function code's connections to.
    pub fn server_limits(&self) -> ServerLimits {
        ServerLimits {
            max_connections: self.max_client_connections,
            header_timeout: self.client_timeout,
            write_timeout: self.client_timeout,
            max_header_bytes: MAX_HEADER_BYTES,
        }
    }

    /// The bound on one AWS read of either service: what a refresh round or a render after
    /// one may take.
    pub fn backend_bound(&self) -> Duration {
        self.ssm_timeout.max(self.secrets_timeout)
    }
}

/// A configuration value that cannot be used. The message names the variable, the value and
/// what is allowed, because it is all a user sees when their function fails to start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A variable holds something outside its allowed set or range.
    #[error("{name}={value:?} is not valid: expected {allowed}")]
    Invalid {
        /// The variable's name.
        name: &'static str,
        /// The offending value (never a credential: tokens are not validated this way).
        value: String,
        /// What would have been accepted.
        allowed: &'static str,
    },
    /// Neither token variable is set, so no request could ever be authenticated.
    /// `LOCKBOX_PREFETCH` has an entry that cannot be understood.
    #[error("LOCKBOX_PREFETCH {0}")]
    Prefetch(#[from] PlanError),
    /// `LOCKBOX_RENDER` has an entry that cannot be used.
    #[error("LOCKBOX_RENDER {0}")]
    Render(#[from] RenderPlanError),
    /// An entry of a list variable (`LOCKBOX_ALLOWED_ROLES`, `LOCKBOX_ACCOUNT_ROLES`) that
    /// cannot be used, or roles beyond `LOCKBOX_MAX_ROLES`.
    #[error("{name} entry {entry:?}: {reason}")]
    Entry {
        /// The variable's name.
        name: &'static str,
        /// The entry as written.
        entry: String,
        /// What is wrong with it.
        reason: String,
    },
    #[error(
        "no request token: neither AWS_SESSION_TOKEN nor AWS_CONTAINER_AUTHORIZATION_TOKEN is set \
         (Lambda sets one; for local runs export AWS_SESSION_TOKEN)"
    )]
    MissingToken,
}

impl RawConfig {
    /// Reads the variables from the process environment.
    pub fn from_env() -> Self {
        Self::from_pairs(std::env::vars())
    }

    /// Keeps the known variables from any list of pairs (tests pass their own).
    pub fn from_pairs<I, K, V>(pairs: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        let vars = pairs
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .filter(|(k, _)| VARIABLES.contains(&k.as_str()))
            .collect();
        Self { vars }
    }

    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        // An empty variable is treated as unset: templates often render absent values as "".
        self.vars
            .get(name)
            .map(|v| v.trim())
            .filter(|v| !v.is_empty())
    }

    /// The log level alone, read leniently: logging starts before the configuration is
    /// validated, so that a validation failure can be logged.
    pub fn log_level_or_default(&self) -> LogLevel {
        self.log_level().unwrap_or(LogLevel::Info)
    }

    fn log_level(&self) -> Result<LogLevel, ConfigError> {
        const NAME: &str = "PARAMETERS_SECRETS_EXTENSION_LOG_LEVEL";
        let Some(value) = self.get(NAME) else {
            return Ok(LogLevel::Info);
        };
        match value.to_ascii_uppercase().as_str() {
            "DEBUG" | "TRACE" => Ok(LogLevel::Debug),
            "INFO" => Ok(LogLevel::Info),
            "WARN" | "WARNING" => Ok(LogLevel::Warn),
            "ERROR" => Ok(LogLevel::Error),
            "NONE" | "OFF" => Ok(LogLevel::None),
            _ => Err(invalid(
                NAME,
                value,
                "one of DEBUG, INFO, WARN, ERROR, NONE",
            )),
        }
    }

    fn bool(&self, name: &'static str, default: bool) -> Result<bool, ConfigError> {
        match self.get(name) {
            None => Ok(default),
            Some(v) if v.eq_ignore_ascii_case("true") => Ok(true),
            Some(v) if v.eq_ignore_ascii_case("false") => Ok(false),
            Some(v) => Err(invalid(name, v, "TRUE or FALSE")),
        }
    }

    pub(crate) fn number(
        &self,
        name: &'static str,
        default: u64,
        range: std::ops::RangeInclusive<u64>,
        allowed: &'static str,
    ) -> Result<u64, ConfigError> {
        let Some(value) = self.get(name) else {
            return Ok(default);
        };
        match value.parse::<u64>() {
            Ok(n) if range.contains(&n) => Ok(n),
            _ => Err(invalid(name, value, allowed)),
        }
    }

    fn timeout(&self, name: &'static str) -> Result<Duration, ConfigError> {
        let millis = self.number(
            name,
            0,
            0..=u64::from(u32::MAX),
            "a whole number of milliseconds (0 = lockbox's default of 10000)",
        )?;
        Ok(if millis == 0 {
            DEFAULT_BACKEND_TIMEOUT
        } else {
            Duration::from_millis(millis)
        })
    }

    pub(crate) fn token(&self) -> Result<AuthToken, ConfigError> {
        // SnapStart functions have no session token; Lambda sets the container token instead.
        // When a SnapStart environment has both, function code may send either.
        let session = self.get("AWS_SESSION_TOKEN");
        let container = self.get("AWS_CONTAINER_AUTHORIZATION_TOKEN");
        match (session, container) {
            (Some(session), Some(container)) if self.mode().is_snap_start() => {
                Ok(AuthToken::new(session).or(container))
            }
            (Some(token), _) | (None, Some(token)) => Ok(AuthToken::new(token)),
            (None, None) => Err(ConfigError::MissingToken),
        }
    }

    /// The kind of environment, `AWS_LAMBDA_INITIALIZATION_TYPE`.
    pub fn mode(&self) -> LambdaMode {
        LambdaMode::from_initialization_type(self.get("AWS_LAMBDA_INITIALIZATION_TYPE"))
    }

    /// Validates every variable. The first bad one is reported.
    pub fn validate(&self) -> Result<Config, ConfigError> {
        let ttl_allowed = "a whole number of seconds from 0 to 86400 (0 bypasses the cache)";
        let max_connections = self.number(
            "PARAMETERS_SECRETS_EXTENSION_MAX_CONNECTIONS",
            DEFAULT_MAX_CONNECTIONS as u64,
            1..=1024,
            "a whole number from 1 to 1024",
        )?;
        Ok(Config {
            cache_enabled: self.bool("PARAMETERS_SECRETS_EXTENSION_CACHE_ENABLED", true)?,
            cache_size: self.number(
                "PARAMETERS_SECRETS_EXTENSION_CACHE_SIZE",
                DEFAULT_CACHE_SIZE as u64,
                0..=MAX_CACHE_SIZE as u64,
                "a whole number from 0 to 100000 (0 bypasses the cache)",
            )? as usize,
            port: self.number(
                "PARAMETERS_SECRETS_EXTENSION_HTTP_PORT",
                u64::from(DEFAULT_PORT),
                1..=65535,
                "a port number from 1 to 65535",
            )? as u16,
            max_connections: NonZeroUsize::new(max_connections as usize)
                .unwrap_or(NonZeroUsize::MIN),
            log_level: self.log_level()?,
            ssm_ttl: Duration::from_secs(self.number(
                "SSM_PARAMETER_STORE_TTL",
                DEFAULT_TTL.as_secs(),
                0..=MAX_TTL_SECS,
                ttl_allowed,
            )?),
            secrets_ttl: Duration::from_secs(self.number(
                "SECRETS_MANAGER_TTL",
                DEFAULT_TTL.as_secs(),
                0..=MAX_TTL_SECS,
                ttl_allowed,
            )?),
            ssm_timeout: self.timeout("SSM_PARAMETER_STORE_TIMEOUT_MILLIS")?,
            secrets_timeout: self.timeout("SECRETS_MANAGER_TIMEOUT_MILLIS")?,
            token: self.token()?,
            prefetch: parse_prefetch(self.get("LOCKBOX_PREFETCH").unwrap_or(""))?,
            prefetch_timeout: Duration::from_millis(self.number(
                "LOCKBOX_PREFETCH_TIMEOUT_MS",
                DEFAULT_PREFETCH_TIMEOUT.as_millis() as u64,
                0..=9_500,
                "a whole number of milliseconds from 0 to 9500 (Lambda's Init limit is 10 s)",
            )?),
            prefetch_required: self.bool("LOCKBOX_PREFETCH_REQUIRED", false)?,
            refresh_ahead: self.fraction("LOCKBOX_REFRESH_AHEAD", DEFAULT_REFRESH_AHEAD)?,
            max_stale: Duration::from_secs(self.number(
                "LOCKBOX_MAX_STALE",
                DEFAULT_MAX_STALE.as_secs(),
                0..=MAX_TTL_SECS,
                "a whole number of seconds from 0 to 86400 (0 never serves stale)",
            )?),
            ttl_jitter: self.ttl_jitter()?,
            max_client_connections: self.number(
                "LOCKBOX_MAX_CLIENT_CONNECTIONS",
                DEFAULT_MAX_CLIENT_CONNECTIONS as u64,
                1..=10_000,
                "a whole number from 1 to 10000",
            )? as usize,
            client_timeout: Duration::from_millis(self.number(
                "LOCKBOX_CLIENT_TIMEOUT_MS",
                DEFAULT_CLIENT_TIMEOUT.as_millis() as u64,
                100..=600_000,
                "a whole number of milliseconds from 100 to 600000",
            )?),
            mode: self.mode(),
            render: self.render()?,
            roles: RolePolicy::default(),
            role_session_name: self.role_session_name()?,
            metrics: self.metrics()?,
        })
        .and_then(|mut config| {
            config.roles = self.roles(&config.prefetch)?;
            Ok(config)
        })
    }

    /// `LOCKBOX_ALLOWED_ROLES`, `LOCKBOX_ACCOUNT_ROLES` and `LOCKBOX_MAX_ROLES`, with the
    /// roles that `LOCKBOX_PREFETCH` names.
    fn roles(&self, prefetch: &PrefetchPlan) -> Result<RolePolicy, ConfigError> {
        const ALLOWED: &str = "LOCKBOX_ALLOWED_ROLES";
        const ACCOUNTS: &str = "LOCKBOX_ACCOUNT_ROLES";
        let entry = |name: &'static str, entry: &str, reason: String| ConfigError::Entry {
            name,
            entry: entry.to_owned(),
            reason,
        };
        let max_roles = self.number(
            "LOCKBOX_MAX_ROLES",
            DEFAULT_MAX_ROLES as u64,
            1..=MAX_MAX_ROLES,
            "a whole number from 1 to 100",
        )? as usize;
        let mut allowed = Vec::new();
        for pattern in list(self.get(ALLOWED)) {
            if pattern == "*" {
                allowed.push(pattern.to_owned());
                continue;
            }
            match pattern.strip_suffix('*') {
                Some(prefix) if prefix.starts_with("arn:") => {}
                Some(_) => {
                    return Err(entry(
                        ALLOWED,
                        pattern,
                        "a prefix must start with arn: (or be * alone)".into(),
                    ))
                }
                None => {
                    RoleArn::parse(pattern)
                        .map_err(|why| entry(ALLOWED, pattern, why.to_string()))?;
                }
            }
            allowed.push(pattern.to_owned());
        }
        let mut account_roles = std::collections::BTreeMap::new();
        for pair in list(self.get(ACCOUNTS)) {
            let Some((account, role)) = pair.split_once('=') else {
                return Err(entry(ACCOUNTS, pair, "expected ACCOUNT=ROLE_ARN".into()));
            };
            let account = account.trim();
            if account.len() != 12 || !account.bytes().all(|b| b.is_ascii_digit()) {
                return Err(entry(
                    ACCOUNTS,
                    pair,
                    "the account is not a 12-digit account id".into(),
                ));
            }
            let role = RoleArn::parse(role.trim())
                .map_err(|why| entry(ACCOUNTS, pair, why.to_string()))?;
            if account_roles.insert(account.to_owned(), role).is_some() {
                return Err(entry(
                    ACCOUNTS,
                    pair,
                    "the account is given more than once".into(),
                ));
            }
        }
        let prefetch_roles = prefetch.roles();
        let mut configured: Vec<&RoleArn> = account_roles
            .values()
            .chain(prefetch_roles.iter())
            .collect();
        configured.sort();
        configured.dedup();
        if configured.len() > max_roles {
            return Err(ConfigError::Entry {
                name: "LOCKBOX_MAX_ROLES",
                entry: max_roles.to_string(),
                reason: format!(
                    "LOCKBOX_ACCOUNT_ROLES and LOCKBOX_PREFETCH name {} roles, more than the bound",
                    configured.len()
                ),
            });
        }
        Ok(RolePolicy {
            allowed,
            account_roles,
            prefetch_roles,
            max_roles,
        })
    }

    /// `lockbox-FUNCTION`, cut to STS's 64 characters, other characters than STS allows
    /// in a session name replaced by `-`, then checked by `lockbox_aws`'s rule (the
    /// rotator's): what is left always passes, and the check keeps it so.
    fn role_session_name(&self) -> Result<SessionName, ConfigError> {
        const FUNCTION: &str = "AWS_LAMBDA_FUNCTION_NAME";
        let function = self.get(FUNCTION).unwrap_or("function");
        let name: String = format!("lockbox-{function}")
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || "+=,.@_-".contains(c) {
                    c
                } else {
                    '-'
                }
            })
            .take(64)
            .collect();
        SessionName::parse(&name).map_err(|_| ConfigError::Invalid {
            name: FUNCTION,
            value: function.to_owned(),
            allowed: "a function name that makes an STS session name",
        })
    }

    /// `LOCKBOX_RENDER`, with destinations checked against `LOCKBOX_RENDER_ROOT`.
    pub(crate) fn render(&self) -> Result<RenderPlan, ConfigError> {
        const ROOT: &str = "LOCKBOX_RENDER_ROOT";
        let root = self.get(ROOT).unwrap_or(DEFAULT_RENDER_ROOT);
        let root_path = std::path::Path::new(root);
        let plain = root_path.components().all(|c| {
            matches!(
                c,
                std::path::Component::RootDir | std::path::Component::Normal(_)
            )
        });
        if !root_path.is_absolute() || !plain {
            return Err(invalid(
                ROOT,
                root,
                "an absolute directory path without '.' or '..' parts",
            ));
        }
        Ok(RenderPlan::parse(
            self.get("LOCKBOX_RENDER").unwrap_or(""),
            root_path,
        )?)
    }

    fn ttl_jitter(&self) -> Result<f64, ConfigError> {
        const NAME: &str = "LOCKBOX_TTL_JITTER";
        let Some(value) = self.get(NAME) else {
            return Ok(DEFAULT_TTL_JITTER);
        };
        match value.parse::<f64>() {
            Ok(f) if (0.0..=MAX_TTL_JITTER).contains(&f) => Ok(f),
            _ => Err(invalid(
                NAME,
                value,
                "a fraction of the TTL from 0 to 0.5 (0 expires every value exactly at its TTL)",
            )),
        }
    }

    /// `LOCKBOX_METRICS` and its namespace; the rules are the metrics module's.
    fn metrics(&self) -> Result<MetricsSettings, ConfigError> {
        MetricsSettings::parse(
            |name| self.get(name),
            self.get("AWS_LAMBDA_INITIALIZATION_TYPE"),
        )
        .map_err(|e| ConfigError::Invalid {
            name: e.name,
            value: e.value,
            allowed: e.allowed,
        })
    }

    fn fraction(&self, name: &'static str, default: f64) -> Result<f64, ConfigError> {
        let Some(value) = self.get(name) else {
            return Ok(default);
        };
        match value.parse::<f64>() {
            Ok(f) if (0.0..=0.9).contains(&f) => Ok(f),
            _ => Err(invalid(
                name,
                value,
                "a fraction from 0 to 0.9 (0 turns it off)",
            )),
        }
    }
}

/// The entries of a comma- or whitespace-separated list variable.
fn list(value: Option<&str>) -> impl Iterator<Item = &str> {
    value
        .unwrap_or("")
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|e| !e.is_empty())
}

pub(crate) fn invalid(name: &'static str, value: &str, allowed: &'static str) -> ConfigError {
    ConfigError::Invalid {
        name,
        value: value.to_owned(),
        allowed,
    }
}

/// Parses `LOCKBOX_PREFETCH`: a comma- or newline-separated list of `ssm:`, `ssm-path:` and `secret:`
/// entries, each optionally followed by `?roleArn=ARN&region=REGION` (neither SSM names
/// nor secret names may contain `?`). Blank entries are ignored.
pub fn parse_prefetch(raw: &str) -> Result<PrefetchPlan, PlanError> {
    let mut entries = Vec::new();
    for text in raw
        .split([',', '\n'])
        .map(str::trim)
        .filter(|t| !t.is_empty())
    {
        let error = |reason: &str| PlanError {
            entry: text.to_owned(),
            reason: reason.to_owned(),
        };
        let (spec, scope) = match text.split_once('?') {
            Some((spec, query)) => (spec, parse_scope(query).map_err(|e| error(&e.to_string()))?),
            None => (text, AskedScope::default()),
        };
        let (kind, target) = spec
            .split_once(':')
            .ok_or_else(|| error("expected ssm:NAME, ssm-path:/PATH/ or secret:ID"))?;
        if target.trim().is_empty() {
            return Err(error("nothing after the prefix"));
        }
        let entry = match kind.trim() {
            "ssm" => {
                // Same name and selector rules as the HTTP route.
                let encoded: String = percent_encoding::utf8_percent_encode(
                    target,
                    percent_encoding::NON_ALPHANUMERIC,
                )
                .collect();
                let query = format!("name={encoded}");
                let req = parse_parameter(Some(&query)).map_err(|e| error(&e.to_string()))?;
                PrefetchEntry::Parameter(ParameterName {
                    name: req.name.into_owned(),
                    selector: req.selector,
                })
            }
            "ssm-path" if target.starts_with('/') => PrefetchEntry::Path(target.to_owned()),
            "ssm-path" => return Err(error("a path starts with '/'")),
            "secret" => PrefetchEntry::Secret(target.to_owned()),
            _ => return Err(error("unknown prefix; use ssm:, ssm-path: or secret:")),
        };
        entries.push(Planned { entry, scope });
    }
    Ok(PrefetchPlan { entries })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Selector;

    fn raw(pairs: &[(&str, &str)]) -> RawConfig {
        let mut all = vec![("AWS_SESSION_TOKEN", "tok")];
        all.extend_from_slice(pairs);
        RawConfig::from_pairs(all.into_iter().map(|(k, v)| (k.to_owned(), v.to_owned())))
    }

    #[test]
    fn defaults_match_the_aws_layer() {
        let config = raw(&[]).validate().unwrap();
        assert!(config.cache_enabled);
        assert_eq!(config.cache_size, 1000);
        assert_eq!(config.port, 2773);
        assert_eq!(config.max_connections.get(), 3);
        assert_eq!(config.log_level, LogLevel::Info);
        assert_eq!(config.ssm_ttl, Duration::from_secs(300));
        assert_eq!(config.secrets_ttl, Duration::from_secs(300));
        assert_eq!(config.ssm_timeout, DEFAULT_BACKEND_TIMEOUT);
        assert_eq!(
            config.metrics.mode,
            crate::metrics::MetricsMode::Off,
            "metrics cost log ingestion: off unless asked for"
        );
    }

    #[test]
    fn accepts_wider_ranges_than_the_aws_layer() {
        let config = raw(&[
            ("PARAMETERS_SECRETS_EXTENSION_CACHE_SIZE", "100000"),
            ("SSM_PARAMETER_STORE_TTL", "2700"),
            ("SECRETS_MANAGER_TTL", "0"),
            ("PARAMETERS_SECRETS_EXTENSION_CACHE_ENABLED", "false"),
            ("PARAMETERS_SECRETS_EXTENSION_LOG_LEVEL", "debug"),
            ("SSM_PARAMETER_STORE_TIMEOUT_MILLIS", "250"),
        ])
        .validate()
        .unwrap();
        assert_eq!(config.cache_size, 100_000);
        assert_eq!(config.ssm_ttl, Duration::from_secs(2700));
        assert_eq!(config.secrets_ttl, Duration::ZERO);
        assert!(!config.cache_enabled);
        assert_eq!(config.log_level, LogLevel::Debug);
        assert_eq!(config.ssm_timeout, Duration::from_millis(250));
    }

    #[test]
    fn bad_values_name_variable_value_and_range() {
        let cases = [
            ("SSM_PARAMETER_STORE_TTL", "abc"),
            ("SSM_PARAMETER_STORE_TTL", "86401"),
            ("SECRETS_MANAGER_TTL", "-1"),
            ("PARAMETERS_SECRETS_EXTENSION_HTTP_PORT", "0"),
            ("PARAMETERS_SECRETS_EXTENSION_HTTP_PORT", "65536"),
            ("PARAMETERS_SECRETS_EXTENSION_CACHE_SIZE", "100001"),
            ("PARAMETERS_SECRETS_EXTENSION_CACHE_ENABLED", "yes"),
            ("PARAMETERS_SECRETS_EXTENSION_MAX_CONNECTIONS", "0"),
            ("PARAMETERS_SECRETS_EXTENSION_LOG_LEVEL", "LOUD"),
            ("SECRETS_MANAGER_TIMEOUT_MILLIS", "1.5"),
            ("LOCKBOX_PREFETCH_TIMEOUT_MS", "10000"),
            ("LOCKBOX_PREFETCH_REQUIRED", "maybe"),
            ("LOCKBOX_REFRESH_AHEAD", "1.5"),
            ("LOCKBOX_MAX_STALE", "x"),
            ("LOCKBOX_MAX_CLIENT_CONNECTIONS", "0"),
            ("LOCKBOX_CLIENT_TIMEOUT_MS", "5"),
            ("LOCKBOX_PREFETCH", "ssm:/a,bogus:thing"),
            ("LOCKBOX_METRICS", "prometheus"),
        ];
        for (name, value) in cases {
            let err = raw(&[(name, value)]).validate().unwrap_err();
            let message = err.to_string();
            assert!(message.contains(name), "{message}");
            let named = value.split(',').next_back().unwrap_or(value);
            assert!(message.contains(named), "{message}");
        }
    }

    #[test]
    fn render_entries_are_checked_against_the_root() {
        let config = raw(&[(
            "LOCKBOX_RENDER",
            "/var/task/app.tmpl:/tmp/app.conf, /var/task/b.tmpl:/tmp/deep/b.json",
        )])
        .validate()
        .unwrap();
        assert_eq!(config.render.targets.len(), 2);
        assert_eq!(
            config.render.targets[1].dest,
            std::path::Path::new("/tmp/deep/b.json")
        );
        let rooted = raw(&[
            ("LOCKBOX_RENDER", "/src/a:/work/out/a"),
            ("LOCKBOX_RENDER_ROOT", "/work/out"),
        ])
        .validate()
        .unwrap();
        assert_eq!(rooted.render.root, std::path::Path::new("/work/out"));
        assert!(raw(&[]).validate().unwrap().render.is_empty());

        for (value, entry, reason) in [
            ("/a:/etc/passwd", "/a:/etc/passwd", "under /tmp"),
            ("/a:/tmp", "/a:/tmp", "under /tmp"),
            ("/a:/tmp/../etc/x", "/a:/tmp/../etc/x", "'..'"),
            ("/a:tmp/x", "/a:tmp/x", "absolute"),
            ("a:/tmp/x", "a:/tmp/x", "SRC must be an absolute path"),
            ("/a", "/a", "SRC:DEST"),
            ("/a:/tmp/x,/b:/tmp/x", "/b:/tmp/x", "another entry"),
        ] {
            let message = raw(&[("LOCKBOX_RENDER", value)])
                .validate()
                .unwrap_err()
                .to_string();
            assert!(message.starts_with("LOCKBOX_RENDER"), "{message}");
            assert!(message.contains(entry), "{message}");
            assert!(message.contains(reason), "{message}");
        }
        let message = raw(&[("LOCKBOX_RENDER_ROOT", "tmp")])
            .validate()
            .unwrap_err()
            .to_string();
        assert!(message.contains("LOCKBOX_RENDER_ROOT") && message.contains("\"tmp\""));
    }

    #[test]
    fn under_snapstart_either_token_is_accepted_when_both_are_set() {
        let both = [
            ("AWS_SESSION_TOKEN", "session-tok"),
            ("AWS_CONTAINER_AUTHORIZATION_TOKEN", "container-tok"),
        ];
        let snap = both
            .iter()
            .copied()
            .chain([("AWS_LAMBDA_INITIALIZATION_TYPE", "snap-start")]);
        let token = RawConfig::from_pairs(snap).validate().unwrap().token;
        assert!(token.accepts(b"session-tok") && token.accepts(b"container-tok"));
        assert!(!token.accepts(b"") && !token.accepts(b"other"));
        assert_eq!(
            token.as_bytes(),
            b"session-tok",
            "the exec wrapper sends the session token"
        );
        // Elsewhere the session token alone, as the AWS layer does.
        let token = RawConfig::from_pairs(both).validate().unwrap().token;
        assert!(token.accepts(b"session-tok") && !token.accepts(b"container-tok"));
        assert!(!format!("{token:?}").contains("tok\""));
    }

    #[test]
    fn token_falls_back_to_the_snapstart_variable() {
        let pairs = [("AWS_CONTAINER_AUTHORIZATION_TOKEN", "snap")];
        let config = RawConfig::from_pairs(pairs).validate().unwrap();
        assert_eq!(config.token, AuthToken::new("snap"));
        let none: [(&str, &str); 0] = [];
        assert_eq!(
            RawConfig::from_pairs(none).validate().unwrap_err(),
            ConfigError::MissingToken
        );
    }

    #[test]
    fn roles_are_opt_in_bounded_and_named_when_wrong() {
        let config = raw(&[]).validate().unwrap();
        assert!(config.roles.allowed.is_empty() && config.roles.account_roles.is_empty());
        assert_eq!(config.roles.max_roles, DEFAULT_MAX_ROLES);
        assert_eq!(config.role_session_name.as_str(), "lockbox-function");

        let config = raw(&[
            (
                "LOCKBOX_ALLOWED_ROLES",
                "arn:aws-cn:iam::222222222222:role/a, arn:aws-us-gov:iam::333333333333:role/team/*",
            ),
            (
                "LOCKBOX_ACCOUNT_ROLES",
                "444444444444=arn:aws:iam::444444444444:role/reader",
            ),
            (
                "LOCKBOX_PREFETCH",
                "secret:db?roleArn=arn:aws:iam::555555555555:role/p&region=eu-west-1",
            ),
            ("LOCKBOX_MAX_ROLES", "2"),
            ("AWS_LAMBDA_FUNCTION_NAME", "orders api/v2"),
        ])
        .validate()
        .unwrap();
        assert_eq!(config.roles.allowed.len(), 2);
        assert_eq!(
            config.roles.account_roles["444444444444"].as_str(),
            "arn:aws:iam::444444444444:role/reader"
        );
        assert_eq!(config.roles.prefetch_roles.len(), 1);
        assert_eq!(config.role_session_name.as_str(), "lockbox-orders-api-v2");

        for (name, value, named) in [
            ("LOCKBOX_MAX_ROLES", "0", "LOCKBOX_MAX_ROLES"),
            ("LOCKBOX_MAX_ROLES", "101", "LOCKBOX_MAX_ROLES"),
            ("LOCKBOX_ALLOWED_ROLES", "reader", "reader"),
            ("LOCKBOX_ALLOWED_ROLES", "role/*", "role/*"),
            ("LOCKBOX_ACCOUNT_ROLES", "4444=arn:aws:iam::4444:role/r", "4444="),
            ("LOCKBOX_ACCOUNT_ROLES", "444444444444", "ACCOUNT=ROLE_ARN"),
            (
                "LOCKBOX_ACCOUNT_ROLES",
                "444444444444=arn:aws:iam::444444444444:role/a,444444444444=arn:aws:iam::444444444444:role/b",
                "more than once",
            ),
        ] {
            let message = raw(&[(name, value)]).validate().unwrap_err().to_string();
            assert!(message.contains(name) && message.contains(named), "{message}");
        }
        let message = raw(&[
            (
                "LOCKBOX_ACCOUNT_ROLES",
                "444444444444=arn:aws:iam::444444444444:role/a",
            ),
            (
                "LOCKBOX_PREFETCH",
                "ssm:/a?roleArn=arn:aws:iam::555555555555:role/b",
            ),
            ("LOCKBOX_MAX_ROLES", "1"),
        ])
        .validate()
        .unwrap_err()
        .to_string();
        assert!(
            message.contains("LOCKBOX_MAX_ROLES") && message.contains("2 roles"),
            "{message}"
        );
    }

    #[test]
    fn debug_output_never_contains_the_token() {
        let raw = raw(&[("AWS_SESSION_TOKEN", "super-secret-token")]);
        let config = raw.validate().unwrap();
        assert!(!format!("{raw:?}{config:?}").contains("super-secret-token"));
    }

    #[test]
    fn parses_every_kind_with_commas_and_newlines() {
        let plan = parse_prefetch(
            "ssm:/app/db/password, ssm:/app/flag:3\nssm-path:/app/prod/,\n secret:prod/db ,ssm:/app/x:Dev",
        )
        .unwrap();
        assert_eq!(plan.entries.len(), 5);
        assert_eq!(
            plan.entries[1].entry,
            PrefetchEntry::Parameter(ParameterName {
                name: "/app/flag".into(),
                selector: Some(Selector::Version(3)),
            })
        );
        assert_eq!(
            plan.entries[2].entry,
            PrefetchEntry::Path("/app/prod/".into())
        );
        assert_eq!(
            plan.entries[3].entry,
            PrefetchEntry::Secret("prod/db".into())
        );
        assert_eq!(
            plan.entries[4].entry,
            PrefetchEntry::Parameter(ParameterName {
                name: "/app/x".into(),
                selector: Some(Selector::Label("Dev".into())),
            })
        );
    }

    #[test]
    fn entries_name_a_role_and_region_after_a_question_mark() {
        let plan = parse_prefetch(
            "secret:shared/db?roleArn=arn:aws-cn:iam::222222222222:role/r&region=cn-north-1,\
             ssm:/a:3?region=us-gov-west-1,ssm-path:/p/",
        )
        .unwrap();
        assert_eq!(
            plan.entries[0].entry,
            PrefetchEntry::Secret("shared/db".into())
        );
        assert_eq!(
            plan.entries[0].scope.role.as_ref().map(|r| r.as_str()),
            Some("arn:aws-cn:iam::222222222222:role/r")
        );
        assert_eq!(
            plan.entries[0].scope.region.as_ref().map(|r| r.as_str()),
            Some("cn-north-1")
        );
        assert_eq!(
            plan.entries[1].entry,
            PrefetchEntry::Parameter(ParameterName {
                name: "/a".into(),
                selector: Some(Selector::Version(3)),
            })
        );
        assert!(plan.entries[1].scope.role.is_none());
        assert!(plan.entries[2].scope.is_empty());
        assert_eq!(plan.roles().len(), 1);
        for (raw, reason) in [
            ("secret:x?roleArn=nope", "roleArn"),
            ("secret:x?region=EU", "region"),
            ("secret:x?label=a", "unknown query parameter"),
        ] {
            let err = parse_prefetch(raw).unwrap_err();
            assert_eq!(err.entry, raw);
            assert!(err.reason.contains(reason), "{err}");
        }
    }

    #[test]
    fn malformed_entries_are_named() {
        for (raw, bad) in [
            ("ssm:/a,nonsense", "nonsense"),
            ("ssm:/a,parameter:/b", "parameter:/b"),
            ("ssm-path:app/", "ssm-path:app/"),
            ("secret:", "secret:"),
            ("ssm:/a:0", "ssm:/a:0"),
        ] {
            let err = parse_prefetch(raw).unwrap_err();
            assert_eq!(err.entry, bad, "{raw}");
            assert!(err.to_string().contains(bad));
        }
    }
}
