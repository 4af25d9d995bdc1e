//! Resolving a set of [`Reference`]s in one round: grouped into as few reads as the batch
//! routes allow, read through a [`Fetch`], then JSON keys picked out of secrets.
//!
//! The groups: String parameters (one batch read without decryption), decrypted
//! parameters (one batch read with decryption), current secrets (one batch read), and
//! secrets at a given stage or version id (one read each, as no batch API takes those).
//! The batch groups are split by the region and account their ARNs name (plain names are
//! the function's own), so that each batch is read through one role and region: the exec
//! wrapper (over the API) and rendered files (through the cache) read a reference the
//! same way. All groups are read concurrently.
//!
//! Two [`Fetch`]es exist: `exec::client::LocalApi` reads from the running extension
//! over HTTP (the exec wrapper is another process), [`CacheFetch`] reads through the
//! extension's own cache (rendered files).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use futures::future::{join_all, BoxFuture};
use futures::stream::{self, StreamExt};
use zeroize::Zeroizing;

use super::{ParameterRef, Reference, SecretRef};
use crate::aws::{ScopeError, Scopes};
use crate::aws::{Source, SourceError};
use crate::cache::{Cache, Item};
use crate::domain::json_key::{json_key, JsonKeyError};
use crate::domain::{secret_answers_to, Arn, AskedScope, ParameterName, SecretVersion, Selector};
use crate::read::{self, Purpose};

/// Single secret reads in flight at once.
const SINGLE_READS: usize = 8;

/// Why a reference has no value. Never contains a value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    /// No such parameter, or not that version.
    #[error("the parameter does not exist (or not in that version)")]
    ParameterNotFound,
    /// AWS, or the extension, answered with an error.
    #[error("{code}: {message}")]
    Failed {
        /// The error code (`ResourceNotFoundException`, `AccessDeniedException`, ...).
        code: String,
        /// The message that came with it.
        message: String,
    },
    /// The extension could not be reached or did not answer in time.
    #[error("the lockbox extension could not be read: {0}")]
    Unreachable(String),
    /// `{{resolve:ssm:...}}` names a SecureString, which it would resolve to ciphertext.
    #[error(
        "the parameter is a SecureString; use {{{{resolve:ssm-secure:...}}}} to read it decrypted"
    )]
    SecureString,
    /// The secret is binary; references resolve to text.
    #[error("the secret is binary; only a SecretString can be used")]
    Binary,
    /// The secret's value is not JSON, so a key cannot be picked out of it.
    #[error("the secret is not JSON, so the key {0:?} cannot be read from it")]
    NotJson(String),
    /// The JSON secret has no such key.
    #[error("the secret has no JSON key {0:?}")]
    NoSuchKey(String),
    /// The reference was not part of the round (a caller's mistake).
    #[error("it was not resolved")]
    NotAsked,
}

impl From<JsonKeyError> for ResolveError {
    fn from(err: JsonKeyError) -> Self {
        match err {
            JsonKeyError::NotJson(key) => ResolveError::NotJson(key),
            JsonKeyError::NoSuchKey(key) => ResolveError::NoSuchKey(key),
        }
    }
}

impl From<SourceError> for ResolveError {
    fn from(err: SourceError) -> Self {
        ResolveError::Failed {
            code: err.code,
            message: err.message,
        }
    }
}

/// A parameter as read, whatever it was read through.
#[derive(Debug)]
pub struct FetchedParameter {
    /// Its name (SSM answers with the name even when asked by ARN).
    pub name: String,
    /// Its ARN.
    pub arn: Option<String>,
    /// `:VERSION` when a version was asked for.
    pub selector: Option<String>,
    /// `String`, `StringList` or `SecureString`.
    pub kind: String,
    /// The value (ciphertext for a SecureString read without decryption).
    pub value: Zeroizing<String>,
}

/// A secret's value, as read.
#[derive(Debug)]
pub enum SecretValue {
    /// SecretString.
    Text(Zeroizing<String>),
    /// SecretBinary (not served as a reference's value).
    Binary,
}

/// A secret as read.
#[derive(Debug)]
pub struct FetchedSecret {
    /// Its name.
    pub name: Option<String>,
    /// Its ARN.
    pub arn: Option<String>,
    /// Its value.
    pub value: SecretValue,
}

/// What a batch read of current secrets found, and what it could not read.
#[derive(Debug, Default)]
pub struct FetchedSecrets {
    /// Found secrets.
    pub found: Vec<FetchedSecret>,
    /// Ids (as asked) that could not be read, with why.
    pub errors: Vec<(String, ResolveError)>,
}

/// Where values are read from, in the three shapes the groups need.
pub trait Fetch: Send + Sync {
    /// Many parameters at once; those that do not exist are simply not in the answer.
    fn parameters<'a>(
        &'a self,
        names: &'a [ParameterName],
        decrypt: bool,
    ) -> BoxFuture<'a, Result<Vec<FetchedParameter>, ResolveError>>;

    /// Many current (AWSCURRENT) secrets at once.
    fn secrets<'a>(
        &'a self,
        ids: &'a [String],
    ) -> BoxFuture<'a, Result<FetchedSecrets, ResolveError>>;

    /// One secret (`id`: name or ARN) at a given stage or version id.
    fn secret<'a>(
        &'a self,
        id: &'a str,
        version: &'a SecretVersion,
    ) -> BoxFuture<'a, Result<FetchedSecret, ResolveError>>;
}

/// The outcome of a round: a value or an error for every reference asked for.
#[derive(Default)]
pub struct Resolved {
    values: HashMap<Reference, Result<Zeroizing<String>, ResolveError>>,
}

impl std::fmt::Debug for Resolved {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let failed = self.values.values().filter(|v| v.is_err()).count();
        f.debug_struct("Resolved")
            .field("resolved", &(self.values.len() - failed))
            .field("failed", &failed)
            .finish()
    }
}

impl Resolved {
    /// The value of a reference, or why there is none.
    pub fn value(&self, reference: &Reference) -> Result<&str, ResolveError> {
        match self.values.get(reference) {
            Some(Ok(value)) => Ok(value.as_str()),
            Some(Err(err)) => Err(err.clone()),
            None => Err(ResolveError::NotAsked),
        }
    }

    /// How many distinct references were asked for.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// Whether nothing was asked for.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }
}

fn parameter_name(p: &ParameterRef) -> ParameterName {
    ParameterName {
        name: p.name.clone(),
        selector: p.version.map(Selector::Version),
    }
}

/// The secret and version a reference to a secret's other version reads.
fn secret_version(s: &SecretRef) -> (String, SecretVersion) {
    let version = SecretVersion {
        version_id: s.version_id.clone(),
        stage: s.version_stage.clone(),
    };
    (s.secret_id.clone(), version)
}

/// Where a name is read: the region and account of an ARN, or `None` for a plain name
/// (the home scope). A batch read is of one such group, so that whatever reads it (the
/// extension's API over HTTP, or its cache directly) reads every name of it through the
/// same role and region, as the API does for a request: an ARN's region, and the role
/// configured for its account.
type Group = Option<(String, String)>;

fn group_of(name: &str) -> Group {
    if !name.starts_with("arn:") {
        return None;
    }
    Arn::parse(name)
        .ok()
        .map(|arn| (arn.region.to_string(), arn.account.to_string()))
}

/// The outcome of one batch read per group.
type ByGroup<T> = HashMap<Group, Result<T, ResolveError>>;

fn in_group<'f, T>(found: &'f ByGroup<T>, group: &Group) -> Result<&'f T, ResolveError> {
    match found.get(group) {
        Some(Ok(found)) => Ok(found),
        Some(Err(err)) => Err(err.clone()),
        None => Err(ResolveError::NotAsked),
    }
}

/// Resolves every reference (repeats are read once) in one concurrent round of reads: one
/// batch read per kind of read and [`Group`], one read per secret version.
pub async fn resolve<'r>(
    fetch: &dyn Fetch,
    references: impl IntoIterator<Item = &'r Reference>,
) -> Resolved {
    let unique: BTreeSet<&Reference> = references.into_iter().collect();
    let mut plain: BTreeMap<Group, BTreeSet<&'r ParameterRef>> = BTreeMap::new();
    let mut decrypted: BTreeMap<Group, BTreeSet<&'r ParameterRef>> = BTreeMap::new();
    let mut current: BTreeMap<Group, BTreeSet<&'r str>> = BTreeMap::new();
    let mut versions = BTreeSet::new();
    for reference in unique.iter().copied() {
        match reference {
            Reference::Ssm(p) => {
                plain.entry(group_of(&p.name)).or_default().insert(p);
            }
            Reference::SsmSecure(p) | Reference::SsmShort(p) => {
                decrypted.entry(group_of(&p.name)).or_default().insert(p);
            }
            Reference::SecretsManager(s) if s.is_current() => {
                current
                    .entry(group_of(&s.secret_id))
                    .or_default()
                    .insert(&s.secret_id);
            }
            Reference::SecretsManager(s) => {
                versions.insert(secret_version(s));
            }
        }
    }

    let read_parameters = |groups: BTreeMap<Group, BTreeSet<&'r ParameterRef>>, decrypt: bool| {
        join_all(groups.into_iter().map(move |(group, refs)| async move {
            let names: Vec<ParameterName> = refs.into_iter().map(parameter_name).collect();
            (group, fetch.parameters(&names, decrypt).await)
        }))
    };
    let read_current = join_all(current.into_iter().map(|(group, ids)| async move {
        let ids: Vec<String> = ids.into_iter().map(str::to_owned).collect();
        (group, fetch.secrets(&ids).await)
    }));
    let read_versions = stream::iter(versions)
        .map(|version| async move {
            let (id, asked) = &version;
            let answer = fetch.secret(id, asked).await;
            (version, answer)
        })
        .buffer_unordered(SINGLE_READS)
        .collect::<Vec<_>>();
    let (plain_found, decrypted_found, current_found, versions_found) = tokio::join!(
        read_parameters(plain, false),
        read_parameters(decrypted, true),
        read_current,
        read_versions
    );
    let plain_found: ByGroup<Vec<FetchedParameter>> = plain_found.into_iter().collect();
    let decrypted_found: ByGroup<Vec<FetchedParameter>> = decrypted_found.into_iter().collect();
    let current_found: ByGroup<FetchedSecrets> = current_found.into_iter().collect();
    let versions_found: HashMap<(String, SecretVersion), Result<FetchedSecret, ResolveError>> =
        versions_found.into_iter().collect();

    let mut values = HashMap::with_capacity(unique.len());
    for reference in unique {
        let value = match reference {
            Reference::Ssm(p) => in_group(&plain_found, &group_of(&p.name))
                .and_then(|found| find_parameter(found, p))
                .and_then(|found| {
                    if found.kind == "SecureString" {
                        Err(ResolveError::SecureString)
                    } else {
                        Ok(Zeroizing::new(found.value.as_str().to_owned()))
                    }
                }),
            Reference::SsmSecure(p) | Reference::SsmShort(p) => {
                in_group(&decrypted_found, &group_of(&p.name))
                    .and_then(|found| find_parameter(found, p))
                    .map(|found| Zeroizing::new(found.value.as_str().to_owned()))
            }
            Reference::SecretsManager(s) => {
                let secret = if s.is_current() {
                    in_group(&current_found, &group_of(&s.secret_id))
                        .and_then(|found| find_current(found, &s.secret_id))
                } else {
                    match versions_found.get(&secret_version(s)) {
                        Some(Ok(found)) => Ok(found),
                        Some(Err(err)) => Err(err.clone()),
                        None => Err(ResolveError::NotAsked),
                    }
                };
                secret.and_then(|found| match (&found.value, &s.json_key) {
                    (SecretValue::Binary, _) => Err(ResolveError::Binary),
                    (SecretValue::Text(text), None) => Ok(Zeroizing::new(text.as_str().to_owned())),
                    (SecretValue::Text(text), Some(key)) => json_key(text, key).map_err(Into::into),
                })
            }
        };
        values.insert(reference.clone(), value);
    }
    Resolved { values }
}

fn find_parameter<'f>(
    found: &'f [FetchedParameter],
    wanted: &ParameterRef,
) -> Result<&'f FetchedParameter, ResolveError> {
    let selector = wanted.version.map(|v| format!(":{v}"));
    found
        .iter()
        .find(|p| {
            (p.name == wanted.name || p.arn.as_deref() == Some(wanted.name.as_str()))
                && p.selector == selector
        })
        .ok_or(ResolveError::ParameterNotFound)
}

fn find_current<'f>(
    found: &'f FetchedSecrets,
    id: &str,
) -> Result<&'f FetchedSecret, ResolveError> {
    if let Some(secret) = found
        .found
        .iter()
        .find(|s| secret_answers_to(s.name.as_deref(), s.arn.as_deref(), id))
    {
        return Ok(secret);
    }
    Err(found
        .errors
        .iter()
        .find(|(asked, _)| asked == id)
        .map(|(_, err)| err.clone())
        .unwrap_or_else(|| ResolveError::Failed {
            code: "ResourceNotFoundException".into(),
            message: "Secrets Manager did not return this secret".into(),
        }))
}

/// Reads through the extension's own cache and AWS sources, as a request from function
/// code would: hits where fresh, the batch APIs for the rest, and the values count as read
/// (so refresh-ahead keeps them fresh). Each read goes through the scope the API would
/// use for the same names: an ARN's region and the role configured for its account.
#[derive(Clone, Copy)]
pub struct CacheFetch<'c> {
    cache: &'c Cache,
    scopes: &'c Scopes,
}

impl std::fmt::Debug for CacheFetch<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CacheFetch")
            .field("cache", self.cache)
            .finish()
    }
}

impl<'c> CacheFetch<'c> {
    /// Reads through `cache`, from the source `scopes` gives for the names on a miss.
    pub fn new(cache: &'c Cache, scopes: &'c Scopes) -> Self {
        Self { cache, scopes }
    }

    /// The source for names of one [`Group`].
    async fn source<'n>(
        &self,
        names: impl IntoIterator<Item = &'n str>,
    ) -> Result<std::sync::Arc<dyn Source>, ResolveError> {
        let scope = self.scopes.resolve(&AskedScope::default(), names)?;
        Ok(self.scopes.source(&scope).await?)
    }
}

impl From<ScopeError> for ResolveError {
    fn from(err: ScopeError) -> Self {
        ResolveError::Failed {
            code: err.code().to_owned(),
            message: err.to_string(),
        }
    }
}

fn fetched_secret(item: &Item) -> Option<FetchedSecret> {
    let Item::Secret(secret) = item else {
        return None;
    };
    Some(FetchedSecret {
        name: secret.name.clone(),
        arn: secret.arn.clone(),
        value: match &secret.secret_string {
            Some(text) => SecretValue::Text(Zeroizing::new(text.expose().to_owned())),
            None => SecretValue::Binary,
        },
    })
}

impl Fetch for CacheFetch<'_> {
    fn parameters<'a>(
        &'a self,
        names: &'a [ParameterName],
        decrypt: bool,
    ) -> BoxFuture<'a, Result<Vec<FetchedParameter>, ResolveError>> {
        Box::pin(async move {
            let source = self.source(names.iter().map(|n| n.name.as_str())).await?;
            let many = read::parameters(
                self.cache,
                source.as_ref(),
                names,
                decrypt,
                Purpose::Request,
            )
            .await?;
            Ok(many
                .found
                .iter()
                .filter_map(|entry| match &entry.item {
                    Item::Parameter(p) => Some(FetchedParameter {
                        name: p.name.to_string(),
                        arn: p.arn().map(Into::into),
                        selector: p.selector().map(str::to_owned),
                        kind: p.kind.to_string(),
                        value: Zeroizing::new(p.value.expose().to_owned()),
                    }),
                    _ => None,
                })
                .collect())
        })
    }

    fn secrets<'a>(
        &'a self,
        ids: &'a [String],
    ) -> BoxFuture<'a, Result<FetchedSecrets, ResolveError>> {
        Box::pin(async move {
            let source = self.source(ids.iter().map(String::as_str)).await?;
            let many = read::secrets(self.cache, source.as_ref(), ids, Purpose::Request).await?;
            Ok(FetchedSecrets {
                found: many
                    .found
                    .iter()
                    .filter_map(|entry| fetched_secret(&entry.item))
                    .collect(),
                errors: many
                    .errors
                    .into_iter()
                    .map(|e| {
                        let err = ResolveError::Failed {
                            code: e.error_code,
                            message: e.message,
                        };
                        (e.secret_id, err)
                    })
                    .collect(),
            })
        })
    }

    fn secret<'a>(
        &'a self,
        id: &'a str,
        version: &'a SecretVersion,
    ) -> BoxFuture<'a, Result<FetchedSecret, ResolveError>> {
        Box::pin(async move {
            let source = self.source([id]).await?;
            let lookup =
                read::secret(self.cache, source.as_ref(), id, Some(version), false).await?;
            fetched_secret(&lookup.entry.item).ok_or_else(|| ResolveError::Failed {
                code: "InternalError".into(),
                message: "cache entry of the wrong kind".into(),
            })
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::features::reference::parse;
    use std::sync::Mutex;

    /// A [`Fetch`] over fixed values that records every read.
    #[derive(Default)]
    pub(crate) struct FakeFetch {
        /// (name, kind, value): answered to any selector-less read of the name.
        pub parameters: Vec<(String, String, String)>,
        /// (name, value) current secrets; `None` is a binary secret.
        pub secrets: Vec<(String, Option<String>)>,
        /// Answered to every single (stage or version id) read.
        pub previous: Option<String>,
        /// Makes the decrypted parameter group fail.
        pub fail_decrypted: bool,
        pub calls: Mutex<Vec<String>>,
    }

    impl FakeFetch {
        pub(crate) fn calls(&self) -> Vec<String> {
            let mut calls = self.calls.lock().unwrap().clone();
            calls.sort();
            calls
        }

        pub(crate) fn set_parameter(&mut self, name: &str, kind: &str, value: &str) {
            self.parameters.retain(|(n, _, _)| n != name);
            self.parameters
                .push((name.into(), kind.into(), value.into()));
        }
    }

    impl Fetch for FakeFetch {
        fn parameters<'a>(
            &'a self,
            names: &'a [ParameterName],
            decrypt: bool,
        ) -> BoxFuture<'a, Result<Vec<FetchedParameter>, ResolveError>> {
            let listed: Vec<String> = names
                .iter()
                .map(|n| match &n.selector {
                    Some(s) => format!("{}{s}", n.name),
                    None => n.name.clone(),
                })
                .collect();
            self.calls
                .lock()
                .unwrap()
                .push(format!("parameters decrypt={decrypt} {}", listed.join(",")));
            Box::pin(async move {
                if decrypt && self.fail_decrypted {
                    return Err(ResolveError::Failed {
                        code: "AccessDeniedException".into(),
                        message: "no kms:Decrypt".into(),
                    });
                }
                Ok(names
                    .iter()
                    .filter_map(|n| {
                        let (name, kind, value) = self.parameters.iter().find(|(name, _, _)| {
                            *name == n.name || format!("arn:aws:ssm:r:1:parameter{name}") == n.name
                        })?;
                        let value = if kind == "SecureString" && !decrypt {
                            "AQICAH-ciphertext".to_owned()
                        } else {
                            value.clone()
                        };
                        Some(FetchedParameter {
                            name: name.clone(),
                            arn: Some(format!("arn:aws:ssm:r:1:parameter{name}")),
                            selector: n.selector.as_ref().map(ToString::to_string),
                            kind: kind.clone(),
                            value: Zeroizing::new(value),
                        })
                    })
                    .collect())
            })
        }

        fn secrets<'a>(
            &'a self,
            ids: &'a [String],
        ) -> BoxFuture<'a, Result<FetchedSecrets, ResolveError>> {
            self.calls
                .lock()
                .unwrap()
                .push(format!("secrets {}", ids.join(",")));
            Box::pin(async move {
                let mut fetched = FetchedSecrets::default();
                for id in ids {
                    let arn =
                        |name: &str| format!("arn:aws:secretsmanager:r:1:secret:{name}-AbCdEf");
                    match self
                        .secrets
                        .iter()
                        .find(|(name, _)| name == id || arn(name) == *id)
                    {
                        Some((name, value)) => fetched.found.push(FetchedSecret {
                            name: Some(name.clone()),
                            arn: Some(arn(name)),
                            value: match value {
                                Some(v) => SecretValue::Text(Zeroizing::new(v.clone())),
                                None => SecretValue::Binary,
                            },
                        }),
                        None => fetched.errors.push((
                            id.clone(),
                            ResolveError::Failed {
                                code: "ResourceNotFoundException".into(),
                                message: "Secrets Manager can't find the specified secret.".into(),
                            },
                        )),
                    }
                }
                Ok(fetched)
            })
        }

        fn secret<'a>(
            &'a self,
            id: &'a str,
            version: &'a SecretVersion,
        ) -> BoxFuture<'a, Result<FetchedSecret, ResolveError>> {
            self.calls.lock().unwrap().push(format!(
                "secret {} stage={:?} id={:?}",
                id, version.stage, version.version_id
            ));
            Box::pin(async move {
                match &self.previous {
                    Some(v) => Ok(FetchedSecret {
                        name: Some(id.to_owned()),
                        arn: None,
                        value: SecretValue::Text(Zeroizing::new(v.clone())),
                    }),
                    None => Err(ResolveError::Failed {
                        code: "ResourceNotFoundException".into(),
                        message: "no such version".into(),
                    }),
                }
            })
        }
    }

    pub(crate) fn sample() -> FakeFetch {
        FakeFetch {
            parameters: vec![
                ("/app/host".into(), "String".into(), "db.local".into()),
                ("/app/list".into(), "StringList".into(), "a,b".into()),
                ("/app/pw".into(), "SecureString".into(), "hunter2".into()),
            ],
            secrets: vec![
                (
                    "dev/azure".into(),
                    Some(r#"{"ConnectionString":"Endpoint=sb://x","port":5432,"db.name":"main","nested":{"k":"v"}}"#.into()),
                ),
                ("plain".into(), Some("not json".into())),
                ("blob".into(), None),
            ],
            previous: Some("old-value".into()),
            ..FakeFetch::default()
        }
    }

    async fn resolve_text(fetch: &FakeFetch, text: &str) -> Result<String, String> {
        let template = parse(text).unwrap();
        let resolved = resolve(fetch, template.references().map(|(_, r)| r)).await;
        template
            .substitute(|written, r| resolved.value(r).map_err(|e| format!("{written}: {e}")))
            .map(|v| v.to_string())
    }

    #[tokio::test]
    async fn one_read_per_group_whatever_the_number_of_references() {
        let fetch = sample();
        let text = "{{resolve:ssm:/app/host}} {{resolve:ssm:/app/list}} {{resolve:ssm:/app/host}} \
                    {{resolve:ssm-secure:/app/pw}} {{ssm:/app/host}} {{ssm:/app/pw}} \
                    {{resolve:secretsmanager:dev/azure:SecretString:ConnectionString}} \
                    {{resolve:secretsmanager:dev/azure:SecretString:port}} \
                    {{resolve:secretsmanager:plain}} \
                    {{resolve:secretsmanager:dev/azure:SecretString::AWSPREVIOUS}} \
                    {{resolve:secretsmanager:dev/azure:SecretString:ConnectionString:AWSCURRENT}}";
        let rendered = resolve_text(&fetch, text).await.unwrap();
        assert_eq!(
            rendered,
            "db.local a,b db.local hunter2 db.local hunter2 Endpoint=sb://x 5432 not json \
             old-value Endpoint=sb://x"
        );
        assert_eq!(
            fetch.calls(),
            vec![
                "parameters decrypt=false /app/host,/app/list",
                "parameters decrypt=true /app/host,/app/pw",
                "secret dev/azure stage=Some(\"AWSPREVIOUS\") id=None",
                "secrets dev/azure,plain",
            ]
        );
    }

    #[tokio::test]
    async fn versions_and_arns_are_matched_to_what_was_asked() {
        let fetch = sample();
        let rendered = resolve_text(
            &fetch,
            "{{resolve:ssm:/app/host:3}}|{{resolve:ssm:arn:aws:ssm:r:1:parameter/app/host}}|\
             {{resolve:secretsmanager:arn:aws:secretsmanager:r:1:secret:dev/azure-AbCdEf:SecretString:db.name}}",
        )
        .await
        .unwrap();
        assert_eq!(rendered, "db.local|db.local|main");
        assert!(fetch.calls().contains(
            &"parameters decrypt=false /app/host:3,arn:aws:ssm:r:1:parameter/app/host".to_owned()
        ));
    }

    #[tokio::test]
    async fn failures_say_why_and_never_show_a_value() {
        let fetch = sample();
        for (text, expected) in [
            (
                "{{resolve:ssm:/app/pw}}",
                "is a SecureString; use {{resolve:ssm-secure:...}}",
            ),
            ("{{resolve:ssm:/nope}}", "parameter does not exist"),
            (
                "{{resolve:secretsmanager:missing}}",
                "ResourceNotFoundException",
            ),
            ("{{resolve:secretsmanager:blob}}", "binary"),
            (
                "{{resolve:secretsmanager:plain:SecretString:k}}",
                "not JSON",
            ),
            (
                "{{resolve:secretsmanager:dev/azure:SecretString:nokey}}",
                "no JSON key \"nokey\"",
            ),
        ] {
            let err = resolve_text(&fetch, &format!("x={text}"))
                .await
                .unwrap_err();
            assert!(err.starts_with(text), "{err}");
            assert!(err.contains(expected), "{text}: {err}");
            for value in ["hunter2", "AQICAH", "Endpoint", "not json", "db.local"] {
                assert!(!err.contains(value), "{err}");
            }
        }
    }

    #[tokio::test]
    async fn a_failed_group_fails_only_its_own_references() {
        let fetch = FakeFetch {
            fail_decrypted: true,
            ..sample()
        };
        let template = parse("{{resolve:ssm:/app/host}}{{resolve:ssm-secure:/app/pw}}").unwrap();
        let resolved = resolve(&fetch, template.references().map(|(_, r)| r)).await;
        let refs: Vec<_> = template.references().map(|(_, r)| r.clone()).collect();
        assert_eq!(resolved.value(&refs[0]).unwrap(), "db.local");
        let err = resolved.value(&refs[1]).unwrap_err();
        assert!(err.to_string().contains("AccessDeniedException"));
        assert_eq!(resolved.len(), 2);
        assert!(!format!("{resolved:?}").contains("db.local"));
        let other = parse("{{ssm:/other}}").unwrap();
        let (_, unasked) = other.references().next().unwrap();
        assert_eq!(resolved.value(unasked).unwrap_err(), ResolveError::NotAsked);
    }

    #[tokio::test]
    async fn nothing_to_resolve_reads_nothing() {
        let fetch = sample();
        let resolved = resolve(&fetch, []).await;
        assert!(resolved.is_empty());
        assert!(fetch.calls().is_empty());
    }
}
