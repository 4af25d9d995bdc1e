//! Prefetch: load what `LOCKBOX_PREFETCH` names during Init, so the function's first read of
//! each value is a cache hit.
//!
//! The plan is parsed at start ([`PrefetchPlan::parse`]); [`run`] loads it with the batch
//! APIs; the [`PrefetchGate`] makes a request for a value that is still being prefetched
//! wait for it instead of making a second AWS call or failing.

use futures::future::join_all;
use std::collections::{BTreeMap, HashSet};
use tokio::sync::watch;

use crate::batch::{self, ParameterName, Purpose};
use crate::cache::{Cache, Key};
use crate::request::{parse_parameter, parse_scope};
use crate::scope::{AskedScope, RoleArn, Scope, Scopes};
use crate::source::Source;

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
    /// Parses a comma- or newline-separated list of `ssm:`, `ssm-path:` and `secret:`
    /// entries, each optionally followed by `?roleArn=ARN&region=REGION` (neither SSM names
    /// nor secret names may contain `?`). Blank entries are ignored.
    pub fn parse(raw: &str) -> Result<Self, PlanError> {
        let mut entries = Vec::new();
        for text in raw
            .split([',', '\n'])
            .map(str::trim)
            .filter(|t| !t.is_empty())
        {
            let error = |reason: &str| PlanError {
                entry: text.to_owned(),
                reason: reason.to_owned(),
            };
            let (spec, scope) = match text.split_once('?') {
                Some((spec, query)) => (spec, parse_scope(query).map_err(|e| error(&e.0))?),
                None => (text, AskedScope::default()),
            };
            let (kind, target) = spec
                .split_once(':')
                .ok_or_else(|| error("expected ssm:NAME, ssm-path:/PATH/ or secret:ID"))?;
            if target.trim().is_empty() {
                return Err(error("nothing after the prefix"));
            }
            let entry = match kind.trim() {
                "ssm" => {
                    // Same name and selector rules as the HTTP route.
                    let encoded: String = percent_encoding::utf8_percent_encode(
                        target,
                        percent_encoding::NON_ALPHANUMERIC,
                    )
                    .collect();
                    let req = parse_parameter(Some(&format!("name={encoded}")))
                        .map_err(|e| error(&e.0))?;
                    PrefetchEntry::Parameter(ParameterName {
                        name: req.name,
                        selector: req.selector,
                    })
                }
                "ssm-path" if target.starts_with('/') => PrefetchEntry::Path(target.to_owned()),
                "ssm-path" => return Err(error("a path starts with '/'")),
                "secret" => PrefetchEntry::Secret(target.to_owned()),
                _ => return Err(error("unknown prefix; use ssm:, ssm-path: or secret:")),
            };
            entries.push(Planned { entry, scope });
        }
        Ok(Self { entries })
    }

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
}

/// Lets requests wait for a prefetch in progress. Cheap to clone.
#[derive(Debug, Clone)]
pub struct PrefetchGate {
    running: watch::Receiver<bool>,
    names: std::sync::Arc<HashSet<String>>,
    paths: std::sync::Arc<Vec<String>>,
    secrets: std::sync::Arc<HashSet<String>>,
}

/// Opens the gate when prefetch ends (or its budget runs out). Dropping it opens it too.
#[derive(Debug)]
pub struct GateOpener(watch::Sender<bool>);

impl GateOpener {
    /// Lets every waiting request go on.
    pub fn open(self) {
        let _ = self.0.send(false);
    }
}

impl PrefetchGate {
    /// A gate that never waits (no prefetch).
    pub fn open() -> Self {
        Self::closed_for(&PrefetchPlan::default()).0
    }

    /// A gate closed for the plan's values until the returned opener is used.
    pub fn closed_for(plan: &PrefetchPlan) -> (Self, GateOpener) {
        let (tx, rx) = watch::channel(!plan.is_empty());
        let mut names = HashSet::new();
        let mut paths = Vec::new();
        let mut secrets = HashSet::new();
        for planned in &plan.entries {
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
        let gate = Self {
            running: rx,
            names: names.into(),
            paths: paths.into(),
            secrets: secrets.into(),
        };
        (gate, GateOpener(tx))
    }

    fn covers(&self, key: &Key) -> bool {
        match key {
            Key::Parameter { name, .. } => {
                self.names.contains(&**name)
                    || self.paths.iter().any(|p| name.starts_with(p.as_str()))
            }
            Key::Path { path, .. } => self.paths.iter().any(|p| path.starts_with(p.as_str())),
            Key::Secret { id, .. } => self.secrets.contains(&**id),
        }
    }

    /// Waits, if the key is being prefetched, until prefetch ends.
    pub async fn wait_for(&self, key: &Key) {
        if !*self.running.borrow() || !self.covers(key) {
            return;
        }
        let mut running = self.running.clone();
        // An error means the opener is gone: prefetch is over either way.
        let _ = running.wait_for(|r| !*r).await;
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
pub async fn run(cache: &Cache, scopes: &Scopes, plan: &PrefetchPlan) -> PrefetchReport {
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
        match batch::parameters(cache, source, &names, true, Purpose::Prefetch).await {
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
        match batch::path(cache, source, path, true, true, Purpose::Prefetch).await {
            Ok((entry, _)) => (entry.item.path_parameters().count(), Vec::new()),
            Err(err) => (0, vec![format!("ssm-path:{path}: {}", err.code)]),
        }
    }));
    let secret_reads = async {
        if secrets.is_empty() {
            return (0, Vec::new());
        }
        match batch::secrets(cache, source, &secrets, Purpose::Prefetch).await {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::Selector;

    #[test]
    fn parses_every_kind_with_commas_and_newlines() {
        let plan = PrefetchPlan::parse(
            "ssm:/app/db/password, ssm:/app/flag:3\nssm-path:/app/prod/,\n secret:prod/db ,ssm:/app/x:Dev",
        )
        .unwrap();
        assert_eq!(plan.entries.len(), 5);
        assert_eq!(
            plan.entries[1].entry,
            PrefetchEntry::Parameter(ParameterName {
                name: "/app/flag".into(),
                selector: Some(Selector::Version(3)),
            })
        );
        assert_eq!(
            plan.entries[2].entry,
            PrefetchEntry::Path("/app/prod/".into())
        );
        assert_eq!(
            plan.entries[3].entry,
            PrefetchEntry::Secret("prod/db".into())
        );
        assert_eq!(
            plan.entries[4].entry,
            PrefetchEntry::Parameter(ParameterName {
                name: "/app/x".into(),
                selector: Some(Selector::Label("Dev".into())),
            })
        );
    }

    #[test]
    fn entries_name_a_role_and_region_after_a_question_mark() {
        let plan = PrefetchPlan::parse(
            "secret:shared/db?roleArn=arn:aws-cn:iam::222222222222:role/r&region=cn-north-1,\
             ssm:/a:3?region=us-gov-west-1,ssm-path:/p/",
        )
        .unwrap();
        assert_eq!(
            plan.entries[0].entry,
            PrefetchEntry::Secret("shared/db".into())
        );
        assert_eq!(
            plan.entries[0].scope.role.as_ref().map(|r| r.as_str()),
            Some("arn:aws-cn:iam::222222222222:role/r")
        );
        assert_eq!(
            plan.entries[0].scope.region.as_ref().map(|r| r.as_str()),
            Some("cn-north-1")
        );
        assert_eq!(
            plan.entries[1].entry,
            PrefetchEntry::Parameter(ParameterName {
                name: "/a".into(),
                selector: Some(Selector::Version(3)),
            })
        );
        assert!(plan.entries[1].scope.role.is_none());
        assert!(plan.entries[2].scope.is_empty());
        assert_eq!(plan.roles().len(), 1);
        for (raw, reason) in [
            ("secret:x?roleArn=nope", "roleArn"),
            ("secret:x?region=EU", "region"),
            ("secret:x?label=a", "unknown query parameter"),
        ] {
            let err = PrefetchPlan::parse(raw).unwrap_err();
            assert_eq!(err.entry, raw);
            assert!(err.reason.contains(reason), "{err}");
        }
    }

    #[test]
    fn malformed_entries_are_named() {
        for (raw, bad) in [
            ("ssm:/a,nonsense", "nonsense"),
            ("ssm:/a,parameter:/b", "parameter:/b"),
            ("ssm-path:app/", "ssm-path:app/"),
            ("secret:", "secret:"),
            ("ssm:/a:0", "ssm:/a:0"),
        ] {
            let err = PrefetchPlan::parse(raw).unwrap_err();
            assert_eq!(err.entry, bad, "{raw}");
            assert!(err.to_string().contains(bad));
        }
    }

    #[tokio::test]
    async fn gate_waits_only_for_covered_keys_while_running() {
        let plan = PrefetchPlan::parse("ssm:/a,ssm-path:/p/,secret:s").unwrap();
        let (gate, opener) = PrefetchGate::closed_for(&plan);
        let key = |name: &str| Key::Parameter {
            scope: Scope::default(),
            name: name.into(),
            selector: None,
            decrypt: true,
        };
        assert!(gate.covers(&key("/a")));
        assert!(gate.covers(&key("/p/deep/x")));
        assert!(!gate.covers(&key("/other")));
        // Not covered: returns at once although the gate is closed.
        gate.wait_for(&key("/other")).await;
        let waiter = tokio::spawn({
            let gate = gate.clone();
            async move { gate.wait_for(&key("/a")).await }
        });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        opener.open();
        waiter.await.unwrap();
    }
}
