//! Refresh ahead of expiry. Lambda freezes the environment between invokes, so no timer can
//! run; each INVOKE is the moment to look at the cache and refresh, in batches, the entries
//! that function code read and that are in the last part of their TTL
//! (`LOCKBOX_REFRESH_AHEAD`). The function then keeps getting hits, and a rotated value
//! reaches it without a miss.

use std::collections::BTreeMap;

use crate::aws::Source;
use crate::cache::{Cache, Key};
use crate::domain::{ParameterName, Scope, SecretVersion};
use crate::read::{self, Core, Purpose};

/// What a refresh round did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RefreshReport {
    /// Entries that were due.
    pub due: usize,
    /// Groups (batches or single reads) that failed; their entries stay as they were, to
    /// be served stale if AWS stays unavailable.
    pub failed_groups: usize,
}

/// Refreshes every due entry; batched by kind, each through the role and region it was read
/// with. Failures are logged and leave entries as they are.
pub async fn run(core: &Core, fraction: f64) -> RefreshReport {
    let (cache, scopes) = (&core.cache, &core.scopes);
    let due = cache.due_for_refresh(fraction);
    let mut report = RefreshReport {
        due: due.len(),
        ..RefreshReport::default()
    };
    if due.is_empty() {
        return report;
    }
    let mut by_scope: BTreeMap<Scope, Vec<Key>> = BTreeMap::new();
    for key in due {
        by_scope.entry(key.scope().clone()).or_default().push(key);
    }
    for (scope, keys) in by_scope {
        match scopes.source(&scope).await {
            Ok(source) => {
                report.failed_groups += refresh_scope(cache, source.as_ref(), keys).await;
            }
            Err(err) => {
                report.failed_groups += 1;
                tracing::warn!(error = %err, "refresh ahead skipped a role or region");
            }
        }
    }
    tracing::debug!(
        due = report.due,
        failed = report.failed_groups,
        "refresh ahead"
    );
    report
}

/// Refreshes the due entries of one scope; returns how many groups failed.
async fn refresh_scope(cache: &Cache, source: &dyn Source, due: Vec<Key>) -> usize {
    let mut failed_groups = 0;
    let mut decrypted = Vec::new();
    let mut encrypted = Vec::new();
    let mut current_secrets = Vec::new();
    let mut other_secrets: Vec<(String, SecretVersion)> = Vec::new();
    let mut paths = Vec::new();
    let mut keyrings = Vec::new();
    for key in due {
        match key {
            Key::Parameter {
                name,
                selector,
                decrypt,
                ..
            } => {
                let name = ParameterName {
                    name: name.to_string(),
                    selector: selector.map(|s| *s),
                };
                if decrypt {
                    decrypted.push(name);
                } else {
                    encrypted.push(name);
                }
            }
            Key::Path {
                path,
                recursive,
                decrypt,
                ..
            } => paths.push((path, recursive, decrypt)),
            Key::Keyring { name, decrypt, .. } => keyrings.push((name, decrypt)),
            Key::Secret {
                id, version: None, ..
            } => current_secrets.push(String::from(id)),
            Key::Secret {
                id,
                version: Some(version),
                ..
            } => other_secrets.push((String::from(id), *version)),
        }
    }

    let mut outcomes: Vec<(&str, bool)> = Vec::new();
    for (names, decrypt) in [(&decrypted, true), (&encrypted, false)] {
        if !names.is_empty() {
            let ok = read::parameters(cache, source, names, decrypt, Purpose::Refresh)
                .await
                .is_ok();
            outcomes.push(("parameters", ok));
        }
    }
    if !current_secrets.is_empty() {
        let ok = read::secrets(cache, source, &current_secrets, Purpose::Refresh)
            .await
            .is_ok();
        outcomes.push(("secrets", ok));
    }
    for (id, version) in &other_secrets {
        let read = read::secret(cache, source, id, Some(version), true).await;
        outcomes.push(("secret", read.is_ok()));
    }
    for (path, recursive, decrypt) in &paths {
        let ok = read::path(cache, source, path, *recursive, *decrypt, Purpose::Refresh)
            .await
            .is_ok();
        outcomes.push(("path", ok));
    }
    for (name, decrypt) in &keyrings {
        let ok = read::keyring(cache, source, name, *decrypt, true)
            .await
            .is_ok();
        outcomes.push(("keyring", ok));
    }
    for (kind, ok) in outcomes {
        if !ok {
            failed_groups += 1;
            tracing::warn!(kind, "refresh ahead failed; cached values kept");
        }
    }
    failed_groups
}
