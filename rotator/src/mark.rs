//! The label a rotation leaves on a parameter's versions: its lease, then its mark.
//!
//! One label does both jobs, so that recording a rotation costs no call of its own:
//! `r-20261122T030005Z-1a2b3c4d.from-12.until-20261122T031005Z` says "rotation
//! `r-20261122T030005Z-1a2b3c4d` started from version 12 and holds the parameter until
//! 03:10:05 UTC".
//!
//! - Before writing, the rotation puts the label on the version it starts from (in the
//!   same `LabelParameterVersion` call that moves `previous` there). While the label sits
//!   on that version and the time has not passed, the parameter is leased: another
//!   rotation leaves it alone. Anyone can see the lease in the parameter's history.
//! - After the new version is written and verified, the label moves to it (in the same
//!   call that puts `current`, or `pending`, there). On version `from + 1` it is the mark
//!   of a finished rotation: a retry with the same rotation id finds it and writes nothing.
//! - A run that dies in between leaves the label on `from`: its retry finds its own lease
//!   and resumes; any other rotation waits until the lease expires.

use time::format_description::BorrowedFormatItem;
use time::macros::format_description;
use time::{OffsetDateTime, PrimitiveDateTime};

/// Prefix of every rotation label lockbox sets.
pub const PREFIX: &str = "r-";

const FROM: &str = ".from-";
const UNTIL: &str = ".until-";

/// `20261122T030005Z`: a UTC time as labels carry it (labels allow no `:`).
const STAMP: &[BorrowedFormatItem<'static>] =
    format_description!("[year][month][day]T[hour][minute][second]Z");

/// A rotation's label, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunLabel {
    /// The rotation id's label (`r-20261122T030005Z` or `r-20261122T030005Z-1a2b3c4d`).
    pub id: String,
    /// The version the rotation started from.
    pub from: i64,
    /// When the lease ends.
    pub until: OffsetDateTime,
}

impl RunLabel {
    /// The label's text.
    pub fn encode(&self) -> String {
        format!("{}{FROM}{}{UNTIL}{}", self.id, self.from, stamp(self.until))
    }

    /// Parses a label this module wrote; `None` for anything else.
    pub fn decode(label: &str) -> Option<Self> {
        let (id, rest) = label.split_once(FROM)?;
        let (from, until) = rest.split_once(UNTIL)?;
        if !is_id_label(id) {
            return None;
        }
        let until = PrimitiveDateTime::parse(until, STAMP).ok()?.assume_utc();
        Some(Self {
            id: id.to_owned(),
            from: from.parse().ok().filter(|v| *v > 0)?,
            until,
        })
    }

    /// Whether the label still sits on the version it started from (a lease, not yet the
    /// mark of a written version) at `version`.
    pub fn is_lease_at(&self, version: i64) -> bool {
        version == self.from
    }
}

/// A UTC time as a label carries it.
pub fn stamp(t: OffsetDateTime) -> String {
    t.to_offset(time::UtcOffset::UTC)
        .format(STAMP)
        .unwrap_or_else(|_| "00000000T000000Z".to_owned())
}

/// `r-YYYYMMDDTHHMMSSZ`, optionally followed by `-` and 8 hex digits (the schedule).
pub fn is_id_label(label: &str) -> bool {
    let Some(rest) = label.strip_prefix(PREFIX) else {
        return false;
    };
    let (time, schedule) = match rest.split_once('-') {
        Some((t, s)) => (t, Some(s)),
        None => (rest, None),
    };
    let b = time.as_bytes();
    let time_ok = b.len() == 16
        && b[..8].iter().all(u8::is_ascii_digit)
        && b[8] == b'T'
        && b[9..15].iter().all(u8::is_ascii_digit)
        && b[15] == b'Z';
    time_ok
        && schedule.is_none_or(|s| {
            s.len() == 8
                && s.bytes()
                    .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
        })
}

/// The minute-precision label earlier lockbox versions set (`r-YYYYMMDDTHHMMZ`).
fn is_legacy_label(label: &str) -> bool {
    let Some(rest) = label.strip_prefix(PREFIX) else {
        return false;
    };
    let b = rest.as_bytes();
    b.len() == 14
        && b[..8].iter().all(u8::is_ascii_digit)
        && b[8] == b'T'
        && b[9..13].iter().all(u8::is_ascii_digit)
        && b[13] == b'Z'
}

/// Whether lockbox set this label as a rotation's record (any shape it ever used): such a
/// label is lockbox's to remove; every other label is someone else's.
pub fn is_rotation_label(label: &str) -> bool {
    is_legacy_label(label) || is_id_label(label) || RunLabel::decode(label).is_some()
}

/// 32-bit FNV-1a, as 8 hex digits: a short, stable name for a schedule in a label (labels
/// are at most 100 characters; a schedule ARN alone can be longer).
pub fn short_hash(text: &str) -> String {
    let mut h: u32 = 0x811c_9dc5;
    for b in text.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    format!("{h:08x}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn a_run_label_round_trips_and_fits_ssm() {
        let l = RunLabel {
            id: "r-20261122T030005Z-1a2b3c4d".into(),
            from: 12,
            until: datetime!(2026-11-22 03:10:05 UTC),
        };
        let text = l.encode();
        assert_eq!(
            text,
            "r-20261122T030005Z-1a2b3c4d.from-12.until-20261122T031005Z"
        );
        assert!(text.len() <= 100);
        assert!(text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)));
        assert_eq!(RunLabel::decode(&text), Some(l));
        assert!(is_rotation_label(&text));
    }

    #[test]
    fn labels_are_recognised_exactly() {
        for ours in [
            "r-20261122T0300Z",
            "r-20261122T030005Z",
            "r-20261122T030005Z-0badcafe",
            "r-20261122T030005Z.from-1.until-20261122T031005Z",
        ] {
            assert!(is_rotation_label(ours), "{ours}");
        }
        for theirs in [
            "r-2026112xT0300Z",
            "r-20261122T030005Z-XYZ",
            "r-20261122T030005Z.from-0.until-20261122T031005Z",
            "r-20261122T030005Z.from-1.until-soon",
            "release-1",
            "current",
        ] {
            assert!(!is_rotation_label(theirs), "{theirs}");
        }
    }

    #[test]
    fn schedule_hashes_are_stable_and_short() {
        let a = short_hash("arn:aws:scheduler:us-east-1:1:schedule/g/nightly");
        assert_eq!(a.len(), 8);
        assert_eq!(
            a,
            short_hash("arn:aws:scheduler:us-east-1:1:schedule/g/nightly")
        );
        assert_ne!(
            a,
            short_hash("arn:aws:scheduler:us-east-1:1:schedule/g/hourly")
        );
    }
}
