//! A Secrets Manager secret version, the version a read asks for, and a batch read's
//! per-secret failure.

use serde::Serialize;

use super::value::{SecretBytes, SecretText, Timestamp};

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
