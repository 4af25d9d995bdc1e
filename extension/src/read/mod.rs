//! Reads through the cache, for the server and the features alike: one parameter, one
//! secret, a parameter's keyring, everything under a path, and many values at once (hits from the cache, the
//! misses from AWS in as few calls as the batch APIs allow: `GetParameters` 10 names,
//! `BatchGetSecretValue` 20 ids, concurrently). Prefetch, refresh-ahead, render and the
//! routes all read this way, so a value loaded by one is a hit for the others.
//!
//! [`Core`] is what every read works with: the cache and the per-scope sources.

use std::sync::Arc;

use futures::stream::{self, StreamExt, TryStreamExt};

use crate::aws::{
    FailureKind, Scopes, Source, SourceError, BATCH_GET_SECRETS_MAX, GET_PARAMETERS_MAX,
};
use crate::cache::{Cache, Entry, Freshness, Item, Key, KeyRef, Lookup};
use crate::domain::{
    secret_answers_to, Parameter, ParameterName, Scope, Secret, SecretBatchError, SecretVersion,
    Selector,
};

/// What every read works with: the cache, and the sources for every role and region. The
/// lifecycle builds it once and hands it to the server and the features; cheap to clone.
#[derive(Debug, Clone)]
pub struct Core {
    /// The cache every read goes through.
    pub cache: Cache,
    /// One source per role and region.
    pub scopes: Arc<Scopes>,
}

/// AWS calls in flight at once for one batch read. Above the on-demand bound
/// (`PARAMETERS_SECRETS_EXTENSION_MAX_CONNECTIONS`) because a batch is one burst during
/// Init or an invoke, and its wall time is what the function waits for.
pub const BATCH_CONCURRENCY: usize = 8;

/// Why values are being read: decides whether the cache is consulted and whether the
/// values count as read by function code (only those are refreshed ahead of expiry).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// Function code asked for them.
    Request,
    /// Function code asked, with `refreshNow=true`.
    RequestFresh,
    /// Loaded during Init; read later, maybe.
    Prefetch,
    /// Refreshed ahead of expiry because they were read.
    Refresh,
}

impl Purpose {
    fn force(self) -> bool {
        matches!(self, Purpose::RequestFresh | Purpose::Refresh)
    }

    fn read(self) -> bool {
        matches!(self, Purpose::Request | Purpose::RequestFresh)
    }
}

/// The result of reading many parameters.
#[derive(Debug, Default)]
pub struct ManyParameters {
    /// Found, in the order asked.
    pub found: Vec<Arc<Entry>>,
    /// Names (as asked, selector inline) that do not exist.
    pub invalid: Vec<String>,
    /// How many came from the cache.
    pub hits: usize,
}

/// The result of reading many secrets.
#[derive(Debug, Default)]
pub struct ManySecrets {
    /// Found, in the order asked.
    pub found: Vec<Arc<Entry>>,
    /// Per-secret failures.
    pub errors: Vec<SecretBatchError>,
    /// How many came from the cache.
    pub hits: usize,
}

/// The key of a parameter read, borrowed from the name asked.
fn parameter_key<'a>(
    scope: &'a Scope,
    name: &'a str,
    selector: Option<&'a Selector>,
    decrypt: bool,
) -> KeyRef<'a> {
    KeyRef::Parameter {
        scope,
        name,
        selector,
        decrypt,
    }
}

/// Caches a parameter under its key.
pub(crate) fn store_parameter(
    cache: &Cache,
    scope: &Scope,
    name: &ParameterName,
    decrypt: bool,
    parameter: Parameter,
    read: bool,
) -> Arc<Entry> {
    // Asked by its name (not its ARN): the key and the parameter share one copy.
    let asked = if *parameter.name == *name.name {
        parameter.name.clone()
    } else {
        name.name.as_str().into()
    };
    let key = Key::parameter(scope, asked, name.selector.as_ref(), decrypt);
    cache.insert(key, Item::Parameter(parameter), read)
}

/// The fresh cached parameter for a read, also found under the other decryption setting
/// when decryption changes nothing (String, StringList): a String prefetched decrypted is
/// then a hit whether or not the caller passes `withDecryption=true`, without taking two
/// places in the cache.
fn fresh_parameter(
    cache: &Cache,
    scope: &Scope,
    name: &str,
    selector: Option<&Selector>,
    decrypt: bool,
) -> Option<Arc<Entry>> {
    if let Some(entry) = cache.fresh(parameter_key(scope, name, selector, decrypt)) {
        return Some(entry);
    }
    let other = parameter_key(scope, name, selector, !decrypt);
    match &cache.peek_fresh(other)?.item {
        Item::Parameter(p) if p.kind != "SecureString" => cache.fresh(other),
        _ => None,
    }
}

/// Reads parameters: cached ones from the cache (unless `force`), the rest with
/// `GetParameters`. Names with a selector are read one by one (SSM's batch answer does not
/// say which selector a result belongs to).
pub async fn parameters(
    cache: &Cache,
    source: &dyn Source,
    names: &[ParameterName],
    decrypt: bool,
    purpose: Purpose,
) -> Result<ManyParameters, SourceError> {
    let force = purpose.force();
    let scope = source.scope();
    let mut slots: Vec<Option<Arc<Entry>>> = vec![None; names.len()];
    let mut hits = 0;
    let mut batchable = Vec::new();
    let mut single = Vec::new();
    for (i, name) in names.iter().enumerate() {
        if !force {
            let found = fresh_parameter(cache, scope, &name.name, name.selector.as_ref(), decrypt);
            if let Some(entry) = found {
                slots[i] = Some(entry);
                hits += 1;
                continue;
            }
        }
        if name.selector.is_some() {
            single.push(i);
        } else {
            batchable.push(i);
        }
    }

    let mut invalid = Vec::new();
    let chunks: Vec<Vec<usize>> = batchable
        .chunks(GET_PARAMETERS_MAX)
        .map(<[usize]>::to_vec)
        .collect();
    let answers: Vec<_> = stream::iter(chunks)
        .map(|chunk| async move {
            let asked: Vec<String> = chunk.iter().map(|&i| names[i].name.clone()).collect();
            source
                .get_parameters(&asked, decrypt)
                .await
                .map(|batch| (chunk, batch))
        })
        .buffer_unordered(BATCH_CONCURRENCY)
        .try_collect()
        .await?;
    for (chunk, batch) in answers {
        let mut found = batch.found;
        for i in chunk {
            let asked = &names[i].name;
            // SSM answers with the parameter's name even when asked by ARN.
            let position = found.iter().position(|p| p.is_called(asked));
            match position {
                Some(at) => {
                    let parameter = found.swap_remove(at);
                    slots[i] = Some(store_parameter(
                        cache,
                        scope,
                        &names[i],
                        decrypt,
                        parameter,
                        purpose.read(),
                    ));
                }
                None => invalid.push(asked.clone()),
            }
        }
    }

    let singles: Vec<_> = stream::iter(single)
        .map(|i| async move {
            let name = &names[i];
            let key = parameter_key(scope, &name.name, name.selector.as_ref(), decrypt);
            let result = cache
                .get_or_fetch(key, force, || async {
                    source
                        .get_parameter(&names[i], decrypt)
                        .await
                        .map(Item::Parameter)
                })
                .await;
            (i, result)
        })
        .buffer_unordered(BATCH_CONCURRENCY)
        .collect()
        .await;
    for (i, result) in singles {
        match result {
            Ok(lookup) => {
                if lookup.freshness == Freshness::Hit {
                    hits += 1;
                }
                slots[i] = Some(lookup.entry);
            }
            Err(err) if err.kind == FailureKind::NotFound => {
                invalid.push(names[i].api_name());
            }
            Err(err) => return Err(err),
        }
    }

    Ok(ManyParameters {
        found: slots.into_iter().flatten().collect(),
        invalid,
        hits,
    })
}

/// Reads secrets (AWSCURRENT): cached ones from the cache (unless `force`), the rest with
/// `BatchGetSecretValue`.
pub async fn secrets(
    cache: &Cache,
    source: &dyn Source,
    ids: &[String],
    purpose: Purpose,
) -> Result<ManySecrets, SourceError> {
    let force = purpose.force();
    let scope = source.scope();
    let key = |id: &str| Key::secret(scope, id, None);
    let mut slots: Vec<Option<Arc<Entry>>> = vec![None; ids.len()];
    let mut hits = 0;
    let mut missing = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        let asked = KeyRef::Secret {
            scope,
            id,
            version: None,
        };
        match cache.fresh(asked).filter(|_| !force) {
            Some(entry) => {
                slots[i] = Some(entry);
                hits += 1;
            }
            None => missing.push(i),
        }
    }

    let chunks: Vec<Vec<usize>> = missing
        .chunks(BATCH_GET_SECRETS_MAX)
        .map(<[usize]>::to_vec)
        .collect();
    let answers: Vec<_> = stream::iter(chunks)
        .map(|chunk| async move {
            let asked: Vec<String> = chunk.iter().map(|&i| ids[i].clone()).collect();
            source.batch_get_secrets(&asked).await.map(|b| (chunk, b))
        })
        .buffer_unordered(BATCH_CONCURRENCY)
        .try_collect()
        .await?;
    let mut errors = Vec::new();
    for (chunk, batch) in answers {
        // A secret asked by two ids in one batch (its name and its ARN, say) comes back
        // once: it is stored once, under both keys.
        let names: Vec<(Option<String>, Option<String>)> = batch
            .found
            .iter()
            .map(|s| (s.name.clone(), s.arn.clone()))
            .collect();
        let mut found: Vec<Option<Secret>> = batch.found.into_iter().map(Some).collect();
        let mut stored: Vec<Option<Arc<Entry>>> = vec![None; found.len()];
        for i in chunk {
            let asked = ids[i].as_str();
            let position = names
                .iter()
                .position(|(name, arn)| secret_answers_to(name.as_deref(), arn.as_deref(), asked));
            if let Some(at) = position {
                let entry = match (stored[at].clone(), found[at].take()) {
                    (Some(entry), _) => {
                        cache.insert_entry(key(asked), entry.clone());
                        entry
                    }
                    (None, Some(secret)) => {
                        cache.insert(key(asked), Item::Secret(secret), purpose.read())
                    }
                    // Taken only when stored.
                    (None, None) => continue,
                };
                stored[at] = Some(entry.clone());
                slots[i] = Some(entry);
            } else if let Some(err) = batch.errors.iter().find(|e| e.secret_id == asked) {
                errors.push(err.clone());
            } else {
                errors.push(SecretBatchError {
                    secret_id: asked.to_owned(),
                    error_code: "ResourceNotFoundException".into(),
                    message: "Secrets Manager did not return this secret".into(),
                });
            }
        }
    }
    Ok(ManySecrets {
        found: slots.into_iter().flatten().collect(),
        errors,
        hits,
    })
}

/// Reads every parameter under a path. Each parameter is cached on its own (so that a
/// later single read of one of them is a hit), and the path's entry lists those entries
/// rather than copies: a value read by path is held once.
pub async fn path(
    cache: &Cache,
    source: &dyn Source,
    path: &str,
    recursive: bool,
    decrypt: bool,
    purpose: Purpose,
) -> Result<(Arc<Entry>, Freshness), SourceError> {
    let force = purpose.force();
    let key = KeyRef::Path {
        scope: source.scope(),
        path,
        recursive,
        decrypt,
    };
    let lookup = cache
        .get_or_fetch(key, force, || async {
            let found = source
                .get_parameters_by_path(path, recursive, decrypt)
                .await?;
            let mut entries = Vec::with_capacity(found.len());
            for parameter in found {
                let name = ParameterName {
                    name: parameter.name.to_string(),
                    selector: None,
                };
                entries.push(store_parameter(
                    cache,
                    source.scope(),
                    &name,
                    decrypt,
                    parameter,
                    false,
                ));
            }
            Ok(Item::Parameters(entries))
        })
        .await?;
    Ok((lookup.entry, lookup.freshness))
}

/// One secret, `AWSCURRENT` unless a version is asked for. With `force` the cache is not
/// read (but is updated).
pub async fn secret(
    cache: &Cache,
    source: &dyn Source,
    id: &str,
    version: Option<&SecretVersion>,
    force: bool,
) -> Result<Lookup, SourceError> {
    let key = KeyRef::Secret {
        scope: source.scope(),
        id,
        version,
    };
    cache
        .get_or_fetch(key, force, || async {
            source.get_secret(id, version).await.map(Item::Secret)
        })
        .await
}

/// A parameter's keyring (`current`, `previous`, `pending`), one entry for the three, one
/// AWS call to fill it. With `force` the cache is not read (but is updated).
pub async fn keyring(
    cache: &Cache,
    source: &dyn Source,
    name: &str,
    decrypt: bool,
    force: bool,
) -> Result<Lookup, SourceError> {
    let key = KeyRef::Keyring {
        scope: source.scope(),
        name,
        decrypt,
    };
    cache
        .get_or_fetch(key, force, || async {
            source
                .get_keyring(name, decrypt)
                .await
                .map(|keyring| Item::Keyring(Box::new(keyring)))
        })
        .await
}

/// One parameter: `name` (without selector) and `selector` as the request gave them,
/// borrowed, so that a cache hit copies neither. With `force` the cache is not read (but
/// is updated).
pub async fn parameter(
    cache: &Cache,
    source: &dyn Source,
    name: &str,
    selector: Option<&Selector>,
    decrypt: bool,
    force: bool,
) -> Result<Lookup, SourceError> {
    let scope = source.scope();
    if !force {
        if let Some(entry) = fresh_parameter(cache, scope, name, selector, decrypt) {
            return Ok(Lookup {
                entry,
                freshness: Freshness::Hit,
            });
        }
    }
    let key = parameter_key(scope, name, selector, decrypt);
    cache
        .get_or_fetch(key, force, || async {
            let name = ParameterName {
                name: name.to_owned(),
                selector: selector.cloned(),
            };
            source
                .get_parameter(&name, decrypt)
                .await
                .map(Item::Parameter)
        })
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aws::fake::{parameter, Fake};
    use crate::cache::CacheSettings;
    use std::time::Duration;

    /// Lists three parameters under any path.
    fn three_under_a_path() -> Fake {
        Fake::new().on_path(|path| {
            Ok((1..=3)
                .map(|i| parameter(&format!("{path}/p{i}"), "v"))
                .collect())
        })
    }

    fn cache() -> Cache {
        Cache::new(CacheSettings {
            enabled: true,
            capacity: 10,
            parameter_ttl: Duration::from_secs(300),
            secret_ttl: Duration::from_secs(300),
            max_stale: Duration::ZERO,
        })
    }

    #[tokio::test]
    async fn a_value_read_by_path_is_held_once() {
        let cache = cache();
        let source = three_under_a_path();
        let (entry, freshness) = path(&cache, &source, "/app", true, true, Purpose::Request)
            .await
            .unwrap();
        assert_eq!(freshness, Freshness::Miss);
        // The path's entry and one per parameter, so that single reads are hits...
        assert_eq!(cache.len(), 4);
        let listed: Vec<&Parameter> = entry.item.path_parameters().collect();
        assert_eq!(listed.len(), 3);
        for listed in listed {
            let by_name = ParameterName {
                name: listed.name.to_string(),
                selector: None,
            };
            let single = cache
                .peek_fresh(parameter_key(&Scope::default(), &by_name.name, None, true))
                .expect("cached under its name");
            let Item::Parameter(single) = &single.item else {
                panic!("a parameter");
            };
            // ...but each value is held once: the path lists the very same parameter.
            assert!(
                std::ptr::eq(listed, single),
                "{} is held twice",
                listed.name
            );
            assert_eq!(
                listed.value.expose().as_ptr(),
                single.value.expose().as_ptr()
            );
        }
        // A second read is a hit on the path's entry.
        let (_, freshness) = path(&cache, &source, "/app", true, true, Purpose::Request)
            .await
            .unwrap();
        assert_eq!(freshness, Freshness::Hit);
    }

    #[tokio::test]
    async fn a_parameter_asked_by_name_shares_its_name_with_its_key() {
        let cache = Cache::new(CacheSettings {
            enabled: true,
            capacity: 10,
            parameter_ttl: Duration::from_secs(300),
            secret_ttl: Duration::from_secs(300),
            max_stale: Duration::ZERO,
        });
        let scope = Scope::default();
        // How many hold the stored parameter's name: the entry, and the key when shared.
        let holders_of_name = |asked: &str, name: &str| {
            let (cache, scope) = (&cache, &scope);
            let asked = ParameterName {
                name: asked.into(),
                selector: None,
            };
            let entry = store_parameter(cache, scope, &asked, true, parameter(name, "v"), false);
            let Item::Parameter(stored) = &entry.item else {
                panic!("a parameter");
            };
            Arc::strong_count(&stored.name)
        };
        assert_eq!(holders_of_name("/app/db", "/app/db"), 2);
        let arn = "arn:aws:ssm:eu-west-1:1:parameter/app/x";
        assert_eq!(holders_of_name(arn, "/app/x"), 1);
        let by_arn = ParameterName {
            name: arn.into(),
            selector: None,
        };
        assert!(cache
            .peek_fresh(parameter_key(&scope, &by_arn.name, None, true))
            .is_some());
    }
}
