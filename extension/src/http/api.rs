//! The localhost API's contract, shared by the server and the exec wrapper's client: the
//! route paths, the token header, the cache header, and the token itself.

use std::fmt;

/// The header function code sends the session token in (the AWS layer's name).
pub const TOKEN_HEADER: &str = "x-aws-parameters-secrets-token";
/// Says whether an answer was a cache `hit`, a `miss`, `stale` or a `bypass`.
pub const CACHE_HEADER: &str = "x-lockbox-cache";

/// Readiness; the only route that needs no token.
pub const PING: &str = "/ping";
/// One parameter (`GetParameter`).
pub const PARAMETER: &str = "/systemsmanager/parameters/get";
/// Many parameters (`GetParameters`).
pub const PARAMETERS: &str = "/systemsmanager/parameters/get-many";
/// Every parameter under a path (`GetParametersByPath`).
pub const PARAMETERS_BY_PATH: &str = "/systemsmanager/parameters/get-by-path";
/// One secret (`GetSecretValue`).
pub const SECRET: &str = "/secretsmanager/get";
/// Many secrets (`BatchGetSecretValue`).
pub const SECRETS: &str = "/secretsmanager/get-many";

/// Most names or ids one batch request may ask for.
pub const MAX_BATCH: usize = 100;

/// The request token. It is a session credential, so it is never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct AuthToken(String);

impl AuthToken {
    /// Wraps a token value.
    pub fn new(token: impl Into<String>) -> Self {
        Self(token.into())
    }

    /// The raw bytes, for the constant-time comparison in the server.
    pub(crate) fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl fmt::Debug for AuthToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<redacted, {} bytes>", self.0.len())
    }
}
