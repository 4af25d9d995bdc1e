//! Whose credentials and which region a value is read with: the function's own role in its
//! own region (the home [`Scope`]), or a role in another account (STS `AssumeRole`), or
//! another region, or both.
//!
//! - [`Arn`], [`RoleArn`] and [`RegionName`] are `lockbox_aws`'s, the rules the rotator
//!   uses too: ARNs with their partition (`aws`, `aws-cn`, `aws-us-gov`, the isolated ones,
//!   `aws-eusc`); nothing here or elsewhere assumes `arn:aws:`.
//! - A request asks for a scope ([`AskedScope`]: `roleArn=` and `region=`), and names that
//!   are ARNs imply one (their region, and the role configured for their account);
//!   `aws::Scopes::resolve` merges the two under the [`RolePolicy`].
//!
//! A scope is part of every cache key, so a value read through one role is never served to
//! a request that names another role, or none.

use std::collections::BTreeMap;
use std::fmt;

pub use lockbox_aws::{Arn, NameError, RegionName, RoleArn};

/// Whose credentials and which region a value is read with. Part of every cache key.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct Scope {
    /// The role assumed; `None` is the function's own role.
    pub role: Option<RoleArn>,
    /// The region read from; `None` is the function's own region.
    pub region: Option<RegionName>,
}

/// The function's own role in its own region: what every read used before roles existed.
pub static HOME: Scope = Scope {
    role: None,
    region: None,
};

impl Scope {
    /// Whether this is the home scope.
    pub fn is_home(&self) -> bool {
        self.role.is_none() && self.region.is_none()
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.role, &self.region) {
            (None, None) => f.write_str("home"),
            (Some(role), None) => write!(f, "{role}"),
            (None, Some(region)) => write!(f, "{region}"),
            (Some(role), Some(region)) => write!(f, "{role} in {region}"),
        }
    }
}

/// What a request (`roleArn=`, `region=`) or a prefetch entry (`?roleArn=...&region=...`)
/// asked for, before names and policy are considered.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct AskedScope {
    /// `roleArn=`.
    pub role: Option<RoleArn>,
    /// `region=`.
    pub region: Option<RegionName>,
}

impl AskedScope {
    /// Whether nothing was asked for (the common case, kept cheap).
    pub fn is_empty(&self) -> bool {
        self.role.is_none() && self.region.is_none()
    }
}

/// Which roles may be assumed, the role to use for each other account, and how many roles
/// one environment may hold credentials for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RolePolicy {
    /// `LOCKBOX_ALLOWED_ROLES`: full role ARNs, or prefixes ending in `*` (`*` alone allows
    /// any role). Empty: only the roles configured below can be used.
    pub allowed: Vec<String>,
    /// `LOCKBOX_ACCOUNT_ROLES`: the role read through for an ARN in each account.
    pub account_roles: BTreeMap<String, RoleArn>,
    /// Roles named by `LOCKBOX_PREFETCH` entries: configured, so allowed.
    pub prefetch_roles: Vec<RoleArn>,
    /// `LOCKBOX_MAX_ROLES`: distinct roles at most.
    pub max_roles: usize,
}

impl RolePolicy {
    /// Whether a role named in a request may be assumed.
    pub fn allows(&self, role: &RoleArn) -> bool {
        let arn = role.as_str();
        self.account_roles.values().any(|r| r == role)
            || self.prefetch_roles.contains(role)
            || self
                .allowed
                .iter()
                .any(|pattern| match pattern.strip_suffix('*') {
                    Some(prefix) => arn.starts_with(prefix),
                    None => pattern == arn,
                })
    }
}
