//! Prefetch: load what `LOCKBOX_PREFETCH` names during Init, so the function's first read of
//! each value is a cache hit.
//!
//! The plan is parsed with the configuration (`config::parse_prefetch`); [`run`] loads it
//! with the batch APIs; its [`PrefetchGate`] makes a request for a value that is still
//! being prefetched wait for it instead of making a second AWS call or failing.

use std::collections::{BTreeMap, HashSet};

use futures::future::join_all;

use crate::aws::Source;
use crate::cache::{Cache, GateOpener, PrefetchGate};
use crate::domain::{AskedScope, ParameterName, RoleArn, Scope};
use crate::read::{self, Core, Purpose};

/// One thing to load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PrefetchEntry {
    /// `ssm:NAME[:selector]`: one parameter, decrypted.
    Parameter(ParameterName),
    /// `ssm-path:/PATH/`: everything under a path, recursive, decrypted.
    Path(String),
    /// `secret:ID`: a secret, AWSCURRENT.
    Secret(String),
}

/// One entry of the plan and the role and region it is read with
/// (`ENTRY?roleArn=ARN&region=REGION`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Planned {
    /// What to load.
    pub entry: PrefetchEntry,
    /// Whose credentials, which region; empty for the function's own.
    pub scope: AskedScope,
}

/// Everything to load, in the order given.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PrefetchPlan {
    /// The entries.
    pub entries: Vec<Planned>,
}

/// An entry of `LOCKBOX_PREFETCH` that cannot be understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("entry {entry:?}: {reason}")]
pub struct PlanError {
    /// The entry as written.
    pub entry: String,
    /// What is wrong with it.
    pub reason: String,
}

impl PrefetchPlan {
    /// The roles the entries name: configured, so allowed without `LOCKBOX_ALLOWED_ROLES`.
    pub fn roles(&self) -> Vec<RoleArn> {
        let mut roles: Vec<RoleArn> = self
            .entries
            .iter()
            .filter_map(|p| p.scope.role.clone())
            .collect();
        roles.sort();
        roles.dedup();
        roles
    }

    /// Whether there is nothing to load.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// A gate closed for the plan's values until the returned opener is used.
    pub fn gate(&self) -> (PrefetchGate, GateOpener) {
        let mut names = HashSet::new();
        let mut paths = Vec::new();
        let mut secrets = HashSet::new();
        for planned in &self.entries {
            match &planned.entry {
                PrefetchEntry::Parameter(p) => {
                    names.insert(p.name.clone());
                }
                PrefetchEntry::Path(p) => paths.push(p.clone()),
                PrefetchEntry::Secret(s) => {
                    secrets.insert(s.clone());
                }
            }
        }
        PrefetchGate::closed_for(names, paths, secrets)
    }
}

/// What prefetch loaded and what it could not.
#[derive(Debug, Default)]
pub struct PrefetchReport {
    /// Values now in the cache.
    pub loaded: usize,
    /// Entries that could not be loaded, with the reason (names and codes, never values).
    pub failures: Vec<String>,
}

/// Loads the plan into the cache with the batch APIs, every kind and every role and region
/// concurrently.
pub async fn run(core: &Core, plan: &PrefetchPlan) -> PrefetchReport {
    let (cache, scopes) = (&core.cache, &core.scopes);
    let mut report = PrefetchReport::default();
    let mut groups: BTreeMap<Scope, Vec<&PrefetchEntry>> = BTreeMap::new();
    for planned in &plan.entries {
        let name = match &planned.entry {
            PrefetchEntry::Parameter(p) => p.name.as_str(),
            PrefetchEntry::Path(_) => "",
            PrefetchEntry::Secret(id) => id.as_str(),
        };
        match scopes.resolve(&planned.scope, [name]) {
            Ok(scope) => groups.entry(scope).or_default().push(&planned.entry),
            Err(err) => report
                .failures
                .push(format!("{}: {err}", describe(&planned.entry))),
        }
    }
    let rounds = join_all(groups.into_iter().map(|(scope, entries)| async move {
        match scopes.source(&scope).await {
            Ok(source) => run_scope(cache, source.as_ref(), &entries).await,
            Err(err) => PrefetchReport {
                loaded: 0,
                failures: entries
                    .iter()
                    .map(|e| format!("{}: {err}", describe(e)))
                    .collect(),
            },
        }
    }))
    .await;
    for round in rounds {
        report.loaded += round.loaded;
        report.failures.extend(round.failures);
    }
    report
}

fn describe(entry: &PrefetchEntry) -> String {
    match entry {
        PrefetchEntry::Parameter(p) => format!("ssm:{}", p.name),
        PrefetchEntry::Path(p) => format!("ssm-path:{p}"),
        PrefetchEntry::Secret(s) => format!("secret:{s}"),
    }
}

/// Loads one role's and region's entries.
async fn run_scope(
    cache: &Cache,
    source: &dyn Source,
    entries: &[&PrefetchEntry],
) -> PrefetchReport {
    let mut names = Vec::new();
    let mut paths = Vec::new();
    let mut secrets = Vec::new();
    for entry in entries {
        match entry {
            PrefetchEntry::Parameter(p) => names.push(p.clone()),
            PrefetchEntry::Path(p) => paths.push(p.clone()),
            PrefetchEntry::Secret(s) => secrets.push(s.clone()),
        }
    }

    let parameters = async {
        if names.is_empty() {
            return (0, Vec::new());
        }
        match read::parameters(cache, source, &names, true, Purpose::Prefetch).await {
            Ok(many) => (
                many.found.len(),
                many.invalid
                    .into_iter()
                    .map(|n| format!("ssm:{n}: ParameterNotFound"))
                    .collect(),
            ),
            Err(err) => (
                0,
                vec![format!("ssm: {} parameters: {}", names.len(), err.code)],
            ),
        }
    };
    let path_reads = join_all(paths.iter().map(|path| async move {
        match read::path(cache, source, path, true, true, Purpose::Prefetch).await {
            Ok((entry, _)) => (entry.item.path_parameters().count(), Vec::new()),
            Err(err) => (0, vec![format!("ssm-path:{path}: {}", err.code)]),
        }
    }));
    let secret_reads = async {
        if secrets.is_empty() {
            return (0, Vec::new());
        }
        match read::secrets(cache, source, &secrets, Purpose::Prefetch).await {
            Ok(many) => (
                many.found.len(),
                many.errors
                    .into_iter()
                    .map(|e| format!("secret:{}: {}", e.secret_id, e.error_code))
                    .collect(),
            ),
            Err(err) => (
                0,
                vec![format!("secret: {} secrets: {}", secrets.len(), err.code)],
            ),
        }
    };
    let (parameters, path_reads, secret_reads) = tokio::join!(parameters, path_reads, secret_reads);

    let mut report = PrefetchReport::default();
    for (loaded, failures) in std::iter::once(parameters)
        .chain(path_reads)
        .chain(std::iter::once(secret_reads))
    {
        report.loaded += loaded;
        report.failures.extend(failures);
    }
    report
}
