//! Parsing of the localhost API's query strings into typed requests.
//!
//! Strict on purpose: an unknown, repeated or malformed query parameter is a 400 naming it,
//! because a typo such as `withdecryption=true` would otherwise silently return ciphertext.

use std::borrow::Cow;

use percent_encoding::percent_decode_str;

use super::api::MAX_BATCH;
use crate::domain::{AskedScope, NameError, ParameterName, RegionName, RoleArn, Selector};

/// Longest query value accepted; SSM names and ARNs are at most 2048 characters.
const MAX_VALUE_LEN: usize = 2048;
/// How much of a bad value an error message repeats back.
const MAX_ECHO: usize = 64;

/// A request the client got wrong. The message says what and how to fix it; a value it
/// quotes is cut to its first 64 characters.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// A query parameter this route does not take.
    #[error("unknown query parameter {key:?}; allowed: {allowed}")]
    UnknownParameter {
        /// The parameter as given.
        key: String,
        /// The route's parameters, comma-separated.
        allowed: String,
    },
    /// A query parameter given twice.
    #[error("query parameter {0:?} is given more than once")]
    Repeated(String),
    /// A value longer than [`MAX_VALUE_LEN`].
    #[error("query parameter {0:?} is longer than {MAX_VALUE_LEN} characters")]
    TooLong(String),
    /// The query string does not decode to UTF-8.
    #[error("the query string is not valid UTF-8 once decoded")]
    NotUtf8,
    /// A flag that is neither `true` nor `false`.
    #[error("{key} must be true or false, not {value:?}")]
    NotAFlag {
        /// The flag.
        key: String,
        /// What was given.
        value: String,
    },
    /// `jsonKey=` with nothing after it.
    #[error("jsonKey is empty")]
    EmptyJsonKey,
    /// `roleArn=` is not a role's ARN.
    #[error("roleArn {value:?} is {why}")]
    RoleArn {
        /// What was given.
        value: String,
        /// What is wrong with it.
        why: NameError,
    },
    /// `region=` is not a region's name.
    #[error("region {value:?} is {why}")]
    Region {
        /// What was given.
        value: String,
        /// What is wrong with it.
        why: NameError,
    },
    /// A required query parameter is missing or empty.
    #[error("the query parameter {0:?} is required")]
    Required(String),
    /// A list (`names=`, `secretIds=`) with no item in it.
    #[error("{0} names nothing")]
    EmptyList(String),
    /// A list with more than [`MAX_BATCH`] items.
    #[error("{key} names {count} items; at most {MAX_BATCH} per request")]
    TooMany {
        /// The list.
        key: String,
        /// How many it named.
        count: usize,
    },
    /// A name in a list that is only a selector.
    #[error("{0:?} has no name")]
    NoName(String),
    /// `version=`, `label=` or an inline selector that is empty.
    #[error("{0} is empty")]
    EmptySelector(&'static str),
    /// A version that is zero or too large.
    #[error("{origin} {value:?} is not a version number from 1 upwards")]
    BadVersion {
        /// Where it was given.
        origin: &'static str,
        /// What was given.
        value: String,
    },
    /// A label with characters SSM does not allow, or too long.
    #[error(
        "{origin} {value:?} is not a valid label (letters, digits, '.', '-', '_'; at most 100)"
    )]
    BadLabel {
        /// Where it was given.
        origin: &'static str,
        /// What was given.
        value: String,
    },
    /// `version=` that is a label.
    #[error("version {0:?} is not a whole number")]
    VersionNotANumber(String),
    /// `label=` that is all digits.
    #[error("label {0:?} cannot be all digits (use version=)")]
    LabelAllDigits(String),
    /// Both `version=` and `label=`.
    #[error("give either version or label, not both")]
    VersionAndLabel,
    /// `version=` or `label=` with a name that has a selector already.
    #[error(
        "the name already carries a selector (name:version or name:label); \
         do not also pass version or label"
    )]
    SelectorTwice,
    /// A path that does not start with `/`.
    #[error("path {0:?} must start with '/'")]
    RelativePath(String),
    /// A keyring asked for with a selector: the route reads its three labels itself.
    #[error(
        "the keyring route reads the labels current, previous and pending itself; \
         give the name without a version or label (got {0:?})"
    )]
    KeyringSelector(String),
    /// A keyring asked for of a Secrets Manager reference, which has no SSM labels.
    #[error(
        "{0:?} is a Secrets Manager reference, which has no SSM labels; \
         read its stages with /secretsmanager/get?versionStage="
    )]
    KeyringReference(String),
}

/// What a single read answers with.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Output {
    /// The AWS layer's JSON envelope.
    #[default]
    Envelope,
    /// Only the value, as `text/plain` (`valueOnly=true`).
    Value,
    /// One key of a JSON value, as `text/plain` (`jsonKey=a.b` or `jsonKey=/a/b`).
    JsonKey(String),
}

/// A read of many parameters (`/systemsmanager/parameters/get-many`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParametersRequest {
    /// The names, in the order asked.
    pub names: Vec<ParameterName>,
    /// Whether SecureStrings are decrypted.
    pub with_decryption: bool,
    /// Skip the cache.
    pub refresh_now: bool,
    /// `roleArn=` and `region=`: whose credentials, which region.
    pub scope: AskedScope,
}

/// A read of everything under a path (`/systemsmanager/parameters/get-by-path`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathRequest {
    /// The path, starting with `/`.
    pub path: String,
    /// Include deeper levels (SSM's default is not to).
    pub recursive: bool,
    /// Whether SecureStrings are decrypted.
    pub with_decryption: bool,
    /// Skip the cache.
    pub refresh_now: bool,
    /// `roleArn=` and `region=`: whose credentials, which region.
    pub scope: AskedScope,
}

/// A read of a parameter's keyring (`/lockbox/keyring`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyringRequest {
    /// Name or ARN, without a selector.
    pub name: String,
    /// Whether SecureStrings are decrypted.
    pub with_decryption: bool,
    /// Skip the cache.
    pub refresh_now: bool,
    /// `roleArn=` and `region=`: whose credentials, which region.
    pub scope: AskedScope,
}

/// A read of many secrets (`/secretsmanager/get-many`), AWSCURRENT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretsRequest {
    /// The ids, in the order asked.
    pub ids: Vec<String>,
    /// Skip the cache.
    pub refresh_now: bool,
    /// `roleArn=` and `region=`: whose credentials, which region.
    pub scope: AskedScope,
}

/// A read of one parameter. The name is borrowed from the query when nothing in it was
/// percent-encoded: a cache hit then reads it where the request put it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParameterRequest<'q> {
    /// Name, hierarchical path or ARN, without a selector.
    pub name: Cow<'q, str>,
    /// Version or label, from `version`/`label` or inline in the name.
    pub selector: Option<Selector>,
    /// Whether a SecureString is decrypted.
    pub with_decryption: bool,
    /// Skip the cache for this request.
    pub refresh_now: bool,
    /// Envelope, value only, or one JSON key.
    pub output: Output,
    /// `roleArn=` and `region=`: whose credentials, which region.
    pub scope: AskedScope,
}

impl ParameterRequest<'_> {
    /// The parameter asked for, owned (the prefetch plan keeps it).
    pub fn parameter_name(&self) -> ParameterName {
        ParameterName {
            name: self.name.clone().into_owned(),
            selector: self.selector.clone(),
        }
    }
}

/// A read of one secret; the id borrowed from the query as a parameter's name is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretRequest<'q> {
    /// Name or ARN.
    pub secret_id: Cow<'q, str>,
    /// A specific version.
    pub version_id: Option<String>,
    /// A staging label; `AWSCURRENT` when neither this nor a version id is given.
    pub version_stage: Option<String>,
    /// Skip the cache for this request.
    pub refresh_now: bool,
    /// Envelope, value only, or one JSON key.
    pub output: Output,
    /// `roleArn=` and `region=`: whose credentials, which region.
    pub scope: AskedScope,
}

/// Most query parameters a route takes.
const MAX_ALLOWED: usize = 9;

/// The decoded query: each known parameter at most once, in the slot of its place in the
/// route's list. Values are borrowed from the query unless they had to be decoded, so a
/// plain query is parsed without allocating.
struct Query<'q> {
    allowed: &'static [&'static str],
    values: [Option<Cow<'q, str>>; MAX_ALLOWED],
}

impl<'q> Query<'q> {
    fn parse(raw: Option<&'q str>, allowed: &'static [&'static str]) -> Result<Self, RequestError> {
        debug_assert!(allowed.len() <= MAX_ALLOWED);
        let mut values: [Option<Cow<'q, str>>; MAX_ALLOWED] = Default::default();
        for part in raw.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (key, value) = part.split_once('=').unwrap_or((part, ""));
            let key = decode(key)?;
            let Some(slot) = allowed.iter().position(|k| *k == key) else {
                return Err(RequestError::UnknownParameter {
                    key: echo(&key),
                    allowed: allowed.join(", "),
                });
            };
            if values[slot].is_some() {
                return Err(RequestError::Repeated(key.into_owned()));
            }
            let value = decode(value)?;
            if value.len() > MAX_VALUE_LEN {
                return Err(RequestError::TooLong(key.into_owned()));
            }
            values[slot] = Some(value);
        }
        Ok(Self { allowed, values })
    }

    fn take(&mut self, key: &str) -> Option<Cow<'q, str>> {
        let slot = self.allowed.iter().position(|k| *k == key)?;
        self.values[slot].take()
    }

    fn flag(&mut self, key: &str) -> Result<bool, RequestError> {
        match self.take(key) {
            None => Ok(false),
            Some(v) if v.eq_ignore_ascii_case("true") => Ok(true),
            Some(v) if v.eq_ignore_ascii_case("false") => Ok(false),
            Some(v) => Err(RequestError::NotAFlag {
                key: key.to_owned(),
                value: echo(&v),
            }),
        }
    }

    /// `valueOnly` and `jsonKey`: `jsonKey` implies the value only.
    fn output(&mut self) -> Result<Output, RequestError> {
        let value_only = self.flag("valueOnly")?;
        match self.take("jsonKey") {
            Some(key) if key.is_empty() => Err(RequestError::EmptyJsonKey),
            Some(key) => Ok(Output::JsonKey(key.into_owned())),
            None if value_only => Ok(Output::Value),
            None => Ok(Output::Envelope),
        }
    }

    /// `roleArn` and `region`: accepted on every route.
    fn scope(&mut self) -> Result<AskedScope, RequestError> {
        let role = match self.take("roleArn") {
            None => None,
            Some(v) if v.is_empty() => None,
            Some(v) => Some(RoleArn::parse(&v).map_err(|why| RequestError::RoleArn {
                value: echo(&v),
                why,
            })?),
        };
        let region = match self.take("region") {
            None => None,
            Some(v) if v.is_empty() => None,
            Some(v) => Some(RegionName::parse(&v).map_err(|why| RequestError::Region {
                value: echo(&v),
                why,
            })?),
        };
        Ok(AskedScope { role, region })
    }

    fn list(&mut self, key: &str) -> Result<Vec<String>, RequestError> {
        let items: Vec<String> = self
            .required(key)?
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect();
        if items.is_empty() {
            return Err(RequestError::EmptyList(key.to_owned()));
        }
        if items.len() > MAX_BATCH {
            return Err(RequestError::TooMany {
                key: key.to_owned(),
                count: items.len(),
            });
        }
        Ok(items)
    }

    fn required(&mut self, key: &str) -> Result<Cow<'q, str>, RequestError> {
        self.take(key)
            .filter(|v| !v.is_empty())
            .ok_or_else(|| RequestError::Required(key.to_owned()))
    }
}

/// Percent-decodes (with `+` as space, as in form encoding), refusing invalid UTF-8 rather
/// than replacing it: a mangled name would be looked up as a different parameter.
fn decode(s: &str) -> Result<Cow<'_, str>, RequestError> {
    // Most names and flags have nothing encoded: borrowed, not copied.
    if !s.contains(['+', '%']) {
        return Ok(Cow::Borrowed(s));
    }
    // Escapes alone (`%2F`) are decoded straight from the request: one copy, not two.
    let spaced;
    let s = if s.contains('+') {
        spaced = s.replace('+', " ");
        &spaced
    } else {
        s
    };
    percent_decode_str(s)
        .decode_utf8()
        .map(|c| Cow::Owned(c.into_owned()))
        .map_err(|_| RequestError::NotUtf8)
}

/// The first `len` bytes of `text` (a char boundary), borrowed if it was.
fn prefix(text: Cow<'_, str>, len: usize) -> Cow<'_, str> {
    match text {
        Cow::Borrowed(text) => Cow::Borrowed(&text[..len]),
        Cow::Owned(mut text) => {
            text.truncate(len);
            Cow::Owned(text)
        }
    }
}

fn echo(s: &str) -> String {
    s.chars().take(MAX_ECHO).collect()
}

/// Splits an inline selector off a parameter name or ARN.
fn split_selector(name: &str) -> (&str, Option<&str>) {
    // Secrets Manager references are opaque to SSM selectors.
    if name.starts_with("/aws/reference/secretsmanager/") {
        return (name, None);
    }
    let base_colons = if name.starts_with("arn:") { 5 } else { 0 };
    match name.match_indices(':').nth(base_colons) {
        Some((i, _)) => (&name[..i], Some(&name[i + 1..])),
        None => (name, None),
    }
}

fn parse_selector(text: &str, origin: &'static str) -> Result<Selector, RequestError> {
    if text.is_empty() {
        return Err(RequestError::EmptySelector(origin));
    }
    if text.bytes().all(|b| b.is_ascii_digit()) {
        return match text.parse::<u64>() {
            Ok(v) if v > 0 => Ok(Selector::Version(v)),
            _ => Err(RequestError::BadVersion {
                origin,
                value: echo(text),
            }),
        };
    }
    let valid = text.len() <= 100
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if !valid {
        return Err(RequestError::BadLabel {
            origin,
            value: echo(text),
        });
    }
    Ok(Selector::Label(text.to_owned()))
}

/// Parses a name with an optional inline selector, as in `GetParameters`.
fn parse_name(full: &str) -> Result<ParameterName, RequestError> {
    let (name, inline) = split_selector(full);
    if name.is_empty() {
        return Err(RequestError::NoName(echo(full)));
    }
    Ok(ParameterName {
        name: name.to_owned(),
        selector: inline
            .map(|s| parse_selector(s, "the selector in the name"))
            .transpose()?,
    })
}

/// Parses `/systemsmanager/parameters/get-many`'s query: `names=a,b:3,c`.
pub fn parse_parameters(raw: Option<&str>) -> Result<ParametersRequest, RequestError> {
    const ALLOWED: &[&str] = &["names", "withDecryption", "refreshNow", "roleArn", "region"];
    let mut q = Query::parse(raw, ALLOWED)?;
    let names = q
        .list("names")?
        .iter()
        .map(|n| parse_name(n))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(ParametersRequest {
        names,
        with_decryption: q.flag("withDecryption")?,
        refresh_now: q.flag("refreshNow")?,
        scope: q.scope()?,
    })
}

/// Parses `/lockbox/stats`'s query: `entries=true` lists the cached entries too.
pub fn parse_stats(raw: Option<&str>) -> Result<bool, RequestError> {
    Query::parse(raw, &["entries"])?.flag("entries")
}

/// Parses `/lockbox/keyring`'s query.
pub fn parse_keyring(raw: Option<&str>) -> Result<KeyringRequest, RequestError> {
    const ALLOWED: &[&str] = &["name", "withDecryption", "refreshNow", "roleArn", "region"];
    let mut q = Query::parse(raw, ALLOWED)?;
    let full = q.required("name")?;
    if full.starts_with("/aws/reference/secretsmanager/") {
        return Err(RequestError::KeyringReference(echo(&full)));
    }
    let (name, selector) = split_selector(&full);
    if selector.is_some() {
        return Err(RequestError::KeyringSelector(echo(&full)));
    }
    if name.is_empty() {
        return Err(RequestError::Required("name".to_owned()));
    }
    Ok(KeyringRequest {
        name: name.to_owned(),
        with_decryption: q.flag("withDecryption")?,
        refresh_now: q.flag("refreshNow")?,
        scope: q.scope()?,
    })
}

/// Parses `/systemsmanager/parameters/get-by-path`'s query.
pub fn parse_path(raw: Option<&str>) -> Result<PathRequest, RequestError> {
    const ALLOWED: &[&str] = &[
        "path",
        "recursive",
        "withDecryption",
        "refreshNow",
        "roleArn",
        "region",
    ];
    let mut q = Query::parse(raw, ALLOWED)?;
    let path = q.required("path")?;
    if !path.starts_with('/') {
        return Err(RequestError::RelativePath(echo(&path)));
    }
    Ok(PathRequest {
        path: path.into_owned(),
        recursive: q.flag("recursive")?,
        with_decryption: q.flag("withDecryption")?,
        refresh_now: q.flag("refreshNow")?,
        scope: q.scope()?,
    })
}

/// Parses a query of `roleArn` and `region` alone (the suffix of a `LOCKBOX_PREFETCH`
/// entry), with the same rules as on the routes.
pub fn parse_scope(raw: &str) -> Result<AskedScope, RequestError> {
    let mut q = Query::parse(Some(raw), &["roleArn", "region"])?;
    q.scope()
}

/// Parses `/secretsmanager/get-many`'s query: `secretIds=a,b`.
pub fn parse_secrets(raw: Option<&str>) -> Result<SecretsRequest, RequestError> {
    const ALLOWED: &[&str] = &["secretIds", "refreshNow", "roleArn", "region"];
    let mut q = Query::parse(raw, ALLOWED)?;
    Ok(SecretsRequest {
        ids: q.list("secretIds")?,
        refresh_now: q.flag("refreshNow")?,
        scope: q.scope()?,
    })
}

/// Parses `/systemsmanager/parameters/get`'s query.
pub fn parse_parameter(raw: Option<&str>) -> Result<ParameterRequest<'_>, RequestError> {
    const ALLOWED: &[&str] = &[
        "name",
        "version",
        "label",
        "withDecryption",
        "refreshNow",
        "valueOnly",
        "jsonKey",
        "roleArn",
        "region",
    ];
    let mut q = Query::parse(raw, ALLOWED)?;
    let full = q.required("name")?;
    let version = q.take("version");
    let label = q.take("label");
    let (name, inline) = split_selector(&full);
    if name.is_empty() {
        return Err(RequestError::Required("name".to_owned()));
    }
    let name_len = name.len();
    let selector = match (version, label, inline) {
        (Some(_), Some(_), _) => return Err(RequestError::VersionAndLabel),
        (Some(_), None, Some(_)) | (None, Some(_), Some(_)) => {
            return Err(RequestError::SelectorTwice)
        }
        (Some(v), None, None) => match parse_selector(&v, "version")? {
            s @ Selector::Version(_) => Some(s),
            Selector::Label(_) => return Err(RequestError::VersionNotANumber(echo(&v))),
        },
        (None, Some(l), None) => match parse_selector(&l, "label")? {
            s @ Selector::Label(_) => Some(s),
            // SSM labels may not start with a digit, so an all-digit label cannot exist.
            Selector::Version(_) => return Err(RequestError::LabelAllDigits(echo(&l))),
        },
        (None, None, Some(s)) => Some(parse_selector(s, "the selector in the name")?),
        (None, None, None) => None,
    };
    Ok(ParameterRequest {
        name: prefix(full, name_len),
        selector,
        with_decryption: q.flag("withDecryption")?,
        refresh_now: q.flag("refreshNow")?,
        output: q.output()?,
        scope: q.scope()?,
    })
}

/// Parses `/secretsmanager/get`'s query.
pub fn parse_secret(raw: Option<&str>) -> Result<SecretRequest<'_>, RequestError> {
    const ALLOWED: &[&str] = &[
        "secretId",
        "versionId",
        "versionStage",
        "refreshNow",
        "valueOnly",
        "jsonKey",
        "roleArn",
        "region",
    ];
    let mut q = Query::parse(raw, ALLOWED)?;
    let secret_id = q.required("secretId")?;
    let version_id = q
        .take("versionId")
        .filter(|v| !v.is_empty())
        .map(Cow::into_owned);
    let version_stage = q
        .take("versionStage")
        .filter(|v| !v.is_empty())
        .map(Cow::into_owned);
    Ok(SecretRequest {
        secret_id,
        version_id,
        version_stage,
        refresh_now: q.flag("refreshNow")?,
        output: q.output()?,
        scope: q.scope()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_names_selectors_and_flags() {
        let r = parse_parameter(Some("name=%2Fapp%2Fdb&version=3&withDecryption=true")).unwrap();
        assert_eq!(r.name, "/app/db");
        assert_eq!(r.selector, Some(Selector::Version(3)));
        assert!(r.with_decryption);
        assert_eq!(r.parameter_name().api_name(), "/app/db:3");

        let r = parse_parameter(Some("name=/app/db:Dev")).unwrap();
        assert_eq!(r.selector, Some(Selector::Label("Dev".into())));
        assert!(!r.with_decryption);

        let arn = "arn:aws-cn:ssm:cn-north-1:123456789012:parameter/app/db";
        let query = format!("name={arn}:7");
        let r = parse_parameter(Some(&query)).unwrap();
        assert_eq!(r.name, arn);
        assert_eq!(r.selector, Some(Selector::Version(7)));

        let r = parse_parameter(Some(
            "name=%2Faws%2Freference%2Fsecretsmanager%2Fdev%2Fazure",
        ))
        .unwrap();
        assert_eq!(r.name, "/aws/reference/secretsmanager/dev/azure");
    }

    #[test]
    fn a_keyring_is_asked_by_a_bare_name_with_the_parameter_routes_options() {
        let arn = "arn:aws:ssm:eu-west-1:123456789012:parameter/app/key";
        let r = parse_keyring(Some(&format!(
            "name={arn}&withDecryption=true&refreshNow=true&region=eu-west-1"
        )))
        .unwrap();
        assert_eq!(r.name, arn);
        assert!(r.with_decryption && r.refresh_now);
        assert_eq!(
            r.scope.region.as_ref().map(|r| r.as_str()),
            Some("eu-west-1")
        );
        for (query, expect) in [
            (
                "name=/app/key:current",
                "give the name without a version or label",
            ),
            (
                "name=/app/key:3",
                "give the name without a version or label",
            ),
            ("name=/aws/reference/secretsmanager/db", "has no SSM labels"),
            (
                "name=/app/key&label=current",
                "unknown query parameter \"label\"",
            ),
            ("withDecryption=true", "\"name\" is required"),
        ] {
            let err = parse_keyring(Some(query)).unwrap_err().to_string();
            assert!(err.contains(expect), "{query}: {err}");
        }
    }

    #[test]
    fn malformed_queries_are_named() {
        for (query, expect) in [
            ("", "\"name\" is required"),
            ("name=", "\"name\" is required"),
            ("name=a&version=1&label=x", "not both"),
            ("name=a&version=abc", "not a whole number"),
            ("name=a&version=0", "from 1 upwards"),
            ("name=a&label=12", "all digits"),
            ("name=a:1&label=x", "already carries a selector"),
            (
                "name=a&withdecryption=true",
                "unknown query parameter \"withdecryption\"",
            ),
            ("name=a&name=b", "more than once"),
            ("name=a&withDecryption=yes", "true or false"),
            ("name=%FF", "UTF-8"),
            ("name=a:bad%20label", "not a valid label"),
        ] {
            let err = parse_parameter(Some(query)).unwrap_err();
            assert!(err.to_string().contains(expect), "{query}: {err}");
        }
        let err = parse_secret(Some("secretId=a&stage=x")).unwrap_err();
        assert!(err.to_string().contains("\"stage\""));
        assert!(parse_secret(None)
            .unwrap_err()
            .to_string()
            .contains("secretId"));
    }

    #[test]
    fn secret_defaults() {
        let r = parse_secret(Some("secretId=dev%2Fazure&versionStage=AWSPREVIOUS")).unwrap();
        assert_eq!(r.secret_id, "dev/azure");
        assert_eq!(r.version_stage.as_deref(), Some("AWSPREVIOUS"));
        assert_eq!(r.version_id, None);
        assert!(!r.refresh_now);
    }

    #[test]
    fn batch_and_output_queries() {
        let r = parse_parameters(Some("names=/a,/b:3,%2Fc&withDecryption=true")).unwrap();
        assert_eq!(r.names.len(), 3);
        assert_eq!(r.names[1].selector, Some(Selector::Version(3)));
        assert!(r.with_decryption);
        assert!(parse_parameters(Some("names=,")).is_err());
        let many = (0..101)
            .map(|i| format!("/p{i}"))
            .collect::<Vec<_>>()
            .join(",");
        assert!(parse_parameters(Some(&format!("names={many}")))
            .unwrap_err()
            .to_string()
            .contains("at most 100"));
        let p = parse_path(Some("path=/app/&recursive=true")).unwrap();
        assert!(p.recursive && !p.with_decryption);
        assert!(parse_path(Some("path=app")).is_err());
        assert_eq!(
            parse_secrets(Some("secretIds=a,b")).unwrap().ids,
            vec!["a", "b"]
        );
        let r = parse_secret(Some("secretId=a&jsonKey=db.host")).unwrap();
        assert_eq!(r.output, Output::JsonKey("db.host".into()));
        let r = parse_parameter(Some("name=a&valueOnly=true")).unwrap();
        assert_eq!(r.output, Output::Value);
    }

    proptest! {
        #[test]
        fn never_panics_on_any_query(raw in ".{0,300}") {
            let _ = parse_parameter(Some(&raw));
            let _ = parse_secret(Some(&raw));
        }

        #[test]
        fn a_parsed_selector_round_trips(name in "/[a-z]{1,8}(/[a-z0-9_.-]{1,8}){0,3}", v in 1u64..100_000) {
            let query = format!("name={name}&version={v}");
            let r = parse_parameter(Some(&query)).unwrap();
            let query = format!("name={}", r.parameter_name().api_name());
            let again = parse_parameter(Some(&query)).unwrap();
            prop_assert_eq!(r.selector, again.selector);
            prop_assert_eq!(r.name, again.name);
        }
    }
}
