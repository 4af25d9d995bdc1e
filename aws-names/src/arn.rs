//! ARNs and partitions.

use std::fmt;
use std::str::FromStr;

/// Whether `text` is an account id: 12 digits.
pub(crate) fn is_account_id(text: &str) -> bool {
    text.len() == 12 && text.bytes().all(|b| b.is_ascii_digit())
}

/// An AWS partition: the `PARTITION` of `arn:PARTITION:...`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Partition {
    /// The commercial regions.
    Aws,
    /// China (Beijing, Ningxia).
    AwsCn,
    /// AWS GovCloud (US).
    AwsUsGov,
    /// AWS Top Secret-East (ISO).
    AwsIso,
    /// AWS Secret Region (ISO-B).
    AwsIsoB,
    /// The ISO-E partition.
    AwsIsoE,
    /// The ISO-F partition.
    AwsIsoF,
    /// The AWS European Sovereign Cloud.
    AwsEusc,
}

impl Partition {
    /// Every partition, in the order AWS lists them.
    pub const ALL: [Partition; 8] = [
        Partition::Aws,
        Partition::AwsCn,
        Partition::AwsUsGov,
        Partition::AwsIso,
        Partition::AwsIsoB,
        Partition::AwsIsoE,
        Partition::AwsIsoF,
        Partition::AwsEusc,
    ];

    /// The partition's name as ARNs write it.
    pub fn as_str(self) -> &'static str {
        match self {
            Partition::Aws => "aws",
            Partition::AwsCn => "aws-cn",
            Partition::AwsUsGov => "aws-us-gov",
            Partition::AwsIso => "aws-iso",
            Partition::AwsIsoB => "aws-iso-b",
            Partition::AwsIsoE => "aws-iso-e",
            Partition::AwsIsoF => "aws-iso-f",
            Partition::AwsEusc => "aws-eusc",
        }
    }
}

impl fmt::Display for Partition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Partition {
    type Err = ArnError;

    fn from_str(text: &str) -> Result<Self, ArnError> {
        Partition::ALL
            .into_iter()
            .find(|p| p.as_str() == text)
            .ok_or(ArnError::UnknownPartition)
    }
}

/// Why a text is not an ARN.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ArnError {
    /// Fewer than six colon-separated fields, or no `arn:` prefix.
    #[error("not an ARN")]
    NotAnArn,
    /// The partition is none of [`Partition::ALL`].
    #[error("an ARN with an unknown partition")]
    UnknownPartition,
    /// The service or the resource is empty.
    #[error("an ARN without a service or a resource")]
    Empty,
    /// The region field is not empty and not a region's shape.
    #[error("an ARN whose region is not a region name")]
    Region,
    /// The account field is not empty and not 12 digits.
    #[error("an ARN whose account is not a 12-digit account id")]
    Account,
}

/// The parts of an ARN: `arn:PARTITION:SERVICE:REGION:ACCOUNT:RESOURCE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arn<'a> {
    /// The partition.
    pub partition: Partition,
    /// `ssm`, `secretsmanager`, `iam`, ...
    pub service: &'a str,
    /// Empty for global services such as IAM.
    pub region: &'a str,
    /// The 12-digit account id; empty for some resources.
    pub account: &'a str,
    /// Everything after the account, colons included (`secret:NAME-AbCdEf`).
    pub resource: &'a str,
}

impl<'a> Arn<'a> {
    /// Splits and checks an ARN.
    pub fn parse(text: &'a str) -> Result<Self, ArnError> {
        let mut fields = text.splitn(6, ':');
        let (
            Some("arn"),
            Some(partition),
            Some(service),
            Some(region),
            Some(account),
            Some(resource),
        ) = (
            fields.next(),
            fields.next(),
            fields.next(),
            fields.next(),
            fields.next(),
            fields.next(),
        )
        else {
            return Err(ArnError::NotAnArn);
        };
        let partition = partition.parse()?;
        if service.is_empty() || resource.is_empty() {
            return Err(ArnError::Empty);
        }
        // The region field's characters only: a region in an ARN is AWS's to have made.
        if !region
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err(ArnError::Region);
        }
        if !account.is_empty() && !is_account_id(account) {
            return Err(ArnError::Account);
        }
        Ok(Self {
            partition,
            service,
            region,
            account,
            resource,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_partition_reads_back_as_written() {
        for partition in Partition::ALL {
            assert_eq!(partition.as_str().parse::<Partition>(), Ok(partition));
            let text = format!("arn:{partition}:iam::123456789012:role/r");
            assert_eq!(Arn::parse(&text).unwrap().partition, partition);
        }
        for unknown in ["", "gcp", "aws-", "aws-mars", "AWS"] {
            assert_eq!(
                unknown.parse::<Partition>(),
                Err(ArnError::UnknownPartition),
                "{unknown}"
            );
        }
    }

    #[test]
    fn arns_are_split_into_their_fields() {
        let arn =
            Arn::parse("arn:aws-us-gov:secretsmanager:us-gov-west-1:444444444444:secret:db:x")
                .unwrap();
        assert_eq!(arn.partition, Partition::AwsUsGov);
        assert_eq!(arn.service, "secretsmanager");
        assert_eq!(arn.region, "us-gov-west-1");
        assert_eq!(arn.account, "444444444444");
        assert_eq!(arn.resource, "secret:db:x");
    }

    #[test]
    fn malformed_arns_say_what_is_wrong() {
        for (text, err) in [
            ("/a", ArnError::NotAnArn),
            ("arn:aws:ssm", ArnError::NotAnArn),
            ("urn:aws:ssm:r:123456789012:x", ArnError::NotAnArn),
            (
                "arn:gcp:ssm:eu-west-1:123456789012:parameter/a",
                ArnError::UnknownPartition,
            ),
            (
                "arn:aws::eu-west-1:123456789012:parameter/a",
                ArnError::Empty,
            ),
            ("arn:aws:ssm:eu-west-1:123456789012:", ArnError::Empty),
            ("arn:aws:ssm:EU:123456789012:parameter/a", ArnError::Region),
            ("arn:aws:ssm:eu-west-1:1:parameter/a", ArnError::Account),
        ] {
            assert_eq!(Arn::parse(text), Err(err), "{text}");
        }
    }
}
