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
/// A parameter's keyring: the versions labelled `current`, `previous` and `pending`.
pub const KEYRING: &str = "/lockbox/keyring";
/// The metrics' counters since start, as JSON (`?entries=true`: the cached entries too).
pub const STATS: &str = "/lockbox/stats";

/// Most names or ids one batch request may ask for.
pub const MAX_BATCH: usize = 100;

/// The request token. It is a session credential, so it is never printed.
///
/// Under SnapStart Lambda may set both `AWS_SESSION_TOKEN` and
/// `AWS_CONTAINER_AUTHORIZATION_TOKEN`, and function code sends whichever its SDK or its
/// author picked: then either is accepted.
#[derive(Clone, PartialEq, Eq)]
pub struct AuthToken {
    token: String,
    /// A second accepted value, or empty.
    also: String,
}

impl AuthToken {
    /// Wraps a token value.
    pub fn new(token: impl Into<String>) -> Self {
        Self {
            token: token.into(),
            also: String::new(),
        }
    }

    /// This token, also accepting `other`.
    pub fn or(mut self, other: impl Into<String>) -> Self {
        self.also = other.into();
        self
    }

    /// The raw bytes of the token to send (the exec wrapper's client).
    pub(crate) fn as_bytes(&self) -> &[u8] {
        self.token.as_bytes()
    }

    /// Whether `given` is an accepted token, compared in constant time: both values are
    /// always compared, so the time says nothing about which one (if either) was close.
    pub(crate) fn accepts(&self, given: &[u8]) -> bool {
        use subtle::ConstantTimeEq;
        let first = given.ct_eq(self.token.as_bytes());
        let second = given.ct_eq(self.also.as_bytes())
            & subtle::Choice::from(u8::from(!self.also.is_empty()));
        bool::from(first | second)
    }
}

impl fmt::Debug for AuthToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<redacted, {} bytes>", self.token.len())?;
        if !self.also.is_empty() {
            write!(f, " or <redacted, {} bytes>", self.also.len())?;
        }
        Ok(())
    }
}
