//! Rotating in another account or region: the input's `assumeRole` and `region`.
//!
//! One rotator can rotate parameters that live in other accounts. The input names a role
//! there (and the external id that role's trust policy asks for); the rotator assumes it
//! with STS and builds the SSM, KMS and Secrets Manager clients from the assumed
//! credentials, so the key gate, the selection and every write run as that role, in that
//! account. `region` points all of it, STS included, at another region.
//!
//! Everything here is checked before AWS is called: the role ARN's shape (in any
//! partition: `aws`, `aws-cn`, `aws-us-gov`, ...), the external id, the session name and
//! the region. The role is then assumed once up front, so a role that cannot be assumed
//! fails the run before any other call, with an error that names the role.

use aws_config::sts::AssumeRoleProvider;
use aws_config::{Region, SdkConfig};
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use serde::{Deserialize, Serialize};

use crate::input::InputError;
use crate::Clients;

/// The session name's prefix when the input gives none; the rest is the rotation-id
/// label, so CloudTrail in the target account ties every call to the run that made it.
const SESSION_PREFIX: &str = "lockbox-";

/// The role to assume, as written in the input.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AssumeRoleSpec {
    /// The role's ARN, e.g. `arn:<partition>:iam::222222222222:role/lockbox-rotation`.
    pub role_arn: String,
    /// The external id the role's trust policy requires (`sts:ExternalId`), if any.
    #[serde(default)]
    pub external_id: Option<String>,
    /// The STS session name; default `lockbox-<rotation-id label>`.
    #[serde(default)]
    pub session_name: Option<String>,
}

/// A role to assume, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssumeRole {
    /// The role's ARN.
    pub role_arn: String,
    /// The partition the ARN names (`aws`, `aws-cn`, `aws-us-gov`, ...).
    pub partition: String,
    /// The account the role (and so the rotated parameters) belong to.
    pub account: String,
    /// Passed to STS as `ExternalId`.
    pub external_id: Option<String>,
    /// Passed to STS as `RoleSessionName`.
    pub session_name: String,
}

/// Where a rotation's AWS calls go: the function's own account and region unless the
/// input says otherwise.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Access {
    /// Region for every call (STS included); `None` keeps the configured region.
    pub region: Option<String>,
    /// Role to assume for every call; `None` uses the function's own credentials.
    pub role: Option<AssumeRole>,
}

impl Access {
    /// Validates the input's `region` and `assumeRole`; `label` is the rotation-id label,
    /// used in the default session name.
    pub fn from_input(
        region: Option<&str>,
        role: Option<&AssumeRoleSpec>,
        label: &str,
    ) -> Result<Self, InputError> {
        let region = region
            .map(str::trim)
            .map(|r| check_region(r).map(|()| r.to_owned()));
        let role = role.map(|spec| {
            let arn = spec.role_arn.trim();
            let (partition, account) = parse_role_arn(arn)?;
            if let Some(id) = &spec.external_id {
                check_external_id(id)?;
            }
            let session_name = match &spec.session_name {
                Some(name) => {
                    check_session_name(name)?;
                    name.clone()
                }
                None => format!("{SESSION_PREFIX}{label}"),
            };
            Ok(AssumeRole {
                role_arn: arn.to_owned(),
                partition,
                account,
                external_id: spec.external_id.clone(),
                session_name,
            })
        });
        Ok(Self {
            region: region.transpose()?,
            role: role.transpose()?,
        })
    }

    /// Whether the rotation runs with the function's own account and region.
    pub fn is_default(&self) -> bool {
        self.region.is_none() && self.role.is_none()
    }
}

/// The role could not be assumed; nothing else was called.
#[derive(Debug, thiserror::Error)]
#[error("cannot assume role {role} in region {region}: {detail}")]
pub struct AccessError {
    /// The role's ARN.
    pub role: String,
    /// The region STS was asked in.
    pub region: String,
    /// What STS (or the connection to it) said.
    pub detail: String,
}

/// The clients for `access`: `base` itself when it asks for nothing else, else clients
/// in its region with the assumed role's credentials. The role is assumed once here, so
/// that a role that cannot be assumed fails now, before any other call, naming the role.
pub async fn clients(base: &Clients, access: &Access) -> Result<Clients, AccessError> {
    if access.is_default() {
        return Ok(base.clone());
    }
    let mut config = base.config.clone();
    if let Some(region) = &access.region {
        config = config
            .into_builder()
            .region(Region::new(region.clone()))
            .build();
    }
    if let Some(role) = &access.role {
        config = assume(&config, role).await?;
    }
    Ok(Clients::new(&config))
}

/// `config` with credentials from assuming `role`; STS is reached through `config` (its
/// region, its endpoint override such as `AWS_ENDPOINT_URL`, its base credentials).
async fn assume(config: &SdkConfig, role: &AssumeRole) -> Result<SdkConfig, AccessError> {
    let region = config
        .region()
        .map(|r| r.as_ref().to_owned())
        .unwrap_or_else(|| "(none configured)".to_owned());
    let mut builder = AssumeRoleProvider::builder(&role.role_arn)
        .session_name(&role.session_name)
        .configure(config);
    if let Some(id) = &role.external_id {
        builder = builder.external_id(id);
    }
    if let Some(r) = config.region() {
        // Regional STS: the global endpoint does not exist in every partition.
        builder = builder.region(r.clone());
    }
    let provider = builder.build().await;
    // The clients fetch (and refresh) their own credentials through the SDK's identity
    // cache; this first fetch only proves the role can be assumed. The error is told by
    // its Display chain alone: the raw response behind it could hold credentials.
    provider
        .provide_credentials()
        .await
        .map_err(|e| AccessError {
            role: role.role_arn.clone(),
            region: region.clone(),
            detail: crate::error_chain(&e),
        })?;
    tracing::info!(
        role = %role.role_arn,
        account = %role.account,
        region = %region,
        session = %role.session_name,
        "assumed role"
    );
    Ok(config
        .to_builder()
        .credentials_provider(SharedCredentialsProvider::new(provider))
        .build())
}

fn invalid(msg: String) -> InputError {
    InputError::Invalid(msg)
}

/// Checks `arn:<partition>:iam::<account>:role/<path><name>` and returns the partition
/// and the account. Any partition is accepted (`aws`, `aws-cn`, `aws-us-gov`, ...): the
/// rotator runs wherever the function is deployed.
pub fn parse_role_arn(arn: &str) -> Result<(String, String), InputError> {
    let bad = |why: &str| {
        invalid(format!(
            "assumeRole.roleArn {arn:?} {why}; expected arn:<partition>:iam::<account id>:role/<name>"
        ))
    };
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    let [prefix, partition, service, region, account, resource] = parts[..] else {
        return Err(bad("is not an ARN"));
    };
    if prefix != "arn" {
        return Err(bad("is not an ARN"));
    }
    let partition_ok = partition
        .strip_prefix("aws")
        .is_some_and(|rest| rest.is_empty() || is_partition_suffix(rest));
    if !partition_ok {
        return Err(bad(&format!("has an unknown partition {partition:?}")));
    }
    if service != "iam" {
        return Err(bad(&format!("names service {service:?}, not iam")));
    }
    if !region.is_empty() {
        return Err(bad("has a region; IAM ARNs have none"));
    }
    if account.len() != 12 || !account.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad("does not hold a 12-digit account id"));
    }
    let Some(path_and_name) = resource.strip_prefix("role/") else {
        return Err(bad("is not a role"));
    };
    let (path, name) = path_and_name
        .rsplit_once('/')
        .map_or(("", path_and_name), |(p, n)| (p, n));
    let name_ok = (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+=,.@_-".contains(&b));
    if !name_ok {
        return Err(bad(
            "has an invalid role name (1-64 of letters, digits, + = , . @ _ -)",
        ));
    }
    if path.len() > 510 || !path.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(bad("has an invalid role path"));
    }
    Ok((partition.to_owned(), account.to_owned()))
}

/// `-cn`, `-us-gov`, `-iso-b`: lowercase words after a dash.
fn is_partition_suffix(rest: &str) -> bool {
    rest.strip_prefix('-').is_some_and(|words| {
        words
            .split('-')
            .all(|w| !w.is_empty() && w.bytes().all(|b| b.is_ascii_lowercase()))
    })
}

/// STS's rule for `ExternalId`: 2-1224 characters of letters, digits and `+=,.@:/-_`.
fn check_external_id(id: &str) -> Result<(), InputError> {
    let ok = (2..=1224).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+=,.@:/_-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(invalid(
            "assumeRole.externalId must be 2-1224 characters of letters, digits and + = , . @ : / _ -"
                .to_owned(),
        ))
    }
}

/// STS's rule for `RoleSessionName`: 2-64 characters of letters, digits and `+=,.@_-`.
fn check_session_name(name: &str) -> Result<(), InputError> {
    let ok = (2..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+=,.@_-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(invalid(format!(
            "assumeRole.sessionName {name:?} must be 2-64 characters of letters, digits and + = , . @ _ -"
        )))
    }
}

/// A region name's shape: lowercase words and a final number, dash-separated
/// (`us-east-1`, `cn-north-1`, `us-gov-west-1`).
fn check_region(region: &str) -> Result<(), InputError> {
    let words: Vec<&str> = region.split('-').collect();
    let ok = region.len() <= 32
        && words.len() >= 3
        && words[..words.len() - 1]
            .iter()
            .all(|w| !w.is_empty() && w.bytes().all(|b| b.is_ascii_lowercase()))
        && words
            .last()
            .is_some_and(|n| (1..=2).contains(&n.len()) && n.bytes().all(|b| b.is_ascii_digit()));
    if ok {
        Ok(())
    } else {
        Err(invalid(format!(
            "region {region:?} is not a region name such as us-east-1"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arn(partition: &str, rest: &str) -> String {
        format!("arn:{partition}:iam::{rest}")
    }

    #[test]
    fn role_arns_in_every_partition_are_accepted() {
        for partition in ["aws", "aws-cn", "aws-us-gov", "aws-iso-b"] {
            let role = arn(partition, "222222222222:role/lockbox-rotation");
            assert_eq!(
                parse_role_arn(&role).unwrap(),
                (partition.to_owned(), "222222222222".to_owned()),
                "{role}"
            );
        }
        let with_path = arn("aws", "222222222222:role/service/lockbox/rotation@team");
        assert!(parse_role_arn(&with_path).is_ok());
    }

    #[test]
    fn malformed_role_arns_say_what_is_wrong() {
        for (role, needle) in [
            ("lockbox-rotation".to_owned(), "is not an ARN"),
            (arn("azure", "222222222222:role/x"), "unknown partition"),
            (arn("aws-", "222222222222:role/x"), "unknown partition"),
            (arn("AWS", "222222222222:role/x"), "unknown partition"),
            (
                arn("aws", "222222222222:role/x").replace(":iam:", ":sts:"),
                "not iam",
            ),
            (
                arn("aws-us-gov", "222222222222:role/x").replace("iam::", "iam:us-gov-west-1:"),
                "has a region",
            ),
            (arn("aws", "2222:role/x"), "12-digit account"),
            (arn("aws", "222222222222:user/x"), "is not a role"),
            (arn("aws", "222222222222:role/"), "invalid role name"),
            (
                arn("aws", "222222222222:role/bad name"),
                "invalid role name",
            ),
            (
                arn("aws", &format!("222222222222:role/{}", "n".repeat(65))),
                "invalid role name",
            ),
        ] {
            let err = parse_role_arn(&role).unwrap_err().to_string();
            assert!(err.contains(needle), "{role}: {err}");
            assert!(err.contains("assumeRole.roleArn"), "{err}");
        }
    }

    #[test]
    fn access_defaults_the_session_name_and_checks_every_field() {
        let spec = AssumeRoleSpec {
            role_arn: arn("aws-cn", "222222222222:role/r"),
            external_id: Some("ext-1234".into()),
            session_name: None,
        };
        let access =
            Access::from_input(Some("cn-north-1"), Some(&spec), "r-20261122T0300Z").unwrap();
        assert_eq!(access.region.as_deref(), Some("cn-north-1"));
        let role = access.role.unwrap();
        assert_eq!(role.session_name, "lockbox-r-20261122T0300Z");
        assert_eq!(role.account, "222222222222");
        assert_eq!(role.partition, "aws-cn");

        assert!(Access::from_input(None, None, "r-x").unwrap().is_default());
        let only_region = Access::from_input(Some("us-gov-west-1"), None, "r-x").unwrap();
        assert!(!only_region.is_default());

        for region in ["us-east", "US-EAST-1", "us_east_1", "us-east-100", ""] {
            let err = Access::from_input(Some(region), None, "r-x").unwrap_err();
            assert!(
                err.to_string().contains("is not a region name"),
                "{region}: {err}"
            );
        }
        let bad_id = AssumeRoleSpec {
            external_id: Some("x".into()),
            ..spec.clone()
        };
        let err = Access::from_input(None, Some(&bad_id), "r-x").unwrap_err();
        assert!(err.to_string().contains("externalId"), "{err}");
        let bad_session = AssumeRoleSpec {
            session_name: Some("has space".into()),
            ..spec
        };
        let err = Access::from_input(None, Some(&bad_session), "r-x").unwrap_err();
        assert!(err.to_string().contains("sessionName"), "{err}");
    }
}
