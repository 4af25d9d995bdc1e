//! The per-scope registry: [`Scopes::resolve`] decides the scope a read uses from what it
//! asked and the names it reads, under the [`RolePolicy`]; [`Scopes::source`] hands out one
//! [`Source`] per scope, made on first use and reused, so each role's credentials are
//! assumed once and renewed by the SDK before they expire.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};

use futures::future::BoxFuture;

use super::source::Source;
use crate::domain::{Arn, AskedScope, RegionName, RoleArn, RolePolicy, Scope};

/// Regions other than the home region that one environment may read from. Region names
/// come from requests, and each region costs a pair of clients; AWS has fewer regions per
/// partition than this.
pub const MAX_REGIONS: usize = 32;
/// A scope that cannot be used. Each becomes its own status and `__type` in
/// [`crate::http::ApiError`].
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
            let Ok(arn) = Arn::parse(name) else {
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
                .collect::<HashSet<_>>()
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
                .collect::<HashSet<_>>()
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
pub(crate) mod tests {
    use super::*;
    use crate::aws::fake::{parameter, Fake};
    use crate::domain::{Parameter, ParameterArn};

    fn role(arn: &str) -> RoleArn {
        RoleArn::parse(arn).unwrap()
    }

    fn region(name: &str) -> RegionName {
        RegionName::parse(name).unwrap()
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
    fn echo(scope: Scope) -> Arc<dyn Source> {
        let via = format!("via {scope}");
        Arc::new(Fake::new().in_scope(scope).on_parameter(move |name| {
            Ok(Parameter {
                arn: Some(ParameterArn::Whole(name.name.clone().into())),
                kind: "SecureString".into(),
                ..parameter(&name.name, &via)
            })
        }))
    }

    pub(crate) fn scopes() -> Scopes {
        let factory: SourceFactory = Arc::new(|scope: Scope| Box::pin(async move { echo(scope) }));
        Scopes::new(
            echo(Scope::default()),
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
        let home_only = Scopes::home_only(echo(Scope::default()));
        assert!(matches!(
            home_only.source(&a).await,
            Err(ScopeError::Unavailable(_))
        ));
    }
}
