//! An SSM parameter version as lockbox caches and serves it, and its ARN.

use std::fmt;
use std::sync::Arc;

use serde::{Serialize, Serializer};

use super::value::{Label, SecretText, Timestamp};

/// One SSM parameter version, as `GetParameter` returns it (field names as the AWS layer's
/// JSON, in its order: see the `Serialize` impl).
#[derive(Debug, Clone)]
pub struct Parameter {
    /// Full ARN (for `/aws/reference/secretsmanager/...` names: the secret's ARN).
    pub arn: Option<ParameterArn>,
    /// `text`, `aws:ec2:image`, ...; null for Secrets Manager references.
    pub data_type: Option<Label>,
    /// When this version was written.
    pub last_modified_date: Option<Timestamp>,
    /// The parameter's name (never the ARN, even when asked by ARN). Shared with the
    /// cache key that holds the parameter when it was asked by this name.
    pub name: Arc<str>,
    /// The selector and a reference's metadata, which few parameters have: boxed, so that
    /// the many without them carry one pointer for both in the cache.
    pub extra: Option<Box<ParameterExtra>>,
    /// `String`, `StringList` or `SecureString`.
    pub kind: Label,
    /// The value; a SecureString's ciphertext unless decryption was asked for.
    pub value: SecretText,
    /// The version number.
    pub version: i64,
}

impl Serialize for Parameter {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct as _;
        let mut out = s.serialize_struct("Parameter", 9)?;
        out.serialize_field("ARN", &ArnField(self))?;
        out.serialize_field("DataType", &self.data_type)?;
        out.serialize_field("LastModifiedDate", &self.last_modified_date)?;
        out.serialize_field("Name", &*self.name)?;
        out.serialize_field("Selector", &self.selector())?;
        out.serialize_field("SourceResult", &self.source_result())?;
        out.serialize_field("Type", &self.kind)?;
        out.serialize_field("Value", &self.value)?;
        out.serialize_field("Version", &self.version)?;
        out.end()
    }
}

/// A parameter's `ARN` field, written into the response without building the string first
/// (every cache hit on a parameter writes one).
struct ArnField<'a>(&'a Parameter);

impl Serialize for ArnField<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let name = &self.0.name;
        match &self.0.arn {
            None => s.serialize_none(),
            Some(ParameterArn::Whole(arn)) => s.serialize_str(arn),
            Some(ParameterArn::Prefix(prefix)) => s.collect_str(&JoinedArn { prefix, name }),
        }
    }
}

/// A shared ARN prefix and a name joined as AWS writes a parameter's ARN: a name without a
/// leading `/` gets one.
struct JoinedArn<'a> {
    prefix: &'a str,
    name: &'a str,
}

impl fmt::Display for JoinedArn<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let slash = if self.name.starts_with('/') { "" } else { "/" };
        write!(f, "{}{slash}{}", self.prefix, self.name)
    }
}

/// The fields of a [`Parameter`] that are usually null.
#[derive(Debug, Clone)]
pub struct ParameterExtra {
    /// `:3` or `:label` when a version or label was asked for. Filled from the request,
    /// because SSM (and moto) do not always echo it.
    pub selector: Option<String>,
    /// For Secrets Manager references: the secret's metadata as a JSON string.
    pub source_result: Option<SecretText>,
}

impl ParameterExtra {
    /// The box for a parameter's extra fields; `None` when it has neither.
    pub fn new(selector: Option<String>, source_result: Option<SecretText>) -> Option<Box<Self>> {
        (selector.is_some() || source_result.is_some()).then(|| {
            Box::new(Self {
                selector,
                source_result,
            })
        })
    }
}

/// A parameter's ARN. Nearly every one is `arn:PARTITION:ssm:REGION:ACCOUNT:parameter`
/// followed by the name, and that prefix is the same for every parameter read through one
/// role and region: it is kept once (an `Arc`) and the ARN written out only when served,
/// which spares each cached parameter an allocation of its own. An ARN of another
/// shape (a Secrets Manager reference's is the secret's) is kept whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParameterArn {
    /// The shared prefix, to which the name is appended.
    Prefix(Arc<str>),
    /// The ARN as AWS gave it.
    Whole(Box<str>),
}

/// The ARN prefix of the parameters one source reads, shared by all their cached entries.
#[derive(Debug, Default)]
pub struct ArnPrefixes(std::sync::Mutex<Option<Arc<str>>>);

impl ArnPrefixes {
    /// Splits `arn` into the shared prefix and `name` when it has that shape.
    pub fn arn(&self, arn: String, name: &str) -> ParameterArn {
        let Some(prefix) = arn
            .strip_suffix(name)
            .map(|head| {
                if name.starts_with('/') {
                    head
                } else {
                    head.strip_suffix('/').unwrap_or("")
                }
            })
            .filter(|head| head.ends_with(":parameter"))
        else {
            return ParameterArn::Whole(arn.into_boxed_str());
        };
        let mut shared = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match shared.as_ref().filter(|known| ***known == *prefix) {
            Some(known) => ParameterArn::Prefix(known.clone()),
            None => {
                let made: Arc<str> = Arc::from(prefix);
                *shared = Some(made.clone());
                ParameterArn::Prefix(made)
            }
        }
    }
}

impl Parameter {
    /// The ARN, as AWS gave it.
    pub fn arn(&self) -> Option<std::borrow::Cow<'_, str>> {
        use std::borrow::Cow;
        Some(match self.arn.as_ref()? {
            ParameterArn::Whole(arn) => Cow::Borrowed(&**arn),
            ParameterArn::Prefix(prefix) => Cow::Owned(
                JoinedArn {
                    prefix,
                    name: &self.name,
                }
                .to_string(),
            ),
        })
    }

    /// Whether `asked` is this parameter's name or ARN.
    pub fn is_called(&self, asked: &str) -> bool {
        *self.name == *asked || self.arn().is_some_and(|arn| arn == asked)
    }

    /// `:3` or `:label` when a version or label was asked for.
    pub fn selector(&self) -> Option<&str> {
        self.extra.as_ref()?.selector.as_deref()
    }

    /// For Secrets Manager references: the secret's metadata as a JSON string.
    pub fn source_result(&self) -> Option<&SecretText> {
        self.extra.as_ref()?.source_result.as_ref()
    }

    /// Bytes of the value and metadata that carry data, to size a response body.
    pub fn payload_len(&self) -> usize {
        self.value.expose().len() + self.source_result().map_or(0, |s| s.expose().len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arns_share_their_prefix_and_read_back_as_aws_gave_them() {
        let prefixes = ArnPrefixes::default();
        let cases = [
            ("arn:aws:ssm:eu-west-1:1:parameter/app/db", "/app/db"),
            ("arn:aws:ssm:eu-west-1:1:parameter/plain", "plain"),
            ("arn:aws:ssm:eu-west-1:1:parameter/a/b", "a/b"),
        ];
        let mut shared = Vec::new();
        for (arn, name) in cases {
            let split = prefixes.arn(arn.to_owned(), name);
            let ParameterArn::Prefix(prefix) = &split else {
                panic!("{arn} kept whole");
            };
            shared.push(prefix.clone());
            let p = Parameter {
                arn: Some(split),
                name: name.into(),
                ..parameter()
            };
            assert_eq!(p.arn().as_deref(), Some(arn));
            assert!(p.is_called(arn) && p.is_called(name) && !p.is_called("/other"));
        }
        assert!(shared.windows(2).all(|w| Arc::ptr_eq(&w[0], &w[1])));
        // A reference's ARN is the secret's; another region's prefix is not confused
        // with the first.
        let secret = "arn:aws:secretsmanager:eu-west-1:1:secret:db-AbCdEf";
        assert_eq!(
            prefixes.arn(secret.to_owned(), "/aws/reference/secretsmanager/db"),
            ParameterArn::Whole(secret.into())
        );
        let other = prefixes.arn("arn:aws:ssm:us-east-1:1:parameter/x".to_owned(), "x");
        assert_eq!(
            other,
            ParameterArn::Prefix("arn:aws:ssm:us-east-1:1:parameter".into())
        );
    }

    fn parameter() -> Parameter {
        Parameter {
            arn: Some(ArnPrefixes::default().arn(
                "arn:aws:ssm:us-east-1:123456789012:parameter/app/db/password".into(),
                "/app/db/password",
            )),
            data_type: Some("text".into()),
            last_modified_date: Timestamp::new(1_668_587_045, 571_000_000),
            name: "/app/db/password".into(),
            extra: None,
            kind: "SecureString".into(),
            value: SecretText::new("hunter2".into()),
            version: 2,
        }
    }

    #[test]
    fn debug_never_shows_values() {
        assert!(!format!("{:?}", parameter()).contains("hunter2"));
    }
}
