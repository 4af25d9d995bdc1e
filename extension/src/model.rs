//! What lockbox caches and serves: parameters and secrets, and the JSON shapes of the AWS
//! layer's answers (field names, order and formats as captured from it).
//!
//! Values live in [`SecretText`] / [`SecretBytes`]: they are zeroized when the last copy is
//! dropped (cache eviction, replacement, shutdown) and their `Debug` never shows them.

use std::fmt;
use std::sync::Arc;

use base64::Engine as _;
use serde::{Serialize, Serializer};
use zeroize::Zeroizing;

/// A value that may be secret. Serializes as the plain string (it is what function code
/// asked for), prints as a length only.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretText(Zeroizing<String>);

impl SecretText {
    /// Takes ownership of a value; the `String` is wiped when this is dropped.
    pub fn new(value: String) -> Self {
        Self(Zeroizing::new(value))
    }

    /// The value itself, for serialization and JSON-key extraction.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<redacted, {} bytes>", self.0.len())
    }
}

impl Serialize for SecretText {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

/// Binary secret data, served base64-encoded as the AWS API does.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretBytes(Zeroizing<Vec<u8>>);

impl SecretBytes {
    /// Takes ownership of the bytes; they are wiped when this is dropped.
    pub fn new(value: Vec<u8>) -> Self {
        Self(Zeroizing::new(value))
    }
}

impl fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<redacted, {} bytes>", self.0.len())
    }
}

impl Serialize for SecretBytes {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let encoded = Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(&*self.0));
        s.serialize_str(&encoded)
    }
}

/// A response body being written: a value passes through it on its way to function code,
/// so every buffer it ever used is wiped. Growing allocates a new buffer and wipes the old
/// one (a plain `Vec` would leave the old copy in freed memory), and the finished body is
/// wiped when hyper has sent it and drops the last reference.
#[derive(Default)]
pub struct WipingBuffer(Zeroizing<Vec<u8>>);

impl WipingBuffer {
    /// A buffer that holds `capacity` bytes before it first grows.
    pub fn with_capacity(capacity: usize) -> Self {
        Self(Zeroizing::new(Vec::with_capacity(capacity)))
    }

    /// The body, sent without another copy.
    pub fn into_bytes(self) -> bytes::Bytes {
        bytes::Bytes::from_owner(self.0)
    }

    /// What has been written so far.
    pub fn as_slice(&self) -> &[u8] {
        &self.0
    }

    /// Appends `data`. serde_json writes a response in dozens of small pieces, so the
    /// common case (room left, the buffer is sized for the value) is a plain copy, and
    /// growing is out of line.
    #[inline]
    fn append(&mut self, data: &[u8]) {
        if self.0.capacity() - self.0.len() < data.len() {
            self.grow(data.len());
        }
        self.0.extend_from_slice(data);
    }

    #[cold]
    #[inline(never)]
    fn grow(&mut self, more: usize) {
        let needed = self.0.len() + more;
        let mut bigger = Vec::with_capacity(needed.max(self.0.capacity() * 2));
        bigger.extend_from_slice(&self.0);
        // The old buffer is wiped as the old `Zeroizing` drops here.
        self.0 = Zeroizing::new(bigger);
    }
}

impl std::io::Write for WipingBuffer {
    #[inline]
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.append(data);
        Ok(data.len())
    }

    // What serde_json calls: one copy, without the default's retry loop.
    #[inline]
    fn write_all(&mut self, data: &[u8]) -> std::io::Result<()> {
        self.append(data);
        Ok(())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl fmt::Debug for WipingBuffer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<body, {} bytes>", self.0.len())
    }
}

/// A short string that almost always has one of a few values (a parameter's type and data
/// type): those are shared statics, so thousands of cached parameters do not each hold
/// their own copy.
pub type Label = std::borrow::Cow<'static, str>;

/// The [`Label`] for `text`, without an allocation when it is a common one.
pub fn label(text: &str) -> Label {
    const COMMON: [&str; 6] = [
        "String",
        "StringList",
        "SecureString",
        "text",
        "aws:ec2:image",
        "aws:ssm:integration",
    ];
    match COMMON.iter().find(|c| **c == text) {
        Some(common) => Label::Borrowed(common),
        None => Label::Owned(text.to_owned()),
    }
}

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
    /// the many without them take 40 bytes less each in the cache.
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
/// which spares each cached parameter an allocation of 50 to 100 bytes. An ARN of another
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

impl Secret {
    /// Bytes of the value as served (binary in base64), to size a response body.
    pub fn payload_len(&self) -> usize {
        self.secret_string.as_ref().map_or(0, |s| s.expose().len())
            + self
                .secret_binary
                .as_ref()
                .map_or(0, |b| b.0.len().div_ceil(3) * 4)
    }
}

/// The always-empty `ResultMetadata` object of the AWS layer's answers.
#[derive(Debug, Default, Serialize)]
pub struct ResultMetadata {}

/// Body of `/systemsmanager/parameters/get`.
#[derive(Debug, Serialize)]
pub struct ParameterResponse<'a> {
    /// The parameter.
    #[serde(rename = "Parameter")]
    pub parameter: &'a Parameter,
    /// Always `{}`.
    #[serde(rename = "ResultMetadata")]
    pub result_metadata: ResultMetadata,
}

/// Body of `/secretsmanager/get`: the secret's fields at the top level.
#[derive(Debug, Serialize)]
pub struct SecretResponse<'a> {
    /// The secret.
    #[serde(flatten)]
    pub secret: &'a Secret,
    /// Always `{}`.
    #[serde(rename = "ResultMetadata")]
    pub result_metadata: ResultMetadata,
}

/// Body of `/systemsmanager/parameters/get-many`, as `GetParameters` answers.
#[derive(Debug, Serialize)]
pub struct ParametersResponse<'a> {
    /// Found parameters, in the order asked.
    #[serde(rename = "Parameters")]
    pub parameters: Vec<&'a Parameter>,
    /// Names that do not exist.
    #[serde(rename = "InvalidParameters")]
    pub invalid_parameters: &'a [String],
    /// Always `{}`.
    #[serde(rename = "ResultMetadata")]
    pub result_metadata: ResultMetadata,
}

/// Body of `/systemsmanager/parameters/get-by-path`, as `GetParametersByPath` answers
/// (every page at once, so no `NextToken`).
#[derive(Debug, Serialize)]
pub struct PathResponse<'a> {
    /// The parameters under the path.
    #[serde(rename = "Parameters")]
    pub parameters: Vec<&'a Parameter>,
    /// Always `{}`.
    #[serde(rename = "ResultMetadata")]
    pub result_metadata: ResultMetadata,
}

/// Body of `/secretsmanager/get-many`, as `BatchGetSecretValue` answers.
#[derive(Debug, Serialize)]
pub struct SecretsResponse<'a> {
    /// Found secrets, in the order asked.
    #[serde(rename = "SecretValues")]
    pub secret_values: Vec<&'a Secret>,
    /// Per-secret failures.
    #[serde(rename = "Errors")]
    pub errors: &'a [crate::source::SecretBatchError],
    /// Always `{}`.
    #[serde(rename = "ResultMetadata")]
    pub result_metadata: ResultMetadata,
}

/// A time AWS reported, to the millisecond the AWS layer shows. Kept as a number and
/// formatted only when served: ten thousand cached values then hold 8 bytes each for it
/// instead of a 24-character string in an allocation of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timestamp {
    /// Milliseconds since the epoch with the sign bit flipped: years 0 to 9999 never reach
    /// `i64::MIN`, so this is never zero, and `Option<Timestamp>` stays 8 bytes.
    flipped_millis: std::num::NonZeroI64,
}

impl Timestamp {
    /// The time `secs` seconds and `nanos` nanoseconds after the Unix epoch, or `None` when
    /// it cannot be written in the AWS layer's four-digit year (outside years 0 to 9999).
    pub fn new(secs: i64, nanos: u32) -> Option<Self> {
        let year = time::OffsetDateTime::from_unix_timestamp(secs).ok()?.year();
        if !(0..=9999).contains(&year) || nanos >= 1_000_000_000 {
            return None;
        }
        let millis = secs * 1000 + i64::from(nanos / 1_000_000);
        Some(Self {
            flipped_millis: std::num::NonZeroI64::new(millis ^ i64::MIN)?,
        })
    }

    fn millis(self) -> i64 {
        self.flipped_millis.get() ^ i64::MIN
    }
}

/// RFC 3339 with milliseconds and `Z`, as the AWS layer writes it. Digits are written into
/// a stack buffer: this runs on every cache hit that returns a parameter or secret, where a
/// format description and a `String` cost a measurable share of the request.
impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let millis = self.millis();
        let at = time::OffsetDateTime::from_unix_timestamp(millis.div_euclid(1000))
            .map_err(|_| fmt::Error)?;
        let (year, month, day) = at.to_calendar_date();
        let (hour, minute, second) = at.to_hms();
        let mut text = *b"0000-00-00T00:00:00.000Z";
        let fields = [
            (0..4, year.unsigned_abs()),
            (5..7, u32::from(u8::from(month))),
            (8..10, u32::from(day)),
            (11..13, u32::from(hour)),
            (14..16, u32::from(minute)),
            (17..19, u32::from(second)),
            (20..23, millis.rem_euclid(1000) as u32),
        ];
        for (range, mut n) in fields {
            for digit in text[range].iter_mut().rev() {
                *digit = b'0' + (n % 10) as u8;
                n /= 10;
            }
        }
        f.write_str(std::str::from_utf8(&text).map_err(|_| fmt::Error)?)
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_read_back_to_the_millisecond_across_their_range() {
        let cases = [
            (0, 0, "1970-01-01T00:00:00.000Z"),
            (-1, 999_000_000, "1969-12-31T23:59:59.999Z"),
            (1_668_587_045, 571_999_999, "2022-11-16T08:24:05.571Z"),
            (253_402_300_799, 0, "9999-12-31T23:59:59.000Z"),
        ];
        for (secs, nanos, text) in cases {
            let at = Timestamp::new(secs, nanos).expect(text);
            assert_eq!(at.to_string(), text);
        }
        assert_eq!(Timestamp::new(253_402_300_800, 0), None);
        assert_eq!(std::mem::size_of::<Option<Timestamp>>(), 8);
    }

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

    #[test]
    fn wiping_buffer_keeps_every_byte_across_growth() {
        use std::io::Write as _;
        let mut buffer = WipingBuffer::with_capacity(4);
        for chunk in ["ab", "cdef", &"g".repeat(100), "h"] {
            buffer.write_all(chunk.as_bytes()).unwrap();
        }
        let expected = format!("abcdef{}h", "g".repeat(100));
        assert_eq!(buffer.as_slice(), expected.as_bytes());
        assert_eq!(&buffer.into_bytes()[..], expected.as_bytes());
        assert_eq!(format!("{:?}", WipingBuffer::default()), "<body, 0 bytes>");
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
    fn parameter_json_matches_the_aws_layer_field_for_field() {
        let p = parameter();
        let body = serde_json::to_string(&ParameterResponse {
            parameter: &p,
            result_metadata: ResultMetadata::default(),
        })
        .unwrap();
        assert_eq!(
            body,
            r#"{"Parameter":{"ARN":"arn:aws:ssm:us-east-1:123456789012:parameter/app/db/password","DataType":"text","LastModifiedDate":"2022-11-16T08:24:05.571Z","Name":"/app/db/password","Selector":null,"SourceResult":null,"Type":"SecureString","Value":"hunter2","Version":2},"ResultMetadata":{}}"#
        );
    }

    #[test]
    fn secret_json_is_flat_with_base64_binary() {
        let s = Secret {
            arn: Some("arn:aws:secretsmanager:us-east-1:1:secret:dev/azure-MFUBmH".into()),
            created_date: Timestamp::new(1_668_586_960, 499_000_000),
            name: Some("dev/azure".into()),
            secret_binary: Some(SecretBytes::new(vec![0, 1, 2])),
            secret_string: None,
            version_id: Some("v1".into()),
            version_stages: Box::new(["AWSCURRENT".into()]),
        };
        let json: serde_json::Value = serde_json::to_value(SecretResponse {
            secret: &s,
            result_metadata: ResultMetadata::default(),
        })
        .unwrap();
        assert_eq!(json["CreatedDate"], "2022-11-16T08:22:40.499Z");
        assert_eq!(json["SecretBinary"], "AAEC");
        assert_eq!(json["SecretString"], serde_json::Value::Null);
        assert_eq!(json["VersionStages"][0], "AWSCURRENT");
        assert_eq!(json["ResultMetadata"], serde_json::json!({}));
    }

    #[test]
    fn debug_never_shows_values() {
        let p = parameter();
        assert!(!format!("{p:?}").contains("hunter2"));
        assert!(!format!("{:?}", SecretBytes::new(b"topsecret".to_vec())).contains("topsecret"));
    }

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
