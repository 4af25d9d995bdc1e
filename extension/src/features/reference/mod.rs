//! References to values, in the syntax of CloudFormation's dynamic references, parsed in
//! this one place for the exec wrapper ([`crate::exec`]) and rendered files
//! ([`crate::features::render`]).
//!
//! | written                                                        | resolves to                          |
//! |----------------------------------------------------------------|--------------------------------------|
//! | `{{resolve:ssm:NAME}}`, `{{resolve:ssm:NAME:VERSION}}`         | a String or StringList parameter     |
//! | `{{resolve:ssm-secure:NAME}}`, `{{resolve:ssm-secure:NAME:VERSION}}` | a SecureString, decrypted      |
//! | `{{resolve:secretsmanager:ID:SecretString:KEY:STAGE:VERSION-ID}}` | a secret, or one key of a JSON secret |
//! | `{{ssm:NAME}}`, `{{ssm:NAME:VERSION}}`                          | any parameter, decrypted if need be  |
//!
//! In the Secrets Manager form every part after the id is optional and may be left empty,
//! as in CloudFormation: `{{resolve:secretsmanager:ID:SecretString::AWSPREVIOUS}}` is the
//! whole previous value. Names and ids may be ARNs, whose colons are recognised by the ARN's
//! shape (`arn:PARTITION:ssm:REGION:ACCOUNT:parameter/NAME`,
//! `arn:PARTITION:secretsmanager:REGION:ACCOUNT:secret:NAME-SUFFIX`).
//!
//! Only `{{resolve:` and `{{ssm:` start a reference; any other `{{...}}` is text, so a
//! template may hold another templating language's placeholders. A reference names a value
//! but never holds one, so errors quote it.

pub mod resolve;

use std::fmt;

/// Longest name, id, key, stage or version id accepted (SSM names and ARNs: 2048).
const MAX_PART_LEN: usize = 2048;
/// How much of a reference an error quotes.
const MAX_QUOTE: usize = 160;
/// What starts a reference.
const OPENERS: [&str; 2] = ["{{resolve:", "{{ssm:"];

/// One reference to a value.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reference {
    /// `{{resolve:ssm:NAME[:VERSION]}}`: a String or StringList parameter, read without
    /// decryption (a SecureString is refused, as CloudFormation refuses it, rather than
    /// resolved to ciphertext).
    Ssm(ParameterRef),
    /// `{{resolve:ssm-secure:NAME[:VERSION]}}`: a parameter read with decryption.
    SsmSecure(ParameterRef),
    /// `{{ssm:NAME[:VERSION]}}`: a parameter of any type, read with decryption.
    SsmShort(ParameterRef),
    /// `{{resolve:secretsmanager:...}}`: a secret's SecretString, or one key of it.
    SecretsManager(SecretRef),
}

/// A parameter named by a reference.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ParameterRef {
    /// Name or ARN, without the version.
    pub name: String,
    /// A version number; the latest version when absent.
    pub version: Option<u64>,
}

/// A secret (or one key of it) named by a reference.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SecretRef {
    /// Name or ARN.
    pub secret_id: String,
    /// The key to pick out of a JSON SecretString; the whole value when absent.
    pub json_key: Option<String>,
    /// A staging label (`AWSPREVIOUS`, ...); `AWSCURRENT` when neither this nor a version id
    /// is given.
    pub version_stage: Option<String>,
    /// A version id.
    pub version_id: Option<String>,
}

impl SecretRef {
    /// Whether the reference reads the current version, which the batch route serves.
    pub fn is_current(&self) -> bool {
        self.version_id.is_none()
            && self
                .version_stage
                .as_deref()
                .is_none_or(|stage| stage == "AWSCURRENT")
    }
}

impl Reference {
    /// Whether the value is read with decryption.
    pub fn decrypts(&self) -> bool {
        matches!(self, Reference::SsmSecure(_) | Reference::SsmShort(_))
    }
}

impl fmt::Display for Reference {
    /// The reference written in full, as it would be in a template.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parameter = |f: &mut fmt::Formatter<'_>, prefix: &str, p: &ParameterRef| {
            write!(f, "{{{{{prefix}:{}", p.name)?;
            if let Some(version) = p.version {
                write!(f, ":{version}")?;
            }
            f.write_str("}}")
        };
        match self {
            Reference::Ssm(p) => parameter(f, "resolve:ssm", p),
            Reference::SsmSecure(p) => parameter(f, "resolve:ssm-secure", p),
            Reference::SsmShort(p) => parameter(f, "ssm", p),
            Reference::SecretsManager(s) => {
                write!(f, "{{{{resolve:secretsmanager:{}", s.secret_id)?;
                let tail = [
                    s.json_key.as_deref(),
                    s.version_stage.as_deref(),
                    s.version_id.as_deref(),
                ];
                // Write as many parts as the last one given needs.
                let needed = tail.iter().rposition(Option::is_some).map_or(0, |i| i + 1);
                if needed > 0 {
                    f.write_str(":SecretString")?;
                }
                for part in &tail[..needed] {
                    write!(f, ":{}", part.unwrap_or(""))?;
                }
                f.write_str("}}")
            }
        }
    }
}

/// What is wrong with a reference.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    /// No `}}` after the opening `{{`. Only the opener is quoted, with where it is: the
    /// text after it may be the file's own content, secret values included.
    #[error("it is not closed with }}}} (it starts at line {line}, column {column})")]
    Unclosed {
        /// 1-based line of the opening `{{`.
        line: usize,
        /// 1-based column (in characters) of the opening `{{`.
        column: usize,
    },
    /// `{{resolve:KIND:...}}` with a kind other than the three known ones.
    #[error("unknown kind {0:?}: expected ssm, ssm-secure or secretsmanager")]
    UnknownKind(String),
    /// Nothing names the parameter or secret.
    #[error("the {0} is empty")]
    Empty(&'static str),
    /// A character that no name or id can hold.
    #[error("the {what} contains {found:?}, which is not allowed there")]
    BadCharacter {
        /// Which part.
        what: &'static str,
        /// The character.
        found: char,
    },
    /// A part longer than any AWS name.
    #[error("the {0} is longer than 2048 characters")]
    TooLong(&'static str),
    /// A parameter version that is not a positive whole number.
    #[error("version {0:?} is not a whole number from 1 upwards")]
    BadVersion(String),
    /// More colon-separated parts than the form has.
    #[error("too many parts: the form is {0}")]
    TooManyParts(&'static str),
    /// The Secrets Manager form's second part is not `SecretString`.
    #[error("{0:?} is not a secret type: only SecretString (or nothing) is allowed there")]
    SecretType(String),
    /// Both a staging label and a version id.
    #[error("give a version stage or a version id, not both")]
    StageAndVersionId,
    /// An ARN with too few parts, or of the wrong service or resource type.
    #[error("{0}")]
    BadArn(&'static str),
}

/// A malformed reference: the reference as written (shortened if long) and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("reference {reference:?}: {problem}")]
pub struct ReferenceError {
    /// The reference as written, at most 160 characters of it.
    pub reference: String,
    /// What is wrong with it.
    pub problem: Problem,
}

/// A piece of a parsed text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    /// Text kept as it is.
    Text(String),
    /// A reference, with the text it was written as.
    Reference {
        /// As written, `{{` and `}}` included.
        written: String,
        /// What it names.
        reference: Reference,
    },
}

/// A text split into plain text and references.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Template {
    pieces: Vec<Piece>,
}

/// Whether a text contains something that starts a reference (well-formed or not): the
/// cheap test that decides whether a text needs parsing at all.
pub fn mentions_reference(text: &[u8]) -> bool {
    OPENERS
        .iter()
        .any(|opener| text.windows(opener.len()).any(|w| w == opener.as_bytes()))
}

/// Finds every reference in `text`. The first malformed one is the error.
pub fn parse(text: &str) -> Result<Template, ReferenceError> {
    let mut pieces = Vec::new();
    let mut text_start = 0;
    let mut at = 0;
    while let Some(found) = text[at..].find("{{") {
        let open = at + found;
        let after = &text[open + 2..];
        if !OPENERS.iter().any(|o| after.starts_with(&o[2..])) {
            // Not ours: step one character, so that `{{{resolve:...}}` is still found.
            at = open + 1;
            continue;
        }
        let Some(close) = after.find("}}") else {
            return Err(unclosed(text, open));
        };
        let end = open + 2 + close + 2;
        let written = &text[open..end];
        let reference = parse_body(&after[..close]).map_err(|p| error(written, p))?;
        if text_start < open {
            pieces.push(Piece::Text(text[text_start..open].to_owned()));
        }
        pieces.push(Piece::Reference {
            written: written.to_owned(),
            reference,
        });
        text_start = end;
        at = end;
    }
    if text_start < text.len() {
        pieces.push(Piece::Text(text[text_start..].to_owned()));
    }
    Ok(Template { pieces })
}

impl Template {
    /// The pieces, in order.
    pub fn pieces(&self) -> &[Piece] {
        &self.pieces
    }

    /// Each reference with the text it was written as, in order (repeats included).
    pub fn references(&self) -> impl Iterator<Item = (&str, &Reference)> {
        self.pieces.iter().filter_map(|piece| match piece {
            Piece::Reference { written, reference } => Some((written.as_str(), reference)),
            Piece::Text(_) => None,
        })
    }

    /// Whether there is no reference at all.
    pub fn is_plain(&self) -> bool {
        self.references().next().is_none()
    }

    /// The text with every reference replaced by what `value` gives for it. The result is
    /// built at its final size in one allocation, so no partial copy of a value is left
    /// behind by a reallocation, and it is wiped when dropped.
    pub fn substitute<'a, E>(
        &'a self,
        mut value: impl FnMut(&'a str, &'a Reference) -> Result<&'a str, E>,
    ) -> Result<zeroize::Zeroizing<String>, E> {
        let mut parts = Vec::with_capacity(self.pieces.len());
        for piece in &self.pieces {
            parts.push(match piece {
                Piece::Text(text) => text.as_str(),
                Piece::Reference { written, reference } => value(written, reference)?,
            });
        }
        let mut out =
            zeroize::Zeroizing::new(String::with_capacity(parts.iter().map(|p| p.len()).sum()));
        for part in parts {
            out.push_str(part);
        }
        Ok(out)
    }
}

/// An unclosed reference at byte `open` of `text`: quoted by its opener only.
fn unclosed(text: &str, open: usize) -> ReferenceError {
    let after = &text[open..];
    let opener = OPENERS
        .iter()
        .find(|o| after.starts_with(*o))
        .copied()
        .unwrap_or("{{");
    let before = &text[..open];
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    ReferenceError {
        reference: opener.to_owned(),
        problem: Problem::Unclosed {
            line: before.matches('\n').count() + 1,
            column: before[line_start..].chars().count() + 1,
        },
    }
}

fn error(written: &str, problem: Problem) -> ReferenceError {
    let mut reference: String = written.chars().take(MAX_QUOTE).collect();
    if reference.len() < written.len() {
        reference.push('…');
    }
    ReferenceError { reference, problem }
}

/// Parses what is between `{{` and `}}`.
fn parse_body(body: &str) -> Result<Reference, Problem> {
    if let Some(rest) = body.strip_prefix("resolve:") {
        let (kind, target) = rest.split_once(':').unwrap_or((rest, ""));
        match kind {
            "ssm" => parameter(target, "{{resolve:ssm:NAME[:VERSION]}}").map(Reference::Ssm),
            "ssm-secure" => {
                parameter(target, "{{resolve:ssm-secure:NAME[:VERSION]}}").map(Reference::SsmSecure)
            }
            "secretsmanager" => secret(target).map(Reference::SecretsManager),
            other => Err(Problem::UnknownKind(other.chars().take(40).collect())),
        }
    } else if let Some(target) = body.strip_prefix("ssm:") {
        parameter(target, "{{ssm:NAME[:VERSION]}}").map(Reference::SsmShort)
    } else {
        // `parse` only calls this for text after one of the openers.
        Err(Problem::UnknownKind(body.chars().take(40).collect()))
    }
}

/// Splits the id (name or ARN, whose own colons are part of it) from the parts after it.
/// `arn_fields` is how many colon-separated fields the service's ARNs have.
fn split_id(target: &str, arn_fields: usize) -> (&str, Option<&str>) {
    let head = if target.starts_with("arn:") {
        arn_fields
    } else {
        1
    };
    match target.match_indices(':').nth(head - 1) {
        Some((i, _)) => (&target[..i], Some(&target[i + 1..])),
        None => (target, None),
    }
}

fn parameter(target: &str, form: &'static str) -> Result<ParameterRef, Problem> {
    const WHAT: &str = "parameter name";
    let (name, rest) = split_id(target, 6);
    if let Some(arn) = name.strip_prefix("arn:") {
        let fields: Vec<&str> = arn.split(':').collect();
        if fields.len() != 5 || fields.iter().any(|f| f.is_empty()) {
            return Err(Problem::BadArn(
                "the ARN is incomplete: arn:PARTITION:ssm:REGION:ACCOUNT:parameter/NAME",
            ));
        }
        if fields[1] != "ssm" {
            return Err(Problem::BadArn("the ARN is not an SSM parameter's"));
        }
        let Some(path) = fields[4].strip_prefix("parameter/") else {
            return Err(Problem::BadArn("the ARN is not an SSM parameter's"));
        };
        check_part(WHAT, path, parameter_char)?;
        for field in &fields[..4] {
            check_part("ARN", field, arn_field_char)?;
        }
    } else {
        check_part(WHAT, name, parameter_char)?;
    }
    let version = match rest {
        None => None,
        Some(rest) if rest.contains(':') => return Err(Problem::TooManyParts(form)),
        Some(version) => Some(parse_version(version)?),
    };
    Ok(ParameterRef {
        name: name.to_owned(),
        version,
    })
}

fn parse_version(text: &str) -> Result<u64, Problem> {
    match text.parse::<u64>() {
        Ok(v) if v > 0 && text.bytes().all(|b| b.is_ascii_digit()) => Ok(v),
        _ => Err(Problem::BadVersion(text.chars().take(40).collect())),
    }
}

fn secret(target: &str) -> Result<SecretRef, Problem> {
    const WHAT: &str = "secret id";
    const FORM: &str =
        "{{resolve:secretsmanager:SECRET-ID[:SecretString[:JSON-KEY[:VERSION-STAGE[:VERSION-ID]]]]}}";
    let (id, rest) = split_id(target, 7);
    if let Some(arn) = id.strip_prefix("arn:") {
        let fields: Vec<&str> = arn.split(':').collect();
        if fields.len() != 6 || fields.iter().any(|f| f.is_empty()) {
            return Err(Problem::BadArn(
                "the ARN is incomplete: arn:PARTITION:secretsmanager:REGION:ACCOUNT:secret:NAME",
            ));
        }
        if fields[1] != "secretsmanager" || fields[4] != "secret" {
            return Err(Problem::BadArn("the ARN is not a Secrets Manager secret's"));
        }
        check_part(WHAT, fields[5], secret_char)?;
        for field in &fields[..4] {
            check_part("ARN", field, arn_field_char)?;
        }
    } else {
        check_part(WHAT, id, secret_char)?;
    }
    let parts: Vec<&str> = rest.map(|r| r.split(':').collect()).unwrap_or_default();
    if parts.len() > 4 {
        return Err(Problem::TooManyParts(FORM));
    }
    let part = |i: usize| parts.get(i).copied().filter(|p| !p.is_empty());
    if let Some(kind) = part(0) {
        if kind != "SecretString" {
            return Err(Problem::SecretType(kind.chars().take(40).collect()));
        }
    }
    let optional = |what: &'static str, i: usize, allowed: fn(char) -> bool| {
        part(i)
            .map(|p| check_part(what, p, allowed).map(|()| p.to_owned()))
            .transpose()
    };
    let json_key = optional("JSON key", 1, |c| !c.is_control())?;
    let version_stage = optional("version stage", 2, label_char)?;
    let version_id = optional("version id", 3, label_char)?;
    if version_stage.is_some() && version_id.is_some() {
        return Err(Problem::StageAndVersionId);
    }
    Ok(SecretRef {
        secret_id: id.to_owned(),
        json_key,
        version_stage,
        version_id,
    })
}

/// Staging labels and version ids: anything visible.
fn label_char(c: char) -> bool {
    !c.is_control() && !c.is_whitespace()
}

/// ARN fields before the resource: partition, service, region, account.
fn arn_field_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '-'
}

/// SSM: letters, digits, `_.-` and `/` for hierarchies.
fn parameter_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "_.-/".contains(c)
}

/// Secrets Manager: letters, digits and `/_+=.@-`.
fn secret_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "/_+=.@-".contains(c)
}

fn check_part(
    what: &'static str,
    part: &str,
    allowed: impl Fn(char) -> bool,
) -> Result<(), Problem> {
    if part.is_empty() {
        return Err(Problem::Empty(what));
    }
    if part.len() > MAX_PART_LEN {
        return Err(Problem::TooLong(what));
    }
    match part.chars().find(|&c| !allowed(c)) {
        Some(found) => Err(Problem::BadCharacter { what, found }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn one(text: &str) -> Reference {
        let template = parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
        let refs: Vec<_> = template.references().collect();
        assert_eq!(refs.len(), 1, "{text}");
        refs[0].1.clone()
    }

    fn problem(text: &str) -> ReferenceError {
        parse(text).expect_err(text)
    }

    fn ssm(name: &str, version: Option<u64>) -> ParameterRef {
        ParameterRef {
            name: name.into(),
            version,
        }
    }

    fn secret_ref(
        id: &str,
        key: Option<&str>,
        stage: Option<&str>,
        version_id: Option<&str>,
    ) -> Reference {
        Reference::SecretsManager(SecretRef {
            secret_id: id.into(),
            json_key: key.map(Into::into),
            version_stage: stage.map(Into::into),
            version_id: version_id.map(Into::into),
        })
    }

    #[test]
    fn parameter_forms() {
        assert_eq!(
            one("{{resolve:ssm:/app/flag}}"),
            Reference::Ssm(ssm("/app/flag", None))
        );
        assert_eq!(
            one("{{resolve:ssm:/app/flag:12}}"),
            Reference::Ssm(ssm("/app/flag", Some(12)))
        );
        assert_eq!(
            one("{{resolve:ssm-secure:/app/db/password}}"),
            Reference::SsmSecure(ssm("/app/db/password", None))
        );
        assert_eq!(
            one("{{resolve:ssm-secure:app.db_pw-1:3}}"),
            Reference::SsmSecure(ssm("app.db_pw-1", Some(3)))
        );
        assert_eq!(
            one("{{ssm:/app/flag}}"),
            Reference::SsmShort(ssm("/app/flag", None))
        );
        assert_eq!(
            one("{{ssm:/app/flag:2}}"),
            Reference::SsmShort(ssm("/app/flag", Some(2)))
        );
        assert!(one("{{resolve:ssm-secure:/a}}").decrypts());
        assert!(one("{{ssm:/a}}").decrypts());
        assert!(!one("{{resolve:ssm:/a}}").decrypts());
    }

    #[test]
    fn parameter_arns_keep_their_colons() {
        let arn = "arn:aws:ssm:eu-west-1:123456789012:parameter/shared/db";
        assert_eq!(
            one(&format!("{{{{resolve:ssm:{arn}}}}}")),
            Reference::Ssm(ssm(arn, None))
        );
        assert_eq!(
            one(&format!("{{{{resolve:ssm-secure:{arn}:4}}}}")),
            Reference::SsmSecure(ssm(arn, Some(4)))
        );
        let cn = "arn:aws-cn:ssm:cn-north-1:123456789012:parameter/x";
        assert_eq!(
            one(&format!("{{{{ssm:{cn}}}}}")),
            Reference::SsmShort(ssm(cn, None))
        );
    }

    #[test]
    fn secret_forms_with_optional_and_empty_parts() {
        assert_eq!(
            one("{{resolve:secretsmanager:dev/azure}}"),
            secret_ref("dev/azure", None, None, None)
        );
        assert_eq!(
            one("{{resolve:secretsmanager:dev/azure:SecretString}}"),
            secret_ref("dev/azure", None, None, None)
        );
        assert_eq!(
            one("{{resolve:secretsmanager:dev/azure:SecretString:ConnectionString}}"),
            secret_ref("dev/azure", Some("ConnectionString"), None, None)
        );
        assert_eq!(
            one("{{resolve:secretsmanager:id:SecretString::AWSPREVIOUS}}"),
            secret_ref("id", None, Some("AWSPREVIOUS"), None)
        );
        assert_eq!(
            one("{{resolve:secretsmanager:id:SecretString:password:AWSPENDING}}"),
            secret_ref("id", Some("password"), Some("AWSPENDING"), None)
        );
        assert_eq!(
            one("{{resolve:secretsmanager:id:SecretString:password::EXAMPLE1-90ab-cdef-fedc-ba987EXAMPLE}}"),
            secret_ref(
                "id",
                Some("password"),
                None,
                Some("EXAMPLE1-90ab-cdef-fedc-ba987EXAMPLE")
            )
        );
        assert_eq!(
            one("{{resolve:secretsmanager:id::key}}"),
            secret_ref("id", Some("key"), None, None)
        );
        assert_eq!(
            one("{{resolve:secretsmanager:id::::}}"),
            secret_ref("id", None, None, None)
        );
        assert_eq!(
            one("{{resolve:secretsmanager:a+b=c.d@e_f-g/h}}"),
            secret_ref("a+b=c.d@e_f-g/h", None, None, None)
        );
    }

    #[test]
    fn secret_arns_keep_their_colons() {
        let arn = "arn:aws:secretsmanager:us-east-1:123456789012:secret:dev/azure-AbCdEf";
        assert_eq!(
            one(&format!("{{{{resolve:secretsmanager:{arn}}}}}")),
            secret_ref(arn, None, None, None)
        );
        assert_eq!(
            one(&format!(
                "{{{{resolve:secretsmanager:{arn}:SecretString:ConnectionString::v-1}}}}"
            )),
            secret_ref(arn, Some("ConnectionString"), None, Some("v-1"))
        );
    }

    #[test]
    fn current_means_no_stage_or_awscurrent_and_no_version_id() {
        let current = |text: &str| match one(text) {
            Reference::SecretsManager(s) => s.is_current(),
            other => panic!("{other:?}"),
        };
        assert!(current("{{resolve:secretsmanager:s}}"));
        assert!(current(
            "{{resolve:secretsmanager:s:SecretString:k:AWSCURRENT}}"
        ));
        assert!(!current(
            "{{resolve:secretsmanager:s:SecretString::AWSPREVIOUS}}"
        ));
        assert!(!current("{{resolve:secretsmanager:s:SecretString:::v1}}"));
    }

    #[test]
    fn text_around_references_is_kept() {
        let template =
            parse("postgres://app:{{resolve:ssm-secure:/db/pw}}@{{ssm:/db/host}}:5432/x").unwrap();
        assert_eq!(template.pieces().len(), 5);
        assert_eq!(template.pieces()[0], Piece::Text("postgres://app:".into()));
        let rendered = template
            .substitute(|written, reference| {
                Ok::<_, ()>(match reference {
                    Reference::SsmSecure(_) => "pw",
                    _ => {
                        assert_eq!(written, "{{ssm:/db/host}}");
                        "db.local"
                    }
                })
            })
            .unwrap();
        assert_eq!(rendered.as_str(), "postgres://app:pw@db.local:5432/x");
        assert_eq!(rendered.capacity(), rendered.len());
    }

    #[test]
    fn other_braces_are_text() {
        for text in [
            "",
            "plain",
            "{{name}}",
            "{{ resolve:ssm:/a }}",
            "{{Resolve:ssm:/a}}",
            "{resolve:ssm:/a}",
            "{{ssm-secure:/a}}",
            "}}{{",
            "{{",
        ] {
            let template = parse(text).unwrap();
            assert!(template.is_plain(), "{text}");
            let same = template.substitute(|_, _| Err::<&str, ()>(())).unwrap();
            assert_eq!(same.as_str(), text);
        }
        let template = parse("{{{resolve:ssm:/a}}}").unwrap();
        assert_eq!(
            template.pieces(),
            &[
                Piece::Text("{".into()),
                Piece::Reference {
                    written: "{{resolve:ssm:/a}}".into(),
                    reference: Reference::Ssm(ssm("/a", None)),
                },
                Piece::Text("}".into()),
            ]
        );
        assert!(mentions_reference(b"x{{ssm:"));
        assert!(mentions_reference(b"{{resolve:"));
        assert!(!mentions_reference(b"{{ssm-secure:/a}} {{x}}"));
    }

    #[test]
    fn malformed_references_are_quoted_and_explained() {
        for (text, quoted, explains) in [
            ("x={{resolve:ssm:/a", "{{resolve:", "not closed"),
            ("{{ssm:/a", "{{ssm:", "line 1, column 1"),
            (
                "{{resolve:ssm:}}",
                "{{resolve:ssm:}}",
                "parameter name is empty",
            ),
            (
                "{{resolve:ssm}}",
                "{{resolve:ssm}}",
                "parameter name is empty",
            ),
            ("{{ssm:}}", "{{ssm:}}", "parameter name is empty"),
            (
                "{{resolve:s3:/a}}",
                "{{resolve:s3:/a}}",
                "unknown kind \"s3\"",
            ),
            ("{{resolve:}}", "{{resolve:}}", "unknown kind \"\""),
            (
                "{{resolve:ssm:/a b}}",
                "{{resolve:ssm:/a b}}",
                "contains ' '",
            ),
            (
                "{{resolve:ssm:/a,b}}",
                "{{resolve:ssm:/a,b}}",
                "contains ','",
            ),
            (
                "{{resolve:ssm:/a:0}}",
                "{{resolve:ssm:/a:0}}",
                "version \"0\"",
            ),
            (
                "{{resolve:ssm:/a:Dev}}",
                "{{resolve:ssm:/a:Dev}}",
                "version \"Dev\"",
            ),
            (
                "{{resolve:ssm:/a:+3}}",
                "{{resolve:ssm:/a:+3}}",
                "version \"+3\"",
            ),
            ("{{resolve:ssm:/a:}}", "{{resolve:ssm:/a:}}", "version \"\""),
            (
                "{{resolve:ssm:/a:1:2}}",
                "{{resolve:ssm:/a:1:2}}",
                "too many parts",
            ),
            (
                "{{resolve:secretsmanager:}}",
                "{{resolve:secretsmanager:}}",
                "secret id is empty",
            ),
            (
                "{{resolve:secretsmanager:s:SecretBinary}}",
                "{{resolve:secretsmanager:s:SecretBinary}}",
                "\"SecretBinary\" is not a secret type",
            ),
            (
                "{{resolve:secretsmanager:s:SecretString:k:AWSPREVIOUS:v1}}",
                "{{resolve:secretsmanager:s:SecretString:k:AWSPREVIOUS:v1}}",
                "not both",
            ),
            (
                "{{resolve:secretsmanager:s:SecretString:k:S:V:extra}}",
                "{{resolve:secretsmanager:s:SecretString:k:S:V:extra}}",
                "too many parts",
            ),
            (
                "{{resolve:secretsmanager:s:SecretString::AWS PREVIOUS}}",
                "{{resolve:secretsmanager:s:SecretString::AWS PREVIOUS}}",
                "version stage contains ' '",
            ),
            (
                "{{resolve:secretsmanager:arn:aws:secretsmanager:us-east-1}}",
                "{{resolve:secretsmanager:arn:aws:secretsmanager:us-east-1}}",
                "ARN is incomplete",
            ),
            (
                "{{resolve:secretsmanager:arn:aws:ssm:us-east-1:1:secret:x}}",
                "{{resolve:secretsmanager:arn:aws:ssm:us-east-1:1:secret:x}}",
                "not a Secrets Manager secret's",
            ),
            (
                "{{resolve:ssm:arn:aws:secretsmanager:us-east-1:1:parameter/x}}",
                "{{resolve:ssm:arn:aws:secretsmanager:us-east-1:1:parameter/x}}",
                "not an SSM parameter's",
            ),
            (
                "{{resolve:ssm:arn:aws:ssm:us-east-1:1:parameter/}}",
                "{{resolve:ssm:arn:aws:ssm:us-east-1:1:parameter/}}",
                "parameter name is empty",
            ),
            (
                "{{resolve:ssm:arn:aws:ssm}}",
                "{{resolve:ssm:arn:aws:ssm}}",
                "incomplete",
            ),
        ] {
            let err = problem(text);
            assert_eq!(err.reference, quoted, "{text}");
            let message = err.to_string();
            assert!(message.contains(quoted), "{text}: {message}");
            assert!(message.contains(explains), "{text}: {message}");
        }
    }

    #[test]
    fn an_unclosed_reference_quotes_its_opener_and_where_it_is_only() {
        // What follows an unclosed opener is the template's own text: maybe a literal
        // secret, maybe the rest of the file. None of it is quoted.
        let text = "user: app\n  password: {{resolve:ssm-secure:/db/pw hunter2-literal\nmore";
        let err = problem(text);
        assert_eq!(
            err.problem,
            Problem::Unclosed {
                line: 2,
                column: 13
            }
        );
        assert_eq!(err.reference, "{{resolve:");
        let message = err.to_string();
        for after_start in ["ssm-secure", "/db/pw", "hunter2", "more"] {
            assert!(!message.contains(after_start), "{message}");
        }
        assert!(message.contains("line 2, column 13"), "{message}");
        // Columns count characters, not bytes.
        let err = problem("é {{ssm:/a");
        assert_eq!(err.problem, Problem::Unclosed { line: 1, column: 3 });
        let long = format!("{{{{resolve:ssm:/{}}}}}", "a".repeat(3000));
        assert_eq!(problem(&long).problem, Problem::TooLong("parameter name"));
    }

    #[test]
    fn the_first_malformed_reference_is_the_error() {
        let err = problem("{{ssm:/ok}} then {{resolve:ssm:/a:x}} then {{resolve:bad:y}}");
        assert_eq!(err.reference, "{{resolve:ssm:/a:x}}");
    }

    #[test]
    fn display_writes_the_reference_back() {
        for text in [
            "{{resolve:ssm:/a}}",
            "{{resolve:ssm:/a:3}}",
            "{{resolve:ssm-secure:/a}}",
            "{{ssm:/a:7}}",
            "{{resolve:secretsmanager:s}}",
            "{{resolve:secretsmanager:s:SecretString:k}}",
            "{{resolve:secretsmanager:s:SecretString::AWSPREVIOUS}}",
            "{{resolve:secretsmanager:s:SecretString:::v1}}",
        ] {
            assert_eq!(one(text).to_string(), text);
        }
    }

    proptest! {
        #[test]
        fn never_panics_on_any_text(text in ".{0,200}") {
            let _ = parse(&text);
            let _ = mentions_reference(text.as_bytes());
        }

        #[test]
        fn never_panics_on_reference_like_text(
            body in "(resolve:)?(ssm|ssm-secure|secretsmanager|x)?:[a-zA-Z0-9:/{}_ .-]{0,80}",
            prefix in "[{}a ]{0,3}",
            suffix in "[{}: ]{0,3}",
        ) {
            let text = format!("{prefix}{{{{{body}}}}}{suffix}");
            if let Ok(template) = parse(&text) {
                // Whatever was found writes back to what was parsed.
                let again = template.substitute(|written, _| Ok::<_, ()>(written)).unwrap();
                prop_assert_eq!(again.as_str(), text.as_str());
            }
        }

        #[test]
        fn well_formed_references_round_trip(
            name in "/[a-zA-Z0-9_.-]{1,12}(/[a-zA-Z0-9_.-]{1,12}){0,3}",
            version in proptest::option::of(1u64..1_000_000),
            key in proptest::option::of("[a-zA-Z0-9_. ]{1,16}"),
            stage in proptest::option::of("[A-Z]{1,12}"),
            kind in 0..4usize,
        ) {
            let reference = match kind {
                0 => Reference::Ssm(ParameterRef { name: name.clone(), version }),
                1 => Reference::SsmSecure(ParameterRef { name: name.clone(), version }),
                2 => Reference::SsmShort(ParameterRef { name: name.clone(), version }),
                _ => Reference::SecretsManager(SecretRef {
                    secret_id: name.trim_start_matches('/').to_owned(),
                    json_key: key,
                    version_stage: stage,
                    version_id: None,
                }),
            };
            let written = reference.to_string();
            let text = format!("before {written} after");
            let template = parse(&text).unwrap();
            let found: Vec<_> = template.references().collect();
            prop_assert_eq!(found, vec![(written.as_str(), &reference)]);
        }
    }
}
