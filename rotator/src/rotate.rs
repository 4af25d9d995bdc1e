//! Rotating SecureString parameters: selection, then per parameter lease, write, verify,
//! label.
//!
//! For each selected parameter, [`Rotate::parameter`]:
//! 1. skips anything that is not a SecureString (SSM cannot change the type in place);
//! 2. reads its history once (versions, labels, keys, dates): everything below is decided
//!    from it;
//! 3. if this rotation id's label ([`mark`]) is there, resumes from where that attempt
//!    stopped, and never promotes a version it cannot verify;
//! 4. if another rotation's lease is live, leaves the parameter alone (`conflict`);
//! 5. otherwise writes: one `LabelParameterVersion` call puts the lease on the latest
//!    version N and moves `previous` there; `PutParameter` must then answer exactly N+1
//!    (anything else means another writer got in: `conflict`, nothing labelled); the new
//!    version is read back and compared; one more `LabelParameterVersion` call moves
//!    `current` (or `pending`, staged) and the lease, now the rotation's mark, onto N+1.
//!
//! That is five calls and three writes per parameter for `regenerate` (`reencrypt` reads
//! the old value too). Anything that stops a rotation after the first label call puts
//! `previous` back, and at the 100-version limit the labels lockbox took off the oldest
//! version go back on it unless the write succeeded (which drops that version).
//!
//! Staged mode ([`crate::input::Staged`]) writes the new value as `pending` and leaves
//! `current` alone; a later run, once the pending version is old enough, promotes it.

use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::time::{Duration, SystemTime};

use time::OffsetDateTime;

use crate::generate::{generate, RandomSource};
use crate::input::{Mode, Rotation};
use crate::keycheck::ResolvedKey;
use crate::mark::{self, RunLabel};
use crate::pace::{self, Backoff, Class, Pacer};
use crate::report::{Outcome, ParamResult, Report};
use crate::store::{
    ParamMeta, ParameterStore, PutRequest, Selection, Selector, StoreError, VersionInfo,
};
use crate::value::SecretValue;

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
    let required_tag = t.require_tag.as_deref();
    let of = |selector| Selection {
        selector,
        required_tag,
    };
    let mut found: BTreeMap<String, ParamMeta> = BTreeMap::new();
    if !t.names.is_empty() {
        for meta in store.describe(of(Selector::Names(&t.names))).await? {
            found.insert(meta.name.clone(), meta);
        }
        let missing: Vec<&str> = t
            .names
            .iter()
            .filter(|n| !found.contains_key(n.as_str()))
            .map(String::as_str)
            .collect();
        if !missing.is_empty() {
            let mut names = missing.join(", ");
            if let Some(tag) = required_tag {
                names.push_str(&format!(" (or not tagged {tag})"));
            }
            return Err(SelectError::NotFound(names));
        }
    }
    for path in &t.paths {
        for meta in store.describe(of(Selector::Path(path))).await? {
            found.insert(meta.name.clone(), meta);
        }
    }
    if let Some(tag) = &t.tag {
        for meta in store.describe(of(Selector::Tag(tag))).await? {
            found.insert(meta.name.clone(), meta);
        }
    }
    if found.is_empty() {
        return Err(SelectError::Empty(format!(
            "paths {:?}, tag {:?}, requireTag {:?}",
            t.paths, t.tag, t.require_tag
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

/// How long the rotation may keep going: the Lambda deadline less a reserve for the
/// parameter in progress and the hand-over to the next invocation.
#[derive(Debug, Clone, Copy, Default)]
pub struct Budget {
    /// When the invocation is killed (`None`: from the shell, no limit).
    pub deadline: Option<SystemTime>,
    /// Time kept back before the deadline: no parameter is started later than this.
    pub reserve: Duration,
}

impl Budget {
    /// Whether another parameter may be started now.
    fn allows_another(&self) -> bool {
        self.deadline
            .is_none_or(|deadline| SystemTime::now() + self.reserve < deadline)
    }
}

/// Names one `DescribeParameters` call describes when a continuation describes the names
/// it was handed (a filter takes at most 50 values).
const DESCRIBE_CHUNK: usize = 50;

/// Runs a validated rotation whose key passed the gate. Selection errors fail the run
/// before any write; per-parameter failures are reported and the others go on. When the
/// budget runs out, the parameters not yet started are reported `deferred` and
/// [`Report::continue_after`] names the last one dealt with.
///
/// A continuation that carries the names left to do ([`Rotation::continue_with`]) does not
/// select again: it describes those names [`DESCRIBE_CHUNK`] at a time, as it comes to
/// them, so no invocation lists more than it rotates.
pub(crate) async fn run<S: ParameterStore>(
    store: &S,
    rotation: &Rotation,
    key: &ResolvedKey,
    random: &RandomSource,
    lease: Duration,
    budget: Budget,
) -> Result<Report, SelectError> {
    let after = rotation.continue_after.as_deref().unwrap_or_default();
    let (mut described, mut carried): (VecDeque<ParamMeta>, VecDeque<String>) =
        match &rotation.continue_with {
            Some(names) => (
                VecDeque::new(),
                names
                    .iter()
                    .filter(|name| name.as_str() > after)
                    .cloned()
                    .collect(),
            ),
            None => {
                let mut selected = select(store, rotation).await?;
                // An earlier invocation of this rotation id dealt with everything up to
                // `after` (selection is in name order).
                selected.retain(|meta| meta.name.as_str() > after);
                (selected.into(), VecDeque::new())
            }
        };
    let rotate = Rotate {
        store,
        rotation,
        key,
        random,
        lease,
        pacer: rotation.pace.pacer(),
        backoff: rotation.pace.backoff(),
    };
    let mut results = Vec::with_capacity(described.len() + carried.len());
    let mut last_done: Option<String> = None;
    let mut stopped = false;
    loop {
        if described.is_empty() && !carried.is_empty() {
            let chunk: Vec<String> = carried.drain(..DESCRIBE_CHUNK.min(carried.len())).collect();
            let (found, gone) = rotate.describe_carried(&chunk).await;
            // Not `last_done`: a gone name may sort after names of this chunk that are
            // still to come.
            for result in gone {
                result.log(&rotation.id.id);
                results.push(result);
            }
            described.extend(found);
            continue;
        }
        let Some(meta) = described.pop_front() else {
            break;
        };
        if !budget.allows_another() {
            stopped = true;
            let rest = std::iter::once(&meta).chain(described.iter());
            for result in rest.map(|m| rotate.deferred(&m.name, Some(m.version))) {
                result.log(&rotation.id.id);
                results.push(result);
            }
            break;
        }
        let result = rotate.parameter(&meta).await;
        result.log(&rotation.id.id);
        results.push(result);
        last_done = Some(meta.name);
    }
    for name in &carried {
        let result = rotate.deferred(name, None);
        result.log(&rotation.id.id);
        results.push(result);
    }
    // None when this invocation dealt with nothing at all: handing over again would only
    // repeat that.
    let continue_after = if stopped { last_done } else { None };
    Ok(Report {
        rotation_id: rotation.id.id.clone(),
        schedule: rotation.id.schedule.clone(),
        results,
        continue_after,
    })
}

/// A parameter's rotation ended.
struct Done {
    outcome: Outcome,
    old: Option<i64>,
    new: Option<i64>,
    reason: Option<String>,
}

impl Done {
    fn new(outcome: Outcome, old: i64, new: Option<i64>, reason: Option<String>) -> Self {
        Self {
            outcome,
            old: Some(old),
            new,
            reason,
        }
    }
}

/// A parameter's rotation stopped: `failed`, or `conflict` when another writer or
/// another rotation is acting on the parameter.
struct Stop {
    outcome: Outcome,
    old: Option<i64>,
    new: Option<i64>,
    reason: String,
}

impl Stop {
    fn failed(old: i64, new: Option<i64>, reason: impl Into<String>) -> Self {
        Self {
            outcome: Outcome::Failed,
            old: Some(old),
            new,
            reason: reason.into(),
        }
    }

    fn conflict(old: i64, new: Option<i64>, reason: impl Into<String>) -> Self {
        Self {
            outcome: Outcome::Conflict,
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
    lease: Duration,
    pacer: Pacer,
    backoff: Backoff,
}

/// A rotation label found in the history.
struct Found {
    version: i64,
    text: String,
    label: RunLabel,
}

fn run_labels(history: &[VersionInfo]) -> Vec<Found> {
    history
        .iter()
        .flat_map(|v| {
            v.labels.iter().filter_map(move |l| {
                RunLabel::decode(l).map(|label| Found {
                    version: v.version,
                    text: l.clone(),
                    label,
                })
            })
        })
        .collect()
}

fn holder_of(history: &[VersionInfo], label: &str) -> Option<i64> {
    history
        .iter()
        .find(|v| v.labels.iter().any(|l| l == label))
        .map(|v| v.version)
}

fn version_info(history: &[VersionInfo], version: i64) -> Option<&VersionInfo> {
    history.iter().find(|v| v.version == version)
}

fn versions_between(first: i64, last: i64) -> String {
    if first == last {
        format!("version {first}")
    } else {
        format!("versions {first}-{last}")
    }
}

/// What the write step starts from.
struct Plan {
    /// The latest version: the one the new version must directly follow.
    latest: i64,
    /// This rotation's label, when an earlier attempt already put it on `latest`.
    lease: Option<String>,
    /// Expired leases of other rotations, removed before writing.
    stale: Vec<Found>,
}

impl<S: ParameterStore> Rotate<'_, S> {
    /// Rotates one parameter; never returns an error, failures become a result.
    async fn parameter(&self, meta: &ParamMeta) -> ParamResult {
        let (outcome, old, new, reason) = match self.try_parameter(meta).await {
            Ok(d) => (d.outcome, d.old, d.new, d.reason),
            Err(s) => (s.outcome, s.old, s.new, Some(s.reason)),
        };
        self.result(&meta.name, outcome, old, new, reason)
    }

    /// A parameter this invocation had no time for (`version`: unknown when it was
    /// handed over by name and not described yet).
    fn deferred(&self, name: &str, version: Option<i64>) -> ParamResult {
        self.result(
            name,
            Outcome::Deferred,
            version,
            None,
            Some("not started before the invocation's deadline; the next invocation of this rotation id continues".into()),
        )
    }

    /// Describes names a continuation was handed: their metadata, in name order, and a
    /// result for each that cannot be rotated now (`skipped`: deleted, or no longer
    /// carrying the required tag, since the rotation selected it; `failed`: the call
    /// failed, so the run fails and its retry comes back to them).
    async fn describe_carried(&self, names: &[String]) -> (Vec<ParamMeta>, Vec<ParamResult>) {
        let selection = Selection {
            selector: Selector::Names(names),
            required_tag: self.rotation.targets.require_tag.as_deref(),
        };
        let mut found: BTreeMap<String, ParamMeta> = match self.store.describe(selection).await {
            Ok(metas) => metas.into_iter().map(|m| (m.name.clone(), m)).collect(),
            Err(err) => {
                let failed = names
                    .iter()
                    .map(|name| {
                        let reason = format!("describing it failed: {err}");
                        self.result(name, Outcome::Failed, None, None, Some(reason))
                    })
                    .collect();
                return (Vec::new(), failed);
            }
        };
        let mut metas = Vec::with_capacity(found.len());
        let mut gone = Vec::new();
        for name in names {
            match found.remove(name) {
                Some(meta) => metas.push(meta),
                None => gone.push(
                    self.result(
                        name,
                        Outcome::Skipped,
                        None,
                        None,
                        Some(
                            "selected by this rotation, but gone (deleted, or no longer tagged as \
                         targets.requireTag asks) when its turn came"
                                .into(),
                        ),
                    ),
                ),
            }
        }
        (metas, gone)
    }

    fn result(
        &self,
        name: &str,
        outcome: Outcome,
        old: Option<i64>,
        new: Option<i64>,
        reason: Option<String>,
    ) -> ParamResult {
        ParamResult {
            name: name.to_owned(),
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

    /// Moves `labels` onto `version`, failing on any label SSM refused.
    async fn label(&self, name: &str, version: i64, labels: &[String]) -> Result<(), String> {
        let invalid = self
            .paced(|| self.store.label(name, version, labels))
            .await
            .map_err(|e| e.to_string())?;
        if invalid.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "SSM refused label(s) {invalid:?} on version {version}"
            ))
        }
    }

    /// The label that moves onto the new version: `current`, or `pending` when staged.
    fn new_version_label(&self) -> &String {
        if self.rotation.staged.is_some() {
            &self.rotation.labels.pending
        } else {
            &self.rotation.labels.current
        }
    }

    async fn try_parameter(&self, meta: &ParamMeta) -> Result<Done, Stop> {
        let name = meta.name.as_str();
        if meta.param_type != "SecureString" {
            return Ok(Done::new(
                Outcome::Skipped,
                meta.version,
                None,
                Some(format!(
                    "type is {}, not SecureString: SSM cannot change a parameter's type in \
                     place; recreate it as a SecureString to rotate it",
                    meta.param_type
                )),
            ));
        }
        let history = self
            .store
            .history(name)
            .await
            .map_err(|e| Stop::failed(meta.version, None, e.to_string()))?;
        let latest = history.last().map_or(meta.version, |v| v.version);
        let labels = run_labels(&history);

        // 3. An earlier attempt of this rotation id.
        if let Some(mine) = labels.iter().find(|f| f.label.id == self.rotation.id.label) {
            return self.resume(meta, &history, mine, latest).await;
        }

        // 4. Another rotation's lease.
        let now = OffsetDateTime::now_utc();
        let mut stale = Vec::new();
        for found in labels {
            if !found.label.is_lease_at(found.version) {
                continue; // the mark of a finished rotation
            }
            if found.label.until > now {
                return Err(Stop::conflict(
                    latest,
                    None,
                    format!(
                        "rotation {} holds a lease on version {} until {} (label {}); not \
                         touching the parameter",
                        found.label.id,
                        found.version,
                        mark::stamp(found.label.until),
                        found.text
                    ),
                ));
            }
            stale.push(found);
        }

        if let Some(staged) = self.rotation.staged {
            if let Some(done) = self
                .promote_if_due(meta, &history, latest, staged.promote_after)
                .await?
            {
                return Ok(done);
            }
        }

        if self.rotation.mode == Mode::Reencrypt && self.rotation.staged.is_none() {
            let recorded = version_info(&history, latest).and_then(|v| v.key_id.as_deref());
            if recorded.is_some_and(|k| self.key.matches(k)) {
                return Ok(Done::new(
                    Outcome::Unchanged,
                    latest,
                    None,
                    Some(format!("already encrypted under {}", self.key.arn)),
                ));
            }
        }
        self.write_new(
            meta,
            &history,
            Plan {
                latest,
                lease: None,
                stale,
            },
        )
        .await
    }

    /// Picks up an earlier attempt of this rotation id, found by its label.
    async fn resume(
        &self,
        meta: &ParamMeta,
        history: &[VersionInfo],
        mine: &Found,
        latest: i64,
    ) -> Result<Done, Stop> {
        let from = mine.label.from;
        let name = meta.name.as_str();
        if mine.version == from + 1 {
            let mut reason = format!(
                "already done by this rotation id (version {})",
                mine.version
            );
            if latest > mine.version {
                reason.push_str(&format!(
                    "; {} written since",
                    versions_between(mine.version + 1, latest)
                ));
            }
            return Ok(Done::new(
                Outcome::Unchanged,
                from,
                Some(mine.version),
                Some(reason),
            ));
        }
        if mine.version != from {
            return Err(Stop::failed(
                from,
                None,
                format!(
                    "this rotation id's label {} is on version {}, neither the version it \
                     started from nor the next; not touching the parameter",
                    mine.text, mine.version
                ),
            ));
        }
        if latest == from {
            // The earlier attempt never wrote: carry on under its lease.
            return self
                .write_new(
                    meta,
                    history,
                    Plan {
                        latest,
                        lease: Some(mine.text.clone()),
                        stale: Vec::new(),
                    },
                )
                .await;
        }
        let written = from + 1;
        if latest > written {
            return Err(Stop::conflict(
                from,
                None,
                format!(
                    "this rotation id leased version {from}, and {} were written since by \
                     another writer; not labelling anything",
                    versions_between(written, latest)
                ),
            ));
        }
        // latest == from + 1: the earlier attempt stopped between its write and its last
        // label. Promote that version only if it can be shown to hold what was written.
        if self.rotation.mode == Mode::Regenerate {
            return Err(Stop::failed(
                from,
                Some(written),
                format!(
                    "version {written} was written after this rotation id leased version \
                     {from}, but the attempt stopped before verifying it and a generated \
                     value cannot be verified again: not promoting it. Check version \
                     {written}; the next rotation id rotates from it"
                ),
            ));
        }
        if self.rotation.dry_run {
            return Ok(Done::new(
                Outcome::DryRun,
                from,
                Some(written),
                Some(format!(
                    "would verify version {written} and complete its labels"
                )),
            ));
        }
        let recorded = version_info(history, written).and_then(|v| v.key_id.as_deref());
        if !recorded.is_some_and(|k| self.key.matches(k)) {
            return Err(Stop::failed(
                from,
                Some(written),
                format!(
                    "version {written} follows this rotation's lease but is not under key {}; \
                     not promoting it",
                    self.key.arn
                ),
            ));
        }
        let verify = |e: StoreError| Stop::failed(from, Some(written), format!("verify: {e}"));
        let before = self.store.value(name, from).await.map_err(verify)?;
        let after = self.store.value(name, written).await.map_err(verify)?;
        if before != after {
            return Err(Stop::failed(
                from,
                Some(written),
                format!("version {written} does not hold version {from}'s value; not promoting it"),
            ));
        }
        let previous = &self.rotation.labels.previous;
        if self.rotation.staged.is_none() && holder_of(history, previous) != Some(from) {
            self.label(name, from, std::slice::from_ref(previous))
                .await
                .map_err(|e| Stop::failed(from, Some(written), e))?;
        }
        let labels = [self.new_version_label().clone(), mine.text.clone()];
        self.label(name, written, &labels).await.map_err(|e| {
            Stop::failed(
                from,
                Some(written),
                format!("wrote version {written}, then {e}"),
            )
        })?;
        Ok(Done::new(
            self.written_outcome(),
            from,
            Some(written),
            Some(format!(
                "completed an interrupted rotation of this id (version {written} was already \
                 written and is verified)"
            )),
        ))
    }

    fn written_outcome(&self) -> Outcome {
        if self.rotation.staged.is_some() {
            Outcome::Staged
        } else {
            Outcome::Rotated
        }
    }

    /// Staged mode: promotes the pending version once it is old enough. `None` when there
    /// is nothing pending (so a new value is staged).
    async fn promote_if_due(
        &self,
        meta: &ParamMeta,
        history: &[VersionInfo],
        latest: i64,
        promote_after: Duration,
    ) -> Result<Option<Done>, Stop> {
        let name = meta.name.as_str();
        let labels = &self.rotation.labels;
        let Some(pending) = holder_of(history, &labels.pending) else {
            return Ok(None);
        };
        let current = holder_of(history, &labels.current);
        if current == Some(pending) {
            return Ok(None); // promoted, the label left behind; stage the next value
        }
        if pending != latest {
            return Err(Stop::conflict(
                current.unwrap_or(pending),
                Some(pending),
                format!(
                    "version {pending} is pending but {} were written since; not promoting it",
                    versions_between(pending + 1, latest)
                ),
            ));
        }
        let written = version_info(history, pending).and_then(|v| v.modified);
        let due = written.map(|t| t + promote_after);
        let now = OffsetDateTime::now_utc();
        let old = current.unwrap_or(pending - 1);
        if due.is_none_or(|due| now < due) {
            return Ok(Some(Done::new(
                Outcome::Unchanged,
                old,
                Some(pending),
                Some(format!(
                    "version {pending} is pending until {}",
                    due.map_or_else(|| "(write time unknown)".to_owned(), mark::stamp)
                )),
            )));
        }
        if self.rotation.dry_run {
            return Ok(Some(Done::new(
                Outcome::DryRun,
                old,
                Some(pending),
                Some(format!("would promote pending version {pending}")),
            )));
        }
        let stop = |e: String| Stop::failed(old, Some(pending), format!("promoting: {e}"));
        // previous first: between the calls both labels name a value in use.
        if let Some(current) = current {
            self.label(name, current, std::slice::from_ref(&labels.previous))
                .await
                .map_err(stop)?;
        }
        self.label(name, pending, std::slice::from_ref(&labels.current))
            .await
            .map_err(stop)?;
        self.paced(|| {
            self.store
                .unlabel(name, pending, std::slice::from_ref(&labels.pending))
        })
        .await
        .map_err(|e| stop(e.to_string()))?;
        Ok(Some(Done::new(Outcome::Promoted, old, Some(pending), None)))
    }

    /// Whether lockbox sets (and so may remove) this label.
    fn owns(&self, label: &str) -> bool {
        let l = &self.rotation.labels;
        label == l.current
            || label == l.previous
            || label == l.pending
            || mark::is_rotation_label(label)
    }

    /// The tier to keep: Standard can become Advanced, never the reverse.
    fn tier_for<'m>(&self, meta: &'m ParamMeta) -> Option<&'m str> {
        meta.tier
            .as_deref()
            .filter(|t| *t == "Standard" || *t == "Advanced")
    }

    /// Leases the latest version, writes the new one, verifies it and labels it.
    async fn write_new(
        &self,
        meta: &ParamMeta,
        history: &[VersionInfo],
        plan: Plan,
    ) -> Result<Done, Stop> {
        let name = meta.name.as_str();
        let latest = plan.latest;
        let labels = &self.rotation.labels;

        // The oldest version is dropped by the write, and SSM refuses if it is labelled.
        let mut clear_oldest: Option<(i64, Vec<String>)> = None;
        if history.len() >= MAX_VERSIONS {
            if let Some(oldest) = history.first() {
                if let Some(foreign) = oldest.labels.iter().find(|l| !self.owns(l)) {
                    return Err(Stop::failed(
                        latest,
                        None,
                        format!(
                            "version {} (the oldest of {} kept) carries label {foreign:?}, \
                             which lockbox did not set; SSM refuses a new version while the \
                             oldest is labelled, and lockbox never removes a label it did not \
                             set: move or remove {foreign:?}",
                            oldest.version,
                            history.len()
                        ),
                    ));
                }
                // `previous` leaves it anyway with the first label call.
                let own: Vec<String> = oldest
                    .labels
                    .iter()
                    .filter(|l| self.rotation.staged.is_some() || **l != labels.previous)
                    .filter(|l| plan.lease.as_ref() != Some(*l))
                    .cloned()
                    .collect();
                if !own.is_empty() {
                    clear_oldest = Some((oldest.version, own));
                }
            }
        }

        if self.rotation.dry_run {
            let mut reason = format!(
                "would write version {} under {}, label it {:?} and version {latest} {:?}",
                latest + 1,
                self.key.arn,
                self.new_version_label(),
                if self.rotation.staged.is_some() {
                    "(unchanged)"
                } else {
                    labels.previous.as_str()
                }
            );
            if let Some((_, own)) = &clear_oldest {
                reason.push_str(&format!(
                    "; would first remove lockbox labels {own:?} from the oldest version"
                ));
            }
            return Ok(Done::new(Outcome::DryRun, latest, None, Some(reason)));
        }

        // The lease, and `previous` onto the version that is current until the write.
        let lease = plan.lease.clone().unwrap_or_else(|| {
            let until = OffsetDateTime::now_utc() + self.lease;
            RunLabel {
                id: self.rotation.id.label.clone(),
                from: latest,
                until,
            }
            .encode()
        });
        let previous_holder = holder_of(history, &labels.previous);
        let mut first = Vec::new();
        if plan.lease.is_none() {
            first.push(lease.clone());
        }
        let moves_previous = self.rotation.staged.is_none() && previous_holder != Some(latest);
        if moves_previous {
            first.push(labels.previous.clone());
        }
        if !first.is_empty() {
            self.label(name, latest, &first)
                .await
                .map_err(|e| Stop::failed(latest, None, e))?;
        }
        let undo = Undo {
            name,
            latest,
            previous: moves_previous.then_some(previous_holder),
        };

        for found in &plan.stale {
            // An expired lease of a run that died: lockbox's own label, removed so the
            // history shows only live state.
            let one = std::slice::from_ref(&found.text);
            if let Err(e) = self
                .paced(|| self.store.unlabel(name, found.version, one))
                .await
            {
                return Err(self
                    .undo(&undo, Stop::failed(latest, None, e.to_string()))
                    .await);
            }
        }
        if let Some((oldest, own)) = &clear_oldest {
            if let Err(e) = self.paced(|| self.store.unlabel(name, *oldest, own)).await {
                return Err(self
                    .undo(&undo, Stop::failed(latest, None, e.to_string()))
                    .await);
            }
        }

        let value = match self.new_value(meta, latest).await {
            Ok(v) => v,
            Err(e) => {
                return Err(self
                    .undo_all(&undo, &clear_oldest, Stop::failed(latest, None, e))
                    .await)
            }
        };
        let new = match self.write(meta, &value, latest).await {
            Ok(new) => new,
            Err(stop) => {
                // Unless something landed, the oldest version is still there: its labels
                // go back. Whatever happened, `previous` goes back.
                let landed = stop.new.is_some() || stop.outcome == Outcome::Conflict;
                return Err(if landed {
                    self.undo(&undo, stop).await
                } else {
                    self.undo_all(&undo, &clear_oldest, stop).await
                });
            }
        };
        if new != latest + 1 {
            let stop = Stop::conflict(
                latest,
                Some(new),
                format!(
                    "wrote version {new}, but it should have been {}: {} came from another \
                     writer meanwhile; version {new} is not labelled",
                    latest + 1,
                    versions_between(latest + 1, new - 1)
                ),
            );
            return Err(self.undo(&undo, stop).await);
        }
        let back = match self.store.value(name, new).await {
            Ok(v) => v,
            Err(e) => {
                let stop = Stop::failed(latest, Some(new), format!("read-back: {e}"));
                return Err(self.undo(&undo, stop).await);
            }
        };
        if back != value {
            let stop = Stop::failed(
                latest,
                Some(new),
                format!(
                    "read-back of version {new} differs from what was written; version {new} \
                     is not labelled and needs attention"
                ),
            );
            return Err(self.undo(&undo, stop).await);
        }
        drop(back);
        drop(value);
        let last = [self.new_version_label().clone(), lease];
        if let Err(e) = self.label(name, new, &last).await {
            let stop = Stop::failed(latest, Some(new), format!("wrote version {new}, then {e}"));
            return Err(self.undo(&undo, stop).await);
        }
        Ok(Done::new(self.written_outcome(), latest, Some(new), None))
    }

    /// The value to write: generated, or the latest one again (re-encrypt).
    async fn new_value(&self, meta: &ParamMeta, latest: i64) -> Result<SecretValue, String> {
        match self.rotation.mode {
            Mode::Reencrypt => self
                .store
                .value(&meta.name, latest)
                .await
                .map_err(|e| e.to_string()),
            Mode::Regenerate => {
                let policy = self
                    .rotation
                    .policy_for(&meta.name)
                    .ok_or_else(|| "no policy for regenerate".to_owned())?;
                generate(policy, self.random)
                    .await
                    .map_err(|e| e.to_string())
            }
        }
    }

    /// Puts `previous` back where it was before this rotation moved it.
    async fn undo(&self, undo: &Undo<'_>, mut stop: Stop) -> Stop {
        let Some(holder) = undo.previous else {
            return stop;
        };
        let previous = std::slice::from_ref(&self.rotation.labels.previous);
        let restored = match holder {
            Some(version) => self.label(undo.name, version, previous).await,
            None => self
                .paced(|| self.store.unlabel(undo.name, undo.latest, previous))
                .await
                .map_err(|e| e.to_string()),
        };
        match restored {
            Ok(()) => stop.reason.push_str("; labels put back as they were"),
            Err(e) => stop
                .reason
                .push_str(&format!("; putting {:?} back failed: {e}", previous[0])),
        }
        stop
    }

    /// [`Rotate::undo`], and the oldest version's labels back on it.
    async fn undo_all(
        &self,
        undo: &Undo<'_>,
        clear_oldest: &Option<(i64, Vec<String>)>,
        mut stop: Stop,
    ) -> Stop {
        if let Some((oldest, own)) = clear_oldest {
            if let Err(e) = self.label(undo.name, *oldest, own).await {
                stop.reason.push_str(&format!(
                    "; putting labels {own:?} back on version {oldest} failed: {e}"
                ));
            }
        }
        self.undo(undo, stop).await
    }

    /// Writes the new version. A throttled or `TooManyUpdates` write surely did not happen
    /// and is retried; after a server error or lost response the history decides: a new
    /// version holding exactly this value is ours, an unchanged history means retry, and
    /// anything else is another writer.
    async fn write(&self, meta: &ParamMeta, value: &SecretValue, old: i64) -> Result<i64, Stop> {
        let name = meta.name.as_str();
        let tier = if value.len() > STANDARD_MAX_BYTES {
            "Advanced"
        } else {
            self.tier_for(meta).unwrap_or("Standard")
        };
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
                        .map_err(|h| Stop::failed(old, None, format!("{e}; then {h}")))?;
                    match history.last().map(|v| v.version) {
                        Some(v) if v == old => {
                            tokio::time::sleep(self.backoff.delay(attempt - 1)).await;
                            attempt += 1;
                        }
                        Some(v) if v == old + 1 => {
                            let landed =
                                self.store.value(name, v).await.map_err(|h| {
                                    Stop::failed(old, None, format!("{e}; then {h}"))
                                })?;
                            if landed == *value {
                                return Ok(v);
                            }
                            return Err(Stop::conflict(
                                old,
                                None,
                                format!(
                                    "{e}; version {v} was then written by another writer, \
                                     not by this rotation; nothing labelled"
                                ),
                            ));
                        }
                        latest => {
                            return Err(Stop::conflict(
                                old,
                                None,
                                format!(
                                    "{e}; the parameter is now at version {} (another writer); \
                                     not retrying, nothing labelled",
                                    latest.unwrap_or(old)
                                ),
                            ))
                        }
                    }
                }
                Err(e) => return Err(Stop::failed(old, None, e.to_string())),
            }
        }
    }
}

/// What to put back when a rotation stops after its first label call.
struct Undo<'a> {
    name: &'a str,
    latest: i64,
    /// `Some(holder)` when `previous` was moved onto `latest`: where it was before
    /// (`None`: nowhere).
    previous: Option<Option<i64>>,
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
        /// Errors to return from the next calls of an operation.
        faults: RefCell<HashMap<&'static str, VecDeque<StoreError>>>,
        /// Apply the next put but report it as failed (a lost response).
        lose_next_put_response: RefCell<bool>,
        /// Corrupt what the next put stores (a read-back mismatch).
        corrupt_next_put: RefCell<bool>,
        /// Another writer's version lands just before the next put.
        foreign_write_before_next_put: RefCell<bool>,
        /// After this many label calls succeed, the next one fails with this error.
        fail_label_after: RefCell<Option<(usize, StoreError)>>,
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
        async fn describe(&self, selection: Selection<'_>) -> Result<Vec<ParamMeta>, StoreError> {
            self.fault("DescribeParameters")?;
            let params = self.params.borrow();
            Ok(params
                .values()
                .filter(|(m, _)| match selection.selector {
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
                    modified: None,
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
            if self.foreign_write_before_next_put.replace(false) {
                let version = vs.last().unwrap().version + 1;
                vs.push(Version {
                    version,
                    value: SecretValue::new("foreign".into()),
                    labels: vec![],
                    key_id: "someone-else".into(),
                });
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
            {
                let mut after = self.fail_label_after.borrow_mut();
                if let Some((n, e)) = after.as_mut() {
                    if *n == 0 {
                        let e = e.clone();
                        *after = None;
                        return Err(e);
                    }
                    *n -= 1;
                }
            }
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
    }

    const LEASE: Duration = Duration::from_secs(300);
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
        block_on(run(
            fake,
            r,
            &key(),
            &RandomSource::Os,
            LEASE,
            Budget::default(),
        ))
        .unwrap()
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
        let mark = vs[3]
            .labels
            .iter()
            .find_map(|l| RunLabel::decode(l))
            .expect("the rotation's mark on the new version");
        assert_eq!((mark.id.as_str(), mark.from), ("r-20261122T030000Z", 3));
        // History, one label call, the write, the read-back, one label call.
        assert_eq!(
            *fake.calls.borrow(),
            [
                "DescribeParameters",
                "GetParameterHistory",
                "LabelParameterVersion",
                "PutParameter",
                "GetParameter",
                "LabelParameterVersion",
            ]
        );
    }

    #[test]
    fn a_continuation_works_through_the_names_it_was_handed_without_selecting_again() {
        let names: Vec<String> = (0..120).map(|i| format!("/fleet/p{i:03}")).collect();
        // Selected by the path, but not handed over: an earlier invocation dealt with it.
        let mut fake = Fake::default().with_param("/fleet/done", 1, KEY);
        for name in names.iter().filter(|n| *n != "/fleet/p007") {
            fake = fake.with_param(name, 1, KEY);
        }
        let input = |carried: &str| {
            format!(
                r#"{{"targets":{{"paths":["/fleet"]}},"keyId":"alias/app","mode":"regenerate",
                    "rotationId":"2026-11-22T03:00:00Z",
                    "pace":{{"writesPerSecond":1000,"baseDelayMs":1}}{carried}}}"#
            )
        };
        let carried = serde_json::to_string(&names).unwrap();
        let r = parse(&input(&format!(
            r#","continueAfter":"/fleet/done","continueWith":{carried}"#
        )))
        .unwrap()
        .validate(None)
        .unwrap();
        let report = run_on(&fake, &r);
        assert_eq!(
            fake.count("DescribeParameters"),
            3,
            "120 names described 50 at a time, nothing selected again"
        );
        assert_eq!(report.results.len(), 120);
        for result in &report.results {
            let expected = match result.name.as_str() {
                // Deleted since the rotation selected it.
                "/fleet/p007" => Outcome::Skipped,
                _ => Outcome::Rotated,
            };
            assert_eq!(
                result.outcome, expected,
                "{}: {:?}",
                result.name, result.reason
            );
        }
        assert_eq!(fake.versions("/fleet/done").len(), 1, "not rotated twice");
        assert_eq!(report.continue_after, None, "nothing deferred");

        let alone = parse(&input(&format!(r#","continueWith":{carried}"#)))
            .unwrap()
            .validate(None)
            .unwrap_err();
        assert!(alone.to_string().contains("continueWith"), "{alone}");
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
        assert_eq!(fake.label_of("/p", "previous"), None, "previous put back");
        assert!(report.has_failures());
        // The retry finds its own lease and the unverified version: it refuses.
        let again = run_on(&fake, &rotation("reencrypt", ""));
        assert_eq!(again.results[0].outcome, Outcome::Failed);
        assert_eq!(fake.label_of("/p", "current"), None);
    }

    #[test]
    fn a_run_interrupted_before_its_last_label_is_completed_only_when_verifiable() {
        let label_fails = || {
            err(
                "LabelParameterVersion",
                Class::Transient,
                "InternalServerError",
            )
        };
        // Re-encrypting: the rerun compares the written version with the old one.
        let fake = Fake::default().with_param("/p", 5, "alias/aws/ssm");
        let r = rotation("reencrypt", "");
        // The first label call passes, the last one fails.
        *fake.fail_label_after.borrow_mut() = Some((1, label_fails()));
        let first = run_on(&fake, &r);
        assert_eq!(first.results[0].outcome, Outcome::Failed);
        assert_eq!(fake.versions("/p").len(), 6);
        let second = run_on(&fake, &r);
        let res = &second.results[0];
        assert_eq!(res.outcome, Outcome::Rotated, "{:?}", res.reason);
        assert!(res.reason.as_ref().unwrap().contains("interrupted"));
        assert_eq!(fake.count("PutParameter"), 1, "the rerun did not write");
        assert_eq!(fake.label_of("/p", "current"), Some(6));

        // Regenerating: a value nobody remembers cannot be verified; never promoted.
        let fake = Fake::default().with_param("/p", 5, KEY);
        let r = rotation("regenerate", "");
        *fake.fail_label_after.borrow_mut() = Some((1, label_fails()));
        run_on(&fake, &r);
        let second = run_on(&fake, &r);
        let res = &second.results[0];
        assert_eq!(res.outcome, Outcome::Failed, "{:?}", res.reason);
        assert!(res.reason.as_ref().unwrap().contains("not promoting"));
        assert_eq!(fake.label_of("/p", "current"), None);
        assert_eq!(fake.count("PutParameter"), 1);
    }

    #[test]
    fn another_writer_between_read_and_write_is_a_conflict() {
        let fake = Fake::default().with_param("/p", 5, KEY);
        *fake.foreign_write_before_next_put.borrow_mut() = true;
        let report = run_on(&fake, &rotation("regenerate", ""));
        let r = &report.results[0];
        assert_eq!(r.outcome, Outcome::Conflict, "{:?}", r.reason);
        let reason = r.reason.as_ref().unwrap();
        assert!(
            reason.contains("version 7") && reason.contains("version 6"),
            "{reason}"
        );
        assert_eq!(fake.label_of("/p", "current"), None);
        assert_eq!(fake.label_of("/p", "previous"), None);
        assert!(report.has_failures());
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
            vec!["r-20250101T0000Z".into(), "current".into()];
        let report = run_on(&fake, &rotation("regenerate", ""));
        assert_eq!(
            report.results[0].outcome,
            Outcome::Rotated,
            "{:?}",
            report.results[0].reason
        );
        assert_eq!(fake.versions("/p").len(), 100);
        assert_eq!(fake.versions("/p")[0].version, 2);
        assert_eq!(fake.label_of("/p", "current"), Some(101));

        // The write fails: the labels taken off the oldest version go back on it.
        let fake = Fake::default().with_param("/p", 100, KEY);
        fake.params.borrow_mut().get_mut("/p").unwrap().1[0].labels =
            vec!["r-20250101T0000Z".into(), "current".into()];
        fake.fail(
            "PutParameter",
            err("PutParameter", Class::Permanent, "InvalidKeyId"),
        );
        let report = run_on(&fake, &rotation("regenerate", ""));
        assert_eq!(report.results[0].outcome, Outcome::Failed);
        assert_eq!(fake.label_of("/p", "current"), Some(1), "current put back");
        assert_eq!(fake.label_of("/p", "previous"), None, "previous put back");

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
    fn dry_run_calls_no_mutating_operation() {
        let fake = Fake::default().with_param("/p", 3, "alias/aws/ssm");
        let report = run_on(&fake, &rotation("regenerate", r#","dryRun":true"#));
        assert_eq!(report.results[0].outcome, Outcome::DryRun);
        for op in [
            "PutParameter",
            "LabelParameterVersion",
            "UnlabelParameterVersion",
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
        let err = block_on(run(
            &fake,
            &r,
            &key(),
            &RandomSource::Os,
            LEASE,
            Budget::default(),
        ))
        .unwrap_err();
        assert!(err.to_string().contains("/nope"), "{err}");

        let json = r#"{"targets":{"names":["/p"]},"keyId":"k","mode":"regenerate",
            "overrides":{"/q":{"policy":{}}},"rotationId":"2026-11-22T03:00:00Z"}"#;
        let r = parse(json).unwrap().validate(None).unwrap();
        let err = block_on(run(
            &fake,
            &r,
            &key(),
            &RandomSource::Os,
            LEASE,
            Budget::default(),
        ))
        .unwrap_err();
        assert!(
            matches!(err, SelectError::StrayOverride(ref s) if s == "/q"),
            "{err}"
        );
    }
}
