//! Checked names: account ids, regions, role ARNs and session names.

use std::fmt;
use std::sync::Arc;

use crate::arn::{is_account_id, Arn, ArnError, Partition};

/// The longest role ARN IAM allows (a 64-character name under a 512-character path).
pub const MAX_ROLE_ARN_LEN: usize = 2048;
/// The longest role name IAM allows.
pub const MAX_ROLE_NAME_LEN: usize = 64;
/// The longest role path, between `role/` and the name (IAM's 512 less its two slashes).
pub const MAX_ROLE_PATH_LEN: usize = 510;
/// The longest region name accepted; AWS's are far shorter.
pub const MAX_REGION_LEN: usize = 32;

/// A name that is not what AWS accepts. The message says what is wrong; the caller names
/// the field and quotes the value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// Not 12 digits.
    #[error("not a 12-digit account id")]
    AccountId,
    /// Not lower-case words and a final number, dash-separated (`eu-west-1`).
    #[error("not a region name such as eu-west-1")]
    Region,
    /// Longer than [`MAX_ROLE_ARN_LEN`].
    #[error("a role ARN is at most {MAX_ROLE_ARN_LEN} characters")]
    RoleArnTooLong,
    /// Not an ARN at all.
    #[error("{0}; expected arn:PARTITION:iam::ACCOUNT:role/NAME")]
    Arn(ArnError),
    /// An ARN, but not an IAM role's.
    #[error("not a role ARN; expected arn:PARTITION:iam::ACCOUNT:role/NAME")]
    NotARole,
    /// The role name is empty, longer than 64, or has a character IAM refuses.
    #[error("a role name is 1-{MAX_ROLE_NAME_LEN} of letters, digits and + = , . @ _ -")]
    RoleName,
    /// The role path is longer than 510, has an empty part, or a character IAM refuses.
    #[error("a role path is at most {MAX_ROLE_PATH_LEN} printable characters without spaces or empty parts")]
    RolePath,
    /// Not 2-64 of STS's session name characters.
    #[error("a session name is 2-64 of letters, digits and + = , . @ _ -")]
    SessionName,
    /// Not 2-1224 of STS's external id characters.
    #[error("an external id is 2-1224 of letters, digits and + = , . @ : / _ -")]
    ExternalId,
}

/// IAM's and STS's name characters: letters, digits and `+=,.@_-`.
fn is_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"+=,.@_-".contains(&b)
}

/// A 12-digit AWS account id.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AccountId(String);

impl AccountId {
    /// Checks the shape.
    pub fn parse(text: &str) -> Result<Self, NameError> {
        if is_account_id(text) {
            Ok(Self(text.to_owned()))
        } else {
            Err(NameError::AccountId)
        }
    }

    /// The digits.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for AccountId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A region name, checked for AWS's shape: lower-case words and a final number of one or
/// two digits, dash-separated, at least two words (`eu-west-1`, `cn-north-1`,
/// `us-gov-west-1`, `us-isob-east-1`, `eusc-de-east-1`). `eu-1` is refused: no region is
/// named so. The SDK resolves the endpoint, and with it the partition.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RegionName(Arc<str>);

impl RegionName {
    /// Checks the shape.
    pub fn parse(text: &str) -> Result<Self, NameError> {
        let words: Vec<&str> = text.split('-').collect();
        let Some((number, area)) = words.split_last() else {
            return Err(NameError::Region);
        };
        let ok = text.len() <= MAX_REGION_LEN
            && area.len() >= 2
            && area
                .iter()
                .all(|w| !w.is_empty() && w.bytes().all(|b| b.is_ascii_lowercase()))
            && (1..=2).contains(&number.len())
            && number.bytes().all(|b| b.is_ascii_digit());
        if ok {
            Ok(Self(text.into()))
        } else {
            Err(NameError::Region)
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

/// An IAM role's ARN, checked: `arn:PARTITION:iam::ACCOUNT:role/[PATH/]NAME`, the name
/// 1-64 characters, the path at most 510. Cheap to clone.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RoleArn(Arc<str>);

impl RoleArn {
    /// Checks every part; the error says which is wrong.
    pub fn parse(text: &str) -> Result<Self, NameError> {
        if text.len() > MAX_ROLE_ARN_LEN {
            return Err(NameError::RoleArnTooLong);
        }
        let arn = Arn::parse(text).map_err(NameError::Arn)?;
        let path_and_name = arn.resource.strip_prefix("role/");
        let (Some(path_and_name), "iam", "", false) = (
            path_and_name,
            arn.service,
            arn.region,
            arn.account.is_empty(),
        ) else {
            return Err(NameError::NotARole);
        };
        let (path, name) = match path_and_name.rsplit_once('/') {
            Some((path, name)) => (Some(path), name),
            None => (None, path_and_name),
        };
        if !(1..=MAX_ROLE_NAME_LEN).contains(&name.len()) || !name.bytes().all(is_name_byte) {
            return Err(NameError::RoleName);
        }
        if let Some(path) = path {
            let ok = path.len() <= MAX_ROLE_PATH_LEN
                && path.split('/').all(|part| !part.is_empty())
                && path.bytes().all(|b| b.is_ascii_graphic());
            if !ok {
                return Err(NameError::RolePath);
            }
        }
        Ok(Self(text.into()))
    }

    /// The ARN as given.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    fn arn(&self) -> Arn<'_> {
        Arn::parse(&self.0).expect("checked when made")
    }

    /// The partition the role is in.
    pub fn partition(&self) -> Partition {
        self.arn().partition
    }

    /// The account that owns the role.
    pub fn account(&self) -> &str {
        self.arn().account
    }

    /// The role's name, without its path.
    pub fn name(&self) -> &str {
        let resource = self.arn().resource;
        resource.rsplit('/').next().unwrap_or(resource)
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

/// An STS `RoleSessionName`: 2-64 characters of letters, digits and `+=,.@_-`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SessionName(String);

impl SessionName {
    /// Checks the shape.
    pub fn parse(text: &str) -> Result<Self, NameError> {
        if (2..=64).contains(&text.len()) && text.bytes().all(is_name_byte) {
            Ok(Self(text.to_owned()))
        } else {
            Err(NameError::SessionName)
        }
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SessionName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An STS `ExternalId`: 2-1224 characters of letters, digits and `+=,.@:/_-`. It is a
/// shared secret of sorts between accounts, so its `Debug` shows its length only.
#[derive(Clone, PartialEq, Eq)]
pub struct ExternalId(String);

impl ExternalId {
    /// Checks the shape.
    pub fn parse(text: &str) -> Result<Self, NameError> {
        let ok = (2..=1224).contains(&text.len())
            && text
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"+=,.@:/_-".contains(&b));
        if ok {
            Ok(Self(text.to_owned()))
        } else {
            Err(NameError::ExternalId)
        }
    }

    /// The id, to pass to STS.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ExternalId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<external id, {} characters>", self.0.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn account_ids_are_twelve_digits() {
        assert_eq!(
            AccountId::parse("123456789012").unwrap().as_str(),
            "123456789012"
        );
        for bad in ["", "12345678901", "1234567890123", "12345678901a"] {
            assert_eq!(AccountId::parse(bad), Err(NameError::AccountId), "{bad}");
        }
    }

    #[test]
    fn regions_have_aws_shape_in_every_partition() {
        for ok in [
            "us-east-1",
            "eu-central-2",
            "ap-southeast-7",
            "cn-northwest-1",
            "us-gov-west-1",
            "us-iso-east-1",
            "us-isob-east-1",
            "eu-isoe-west-1",
            "us-isof-south-1",
            "eusc-de-east-1",
        ] {
            assert_eq!(RegionName::parse(ok).unwrap().as_str(), ok);
        }
        for bad in [
            "",
            "eu-1",
            "east",
            "us-east",
            "US-EAST-1",
            "us_east_1",
            "1-us-east",
            "us--east-1",
            "us-east-123",
            "us-east-1-",
            "a-very-long-region-name-beyond-32-1",
        ] {
            assert_eq!(RegionName::parse(bad), Err(NameError::Region), "{bad}");
        }
    }

    #[test]
    fn role_arns_are_checked_in_every_partition() {
        for partition in Partition::ALL {
            let text = format!("arn:{partition}:iam::222222222222:role/team/reader");
            let role = RoleArn::parse(&text).unwrap();
            assert_eq!(role.as_str(), text);
            assert_eq!(role.partition(), partition);
            assert_eq!(role.account(), "222222222222");
            assert_eq!(role.name(), "reader");
        }
        assert!(RoleArn::parse("arn:aws:iam::222222222222:role/a+b=c,d.e@f_g-h").is_ok());
        let longest = format!("arn:aws:iam::222222222222:role/{}", "n".repeat(64));
        assert!(RoleArn::parse(&longest).is_ok());
    }

    #[test]
    fn bad_role_arns_name_the_part_that_is_wrong() {
        let long_name = format!("arn:aws:iam::222222222222:role/{}", "n".repeat(65));
        let long_path = format!("arn:aws:iam::222222222222:role/{}/n", "p".repeat(511));
        let too_long = format!("arn:aws:iam::222222222222:role/{}", "p/".repeat(1100));
        for (text, err) in [
            ("reader", NameError::Arn(ArnError::NotAnArn)),
            (
                "arn:aws:iam::2222:role/reader",
                NameError::Arn(ArnError::Account),
            ),
            ("arn:aws:iam::222222222222:user/reader", NameError::NotARole),
            (
                "arn:aws:iam:us-east-1:222222222222:role/reader",
                NameError::NotARole,
            ),
            ("arn:aws:sts::222222222222:role/reader", NameError::NotARole),
            ("arn:aws:iam::222222222222:role/", NameError::RoleName),
            ("arn:aws:iam::222222222222:role/team/", NameError::RoleName),
            ("arn:aws:iam::222222222222:role/a b", NameError::RoleName),
            (&long_name, NameError::RoleName),
            (
                "arn:aws:iam::222222222222:role//reader",
                NameError::RolePath,
            ),
            (
                "arn:aws:iam::222222222222:role/a b/reader",
                NameError::RolePath,
            ),
            (&long_path, NameError::RolePath),
            (&too_long, NameError::RoleArnTooLong),
        ] {
            assert_eq!(RoleArn::parse(text), Err(err), "{text}");
        }
    }

    #[test]
    fn session_names_follow_sts() {
        for ok in [
            "ab",
            "lockbox-my-function",
            "a+b=c,d.e@f_g-h",
            &"s".repeat(64),
        ] {
            assert_eq!(SessionName::parse(ok).unwrap().as_str(), ok);
        }
        for bad in ["", "a", "has space", "colon:no", &"s".repeat(65)] {
            assert_eq!(
                SessionName::parse(bad),
                Err(NameError::SessionName),
                "{bad}"
            );
        }
    }

    #[test]
    fn external_ids_follow_sts_and_stay_out_of_debug() {
        let id = ExternalId::parse("tenant:42/prod").unwrap();
        assert_eq!(id.as_str(), "tenant:42/prod");
        assert!(!format!("{id:?}").contains("tenant"));
        for bad in ["", "x", "has space", &"e".repeat(1225)] {
            assert_eq!(ExternalId::parse(bad), Err(NameError::ExternalId), "{bad}");
        }
    }
}
