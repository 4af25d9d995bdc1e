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

use lockbox_aws::{ExternalId, NameError, Partition, RegionName, RoleArn, SessionName};

use crate::input_error::InputError;
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
    pub partition: Partition,
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

/// Checks `arn:<partition>:iam::<account>:role/<path><name>` by `lockbox_aws`'s rules (the
/// extension's) and returns the partition and the account. Every partition is accepted:
/// the rotator runs wherever the function is deployed.
pub fn parse_role_arn(arn: &str) -> Result<(Partition, String), InputError> {
    let role = RoleArn::parse(arn).map_err(|e| {
        // The ARN-level errors read as what the value is ("not an ARN"); the part-level
        // ones as the rule it breaks ("a role name is 1-64 ...").
        let is = match e {
            NameError::Arn(_) | NameError::NotARole => "is",
            _ => "is not valid:",
        };
        invalid(format!("assumeRole.roleArn {arn:?} {is} {e}"))
    })?;
    Ok((role.partition(), role.account().to_owned()))
}

/// STS's rule for `ExternalId`. The value is not quoted: it is the trust policy's shared
/// secret of sorts.
fn check_external_id(id: &str) -> Result<(), InputError> {
    ExternalId::parse(id)
        .map(drop)
        .map_err(|e| invalid(format!("assumeRole.externalId is not valid: {e}")))
}

/// STS's rule for `RoleSessionName`.
fn check_session_name(name: &str) -> Result<(), InputError> {
    SessionName::parse(name)
        .map(drop)
        .map_err(|e| invalid(format!("assumeRole.sessionName {name:?} is not valid: {e}")))
}

/// A region name's shape (`us-east-1`, `cn-north-1`, `us-gov-west-1`), as the extension
/// checks its `region=`.
fn check_region(region: &str) -> Result<(), InputError> {
    RegionName::parse(region)
        .map(drop)
        .map_err(|e| invalid(format!("region {region:?} is {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arn(partition: &str, rest: &str) -> String {
        format!("arn:{partition}:iam::{rest}")
    }

    #[test]
    fn role_arns_in_every_partition_are_accepted() {
        for partition in Partition::ALL {
            let role = arn(partition.as_str(), "222222222222:role/lockbox-rotation");
            assert_eq!(
                parse_role_arn(&role).unwrap(),
                (partition, "222222222222".to_owned()),
                "{role}"
            );
        }
        let with_path = arn("aws", "222222222222:role/service/lockbox/rotation@team");
        assert!(parse_role_arn(&with_path).is_ok());
    }

    #[test]
    fn malformed_role_arns_say_what_is_wrong() {
        for (role, needle) in [
            ("lockbox-rotation".to_owned(), "not an ARN"),
            (arn("azure", "222222222222:role/x"), "unknown partition"),
            (arn("aws-", "222222222222:role/x"), "unknown partition"),
            (arn("AWS", "222222222222:role/x"), "unknown partition"),
            (
                arn("aws", "222222222222:role/x").replace(":iam:", ":sts:"),
                "not a role ARN",
            ),
            (
                arn("aws-us-gov", "222222222222:role/x").replace("iam::", "iam:us-gov-west-1:"),
                "not a role ARN",
            ),
            (arn("aws", "2222:role/x"), "not a 12-digit account id"),
            (arn("aws", "222222222222:user/x"), "not a role ARN"),
            (arn("aws", "222222222222:role/"), "a role name is 1-64"),
            (
                arn("aws", "222222222222:role/bad name"),
                "a role name is 1-64",
            ),
            (
                arn("aws", &format!("222222222222:role/{}", "n".repeat(65))),
                "a role name is 1-64",
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
        assert_eq!(role.partition, Partition::AwsCn);

        assert!(Access::from_input(None, None, "r-x").unwrap().is_default());
        let only_region = Access::from_input(Some("us-gov-west-1"), None, "r-x").unwrap();
        assert!(!only_region.is_default());

        for region in [
            "us-east",
            "US-EAST-1",
            "us_east_1",
            "us-east-100",
            "",
            "eu-1",
        ] {
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
