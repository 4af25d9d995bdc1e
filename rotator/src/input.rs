//! The rotation input: parsed strictly, validated completely, before anything is written.
//!
//! [`RotationInput`] is the schedule's JSON as written (unknown fields are an error, so a
//! typo such as `"dryrun"` fails instead of silently rotating for real).
//! [`RotationInput::validate`] turns it into a [`Rotation`]: policies compiled, labels and
//! names checked, the rotation id derived ([`RotationId`]).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::account::{Access, AssumeRoleSpec};
use crate::generate::SourceKind;
pub use crate::input_error::InputError;
use crate::mark;
use crate::pace::PaceSpec;
use crate::policy::{Policy, PolicySpec};

pub use crate::mark::is_rotation_label;

/// Default wait between writing a staged value and promoting it: the extension's largest
/// TTL (`SSM_PARAMETER_STORE_TTL` and the others accept at most 86,400 s), so no verifier
/// can still hold a keyring from before the value was written when signers start using it.
pub const DEFAULT_PROMOTE_AFTER_SECONDS: u64 = 86_400;
/// Upper bound of `staged.promoteAfterSeconds` (30 days).
pub const MAX_PROMOTE_AFTER_SECONDS: u64 = 30 * 86_400;

/// The input as written in the schedule (camelCase JSON).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RotationInput {
    /// Which parameters to rotate.
    pub targets: Targets,
    /// The customer-managed key: key id, key ARN, alias name or alias ARN.
    pub key_id: String,
    /// `regenerate` or `reencrypt`.
    pub mode: Mode,
    /// Policy for `regenerate` (a default applies when omitted).
    #[serde(default)]
    pub policy: Option<PolicySpec>,
    /// Per-parameter policy overrides, by exact parameter name.
    #[serde(default)]
    pub overrides: BTreeMap<String, Override>,
    /// Cutover label names.
    #[serde(default)]
    pub labels: Labels,
    /// Report what would happen and write nothing.
    #[serde(default)]
    pub dry_run: bool,
    /// The schedule's scheduled time (`<aws.scheduler.scheduled-time>`), RFC 3339.
    #[serde(default)]
    pub rotation_id: Option<String>,
    /// An EventBridge rule event's `time`, used when `rotationId` is absent.
    #[serde(default)]
    pub time: Option<String>,
    /// `os` (default) or `kms` (KMS `GenerateRandom`).
    #[serde(default)]
    pub random_source: SourceKind,
    /// Pacing and retry settings.
    #[serde(default)]
    pub pace: PaceSpec,
    /// A role to assume for every call, so the parameters of another account can be
    /// rotated.
    #[serde(default)]
    pub assume_role: Option<AssumeRoleSpec>,
    /// The region of the parameters and the key (and of STS when a role is assumed);
    /// default the function's own.
    #[serde(default)]
    pub region: Option<String>,
    /// The schedule that fired (`<aws.scheduler.schedule-arn>`, or a rule event's first
    /// resource): part of the rotation id, so two schedules firing at the same second
    /// are two rotations.
    #[serde(default)]
    pub schedule: Option<String>,
    /// Staged rotation for values two parties share: write the new value as `pending`,
    /// promote it to `current` in a later run.
    #[serde(default)]
    pub staged: Option<StagedSpec>,
    /// Set by the rotator when it hands the rest of a run to its next invocation: the
    /// last parameter name this rotation id has already dealt with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub continue_after: Option<String>,
    /// Set by the rotator with `continueAfter` when it fits the hand-over's payload: the
    /// names this rotation selected and has not dealt with yet, in name order. The next
    /// invocation works through them instead of selecting again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub continue_with: Option<Vec<String>>,
}

/// `"staged"` as written in the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StagedSpec {
    /// Seconds between writing a pending value and promoting it (default
    /// [`DEFAULT_PROMOTE_AFTER_SECONDS`]).
    #[serde(default)]
    pub promote_after_seconds: Option<u64>,
}

/// Which parameters a run selects; at least one selector is required.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Targets {
    /// Exact parameter names; each must exist.
    #[serde(default)]
    pub names: Vec<String>,
    /// Path prefixes, selected recursively.
    #[serde(default)]
    pub paths: Vec<String>,
    /// A tag key: every parameter carrying it is selected.
    #[serde(default)]
    pub tag: Option<String>,
    /// A tag key every selected parameter must carry (any value): parameters opt in to
    /// rotation by carrying it, whatever names and paths say.
    #[serde(default)]
    pub require_tag: Option<String>,
}

/// What a rotation writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// A new random value by the policy.
    Regenerate,
    /// The same value, written again under the chosen key.
    Reencrypt,
}

/// A per-parameter override.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Override {
    /// The policy for this parameter instead of the run's.
    pub policy: PolicySpec,
}

/// The cutover labels lockbox moves on each rotation.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Labels {
    /// Label on the new version (default `current`).
    #[serde(default = "default_current")]
    pub current: String,
    /// Label on the version that was current before (default `previous`).
    #[serde(default = "default_previous")]
    pub previous: String,
    /// Label on a staged value not yet promoted (default `pending`; staged mode only).
    #[serde(default = "default_pending")]
    pub pending: String,
}

fn default_current() -> String {
    "current".to_owned()
}
fn default_previous() -> String {
    "previous".to_owned()
}
fn default_pending() -> String {
    "pending".to_owned()
}

impl Default for Labels {
    fn default() -> Self {
        Self {
            current: default_current(),
            previous: default_previous(),
            pending: default_pending(),
        }
    }
}

/// The rotation id and the label that records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RotationId {
    /// The scheduled time as reported (`2026-11-22T03:00:05Z`, UTC, to the second).
    pub id: String,
    /// The schedule that fired, when the input names it.
    pub schedule: Option<String>,
    /// The label's rotation part, e.g. `r-20261122T030005Z`, or
    /// `r-20261122T030005Z-1a2b3c4d` with a schedule (a short hash of its name).
    pub label: String,
}

impl RotationId {
    /// Derives the id from a timestamp (RFC 3339, as EventBridge substitutes it) and the
    /// schedule's identity.
    ///
    /// To the second, plus the schedule: every delivery and retry of one scheduled run
    /// agrees, and two schedules (or two runs a few seconds apart) never share an id. A
    /// label may not start with a digit, hence the `r-` prefix.
    pub fn parse(raw: &str, schedule: Option<&str>) -> Result<Self, InputError> {
        let t = OffsetDateTime::parse(raw.trim(), &Rfc3339).map_err(|e| {
            InputError::Invalid(format!(
                "rotationId {raw:?} is not an RFC 3339 timestamp such as 2026-11-22T03:00:00Z \
                 (use <aws.scheduler.scheduled-time>): {e}"
            ))
        })?;
        Ok(Self::from_time(t, schedule))
    }

    /// The id for a point in time (UTC, truncated to the second) and a schedule.
    pub fn from_time(t: OffsetDateTime, schedule: Option<&str>) -> Self {
        let t = t.to_offset(time::UtcOffset::UTC);
        let (y, mo, d) = (t.year(), u8::from(t.month()), t.day());
        let (h, mi, s) = (t.hour(), t.minute(), t.second());
        let schedule = schedule.map(str::trim).filter(|s| !s.is_empty());
        let mut label = format!("{}{}", mark::PREFIX, mark::stamp(t));
        if let Some(name) = schedule {
            label.push('-');
            label.push_str(&mark::short_hash(name));
        }
        Self {
            id: format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z"),
            schedule: schedule.map(str::to_owned),
            label,
        }
    }
}

/// Staged mode, validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Staged {
    /// How long a pending value waits before a run promotes it.
    pub promote_after: std::time::Duration,
}

/// A validated rotation request.
#[derive(Debug, Clone)]
pub struct Rotation {
    /// Which parameters.
    pub targets: Targets,
    /// The key as named in the input (checked later by the key gate).
    pub key_id: String,
    /// What to write.
    pub mode: Mode,
    /// The run's policy (`regenerate` only).
    pub policy: Option<Policy>,
    /// Per-parameter policies (`regenerate` only).
    pub overrides: BTreeMap<String, Policy>,
    /// Cutover labels.
    pub labels: Labels,
    /// Write nothing.
    pub dry_run: bool,
    /// The run's id.
    pub id: RotationId,
    /// Where random bytes come from.
    pub random_source: SourceKind,
    /// Pacing and retries.
    pub pace: PaceSpec,
    /// The account (through an assumed role) and region the calls go to.
    pub access: Access,
    /// Staged mode (`None`: the new value becomes current at once).
    pub staged: Option<Staged>,
    /// Parameters up to and including this name were dealt with by an earlier invocation
    /// of this rotation id.
    pub continue_after: Option<String>,
    /// The names an earlier invocation of this rotation id selected and left to do, in
    /// name order: when set, they are rotated without selecting again.
    pub continue_with: Option<Vec<String>>,
}

impl Rotation {
    /// The policy for `name`: its override, else the run's.
    pub fn policy_for(&self, name: &str) -> Option<&Policy> {
        self.overrides.get(name).or(self.policy.as_ref())
    }
}

/// Parses an input from JSON text.
pub fn parse(json: &str) -> Result<RotationInput, InputError> {
    serde_json::from_str(json).map_err(|e| InputError::Parse(e.to_string()))
}

/// Parses an input from a JSON value.
pub fn from_value(value: serde_json::Value) -> Result<RotationInput, InputError> {
    serde_json::from_value(value).map_err(|e| InputError::Parse(e.to_string()))
}

fn invalid(msg: impl Into<String>) -> InputError {
    InputError::Invalid(msg.into())
}

/// Checks a label name against SSM's rules, which SSM itself reports only as
/// `InvalidLabels` after the fact.
pub fn check_label(what: &str, label: &str) -> Result<(), InputError> {
    let lower = label.to_ascii_lowercase();
    if label.is_empty() || label.len() > 100 {
        return Err(invalid(format!(
            "{what} {label:?} must be 1-100 characters"
        )));
    }
    if !label
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
    {
        return Err(invalid(format!(
            "{what} {label:?} may contain only letters, digits, '.', '-' and '_'"
        )));
    }
    if label.as_bytes()[0].is_ascii_digit() || lower.starts_with("aws") || lower.starts_with("ssm")
    {
        return Err(invalid(format!(
            "{what} {label:?} may not start with a digit, \"aws\" or \"ssm\""
        )));
    }
    if is_rotation_label(label) {
        return Err(invalid(format!(
            "{what} {label:?} has the shape of lockbox's rotation labels (r-YYYYMMDDTHHMMSSZ...)"
        )));
    }
    Ok(())
}

/// Checks a parameter name's characters (SSM: letters, digits, `_ . - /`).
fn check_name(what: &str, name: &str) -> Result<(), InputError> {
    if name.is_empty() || name.len() > 2048 {
        return Err(invalid(format!(
            "{what} {name:?} must be 1-2048 characters"
        )));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-' | b'/'))
    {
        return Err(invalid(format!(
            "{what} {name:?} may contain only letters, digits and _ . - /"
        )));
    }
    Ok(())
}

impl RotationInput {
    /// Validates everything that can be checked without AWS.
    ///
    /// `fallback` is the time used when neither `rotationId` nor `time` is given; the
    /// Lambda passes none (a scheduled run must carry its id, or retries could not find
    /// their earlier writes), the shell passes the current time.
    pub fn validate(self, fallback: Option<OffsetDateTime>) -> Result<Rotation, InputError> {
        let t = &self.targets;
        if t.names.is_empty() && t.paths.is_empty() && t.tag.is_none() {
            return Err(invalid("targets selects nothing: give names, paths or tag"));
        }
        for name in &t.names {
            check_name("targets.names entry", name)?;
        }
        for path in &t.paths {
            check_name("targets.paths entry", path)?;
            if !path.starts_with('/') {
                return Err(invalid(format!(
                    "targets.paths entry {path:?} must start with '/'"
                )));
            }
        }
        for (what, tag) in [
            ("targets.tag", &t.tag),
            ("targets.requireTag", &t.require_tag),
        ] {
            if tag
                .as_ref()
                .is_some_and(|tag| tag.trim().is_empty() || tag.len() > 128)
            {
                return Err(invalid(format!(
                    "{what} must be a tag key of 1-128 characters"
                )));
            }
        }
        if self.key_id.trim().is_empty() {
            return Err(invalid("keyId is empty"));
        }
        check_label("labels.current", &self.labels.current)?;
        check_label("labels.previous", &self.labels.previous)?;
        check_label("labels.pending", &self.labels.pending)?;
        let l = &self.labels;
        if l.current == l.previous || l.current == l.pending || l.previous == l.pending {
            return Err(invalid(
                "labels.current, labels.previous and labels.pending must differ",
            ));
        }
        let staged = match self.staged {
            None => None,
            Some(spec) => {
                let secs = spec
                    .promote_after_seconds
                    .unwrap_or(DEFAULT_PROMOTE_AFTER_SECONDS);
                if secs > MAX_PROMOTE_AFTER_SECONDS {
                    return Err(invalid(format!(
                        "staged.promoteAfterSeconds {secs} is out of range \
                         (0..={MAX_PROMOTE_AFTER_SECONDS})"
                    )));
                }
                Some(Staged {
                    promote_after: std::time::Duration::from_secs(secs),
                })
            }
        };
        if let Some(name) = &self.continue_after {
            check_name("continueAfter", name)?;
        }
        if let Some(names) = &self.continue_with {
            if self.continue_after.is_none() {
                return Err(invalid(
                    "continueWith is set by the rotator together with continueAfter; \
                     it cannot stand alone",
                ));
            }
            for name in names {
                check_name("continueWith", name)?;
            }
        }
        let (policy, overrides) = match self.mode {
            Mode::Regenerate => {
                let spec = self.policy.unwrap_or_default();
                let policy = spec
                    .compile()
                    .map_err(|e| invalid(format!("policy: {e}")))?;
                let mut overrides = BTreeMap::new();
                for (name, o) in self.overrides {
                    check_name("overrides key", &name)?;
                    let p = o
                        .policy
                        .compile()
                        .map_err(|e| invalid(format!("overrides[{name:?}].policy: {e}")))?;
                    overrides.insert(name, p);
                }
                (Some(policy), overrides)
            }
            Mode::Reencrypt => {
                // A policy here means the author expected new values; refuse rather than
                // guess.
                if self.policy.is_some() || !self.overrides.is_empty() {
                    return Err(invalid(
                        "policy and overrides apply only to mode regenerate; reencrypt keeps \
                         each value as it is",
                    ));
                }
                (None, BTreeMap::new())
            }
        };
        self.pace.validate().map_err(invalid)?;
        let schedule = self.schedule.as_deref();
        if schedule.is_some_and(|s| s.len() > 2048) {
            return Err(invalid("schedule must be at most 2048 characters"));
        }
        let id = match (&self.rotation_id, &self.time, fallback) {
            (Some(raw), _, _) | (None, Some(raw), _) => RotationId::parse(raw, schedule)?,
            (None, None, Some(now)) => RotationId::from_time(now, schedule),
            (None, None, None) => return Err(invalid(
                "rotationId is missing: set \"rotationId\": \"<aws.scheduler.scheduled-time>\" \
                     in the schedule's Input (or pass the rule event's time as \"time\")",
            )),
        };
        let access =
            Access::from_input(self.region.as_deref(), self.assume_role.as_ref(), &id.label)?;
        Ok(Rotation {
            targets: self.targets,
            key_id: self.key_id.trim().to_owned(),
            mode: self.mode,
            policy,
            overrides,
            labels: self.labels,
            dry_run: self.dry_run,
            id,
            random_source: self.random_source,
            pace: self.pace,
            access,
            staged,
            continue_after: self.continue_after,
            continue_with: self.continue_with,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FULL: &str = r#"{
      "targets": {"names": ["/app/db/password"], "paths": ["/app/prod/"], "tag": "lockbox:rotate"},
      "keyId": "alias/app-secrets",
      "mode": "regenerate",
      "policy": {"length": 32, "classes": ["upper", "lower", "digits", "symbols"],
                 "exclude": "/@\"'\\", "requireEachClass": true},
      "labels": {"current": "current", "previous": "previous"},
      "dryRun": false,
      "rotationId": "2026-11-22T03:00:00Z"
    }"#;

    fn validated(json: &str) -> Result<Rotation, InputError> {
        parse(json)?.validate(None)
    }

    #[test]
    fn the_documented_example_parses() {
        let r = validated(FULL).unwrap();
        assert_eq!(r.mode, Mode::Regenerate);
        assert_eq!(r.id.label, "r-20261122T030000Z");
        assert_eq!(r.id.id, "2026-11-22T03:00:00Z");
        assert_eq!(r.policy.as_ref().unwrap().length(), 32);
        assert_eq!(r.targets.tag.as_deref(), Some("lockbox:rotate"));
        assert!(!r.dry_run);
    }

    #[test]
    fn unknown_fields_are_errors_at_every_level() {
        for (from, to) in [
            ("\"dryRun\"", "\"dryrun\""),
            ("\"paths\"", "\"path\""),
            ("\"requireEachClass\"", "\"requireEach\""),
            (
                "\"previous\": \"previous\"",
                "\"previous\": \"previous\", \"next\": \"x\"",
            ),
        ] {
            let err = validated(&FULL.replace(from, to)).unwrap_err();
            assert!(
                matches!(&err, InputError::Parse(m) if m.contains("unknown field")),
                "{from} -> {to}: {err}"
            );
        }
    }

    #[test]
    fn missing_and_mistyped_fields_say_what_is_wrong() {
        let err = validated(r#"{"targets":{"names":["/a"]},"mode":"regenerate"}"#).unwrap_err();
        assert!(err.to_string().contains("keyId"), "{err}");
        let err = validated(&FULL.replace("\"regenerate\"", "\"rotate\"")).unwrap_err();
        assert!(err.to_string().contains("rotate"), "{err}");
        let err = validated("not json").unwrap_err();
        assert!(matches!(err, InputError::Parse(_)));
    }

    #[test]
    fn empty_targets_are_refused() {
        let json = FULL.replace(
            r#"{"names": ["/app/db/password"], "paths": ["/app/prod/"], "tag": "lockbox:rotate"}"#,
            "{}",
        );
        let err = validated(&json).unwrap_err();
        assert!(err.to_string().contains("selects nothing"), "{err}");
    }

    #[test]
    fn rotation_id_comes_from_rotation_id_then_time_then_fallback() {
        let base = r#"{"targets":{"names":["/a"]},"keyId":"k","mode":"reencrypt""#;
        let r = validated(&format!("{base},\"time\":\"2026-01-02T03:04:59Z\"}}")).unwrap();
        assert_eq!(r.id.label, "r-20260102T030459Z");
        let r = validated(&format!(
            "{base},\"rotationId\":\"2026-01-02T05:04:00+02:00\",\"time\":\"2020-01-01T00:00:00Z\"}}"
        ))
        .unwrap();
        assert_eq!(r.id.label, "r-20260102T030400Z", "offset normalised to UTC");
        let err = validated(&format!("{base}}}")).unwrap_err();
        assert!(err.to_string().contains("rotationId is missing"), "{err}");
        let now = OffsetDateTime::parse("2030-12-31T23:59:30Z", &Rfc3339).unwrap();
        let r = parse(&format!("{base}}}"))
            .unwrap()
            .validate(Some(now))
            .unwrap();
        assert_eq!(r.id.label, "r-20301231T235930Z");
        let err = validated(&format!("{base},\"rotationId\":\"run-1\"}}")).unwrap_err();
        assert!(err.to_string().contains("RFC 3339"), "{err}");
    }

    #[test]
    fn rotation_ids_keep_the_second_and_the_schedule() {
        let a = RotationId::parse("2026-11-22T03:00:00Z", None).unwrap();
        let b = RotationId::parse("2026-11-22T03:00:30Z", None).unwrap();
        assert_ne!(a.label, b.label, "same minute, different runs");
        let nightly =
            RotationId::parse("2026-11-22T03:00:00Z", Some("schedule/g/nightly")).unwrap();
        let other = RotationId::parse("2026-11-22T03:00:00Z", Some("schedule/g/other")).unwrap();
        assert_ne!(nightly.label, other.label, "same second, two schedules");
        assert!(nightly.label.starts_with("r-20261122T030000Z-"));
        assert_eq!(nightly.schedule.as_deref(), Some("schedule/g/nightly"));
        assert!(is_rotation_label(&nightly.label));
    }

    #[test]
    fn rotation_labels_are_recognised_exactly() {
        assert!(is_rotation_label("r-20261122T030000Z"));
        assert!(!is_rotation_label("r-20261122T0300"));
        assert!(!is_rotation_label("r-2026112xT0300Z"));
        assert!(!is_rotation_label("release-1"));
        assert!(!is_rotation_label("current"));
        assert!(is_rotation_label(
            &RotationId::parse("1999-02-03T04:05:06Z", None)
                .unwrap()
                .label
        ));
    }

    #[test]
    fn bad_labels_are_refused() {
        let with = |c: &str, p: &str| {
            FULL.replace(
                r#""labels": {"current": "current", "previous": "previous"}"#,
                &format!(r#""labels": {{"current": "{c}", "previous": "{p}"}}"#),
            )
        };
        for (c, p, needle) in [
            ("1st", "previous", "may not start"),
            ("awscurrent", "previous", "may not start"),
            ("SSMx", "previous", "may not start"),
            ("cur rent", "previous", "may contain only"),
            ("same", "same", "must differ"),
            ("r-20261122T030000Z", "previous", "rotation labels"),
        ] {
            let err = validated(&with(c, p)).unwrap_err();
            assert!(err.to_string().contains(needle), "{c}/{p}: {err}");
        }
        assert!(validated(&with("live", "old")).is_ok());
    }

    #[test]
    fn reencrypt_with_a_policy_is_refused() {
        let err = validated(&FULL.replace("\"regenerate\"", "\"reencrypt\"")).unwrap_err();
        assert!(err.to_string().contains("only to mode regenerate"), "{err}");
    }

    #[test]
    fn overrides_and_policy_errors_name_their_place() {
        let json = FULL.replace(
            "\"dryRun\": false",
            r#""dryRun": false, "overrides": {"/app/db/password": {"policy": {"length": 2}}}"#,
        );
        let err = validated(&json).unwrap_err();
        assert!(
            err.to_string().contains("overrides[\"/app/db/password\"]"),
            "{err}"
        );
        let json = FULL.replace(
            "\"dryRun\": false",
            r#""dryRun": false, "overrides": {"/app/db/password": {"policy": {"length": 12, "classes": ["digits"]}}}"#,
        );
        let r = validated(&json).unwrap();
        assert_eq!(r.policy_for("/app/db/password").unwrap().length(), 12);
        assert_eq!(r.policy_for("/other").unwrap().length(), 32);
    }

    #[test]
    fn names_and_paths_are_checked() {
        let err = validated(&FULL.replace("/app/prod/", "app/prod/")).unwrap_err();
        assert!(err.to_string().contains("must start with '/'"), "{err}");
        let err = validated(&FULL.replace("/app/db/password", "/app/db pass")).unwrap_err();
        assert!(err.to_string().contains("may contain only"), "{err}");
    }

    #[test]
    fn a_role_and_a_region_are_optional_and_checked() {
        let r = validated(FULL).unwrap();
        assert!(r.access.is_default());

        let role = format!(
            "arn:{}:iam::222222222222:role/lockbox-rotation",
            "aws-us-gov"
        );
        let json = FULL.replace(
            "\"dryRun\": false",
            &format!(
                r#""dryRun": false, "region": "us-gov-west-1",
                   "assumeRole": {{"roleArn": "{role}", "externalId": "ext-42"}}"#
            ),
        );
        let r = validated(&json).unwrap();
        assert_eq!(r.access.region.as_deref(), Some("us-gov-west-1"));
        let assumed = r.access.role.as_ref().unwrap();
        assert_eq!(assumed.role_arn, role);
        assert_eq!(assumed.account, "222222222222");
        assert_eq!(assumed.external_id.as_deref(), Some("ext-42"));
        assert_eq!(assumed.session_name, "lockbox-r-20261122T030000Z");

        let typo = json.replace("\"externalId\"", "\"externalID\"");
        let err = validated(&typo).unwrap_err();
        assert!(
            matches!(&err, InputError::Parse(m) if m.contains("unknown field `externalID`")),
            "{err}"
        );
        let err = validated(&json.replace(":role/", ":user/")).unwrap_err();
        assert!(err.to_string().contains("is not a role"), "{err}");
        let err = validated(&json.replace("us-gov-west-1", "west")).unwrap_err();
        assert!(err.to_string().contains("region"), "{err}");
    }

    #[test]
    fn pace_is_validated() {
        let json = FULL.replace(
            "\"dryRun\": false",
            r#""dryRun": false, "pace": {"writesPerSecond": 0}"#,
        );
        let err = validated(&json).unwrap_err();
        assert!(err.to_string().contains("writesPerSecond"), "{err}");
    }
}
