//! Rotating SecureString parameters: selection, then per parameter write, verify, label.
//!
//! For each selected parameter, [`Rotate::parameter`]:
//! 1. skips anything that is not a SecureString (SSM cannot change the type in place);
//! 2. reads its history (versions, labels, keys) and the rotation's intent tag;
//! 3. if this rotation id already wrote a version (its `r-...` label, or an intent tag
//!    whose write landed), completes the missing steps instead of writing again;
//! 4. otherwise checks the 100-version limit (the oldest version must carry no label;
//!    lockbox removes its own labels there and refuses to touch anyone else's), records its
//!    intent (tag `lockbox:rotation` = `<id label>:<old version>`), writes the new version
//!    (`Overwrite`, `SecureString`, resolved key ARN, tier, description, allowed pattern),
//!    labels it with the rotation id, reads it back decrypted and compares;
//! 5. moves `previous` to the old version and `current` to the new one (checking
//!    `InvalidLabels`), and removes older rotation-id labels so they never pin versions.
//!
//! The intent tag is what makes a run interrupted between the write and the first label
//! recoverable: `PutParameter` has no idempotency token, so without it a rerun could not
//! tell its own unlabelled write from someone else's.

use std::collections::BTreeMap;
use std::future::Future;

use crate::generate::{generate, RandomSource};
use crate::input::{is_rotation_label, Mode, Rotation};
use crate::keycheck::ResolvedKey;
use crate::pace::{self, Backoff, Class, Pacer};
use crate::report::{Outcome, ParamResult, Report};
use crate::store::{ParamMeta, ParameterStore, PutRequest, Selector, StoreError, VersionInfo};
use crate::value::SecretValue;

/// Tag recording a rotation's intent before it writes: `<rotation label>:<old version>`.
pub const INTENT_TAG: &str = "lockbox:rotation";
/// Versions SSM keeps; the oldest is dropped on write (and must then carry no label).
pub const MAX_VERSIONS: usize = 100;
/// Largest value a Standard-tier parameter can hold.
pub const STANDARD_MAX_BYTES: usize = 4096;

/// Selection failed; nothing was written.
#[derive(Debug, thiserror::Error)]
pub enum SelectError {
    /// An AWS call failed.
    #[error("selecting parameters failed: {0}")]
    Store(#[from] StoreError),
    /// Named parameters do not exist.
    #[error("targets.names not found: {0}")]
    NotFound(String),
    /// The targets match no parameter.
    #[error("targets select no parameter ({0})")]
    Empty(String),
    /// `overrides` names a parameter the targets do not select (likely a typo).
    #[error("overrides name parameters the targets do not select: {0}")]
    StrayOverride(String),
}

/// Finds the parameters a rotation's targets select, in name order.
pub(crate) async fn select<S: ParameterStore>(
    store: &S,
    rotation: &Rotation,
) -> Result<Vec<ParamMeta>, SelectError> {
    let t = &rotation.targets;
    let mut found: BTreeMap<String, ParamMeta> = BTreeMap::new();
    if !t.names.is_empty() {
        for meta in store.describe(Selector::Names(&t.names)).await? {
            found.insert(meta.name.clone(), meta);
        }
        let missing: Vec<&str> = t
            .names
            .iter()
            .filter(|n| !found.contains_key(n.as_str()))
            .map(String::as_str)
            .collect();
        if !missing.is_empty() {
            return Err(SelectError::NotFound(missing.join(", ")));
        }
    }
    for path in &t.paths {
        for meta in store.describe(Selector::Path(path)).await? {
            found.insert(meta.name.clone(), meta);
        }
    }
    if let Some(tag) = &t.tag {
        for meta in store.describe(Selector::Tag(tag)).await? {
            found.insert(meta.name.clone(), meta);
        }
    }
    if found.is_empty() {
        return Err(SelectError::Empty(format!(
            "paths {:?}, tag {:?}",
            t.paths, t.tag
        )));
    }
    let stray: Vec<&str> = rotation
        .overrides
        .keys()
        .filter(|n| !found.contains_key(n.as_str()))
        .map(String::as_str)
        .collect();
    if !stray.is_empty() {
        return Err(SelectError::StrayOverride(stray.join(", ")));
    }
    Ok(found.into_values().collect())
}

/// Runs a validated rotation whose key passed the gate. Selection errors fail the run
/// before any write; per-parameter failures are reported and the others go on.
pub(crate) async fn run<S: ParameterStore>(
    store: &S,
    rotation: &Rotation,
    key: &ResolvedKey,
    random: &RandomSource,
) -> Result<Report, SelectError> {
    let selected = select(store, rotation).await?;
    let rotate = Rotate {
        store,
        rotation,
        key,
        random,
        pacer: rotation.pace.pacer(),
        backoff: rotation.pace.backoff(),
    };
    let mut results = Vec::with_capacity(selected.len());
    for meta in &selected {
        let result = rotate.parameter(meta).await;
        result.log(&rotation.id.id);
        results.push(result);
    }
    Ok(Report {
        rotation_id: rotation.id.id.clone(),
        results,
    })
}

/// The intent recorded before a write.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Intent {
    label: String,
    from: i64,
}

impl Intent {
    fn encode(&self) -> String {
        format!("{}:{}", self.label, self.from)
    }

    fn decode(s: &str) -> Option<Self> {
        let (label, from) = s.rsplit_once(':')?;
        Some(Self {
            label: label.to_owned(),
            from: from.parse().ok()?,
        })
    }
}

/// A parameter's rotation ended (any outcome but `failed`).
struct Done {
    outcome: Outcome,
    old: Option<i64>,
    new: Option<i64>,
    reason: Option<String>,
}

/// A parameter's rotation failed.
struct Failed {
    old: Option<i64>,
    new: Option<i64>,
    reason: String,
}

impl Failed {
    fn at(old: i64, new: Option<i64>, reason: impl Into<String>) -> Self {
        Self {
            old: Some(old),
            new,
            reason: reason.into(),
        }
    }
}

/// One run's shared state.
struct Rotate<'a, S> {
    store: &'a S,
    rotation: &'a Rotation,
    key: &'a ResolvedKey,
    random: &'a RandomSource,
    pacer: Pacer,
    backoff: Backoff,
}

fn labels_of(history: &[VersionInfo], version: i64) -> &[String] {
    history
        .iter()
        .find(|v| v.version == version)
        .map_or(&[], |v| v.labels.as_slice())
}

impl<S: ParameterStore> Rotate<'_, S> {
    /// Rotates one parameter; never returns an error, failures become a result.
    async fn parameter(&self, meta: &ParamMeta) -> ParamResult {
        let (outcome, old, new, reason) = match self.try_parameter(meta).await {
            Ok(d) => (d.outcome, d.old, d.new, d.reason),
            Err(f) => (Outcome::Failed, f.old, f.new, Some(f.reason)),
        };
        ParamResult {
            name: meta.name.clone(),
            old_version: old,
            new_version: new,
            key_id: self.key.arn.clone(),
            mode: self.rotation.mode,
            outcome,
            reason,
        }
    }

    /// A mutating call, paced and retried on throttling / `TooManyUpdates`.
    async fn paced<T, F, Fut>(&self, op: F) -> Result<T, StoreError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, StoreError>>,
    {
        pace::retry(&self.pacer, &self.backoff, op).await
    }

    async fn try_parameter(&self, meta: &ParamMeta) -> Result<Done, Failed> {
        let name = meta.name.as_str();
        let fail_read = |e: StoreError| Failed {
            old: Some(meta.version),
            new: None,
            reason: e.to_string(),
        };
        if meta.param_type != "SecureString" {
            return Ok(Done {
                outcome: Outcome::Skipped,
                old: Some(meta.version),
                new: None,
                reason: Some(format!(
                    "type is {}, not SecureString: SSM cannot change a parameter's type in \
                     place; recreate it as a SecureString to rotate it",
                    meta.param_type
                )),
            });
        }
        let mut history = self.store.history(name).await.map_err(fail_read)?;
        let latest = history.last().map_or(meta.version, |v| v.version);
        let run_label = &self.rotation.id.label;
        let intent = self
            .store
            .tag(name, INTENT_TAG)
            .await
            .map_err(fail_read)?
            .and_then(|t| Intent::decode(&t))
            .filter(|i| &i.label == run_label);

        // 3. This rotation id already wrote a version: complete it, never write again.
        if let Some(marked) = history.iter().find(|v| v.labels.contains(run_label)) {
            let new = marked.version;
            let old = intent.map_or(new - 1, |i| i.from);
            if new != latest {
                return Err(Failed::at(
                    old,
                    Some(new),
                    format!(
                        "version {new} was written by this rotation id, but version {latest} \
                         has been written since; labels left as they are"
                    ),
                ));
            }
            return self.complete(meta, &history, old, new, false).await;
        }
        if let Some(intent) = &intent {
            if latest == intent.from + 1 {
                // Interrupted between the write and its first label: that version is ours.
                let new = latest;
                let recorded = history.last().and_then(|v| v.key_id.as_deref());
                if !recorded.is_some_and(|k| self.key.matches(k)) {
                    return Err(Failed::at(
                        intent.from,
                        Some(new),
                        format!(
                            "version {new} follows this rotation's intent but is not under key \
                             {}; not adopting it",
                            self.key.arn
                        ),
                    ));
                }
                return self.complete(meta, &history, intent.from, new, true).await;
            }
            if latest != intent.from {
                return Err(Failed::at(
                    intent.from,
                    None,
                    format!(
                        "this rotation id started from version {} but the parameter is now at \
                         version {latest}: another writer intervened; not writing again",
                        intent.from
                    ),
                ));
            }
            // latest == intent.from: the earlier attempt never wrote; carry on.
        }

        if self.rotation.mode == Mode::Reencrypt {
            let recorded = history.last().and_then(|v| v.key_id.as_deref());
            if recorded.is_some_and(|k| self.key.matches(k)) {
                return Ok(Done {
                    outcome: Outcome::Unchanged,
                    old: Some(latest),
                    new: None,
                    reason: Some(format!("already encrypted under {}", self.key.arn)),
                });
            }
        }

        // 4. The oldest version is dropped by the write, and SSM refuses if it is labelled.
        let mut clear_oldest: Vec<String> = Vec::new();
        if history.len() >= MAX_VERSIONS {
            if let Some(oldest) = history.first() {
                if let Some(foreign) = oldest.labels.iter().find(|l| !self.owns(l)) {
                    return Err(Failed::at(
                        latest,
                        None,
                        format!(
                            "version {} (the oldest of {} kept) carries label {foreign:?}, which \
                             lockbox did not set; SSM refuses a new version while the oldest is \
                             labelled, and lockbox never removes a label it did not set: move \
                             or remove {foreign:?}",
                            oldest.version,
                            history.len()
                        ),
                    ));
                }
                clear_oldest.clone_from(&oldest.labels);
            }
        }

        let tier = self.tier_for(meta);
        if self.rotation.dry_run {
            let mut reason = format!(
                "would write version {} under {}, label it {:?} and version {latest} {:?}",
                latest + 1,
                self.key.arn,
                self.rotation.labels.current,
                self.rotation.labels.previous
            );
            if !clear_oldest.is_empty() {
                reason.push_str(&format!(
                    "; would first remove lockbox labels {clear_oldest:?} from the oldest version"
                ));
            }
            return Ok(Done {
                outcome: Outcome::DryRun,
                old: Some(latest),
                new: None,
                reason: Some(reason),
            });
        }

        if let Some(oldest) = history.first().filter(|_| !clear_oldest.is_empty()) {
            self.paced(|| self.store.unlabel(name, oldest.version, &clear_oldest))
                .await
                .map_err(|e| Failed::at(latest, None, e.to_string()))?;
        }

        let new_value = match self.rotation.mode {
            Mode::Reencrypt => self
                .store
                .value(name, latest)
                .await
                .map_err(|e| Failed::at(latest, None, e.to_string()))?,
            Mode::Regenerate => {
                let policy = self
                    .rotation
                    .policy_for(name)
                    .ok_or_else(|| Failed::at(latest, None, "no policy for regenerate"))?;
                generate(policy, self.random)
                    .await
                    .map_err(|e| Failed::at(latest, None, e.to_string()))?
            }
        };
        let tier = if new_value.len() > STANDARD_MAX_BYTES {
            "Advanced"
        } else {
            tier.unwrap_or("Standard")
        };

        if intent.is_none() {
            let intent = Intent {
                label: run_label.clone(),
                from: latest,
            }
            .encode();
            self.paced(|| self.store.set_tag(name, INTENT_TAG, &intent))
                .await
                .map_err(|e| Failed::at(latest, None, e.to_string()))?;
        }

        let new = self.write(meta, &new_value, tier, latest).await?;
        if history.len() >= MAX_VERSIONS {
            // SSM dropped the oldest version to make room; forget it too.
            history.remove(0);
        }
        self.mark(name, latest, new).await?;
        let back = self
            .store
            .value(name, new)
            .await
            .map_err(|e| Failed::at(latest, Some(new), format!("read-back: {e}")))?;
        if back != new_value {
            return Err(Failed::at(
                latest,
                Some(new),
                format!(
                    "read-back of version {new} differs from what was written; labels not \
                     moved, version {new} needs attention"
                ),
            ));
        }
        drop(back);
        drop(new_value);
        self.finish(name, &history, latest, new).await?;
        Ok(Done {
            outcome: Outcome::Rotated,
            old: Some(latest),
            new: Some(new),
            reason: None,
        })
    }

    /// Whether lockbox sets (and so may remove) this label.
    fn owns(&self, label: &str) -> bool {
        label == self.rotation.labels.current
            || label == self.rotation.labels.previous
            || is_rotation_label(label)
    }

    /// The tier to keep: Standard can become Advanced, never the reverse.
    fn tier_for<'m>(&self, meta: &'m ParamMeta) -> Option<&'m str> {
        meta.tier
            .as_deref()
            .filter(|t| *t == "Standard" || *t == "Advanced")
    }

    /// Writes the new version. A throttled or `TooManyUpdates` write surely did not happen
    /// and is retried; after a server error or lost response the history decides: the
    /// version we expected means our write landed, an unchanged history means retry.
    async fn write(
        &self,
        meta: &ParamMeta,
        value: &SecretValue,
        tier: &str,
        old: i64,
    ) -> Result<i64, Failed> {
        let name = meta.name.as_str();
        let policies =
            (!meta.policies.is_empty()).then(|| format!("[{}]", meta.policies.join(",")));
        let req = PutRequest {
            name,
            value,
            key_arn: &self.key.arn,
            tier,
            description: meta.description.as_deref(),
            allowed_pattern: meta.allowed_pattern.as_deref(),
            data_type: meta.data_type.as_deref(),
            policies,
        };
        let mut attempt = 1;
        loop {
            match self.paced(|| self.store.put(&req)).await {
                Ok(version) => return Ok(version),
                Err(e) if e.class == Class::Transient && attempt < self.backoff.max_attempts => {
                    let history = self
                        .store
                        .history(name)
                        .await
                        .map_err(|h| Failed::at(old, None, format!("{e}; then {h}")))?;
                    match history.last() {
                        // The write landed; read-back will prove the value is ours.
                        Some(v) if v.version == old + 1 => return Ok(v.version),
                        Some(v) if v.version == old => {
                            tokio::time::sleep(self.backoff.delay(attempt - 1)).await;
                            attempt += 1;
                        }
                        _ => {
                            return Err(Failed::at(
                                old,
                                None,
                                format!("{e}; the history changed meanwhile, not retrying"),
                            ))
                        }
                    }
                }
                Err(e) => return Err(Failed::at(old, None, e.to_string())),
            }
        }
    }

    /// Records the rotation id on the version it wrote.
    async fn mark(&self, name: &str, old: i64, new: i64) -> Result<(), Failed> {
        let label = std::slice::from_ref(&self.rotation.id.label);
        let invalid = self
            .paced(|| self.store.label(name, new, label))
            .await
            .map_err(|e| Failed::at(old, Some(new), format!("wrote version {new}, then {e}")))?;
        if !invalid.is_empty() {
            return Err(Failed::at(
                old,
                Some(new),
                format!("wrote version {new}, then SSM refused label(s) {invalid:?}"),
            ));
        }
        Ok(())
    }

    /// Completes a rotation this id already wrote (`adopted`: found by its intent tag,
    /// not yet labelled). Verifies the version, then finishes the labels.
    async fn complete(
        &self,
        meta: &ParamMeta,
        history: &[VersionInfo],
        old: i64,
        new: i64,
        adopted: bool,
    ) -> Result<Done, Failed> {
        let name = meta.name.as_str();
        let owned_elsewhere = history
            .iter()
            .any(|v| v.version != new && v.labels.iter().any(|l| is_rotation_label(l)));
        let missing = adopted
            || !labels_of(history, old).contains(&self.rotation.labels.previous)
            || !labels_of(history, new).contains(&self.rotation.labels.current)
            || owned_elsewhere;
        if !missing {
            return Ok(Done {
                outcome: Outcome::Unchanged,
                old: Some(old),
                new: Some(new),
                reason: Some(format!(
                    "already rotated by this rotation id (version {new})"
                )),
            });
        }
        if self.rotation.dry_run {
            return Ok(Done {
                outcome: Outcome::DryRun,
                old: Some(old),
                new: Some(new),
                reason: Some(format!(
                    "would complete the labels of version {new}, written earlier by this \
                     rotation id"
                )),
            });
        }
        // The value was written by an earlier attempt; prove it decrypts (and, when
        // re-encrypting, that it is still the old value).
        let value = self
            .store
            .value(name, new)
            .await
            .map_err(|e| Failed::at(old, Some(new), format!("verify: {e}")))?;
        if value.is_empty() {
            return Err(Failed::at(
                old,
                Some(new),
                format!("version {new} is empty"),
            ));
        }
        if self.rotation.mode == Mode::Reencrypt {
            let before = self
                .store
                .value(name, old)
                .await
                .map_err(|e| Failed::at(old, Some(new), format!("verify: {e}")))?;
            if before != value {
                return Err(Failed::at(
                    old,
                    Some(new),
                    format!("version {new} does not hold version {old}'s value; not labelling"),
                ));
            }
        }
        drop(value);
        if adopted {
            self.mark(name, old, new).await?;
        }
        self.finish(name, history, old, new).await?;
        Ok(Done {
            outcome: Outcome::Rotated,
            old: Some(old),
            new: Some(new),
            reason: Some(format!(
                "completed an interrupted rotation of this id (version {new} was already written)"
            )),
        })
    }

    /// Moves `previous` to the old version and `current` to the new one, then removes
    /// older rotation-id labels. `history` is from before the write; labels already in
    /// place are not set again.
    async fn finish(
        &self,
        name: &str,
        history: &[VersionInfo],
        old: i64,
        new: i64,
    ) -> Result<(), Failed> {
        let labels = &self.rotation.labels;
        // previous first: between the two calls both labels name a value in use.
        for (version, label) in [(old, &labels.previous), (new, &labels.current)] {
            if labels_of(history, version).contains(label) {
                continue;
            }
            let one = std::slice::from_ref(label);
            let invalid = self
                .paced(|| self.store.label(name, version, one))
                .await
                .map_err(|e| Failed::at(old, Some(new), e.to_string()))?;
            if !invalid.is_empty() {
                return Err(Failed::at(
                    old,
                    Some(new),
                    format!("SSM refused label(s) {invalid:?} on version {version}"),
                ));
            }
        }
        for v in history.iter().filter(|v| v.version != new) {
            let stale: Vec<String> = v
                .labels
                .iter()
                .filter(|l| is_rotation_label(l))
                .cloned()
                .collect();
            if stale.is_empty() {
                continue;
            }
            self.paced(|| self.store.unlabel(name, v.version, &stale))
                .await
                .map_err(|e| Failed::at(old, Some(new), e.to_string()))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::input::parse;
    use std::cell::RefCell;
    use std::collections::{HashMap, VecDeque};

    #[derive(Clone)]
    struct Version {
        version: i64,
        value: SecretValue,
        labels: Vec<String>,
        key_id: String,
    }

    /// An in-memory Parameter Store with scripted faults.
    #[derive(Default)]
    struct Fake {
        params: RefCell<HashMap<String, (ParamMeta, Vec<Version>)>>,
        tags: RefCell<HashMap<(String, String), String>>,
        /// Errors to return from the next calls of an operation.
        faults: RefCell<HashMap<&'static str, VecDeque<StoreError>>>,
        /// Apply the next put but report it as failed (a lost response).
        lose_next_put_response: RefCell<bool>,
        /// Corrupt what the next put stores (a read-back mismatch).
        corrupt_next_put: RefCell<bool>,
        calls: RefCell<Vec<&'static str>>,
    }

    fn err(op: &'static str, class: Class, code: &str) -> StoreError {
        StoreError {
            op,
            name: "fake".into(),
            class,
            code: Some(code.into()),
            message: None,
        }
    }

    impl Fake {
        fn with_param(self, name: &str, versions: usize, key: &str) -> Self {
            let meta = ParamMeta {
                name: name.into(),
                param_type: "SecureString".into(),
                key_id: Some(key.into()),
                version: versions as i64,
                tier: Some("Standard".into()),
                description: Some("db".into()),
                allowed_pattern: None,
                data_type: Some("text".into()),
                policies: vec![],
            };
            let vs = (1..=versions as i64)
                .map(|v| Version {
                    version: v,
                    value: SecretValue::new(format!("old-{v}")),
                    labels: vec![],
                    key_id: key.into(),
                })
                .collect();
            self.params.borrow_mut().insert(name.into(), (meta, vs));
            self
        }

        fn fail(&self, op: &'static str, e: StoreError) {
            self.faults.borrow_mut().entry(op).or_default().push_back(e);
        }

        fn fault(&self, op: &'static str) -> Result<(), StoreError> {
            self.calls.borrow_mut().push(op);
            match self
                .faults
                .borrow_mut()
                .get_mut(op)
                .and_then(VecDeque::pop_front)
            {
                Some(e) => Err(e),
                None => Ok(()),
            }
        }

        fn count(&self, op: &str) -> usize {
            self.calls.borrow().iter().filter(|c| **c == op).count()
        }

        fn versions(&self, name: &str) -> Vec<Version> {
            self.params.borrow()[name].1.clone()
        }

        fn label_of(&self, name: &str, label: &str) -> Option<i64> {
            self.versions(name)
                .into_iter()
                .find(|v| v.labels.iter().any(|l| l == label))
                .map(|v| v.version)
        }
    }

    impl ParameterStore for Fake {
        async fn describe(&self, selector: Selector<'_>) -> Result<Vec<ParamMeta>, StoreError> {
            self.fault("DescribeParameters")?;
            let params = self.params.borrow();
            Ok(params
                .values()
                .filter(|(m, _)| match selector {
                    Selector::Names(n) => n.contains(&m.name),
                    Selector::Path(p) => m.name.starts_with(p),
                    Selector::Tag(_) => false,
                })
                .map(|(m, vs)| ParamMeta {
                    version: vs.last().unwrap().version,
                    ..m.clone()
                })
                .collect())
        }

        async fn value(&self, name: &str, version: i64) -> Result<SecretValue, StoreError> {
            self.fault("GetParameter")?;
            self.versions(name)
                .into_iter()
                .find(|v| v.version == version)
                .map(|v| v.value)
                .ok_or_else(|| err("GetParameter", Class::Permanent, "ParameterVersionNotFound"))
        }

        async fn history(&self, name: &str) -> Result<Vec<VersionInfo>, StoreError> {
            self.fault("GetParameterHistory")?;
            Ok(self
                .versions(name)
                .into_iter()
                .map(|v| VersionInfo {
                    version: v.version,
                    labels: v.labels,
                    key_id: Some(v.key_id),
                })
                .collect())
        }

        async fn put(&self, req: &PutRequest<'_>) -> Result<i64, StoreError> {
            self.fault("PutParameter")?;
            let mut params = self.params.borrow_mut();
            let (_, vs) = params.get_mut(req.name).unwrap();
            if vs.len() >= MAX_VERSIONS {
                if !vs[0].labels.is_empty() {
                    return Err(err(
                        "PutParameter",
                        Class::Permanent,
                        "ParameterMaxVersionLimitExceeded",
                    ));
                }
                vs.remove(0);
            }
            let version = vs.last().unwrap().version + 1;
            let value = if self.corrupt_next_put.replace(false) {
                SecretValue::new("corrupted".into())
            } else {
                req.value.clone()
            };
            vs.push(Version {
                version,
                value,
                labels: vec![],
                key_id: req.key_arn.into(),
            });
            if self.lose_next_put_response.replace(false) {
                return Err(err("PutParameter", Class::Transient, "InternalServerError"));
            }
            Ok(version)
        }

        async fn label(
            &self,
            name: &str,
            version: i64,
            labels: &[String],
        ) -> Result<Vec<String>, StoreError> {
            self.fault("LabelParameterVersion")?;
            let mut params = self.params.borrow_mut();
            let (_, vs) = params.get_mut(name).unwrap();
            for v in vs.iter_mut() {
                v.labels.retain(|l| !labels.contains(l));
                if v.version == version {
                    v.labels.extend(labels.iter().cloned());
                }
            }
            Ok(vec![])
        }

        async fn unlabel(
            &self,
            name: &str,
            version: i64,
            labels: &[String],
        ) -> Result<(), StoreError> {
            self.fault("UnlabelParameterVersion")?;
            let mut params = self.params.borrow_mut();
            let (_, vs) = params.get_mut(name).unwrap();
            for v in vs.iter_mut().filter(|v| v.version == version) {
                v.labels.retain(|l| !labels.contains(l));
            }
            Ok(())
        }

        async fn tag(&self, name: &str, key: &str) -> Result<Option<String>, StoreError> {
            self.fault("ListTagsForResource")?;
            Ok(self
                .tags
                .borrow()
                .get(&(name.to_owned(), key.to_owned()))
                .cloned())
        }

        async fn set_tag(&self, name: &str, key: &str, value: &str) -> Result<(), StoreError> {
            self.fault("AddTagsToResource")?;
            self.tags
                .borrow_mut()
                .insert((name.into(), key.into()), value.into());
            Ok(())
        }
    }

    const KEY: &str = "arn:aws:kms:us-east-1:111122223333:key/k-1";

    fn key() -> ResolvedKey {
        ResolvedKey {
            requested: "alias/app".into(),
            arn: KEY.into(),
            key_id: "k-1".into(),
        }
    }

    fn rotation(mode: &str, extra: &str) -> Rotation {
        let json = format!(
            r#"{{"targets":{{"names":["/p"]}},"keyId":"alias/app","mode":"{mode}",
                "rotationId":"2026-11-22T03:00:00Z",
                "pace":{{"writesPerSecond":100,"baseDelayMs":1}}{extra}}}"#
        );
        parse(&json).unwrap().validate(None).unwrap()
    }

    fn block_on<F: Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap()
            .block_on(f)
    }

    fn run_on(fake: &Fake, r: &Rotation) -> Report {
        block_on(run(fake, r, &key(), &RandomSource::Os)).unwrap()
    }

    #[test]
    fn a_rotation_writes_verifies_and_moves_labels() {
        let fake = Fake::default().with_param("/p", 3, "alias/aws/ssm");
        let report = run_on(&fake, &rotation("regenerate", ""));
        let r = &report.results[0];
        assert_eq!(r.outcome, Outcome::Rotated, "{:?}", r.reason);
        assert_eq!((r.old_version, r.new_version), (Some(3), Some(4)));
        let vs = fake.versions("/p");
        assert_eq!(vs[3].key_id, KEY);
        assert_eq!(vs[3].value.len(), 32);
        assert_eq!(fake.label_of("/p", "current"), Some(4));
        assert_eq!(fake.label_of("/p", "previous"), Some(3));
        assert_eq!(fake.label_of("/p", "r-20261122T0300Z"), Some(4));
        assert_eq!(
            fake.tags.borrow()[&("/p".to_owned(), INTENT_TAG.to_owned())],
            "r-20261122T0300Z:3"
        );
    }

    #[test]
    fn a_second_run_with_the_same_id_writes_nothing() {
        let fake = Fake::default().with_param("/p", 1, KEY);
        let r = rotation("regenerate", "");
        run_on(&fake, &r);
        let puts = fake.count("PutParameter");
        let report = run_on(&fake, &r);
        assert_eq!(report.results[0].outcome, Outcome::Unchanged);
        assert_eq!(fake.count("PutParameter"), puts);
    }

    #[test]
    fn a_lost_put_response_is_not_written_twice() {
        let fake = Fake::default().with_param("/p", 2, "alias/aws/ssm");
        *fake.lose_next_put_response.borrow_mut() = true;
        let report = run_on(&fake, &rotation("reencrypt", ""));
        let r = &report.results[0];
        assert_eq!(r.outcome, Outcome::Rotated, "{:?}", r.reason);
        assert_eq!(fake.versions("/p").len(), 3, "exactly one new version");
        assert_eq!(fake.count("PutParameter"), 1);
    }

    #[test]
    fn a_read_back_mismatch_fails_and_leaves_labels_alone() {
        let fake = Fake::default().with_param("/p", 2, "alias/aws/ssm");
        *fake.corrupt_next_put.borrow_mut() = true;
        let report = run_on(&fake, &rotation("reencrypt", ""));
        let r = &report.results[0];
        assert_eq!(r.outcome, Outcome::Failed);
        assert!(
            r.reason.as_ref().unwrap().contains("read-back"),
            "{:?}",
            r.reason
        );
        assert!(!r.reason.as_ref().unwrap().contains("corrupted"));
        assert_eq!(fake.label_of("/p", "current"), None);
        assert!(report.has_failures());
    }

    #[test]
    fn a_run_interrupted_before_its_first_label_is_adopted_by_the_rerun() {
        let fake = Fake::default().with_param("/p", 5, "alias/aws/ssm");
        let r = rotation("regenerate", "");
        fake.fail(
            "LabelParameterVersion",
            err(
                "LabelParameterVersion",
                Class::Transient,
                "InternalServerError",
            ),
        );
        let first = run_on(&fake, &r);
        assert_eq!(first.results[0].outcome, Outcome::Failed);
        assert_eq!(fake.versions("/p").len(), 6);
        let second = run_on(&fake, &r);
        let res = &second.results[0];
        assert_eq!(res.outcome, Outcome::Rotated, "{:?}", res.reason);
        assert!(res.reason.as_ref().unwrap().contains("interrupted"));
        assert_eq!(fake.count("PutParameter"), 1, "the rerun did not write");
        assert_eq!(fake.label_of("/p", "current"), Some(6));
        assert_eq!(fake.label_of("/p", "previous"), Some(5));
        assert_eq!(fake.label_of("/p", "r-20261122T0300Z"), Some(6));
    }

    #[test]
    fn another_writer_after_the_intent_stops_the_rerun() {
        let fake = Fake::default().with_param("/p", 5, KEY);
        fake.tags.borrow_mut().insert(
            ("/p".into(), INTENT_TAG.into()),
            "r-20261122T0300Z:3".into(),
        );
        let report = run_on(&fake, &rotation("regenerate", ""));
        let r = &report.results[0];
        assert_eq!(r.outcome, Outcome::Failed);
        assert!(
            r.reason.as_ref().unwrap().contains("another writer"),
            "{:?}",
            r.reason
        );
        assert_eq!(fake.count("PutParameter"), 0);
    }

    #[test]
    fn too_many_updates_is_retried() {
        let fake = Fake::default().with_param("/p", 1, KEY);
        for _ in 0..3 {
            fake.fail(
                "PutParameter",
                err("PutParameter", Class::TooManyUpdates, "TooManyUpdates"),
            );
        }
        let report = run_on(&fake, &rotation("regenerate", ""));
        assert_eq!(report.results[0].outcome, Outcome::Rotated);
        assert_eq!(fake.count("PutParameter"), 4);
        assert_eq!(fake.versions("/p").len(), 2);
    }

    #[test]
    fn at_100_versions_lockbox_labels_on_the_oldest_are_cleared_and_foreign_ones_refused() {
        let fake = Fake::default().with_param("/p", 100, KEY);
        fake.params.borrow_mut().get_mut("/p").unwrap().1[0].labels =
            vec!["r-20250101T0000Z".into()];
        let report = run_on(&fake, &rotation("regenerate", ""));
        assert_eq!(
            report.results[0].outcome,
            Outcome::Rotated,
            "{:?}",
            report.results[0].reason
        );
        assert_eq!(fake.versions("/p").len(), 100);
        assert_eq!(fake.versions("/p")[0].version, 2);

        let fake = Fake::default().with_param("/p", 100, KEY);
        fake.params.borrow_mut().get_mut("/p").unwrap().1[0].labels = vec!["golden".into()];
        let report = run_on(&fake, &rotation("regenerate", ""));
        let r = &report.results[0];
        assert_eq!(r.outcome, Outcome::Failed);
        assert!(
            r.reason.as_ref().unwrap().contains("\"golden\""),
            "{:?}",
            r.reason
        );
        assert_eq!(fake.count("PutParameter"), 0);
        assert_eq!(fake.count("UnlabelParameterVersion"), 0);
    }

    #[test]
    fn older_rotation_labels_are_removed_and_foreign_labels_kept() {
        let fake = Fake::default().with_param("/p", 3, KEY);
        {
            let mut p = fake.params.borrow_mut();
            let vs = &mut p.get_mut("/p").unwrap().1;
            vs[1].labels = vec!["r-20251122T0300Z".into(), "release".into()];
            vs[2].labels = vec!["r-20251222T0300Z".into(), "current".into()];
        }
        run_on(&fake, &rotation("regenerate", ""));
        let vs = fake.versions("/p");
        assert_eq!(vs[1].labels, vec!["release".to_owned()]);
        assert_eq!(vs[2].labels, vec!["previous".to_owned()]);
        assert_eq!(
            vs[3].labels,
            vec!["r-20261122T0300Z".to_owned(), "current".to_owned()]
        );
    }

    #[test]
    fn dry_run_calls_no_mutating_operation() {
        let fake = Fake::default().with_param("/p", 3, "alias/aws/ssm");
        let report = run_on(&fake, &rotation("regenerate", r#","dryRun":true"#));
        assert_eq!(report.results[0].outcome, Outcome::DryRun);
        for op in [
            "PutParameter",
            "LabelParameterVersion",
            "UnlabelParameterVersion",
            "AddTagsToResource",
            "GetParameter",
        ] {
            assert_eq!(fake.count(op), 0, "{op}");
        }
    }

    #[test]
    fn values_larger_than_standard_go_to_advanced() {
        // Checked through the request the fake receives.
        let fake = Fake::default().with_param("/p", 1, KEY);
        let report = run_on(
            &fake,
            &rotation("regenerate", r#","policy":{"length":5000}"#),
        );
        assert_eq!(report.results[0].outcome, Outcome::Rotated);
        assert_eq!(fake.versions("/p")[1].value.len(), 5000);
    }

    #[test]
    fn selection_errors_name_what_is_missing() {
        let fake = Fake::default().with_param("/p", 1, KEY);
        let json = r#"{"targets":{"names":["/p","/nope"]},"keyId":"k","mode":"reencrypt",
            "rotationId":"2026-11-22T03:00:00Z"}"#;
        let r = parse(json).unwrap().validate(None).unwrap();
        let err = block_on(run(&fake, &r, &key(), &RandomSource::Os)).unwrap_err();
        assert!(err.to_string().contains("/nope"), "{err}");

        let json = r#"{"targets":{"names":["/p"]},"keyId":"k","mode":"regenerate",
            "overrides":{"/q":{"policy":{}}},"rotationId":"2026-11-22T03:00:00Z"}"#;
        let r = parse(json).unwrap().validate(None).unwrap();
        let err = block_on(run(&fake, &r, &key(), &RandomSource::Os)).unwrap_err();
        assert!(
            matches!(err, SelectError::StrayOverride(ref s) if s == "/q"),
            "{err}"
        );
    }

    #[test]
    fn intent_round_trips() {
        let i = Intent {
            label: "r-20261122T0300Z".into(),
            from: 42,
        };
        assert_eq!(Intent::decode(&i.encode()), Some(i));
        assert_eq!(Intent::decode("garbage"), None);
    }
}
