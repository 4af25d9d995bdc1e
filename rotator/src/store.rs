//! Parameter Store access: the small seam between the rotation logic and SSM.
//!
//! [`ParameterStore`] names exactly the calls a rotation makes; [`SsmStore`] implements it
//! with the AWS SDK, and the unit tests of `rotate` implement it in memory to drive cases
//! no emulator can produce (a read-back that differs, a write whose response was lost).
//! Errors are [`StoreError`]s carrying the operation, the parameter and a [`Class`];
//! errors of calls that carry a value keep only the error code, never the service's
//! message, so no value can travel into a log line through an error.

use std::fmt;

use aws_sdk_ssm::config::retry::RetryConfig;
use aws_sdk_ssm::error::ProvideErrorMetadata;
use aws_sdk_ssm::types::{ParameterStringFilter, ParameterTier, ParameterType};
use time::OffsetDateTime;

use crate::pace::{classify, Class, Classified};
use crate::value::SecretValue;

/// Metadata of a parameter's latest version, from `DescribeParameters`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamMeta {
    /// Full name.
    pub name: String,
    /// `String`, `StringList` or `SecureString`.
    pub param_type: String,
    /// KMS key of the latest version (SecureString only).
    pub key_id: Option<String>,
    /// Latest version number.
    pub version: i64,
    /// `Standard` or `Advanced`.
    pub tier: Option<String>,
    /// Description, kept on the new version.
    pub description: Option<String>,
    /// Allowed pattern, kept on the new version.
    pub allowed_pattern: Option<String>,
    /// Data type (`text`, `aws:ec2:image`), kept on the new version.
    pub data_type: Option<String>,
    /// Policy texts of an Advanced parameter, kept on the new version.
    pub policies: Vec<String>,
}

/// One version in a parameter's history (never its value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionInfo {
    /// Version number.
    pub version: i64,
    /// Labels on this version.
    pub labels: Vec<String>,
    /// KMS key this version was encrypted under, as the writer named it.
    pub key_id: Option<String>,
    /// When this version was written.
    pub modified: Option<OffsetDateTime>,
}

/// Everything a new version is written with.
#[derive(Debug)]
pub struct PutRequest<'a> {
    /// Parameter name.
    pub name: &'a str,
    /// The new value.
    pub value: &'a SecretValue,
    /// Resolved key ARN, passed as `KeyId`.
    pub key_arn: &'a str,
    /// `Standard` or `Advanced`.
    pub tier: &'a str,
    /// Kept from the old version.
    pub description: Option<&'a str>,
    /// Kept from the old version.
    pub allowed_pattern: Option<&'a str>,
    /// Kept from the old version.
    pub data_type: Option<&'a str>,
    /// Kept from the old version (JSON array of policies).
    pub policies: Option<String>,
}

/// How `DescribeParameters` selects; `required_tag` narrows any of them to parameters
/// carrying that tag key.
#[derive(Debug, Clone, Copy)]
pub struct Selection<'a> {
    /// Names, a path or a tag.
    pub selector: Selector<'a>,
    /// A tag key every selected parameter must carry.
    pub required_tag: Option<&'a str>,
}

/// The base of a [`Selection`].
#[derive(Debug, Clone, Copy)]
pub enum Selector<'a> {
    /// Exact names.
    Names(&'a [String]),
    /// Everything under a path, recursively.
    Path(&'a str),
    /// Everything carrying a tag key.
    Tag(&'a str),
}

/// A failed Parameter Store call.
#[derive(Debug, Clone)]
pub struct StoreError {
    /// The API operation.
    pub op: &'static str,
    /// The parameter (or selector) it was about.
    pub name: String,
    /// Retry class.
    pub class: Class,
    /// AWS error code, when the service sent one.
    pub code: Option<String>,
    /// The service's message; `None` for calls that carry a value.
    pub message: Option<String>,
}

impl StoreError {
    /// An error that did not come from the service (an unexpected response).
    pub fn local(op: &'static str, name: &str, message: impl Into<String>) -> Self {
        Self {
            op,
            name: name.to_owned(),
            class: Class::Permanent,
            code: None,
            message: Some(message.into()),
        }
    }

    fn sdk<E: ProvideErrorMetadata + std::error::Error + 'static>(
        op: &'static str,
        name: &str,
        err: aws_sdk_ssm::error::SdkError<E, aws_sdk_ssm::config::http::HttpResponse>,
        keep_message: bool,
    ) -> Self {
        let class = classify(&err);
        let code = err.code().map(str::to_owned);
        let message = if keep_message {
            Some(
                err.message()
                    .map(str::to_owned)
                    .unwrap_or_else(|| aws_sdk_ssm::error::DisplayErrorContext(&err).to_string()),
            )
        } else {
            None
        };
        Self {
            op,
            name: name.to_owned(),
            class,
            code,
            message,
        }
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} failed", self.op, self.name)?;
        if let Some(code) = &self.code {
            write!(f, ": {code}")?;
        }
        if let Some(message) = &self.message {
            write!(f, ": {message}")?;
        }
        Ok(())
    }
}

impl std::error::Error for StoreError {}

impl Classified for StoreError {
    fn class(&self) -> Class {
        self.class
    }
}

/// The Parameter Store calls a rotation needs.
pub(crate) trait ParameterStore {
    /// Metadata of the parameters a selection matches.
    async fn describe(&self, selection: Selection<'_>) -> Result<Vec<ParamMeta>, StoreError>;
    /// The decrypted value of one version.
    async fn value(&self, name: &str, version: i64) -> Result<SecretValue, StoreError>;
    /// Every version, oldest first, with labels and keys.
    async fn history(&self, name: &str) -> Result<Vec<VersionInfo>, StoreError>;
    /// Writes a new version (`Overwrite`, `SecureString`); returns its number.
    async fn put(&self, req: &PutRequest<'_>) -> Result<i64, StoreError>;
    /// Moves labels to a version; returns the labels SSM refused (`InvalidLabels`).
    async fn label(
        &self,
        name: &str,
        version: i64,
        labels: &[String],
    ) -> Result<Vec<String>, StoreError>;
    /// Removes labels from a version.
    async fn unlabel(&self, name: &str, version: i64, labels: &[String]) -> Result<(), StoreError>;
}

/// [`ParameterStore`] over the AWS SDK.
#[derive(Debug, Clone)]
pub struct SsmStore {
    ssm: aws_sdk_ssm::Client,
}

impl SsmStore {
    /// Wraps an SSM client.
    pub fn new(ssm: aws_sdk_ssm::Client) -> Self {
        Self { ssm }
    }
}

/// Path filter values carry no trailing slash (`/app/prod/` selects under `/app/prod`).
fn path_value(path: &str) -> String {
    let trimmed = path.trim_end_matches('/');
    if trimmed.is_empty() {
        "/".to_owned()
    } else {
        trimmed.to_owned()
    }
}

/// `DescribeParameters` accepts at most 50 values per filter.
const NAMES_PER_FILTER: usize = 50;

impl ParameterStore for SsmStore {
    async fn describe(&self, selection: Selection<'_>) -> Result<Vec<ParamMeta>, StoreError> {
        let (what, mut filters): (String, Vec<Vec<ParameterStringFilter>>) =
            match selection.selector {
                Selector::Names(names) => (
                    format!("names {names:?}"),
                    names
                        .chunks(NAMES_PER_FILTER)
                        .map(|chunk| {
                            vec![ParameterStringFilter::builder()
                                .key("Name")
                                .option("Equals")
                                .set_values(Some(chunk.to_vec()))
                                .build()
                                .expect("key is set")]
                        })
                        .collect(),
                ),
                Selector::Path(path) => (
                    format!("path {path}"),
                    vec![vec![ParameterStringFilter::builder()
                        .key("Path")
                        .option("Recursive")
                        .values(path_value(path))
                        .build()
                        .expect("key is set")]],
                ),
                Selector::Tag(tag) => (
                    format!("tag {tag}"),
                    // A tag filter without values matches every parameter carrying the key.
                    vec![vec![ParameterStringFilter::builder()
                        .key(format!("tag:{tag}"))
                        .build()
                        .expect("key is set")]],
                ),
            };
        if let Some(tag) = selection.required_tag {
            // Filters in one call are ANDed: the selection, and the tag key present.
            for filter in &mut filters {
                filter.push(
                    ParameterStringFilter::builder()
                        .key(format!("tag:{tag}"))
                        .build()
                        .expect("key is set"),
                );
            }
        }
        let mut out = Vec::new();
        for filter in filters {
            let mut token = None;
            loop {
                let page = self
                    .ssm
                    .describe_parameters()
                    .set_parameter_filters(Some(filter.clone()))
                    .max_results(50)
                    .set_next_token(token.take())
                    .send()
                    .await
                    .map_err(|e| StoreError::sdk("DescribeParameters", &what, e, true))?;
                for p in page.parameters() {
                    out.push(ParamMeta {
                        name: p.name().unwrap_or_default().to_owned(),
                        param_type: p
                            .r#type()
                            .map(|t| t.as_str().to_owned())
                            .unwrap_or_default(),
                        key_id: p.key_id().map(str::to_owned),
                        version: p.version(),
                        tier: p.tier().map(|t| t.as_str().to_owned()),
                        description: p.description().map(str::to_owned),
                        allowed_pattern: p.allowed_pattern().map(str::to_owned),
                        data_type: p.data_type().map(str::to_owned),
                        policies: p
                            .policies()
                            .iter()
                            .filter_map(|pol| pol.policy_text().map(str::to_owned))
                            .collect(),
                    });
                }
                match page.next_token() {
                    Some(t) if !t.is_empty() => token = Some(t.to_owned()),
                    _ => break,
                }
            }
        }
        Ok(out)
    }

    async fn value(&self, name: &str, version: i64) -> Result<SecretValue, StoreError> {
        let out = self
            .ssm
            .get_parameter()
            .name(format!("{name}:{version}"))
            .with_decryption(true)
            .send()
            .await
            .map_err(|e| StoreError::sdk("GetParameter", name, e, false))?;
        let value = out
            .parameter
            .and_then(|p| p.value)
            .ok_or_else(|| StoreError::local("GetParameter", name, "response had no value"))?;
        Ok(SecretValue::new(value))
    }

    async fn history(&self, name: &str) -> Result<Vec<VersionInfo>, StoreError> {
        let mut out = Vec::new();
        let mut token = None;
        loop {
            // Without decryption: only versions, labels and keys are needed here.
            let page = self
                .ssm
                .get_parameter_history()
                .name(name)
                .with_decryption(false)
                .max_results(50)
                .set_next_token(token.take())
                .send()
                .await
                .map_err(|e| StoreError::sdk("GetParameterHistory", name, e, true))?;
            for p in page.parameters() {
                out.push(VersionInfo {
                    version: p.version(),
                    labels: p.labels().to_vec(),
                    key_id: p.key_id().map(str::to_owned),
                    modified: p
                        .last_modified_date()
                        .and_then(|d| OffsetDateTime::from_unix_timestamp_nanos(d.as_nanos()).ok()),
                });
            }
            match page.next_token() {
                Some(t) if !t.is_empty() => token = Some(t.to_owned()),
                _ => break,
            }
        }
        out.sort_by_key(|v| v.version);
        Ok(out)
    }

    async fn put(&self, req: &PutRequest<'_>) -> Result<i64, StoreError> {
        let out = self
            .ssm
            .put_parameter()
            .name(req.name)
            .value(req.value.expose())
            .r#type(ParameterType::SecureString)
            .overwrite(true)
            .key_id(req.key_arn)
            .tier(ParameterTier::from(req.tier))
            .set_description(req.description.map(str::to_owned))
            .set_allowed_pattern(req.allowed_pattern.map(str::to_owned))
            .set_data_type(req.data_type.map(str::to_owned))
            .set_policies(req.policies.clone())
            .customize()
            // PutParameter has no idempotency token: a retry after a lost response would
            // write a second version, so the SDK must not retry it behind our back. The
            // rotation retries it itself, only when it knows the write did not happen.
            .config_override(
                aws_sdk_ssm::config::Builder::default().retry_config(RetryConfig::disabled()),
            )
            .send()
            .await
            .map_err(|e| StoreError::sdk("PutParameter", req.name, e, false))?;
        Ok(out.version())
    }

    async fn label(
        &self,
        name: &str,
        version: i64,
        labels: &[String],
    ) -> Result<Vec<String>, StoreError> {
        let out = self
            .ssm
            .label_parameter_version()
            .name(name)
            .parameter_version(version)
            .set_labels(Some(labels.to_vec()))
            .send()
            .await
            .map_err(|e| StoreError::sdk("LabelParameterVersion", name, e, true))?;
        Ok(out.invalid_labels().to_vec())
    }

    async fn unlabel(&self, name: &str, version: i64, labels: &[String]) -> Result<(), StoreError> {
        self.ssm
            .unlabel_parameter_version()
            .name(name)
            .parameter_version(version)
            .set_labels(Some(labels.to_vec()))
            .send()
            .await
            .map_err(|e| StoreError::sdk("UnlabelParameterVersion", name, e, true))?;
        Ok(())
    }
}
