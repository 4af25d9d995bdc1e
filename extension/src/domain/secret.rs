//! A Secrets Manager secret version, the version a read asks for, and a batch read's
//! per-secret failure.

use serde::Serialize;

use super::value::{SecretBytes, SecretText, Timestamp};

/// Length of the random suffix Secrets Manager appends to a secret's name in its ARN
/// (`-AbCdEf`), dash included.
const ARN_SUFFIX_LEN: usize = 7;

/// Whether a secret called `name`, with `arn`, is the one `asked` names: by its name, its
/// full ARN, or its partial ARN (the ARN without the random suffix, which Secrets Manager
/// accepts as an id and answers with the full ARN).
pub fn secret_answers_to(name: Option<&str>, arn: Option<&str>, asked: &str) -> bool {
    if name == Some(asked) || arn == Some(asked) {
        return true;
    }
    arn.and_then(|arn| arn.strip_prefix(asked))
        .is_some_and(|suffix| {
            asked.starts_with("arn:")
                && suffix.len() == ARN_SUFFIX_LEN
                && suffix.starts_with('-')
                && suffix[1..].bytes().all(|b| b.is_ascii_alphanumeric())
        })
}

/// One Secrets Manager secret version, as `GetSecretValue` returns it.
#[derive(Debug, Clone, Serialize)]
pub struct Secret {
    /// The secret's ARN.
    #[serde(rename = "ARN")]
    pub arn: Option<String>,
    /// When this version was created.
    #[serde(rename = "CreatedDate")]
    pub created_date: Option<Timestamp>,
    /// The secret's friendly name.
    #[serde(rename = "Name")]
    pub name: Option<String>,
    /// Binary value, base64 in JSON.
    #[serde(rename = "SecretBinary")]
    pub secret_binary: Option<SecretBytes>,
    /// String value (often JSON).
    #[serde(rename = "SecretString")]
    pub secret_string: Option<SecretText>,
    /// The version's id.
    #[serde(rename = "VersionId")]
    pub version_id: Option<String>,
    /// Staging labels on this version (`AWSCURRENT`, `AWSPREVIOUS`, ...).
    #[serde(rename = "VersionStages")]
    pub version_stages: Box<[String]>,
}

impl Secret {
    /// Bytes of the value as served (binary in base64), to size a response body.
    pub fn payload_len(&self) -> usize {
        self.secret_string.as_ref().map_or(0, |s| s.expose().len())
            + self
                .secret_binary
                .as_ref()
                .map_or(0, |b| b.len().div_ceil(3) * 4)
    }
}

/// The version of a secret a read asks for when it is not `AWSCURRENT`: an explicit version
/// id, a staging label, or (as `GetSecretValue` accepts) both.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SecretVersion {
    /// Explicit version id.
    pub version_id: Option<String>,
    /// Staging label.
    pub stage: Option<String>,
}

impl SecretVersion {
    /// The version asked for by an id and a stage; `None` when neither is given
    /// (`AWSCURRENT`).
    pub fn asked(version_id: Option<&str>, stage: Option<&str>) -> Option<Self> {
        (version_id.is_some() || stage.is_some()).then(|| Self {
            version_id: version_id.map(str::to_owned),
            stage: stage.map(str::to_owned),
        })
    }
}

/// One secret a batch could not read.
#[derive(Debug, Clone, Serialize)]
pub struct SecretBatchError {
    /// The id as requested.
    #[serde(rename = "SecretId")]
    pub secret_id: String,
    /// AWS's error code.
    #[serde(rename = "ErrorCode")]
    pub error_code: String,
    /// AWS's message.
    #[serde(rename = "Message")]
    pub message: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_answers_to_its_name_its_arn_and_its_partial_arn() {
        let arn = "arn:aws:secretsmanager:us-east-1:123456789012:secret:app/db-AbC123";
        let answers = |asked: &str| secret_answers_to(Some("app/db"), Some(arn), asked);
        assert!(answers("app/db"));
        assert!(answers(arn));
        assert!(answers(
            "arn:aws:secretsmanager:us-east-1:123456789012:secret:app/db"
        ));
        // Neither a shorter name's partial ARN nor a name that only ends the same way.
        assert!(!answers(
            "arn:aws:secretsmanager:us-east-1:123456789012:secret:app/d"
        ));
        assert!(!answers(
            "arn:aws:secretsmanager:us-east-1:123456789012:secret:app"
        ));
        assert!(!answers("db-AbC123"));
        assert!(!answers("app/db-AbC123"));
        assert!(!secret_answers_to(Some("a"), None, "arn:x"));
    }
}
