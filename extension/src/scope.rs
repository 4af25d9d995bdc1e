//! Whose credentials and which region a value is read with: the function's own role in its
//! own region (the home [`Scope`]), or a role in another account (STS `AssumeRole`), or
//! another region, or both.
//!
//! - [`Arn`] parses ARNs with their partition (`aws`, `aws-cn`, `aws-us-gov`, ...); nothing
//!   here or elsewhere assumes `arn:aws:`.
//! - A request asks for a scope ([`AskedScope`]: `roleArn=` and `region=`), and names that
//!   are ARNs imply one (their region, and the role configured for their account);
//!   [`Scopes::resolve`] merges the two under the [`RolePolicy`].
//! - [`Scopes::source`] hands out one [`Source`] per scope, made on first use and reused, so
//!   each role's credentials are assumed once and renewed by the SDK before they expire.
//!
//! A scope is part of every cache key (through [`Source::scope`]), so a value read through
//! one role is never served to a request that names another role, or none.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};

use futures::future::BoxFuture;

use crate::source::Source;

/// Regions other than the home region that one environment may read from. Region names
/// come from requests, and each region costs a pair of clients; AWS has fewer regions per
/// partition than this.
pub const MAX_REGIONS: usize = 32;

/// The longest role ARN IAM allows (a 64-character name under a 512-character path).
const MAX_ROLE_ARN_LEN: usize = 2048;

/// The parts of an ARN: `arn:PARTITION:SERVICE:REGION:ACCOUNT:RESOURCE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arn<'a> {
    /// `aws`, `aws-cn`, `aws-us-gov`, ...
    pub partition: &'a str,
    /// `ssm`, `secretsmanager`, `iam`, ...
    pub service: &'a str,
    /// Empty for global services such as IAM.
    pub region: &'a str,
    /// The 12-digit account id.
    pub account: &'a str,
    /// Everything after the account, colons included (`secret:NAME-AbCdEf`).
    pub resource: &'a str,
}

impl<'a> Arn<'a> {
    /// Splits an ARN; `None` when the text is not one (too few fields, a partition that is
    /// not `aws` or `aws-...`, an account that is not 12 digits).
    pub fn parse(text: &'a str) -> Option<Self> {
        let mut fields = text.splitn(6, ':');
        let (Some("arn"), Some(partition), Some(service), Some(region), Some(account)) = (
            fields.next(),
            fields.next(),
            fields.next(),
            fields.next(),
            fields.next(),
        ) else {
            return None;
        };
        let resource = fields.next()?;
        let partition_ok = partition == "aws"
            || partition
                .strip_prefix("aws-")
                .is_some_and(|rest| !rest.is_empty() && rest.bytes().all(is_name_byte));
        let account_ok = account.is_empty()
            || (account.len() == 12 && account.bytes().all(|b| b.is_ascii_digit()));
        let region_ok = region.bytes().all(is_name_byte);
        (partition_ok && account_ok && region_ok && !service.is_empty() && !resource.is_empty())
            .then_some(Self {
                partition,
                service,
                region,
                account,
                resource,
            })
    }
}

fn is_name_byte(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'
}

/// An IAM role's ARN, checked: `arn:PARTITION:iam::ACCOUNT:role/[PATH/]NAME`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RoleArn(Arc<str>);

impl RoleArn {
    /// Checks the shape; the error says what is wrong, for the 400 or the config error.
    pub fn parse(text: &str) -> Result<Self, String> {
        let shape = "arn:PARTITION:iam::ACCOUNT:role/NAME";
        if text.len() > MAX_ROLE_ARN_LEN {
            return Err(format!(
                "a role ARN is at most {MAX_ROLE_ARN_LEN} characters"
            ));
        }
        let arn = Arn::parse(text).ok_or_else(|| format!("not an ARN; expected {shape}"))?;
        let name_ok = arn.resource.strip_prefix("role/").is_some_and(|name| {
            !name.is_empty()
                && !name.ends_with('/')
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"+=,.@_-/".contains(&b))
        });
        if arn.service != "iam" || !arn.region.is_empty() || arn.account.is_empty() || !name_ok {
            return Err(format!("not a role ARN; expected {shape}"));
        }
        Ok(Self(text.into()))
    }

    /// The ARN as given.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The account that owns the role.
    pub fn account(&self) -> &str {
        Arn::parse(&self.0).map_or("", |arn| arn.account)
    }
}

impl fmt::Debug for RoleArn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for RoleArn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A region name, checked for shape only (`eu-west-1`, `cn-north-1`, `us-gov-west-1`): the
/// SDK resolves its endpoint, and with it the partition.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RegionName(Arc<str>);

impl RegionName {
    /// Checks the shape: lower-case letters, digits and dashes, starting with a letter,
    /// ending with a digit, at most 32 characters.
    pub fn parse(text: &str) -> Result<Self, String> {
        let ok = (4..=32).contains(&text.len())
            && text.bytes().all(is_name_byte)
            && text.as_bytes()[0].is_ascii_lowercase()
            && text.as_bytes()[text.len() - 1].is_ascii_digit()
            && text.contains('-');
        if ok {
            Ok(Self(text.into()))
        } else {
            Err("not a region name such as eu-west-1".to_owned())
        }
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for RegionName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for RegionName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

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

/// A scope that cannot be used. Each becomes its own status and `__type` in
/// [`crate::error::ApiError`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScopeError {
    /// The role is not in `LOCKBOX_ALLOWED_ROLES` (nor configured otherwise).
    #[error("role {0} is not allowed: add it (or a prefix ending in *) to LOCKBOX_ALLOWED_ROLES")]
    RoleNotAllowed(RoleArn),
    /// `LOCKBOX_MAX_ROLES` roles are in use already.
    #[error(
        "role {role} would be one more than LOCKBOX_MAX_ROLES={max}; \
         the extension already holds credentials for {max} roles"
    )]
    TooManyRoles {
        /// The role asked for.
        role: RoleArn,
        /// The bound.
        max: usize,
    },
    /// [`MAX_REGIONS`] regions are in use already.
    #[error("region {region} would be one more than the {max} other regions one environment may read from")]
    TooManyRegions {
        /// The region asked for.
        region: RegionName,
        /// The bound.
        max: usize,
    },
    /// `region=` and the ARN's region differ.
    #[error("region={asked} conflicts with the region {arn} of the ARN {name}")]
    RegionConflict {
        /// `region=`.
        asked: String,
        /// The ARN's region.
        arn: String,
        /// The name that is an ARN.
        name: String,
    },
    /// A batch names ARNs of different regions or accounts.
    #[error(
        "the names are ARNs of different regions or accounts ({0}); \
         read each region and account in its own request"
    )]
    MixedScopes(String),
    /// This extension was built without clients for other roles and regions (tests).
    #[error("reading through {0} is not available here")]
    Unavailable(Scope),
}

impl ScopeError {
    /// The error code the API answers with, and a reference that cannot be read reports.
    pub fn code(&self) -> &'static str {
        match self {
            ScopeError::RoleNotAllowed(_) => "RoleNotAllowed",
            ScopeError::TooManyRoles { .. } => "TooManyRoles",
            ScopeError::TooManyRegions { .. } => "TooManyRegions",
            ScopeError::RegionConflict { .. } | ScopeError::MixedScopes(_) => "InvalidRequest",
            ScopeError::Unavailable(_) => "ScopeUnavailable",
        }
    }
}

/// Makes the source for a scope (the real one builds SDK clients and an `AssumeRole`
/// credentials provider).
pub type SourceFactory = Arc<dyn Fn(Scope) -> BoxFuture<'static, Arc<dyn Source>> + Send + Sync>;

/// One source per scope, made on first use. Cheap to share behind an `Arc`.
pub struct Scopes {
    home: Arc<dyn Source>,
    home_region: Option<String>,
    policy: RolePolicy,
    factory: Option<SourceFactory>,
    made: Mutex<HashMap<Scope, Arc<dyn Source>>>,
}

impl fmt::Debug for Scopes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scopes")
            .field("home_region", &self.home_region)
            .field("policy", &self.policy)
            .field("made", &lock(&self.made).keys().collect::<Vec<_>>())
            .finish()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // The map is only read and inserted into; a panic elsewhere leaves it consistent.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Scopes {
    /// Only the home scope: any other role or region is [`ScopeError::Unavailable`].
    pub fn home_only(home: Arc<dyn Source>) -> Self {
        Self {
            home,
            home_region: None,
            policy: RolePolicy::default(),
            factory: None,
            made: Mutex::new(HashMap::new()),
        }
    }

    /// Every scope the policy allows, made by `factory`. `home_region` is the function's
    /// region: asking for it explicitly reads through the home clients.
    pub fn new(
        home: Arc<dyn Source>,
        home_region: Option<String>,
        policy: RolePolicy,
        factory: SourceFactory,
    ) -> Self {
        Self {
            home,
            home_region,
            policy,
            factory: Some(factory),
            made: Mutex::new(HashMap::new()),
        }
    }

    /// The home source.
    pub fn home(&self) -> &Arc<dyn Source> {
        &self.home
    }

    /// The scope a read uses: `roleArn=` or else the role configured for the account of an
    /// ARN among `names`; `region=` or else the ARN's region; the home region is the home
    /// scope's. All names must agree on region and account.
    pub fn resolve<'n>(
        &self,
        asked: &AskedScope,
        names: impl IntoIterator<Item = &'n str>,
    ) -> Result<Scope, ScopeError> {
        let mut implied: Option<(&str, &str, &str)> = None;
        for name in names {
            if !name.starts_with("arn:") {
                continue;
            }
            let Some(arn) = Arn::parse(name) else {
                continue;
            };
            match implied {
                None => implied = Some((arn.region, arn.account, name)),
                Some((region, account, first))
                    if region != arn.region || account != arn.account =>
                {
                    return Err(ScopeError::MixedScopes(format!("{first}, {name}")));
                }
                Some(_) => {}
            }
        }
        if asked.is_empty() && implied.is_none() {
            return Ok(Scope::default());
        }
        let region = match (&asked.region, implied) {
            (Some(asked), Some((arn_region, _, name)))
                if !arn_region.is_empty() && asked.as_str() != arn_region =>
            {
                return Err(ScopeError::RegionConflict {
                    asked: asked.to_string(),
                    arn: arn_region.to_owned(),
                    name: name.to_owned(),
                });
            }
            (Some(asked), _) => Some(asked.clone()),
            (None, Some((arn_region, _, _))) if !arn_region.is_empty() => {
                RegionName::parse(arn_region).ok()
            }
            (None, _) => None,
        };
        let region = region.filter(|r| Some(r.as_str()) != self.home_region.as_deref());
        let role = match (&asked.role, implied) {
            (Some(role), _) => {
                if !self.policy.allows(role) {
                    return Err(ScopeError::RoleNotAllowed(role.clone()));
                }
                Some(role.clone())
            }
            (None, Some((_, account, _))) => self.policy.account_roles.get(account).cloned(),
            (None, None) => None,
        };
        Ok(Scope { role, region })
    }

    /// The source for a scope: the home one, or the one made for it earlier, or a new one
    /// within the bounds on roles and regions.
    pub async fn source(&self, scope: &Scope) -> Result<Arc<dyn Source>, ScopeError> {
        if scope.is_home() {
            return Ok(self.home.clone());
        }
        if let Some(source) = lock(&self.made).get(scope) {
            return Ok(source.clone());
        }
        let Some(factory) = &self.factory else {
            return Err(ScopeError::Unavailable(scope.clone()));
        };
        self.check_bounds(&lock(&self.made), scope)?;
        // Built outside the lock (building is async); a concurrent first use of the same
        // scope builds twice and the first one stored wins.
        let built = factory(scope.clone()).await;
        let mut made = lock(&self.made);
        if let Some(source) = made.get(scope) {
            return Ok(source.clone());
        }
        self.check_bounds(&made, scope)?;
        if let Some(role) = &scope.role {
            tracing::info!(role = %role, region = ?scope.region.as_ref().map(RegionName::as_str), "reading through another role");
        } else {
            tracing::info!(region = ?scope.region.as_ref().map(RegionName::as_str), "reading from another region");
        }
        made.insert(scope.clone(), built.clone());
        Ok(built)
    }

    /// The sources made so far for scopes other than home (for refresh and prefetch).
    pub fn made(&self) -> usize {
        lock(&self.made).len()
    }

    fn check_bounds(
        &self,
        made: &HashMap<Scope, Arc<dyn Source>>,
        scope: &Scope,
    ) -> Result<(), ScopeError> {
        if let Some(role) = &scope.role {
            let known = made.keys().any(|s| s.role.as_ref() == Some(role));
            let roles = made
                .keys()
                .filter_map(|s| s.role.as_ref())
                .collect::<std::collections::HashSet<_>>()
                .len();
            if !known && roles >= self.policy.max_roles {
                return Err(ScopeError::TooManyRoles {
                    role: role.clone(),
                    max: self.policy.max_roles,
                });
            }
        }
        if let Some(region) = &scope.region {
            let known = made.keys().any(|s| s.region.as_ref() == Some(region));
            let regions = made
                .keys()
                .filter_map(|s| s.region.as_ref())
                .collect::<std::collections::HashSet<_>>()
                .len();
            if !known && regions >= MAX_REGIONS {
                return Err(ScopeError::TooManyRegions {
                    region: region.clone(),
                    max: MAX_REGIONS,
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::{Cache, CacheSettings, Item, Key};
    use crate::model::Secret;
    use crate::model::{Parameter, SecretText};
    use crate::request::parse_parameter;
    use crate::request::{ParameterRequest, SecretRequest};
    use crate::source::{ParameterBatch, SecretBatch, SourceError};
    use std::time::Duration;

    fn role(arn: &str) -> RoleArn {
        RoleArn::parse(arn).unwrap()
    }

    fn region(name: &str) -> RegionName {
        RegionName::parse(name).unwrap()
    }

    #[test]
    fn arns_keep_their_partition() {
        for (text, partition, region, account) in [
            (
                "arn:aws:ssm:us-east-1:123456789012:parameter/a",
                "aws",
                "us-east-1",
                "123456789012",
            ),
            (
                "arn:aws-cn:ssm:cn-north-1:123456789012:parameter/a",
                "aws-cn",
                "cn-north-1",
                "123456789012",
            ),
            (
                "arn:aws-us-gov:secretsmanager:us-gov-west-1:444444444444:secret:db-AbCdEf",
                "aws-us-gov",
                "us-gov-west-1",
                "444444444444",
            ),
            (
                "arn:aws-iso-b:iam::222222222222:role/r",
                "aws-iso-b",
                "",
                "222222222222",
            ),
        ] {
            let arn = Arn::parse(text).unwrap();
            assert_eq!(
                (arn.partition, arn.region, arn.account),
                (partition, region, account)
            );
        }
        let secret = Arn::parse("arn:aws:secretsmanager:eu-west-1:1:secret:x");
        assert_eq!(secret, None, "an account is 12 digits");
        for bad in [
            "arn:gcp:ssm:r-1:123456789012:parameter/a",
            "arn:aws:ssm",
            "/a",
        ] {
            assert_eq!(Arn::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn role_arns_are_checked_in_every_partition() {
        for ok in [
            "arn:aws:iam::222222222222:role/reader",
            "arn:aws-cn:iam::222222222222:role/team/reader",
            "arn:aws-us-gov:iam::222222222222:role/a+b=c,d.e@f_g-h",
        ] {
            assert_eq!(role(ok).as_str(), ok);
            assert_eq!(role(ok).account(), "222222222222");
        }
        for bad in [
            "arn:aws:iam::222222222222:user/reader",
            "arn:aws:iam:us-east-1:222222222222:role/reader",
            "arn:aws:sts::222222222222:role/reader",
            "arn:aws:iam::222222222222:role/",
            "arn:aws:iam::2222:role/reader",
            "reader",
        ] {
            assert!(RoleArn::parse(bad).is_err(), "{bad}");
        }
        assert!(RegionName::parse("cn-northwest-1").is_ok());
        assert!(RegionName::parse("us-gov-west-1").is_ok());
        for bad in ["", "US-EAST-1", "us-east", "east", "us_east_1", "1-us-east"] {
            assert!(RegionName::parse(bad).is_err(), "{bad}");
        }
    }

    fn policy() -> RolePolicy {
        RolePolicy {
            allowed: vec![
                "arn:aws:iam::222222222222:role/exact".into(),
                "arn:aws-cn:iam::333333333333:role/team/*".into(),
            ],
            account_roles: [(
                "444444444444".to_owned(),
                role("arn:aws-us-gov:iam::444444444444:role/reader"),
            )]
            .into(),
            prefetch_roles: vec![role("arn:aws:iam::555555555555:role/prefetch")],
            max_roles: 2,
        }
    }

    /// A source that answers with its scope, so a test sees which one served a read.
    #[derive(Debug)]
    struct Echo(Scope);

    impl Source for Echo {
        fn get_parameter<'a>(
            &'a self,
            req: &'a ParameterRequest,
        ) -> BoxFuture<'a, Result<Parameter, SourceError>> {
            Box::pin(async move {
                Ok(Parameter {
                    arn: Some(crate::model::ParameterArn::Whole(req.name.clone().into())),
                    data_type: None,
                    last_modified_date: None,
                    name: req.name.as_str().into(),
                    extra: None,
                    kind: "SecureString".into(),
                    value: SecretText::new(format!("via {}", self.0)),
                    version: 1,
                })
            })
        }
        fn get_secret<'a>(
            &'a self,
            _: &'a SecretRequest,
        ) -> BoxFuture<'a, Result<Secret, SourceError>> {
            unimplemented!("not used")
        }
        fn get_parameters<'a>(
            &'a self,
            _: &'a [String],
            _: bool,
        ) -> BoxFuture<'a, Result<ParameterBatch, SourceError>> {
            unimplemented!("not used")
        }
        fn get_parameters_by_path<'a>(
            &'a self,
            _: &'a str,
            _: bool,
            _: bool,
        ) -> BoxFuture<'a, Result<Vec<Parameter>, SourceError>> {
            unimplemented!("not used")
        }
        fn batch_get_secrets<'a>(
            &'a self,
            _: &'a [String],
        ) -> BoxFuture<'a, Result<SecretBatch, SourceError>> {
            unimplemented!("not used")
        }
        fn scope(&self) -> &Scope {
            &self.0
        }
    }

    fn scopes() -> Scopes {
        let factory: SourceFactory = Arc::new(|scope: Scope| {
            Box::pin(async move { Arc::new(Echo(scope)) as Arc<dyn Source> })
        });
        Scopes::new(
            Arc::new(Echo(Scope::default())),
            Some("us-east-1".into()),
            policy(),
            factory,
        )
    }

    #[test]
    fn request_and_arn_decide_the_scope_under_the_policy() {
        let scopes = scopes();
        let asked = |role_arn: Option<&str>, region_name: Option<&str>| AskedScope {
            role: role_arn.map(role),
            region: region_name.map(region),
        };
        // Plain names, nothing asked: home.
        assert!(scopes
            .resolve(&asked(None, None), ["/a"])
            .unwrap()
            .is_home());
        // Asking for the home region is home.
        assert!(scopes
            .resolve(&asked(None, Some("us-east-1")), ["/a"])
            .unwrap()
            .is_home());
        // The ARN's region, in its partition.
        let cn = "arn:aws-cn:ssm:cn-north-1:123456789012:parameter/a";
        assert_eq!(
            scopes.resolve(&asked(None, None), [cn]).unwrap(),
            Scope {
                role: None,
                region: Some(region("cn-north-1"))
            }
        );
        // An ARN in an account with a configured role: that role, and the ARN's region.
        let gov = "arn:aws-us-gov:ssm:us-gov-west-1:444444444444:parameter/a";
        assert_eq!(
            scopes.resolve(&asked(None, None), [gov]).unwrap(),
            Scope {
                role: Some(role("arn:aws-us-gov:iam::444444444444:role/reader")),
                region: Some(region("us-gov-west-1")),
            }
        );
        // An explicit role wins over the account's; allowed by prefix.
        let team = "arn:aws-cn:iam::333333333333:role/team/x";
        assert_eq!(
            scopes
                .resolve(&asked(Some(team), None), [gov])
                .unwrap()
                .role,
            Some(role(team))
        );
        // Allowed exactly, as a prefetch role, as an account role; not otherwise.
        for ok in [
            "arn:aws:iam::222222222222:role/exact",
            "arn:aws:iam::555555555555:role/prefetch",
            "arn:aws-us-gov:iam::444444444444:role/reader",
        ] {
            assert!(
                scopes.resolve(&asked(Some(ok), None), ["/a"]).is_ok(),
                "{ok}"
            );
        }
        for denied in [
            "arn:aws:iam::222222222222:role/exact2",
            "arn:aws:iam::333333333333:role/team/x",
        ] {
            assert_eq!(
                scopes.resolve(&asked(Some(denied), None), ["/a"]),
                Err(ScopeError::RoleNotAllowed(role(denied)))
            );
        }
        // region= against the ARN's region, and ARNs of two regions in one batch.
        let err = scopes
            .resolve(&asked(None, Some("eu-west-1")), [cn])
            .unwrap_err();
        assert!(err.to_string().contains("cn-north-1"), "{err}");
        let other = "arn:aws:ssm:eu-west-1:123456789012:parameter/b";
        assert!(matches!(
            scopes.resolve(&asked(None, None), [cn, other]),
            Err(ScopeError::MixedScopes(_))
        ));
    }

    #[tokio::test]
    async fn roles_and_regions_are_bounded_and_each_scope_made_once() {
        let scopes = scopes();
        let a = Scope {
            role: Some(role("arn:aws:iam::222222222222:role/exact")),
            region: None,
        };
        let a_cn = Scope {
            region: Some(region("cn-north-1")),
            ..a.clone()
        };
        let b = Scope {
            role: Some(role("arn:aws:iam::555555555555:role/prefetch")),
            region: None,
        };
        let c = Scope {
            role: Some(role("arn:aws-us-gov:iam::444444444444:role/reader")),
            region: None,
        };
        let first = scopes.source(&a).await.unwrap();
        assert!(Arc::ptr_eq(&first, &scopes.source(&a).await.unwrap()));
        // Same role, another region: not another role.
        scopes.source(&a_cn).await.unwrap();
        scopes.source(&b).await.unwrap();
        let err = scopes.source(&c).await.err().unwrap();
        assert_eq!(
            err,
            ScopeError::TooManyRoles {
                role: c.role.clone().unwrap(),
                max: 2
            }
        );
        assert!(err.to_string().contains("LOCKBOX_MAX_ROLES=2"));
        for i in 0..MAX_REGIONS - 1 {
            let scope = Scope {
                role: None,
                region: Some(region(&format!("xx-test-{i}"))),
            };
            scopes.source(&scope).await.unwrap();
        }
        let one_more = Scope {
            role: None,
            region: Some(region("xx-test-99")),
        };
        assert!(matches!(
            scopes.source(&one_more).await,
            Err(ScopeError::TooManyRegions { .. })
        ));
        let home_only = Scopes::home_only(Arc::new(Echo(Scope::default())));
        assert!(matches!(
            home_only.source(&a).await,
            Err(ScopeError::Unavailable(_))
        ));
    }

    #[tokio::test]
    async fn the_same_name_through_different_scopes_is_different_cache_entries() {
        let cache = Cache::new(CacheSettings {
            enabled: true,
            capacity: 100,
            parameter_ttl: Duration::from_secs(300),
            secret_ttl: Duration::from_secs(300),
            max_stale: Duration::ZERO,
        });
        let scopes = scopes();
        let mut seen = Vec::new();
        for (query, expected) in [
            ("name=/a", "via home"),
            (
                "name=/a&roleArn=arn:aws:iam::222222222222:role/exact",
                "via arn:aws:iam::222222222222:role/exact",
            ),
            ("name=/a&region=cn-north-1", "via cn-north-1"),
            (
                "name=arn:aws-us-gov:ssm:us-gov-west-1:444444444444:parameter/a",
                "via arn:aws-us-gov:iam::444444444444:role/reader in us-gov-west-1",
            ),
        ] {
            let req = parse_parameter(Some(query)).unwrap();
            let scope = scopes.resolve(&req.scope, [req.name.as_str()]).unwrap();
            let source = scopes.source(&scope).await.unwrap();
            for round in 0..2 {
                let lookup = crate::batch::parameter(&cache, source.as_ref(), &req)
                    .await
                    .unwrap();
                let Item::Parameter(p) = &lookup.entry.item else {
                    panic!("a parameter");
                };
                assert_eq!(p.value.expose(), expected, "{query} round {round}");
            }
            seen.push(Key::Parameter {
                scope,
                name: req.name.as_str().into(),
                selector: None,
                decrypt: false,
            });
        }
        assert_eq!(cache.len().await, 4);
        for key in &seen {
            assert!(cache.peek_fresh(key).await.is_some(), "{key:?}");
        }
    }
}
