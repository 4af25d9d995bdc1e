//! A parameter's keyring: the versions labelled `current`, `previous` and `pending`, read
//! together so that a verifier can accept all three while a signer uses `current` (the
//! rotator's staged mode writes `pending` first and promotes it later).
//!
//! [`Sorting`] places the answers of one `GetParameters` call (`NAME:current`,
//! `NAME:previous`, `NAME:pending`) into the three slots. SSM says which label each answer
//! belongs to in its `Selector` field; an endpoint that does not (moto, for one) leaves
//! answers that only elimination can place, and the labels it cannot place are read one by
//! one: never a guess, as a wrong guess would hand a signer the pending key.

use serde::ser::SerializeStruct as _;
use serde::{Serialize, Serializer};

use super::parameter::Parameter;

/// The three labels of a keyring.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Slot {
    /// What signers use.
    Current,
    /// What `current` was before the last promotion.
    Previous,
    /// Written by a staged rotation, not yet promoted.
    Pending,
}

impl Slot {
    /// Every slot, in the order they are asked for and shown.
    pub const ALL: [Slot; 3] = [Slot::Current, Slot::Previous, Slot::Pending];

    /// The SSM label.
    pub fn label(self) -> &'static str {
        match self {
            Slot::Current => "current",
            Slot::Previous => "previous",
            Slot::Pending => "pending",
        }
    }

    fn index(self) -> usize {
        match self {
            Slot::Current => 0,
            Slot::Previous => 1,
            Slot::Pending => 2,
        }
    }

    /// The slot a selector names (`:current`, `name:current` or `current`), if any.
    fn of_selector(selector: &str) -> Option<Slot> {
        let label = selector.rsplit(':').next().unwrap_or(selector);
        Slot::ALL.into_iter().find(|slot| slot.label() == label)
    }
}

/// The versions of one parameter a keyring read found. Values are [`Parameter`]s, so they
/// are wiped when dropped and never printed by `Debug`.
#[derive(Debug, Clone)]
pub struct Keyring {
    /// The version labelled `current`: always there.
    pub current: Parameter,
    /// The version labelled `previous`, when one is.
    pub previous: Option<Parameter>,
    /// The version labelled `pending`, when one is.
    pub pending: Option<Parameter>,
}

impl Keyring {
    /// The parameter's name, as SSM answered it.
    pub fn name(&self) -> &str {
        &self.current.name
    }

    /// The versions it holds, `current` first.
    pub fn versions(&self) -> impl Iterator<Item = &Parameter> {
        std::iter::once(&self.current)
            .chain(self.previous.as_ref())
            .chain(self.pending.as_ref())
    }

    /// Bytes of the values it holds.
    pub fn payload_len(&self) -> usize {
        self.versions().map(Parameter::payload_len).sum()
    }
}

/// `{"Name": ..., "Current": {"Value", "Version"}, "Previous": ... | null, "Pending": ...}`.
impl Serialize for Keyring {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut out = s.serialize_struct("Keyring", 4)?;
        out.serialize_field("Name", self.name())?;
        out.serialize_field("Current", &Version(&self.current))?;
        out.serialize_field("Previous", &self.previous.as_ref().map(Version))?;
        out.serialize_field("Pending", &self.pending.as_ref().map(Version))?;
        out.end()
    }
}

/// One version as the keyring shows it: its value and its number.
struct Version<'a>(&'a Parameter);

impl Serialize for Version<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut out = s.serialize_struct("Version", 2)?;
        out.serialize_field("Value", &self.0.value)?;
        out.serialize_field("Version", &self.0.version)?;
        out.end()
    }
}

/// Why a keyring could not be put together.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyringError {
    /// No version carries `current` (or the parameter does not exist: SSM answers both
    /// the same way for a labelled read).
    #[error(
        "{0} has no version labelled current (or no such parameter); \
         label one with LabelParameterVersion"
    )]
    NoCurrent(String),
}

/// The names one `GetParameters` call asks for: `NAME:current`, `NAME:previous`,
/// `NAME:pending`.
pub fn keyring_names(name: &str) -> Vec<String> {
    Slot::ALL
        .iter()
        .map(|slot| format!("{name}:{}", slot.label()))
        .collect()
}

/// Answers being placed into a keyring's slots.
#[derive(Debug)]
pub struct Sorting {
    name: String,
    /// Per slot: not known yet (`None`), no such label (`Some(None)`), or its version.
    slots: [Option<Option<Parameter>>; 3],
    /// Answers that did not say which label they are.
    unplaced: Vec<Parameter>,
}

impl Sorting {
    /// Places what `GetParameters` answered for [`keyring_names`]`(name)`: `found` with
    /// its selectors (when the endpoint echoed them), `invalid` as SSM listed the names it
    /// did not find.
    pub fn new(name: &str, found: Vec<Parameter>, invalid: &[String]) -> Self {
        let mut sorting = Self {
            name: name.to_owned(),
            slots: [None, None, None],
            unplaced: Vec::new(),
        };
        for asked in invalid {
            if let Some(slot) = asked
                .strip_prefix(name)
                .and_then(|rest| rest.strip_prefix(':'))
                .and_then(Slot::of_selector)
            {
                sorting.slots[slot.index()] = Some(None);
            }
        }
        for parameter in found {
            match parameter.selector().and_then(Slot::of_selector) {
                Some(slot) if sorting.slots[slot.index()].is_none() => {
                    sorting.slots[slot.index()] = Some(Some(parameter));
                }
                _ => sorting.unplaced.push(parameter),
            }
        }
        sorting.deduce();
        sorting
    }

    /// A slot that only a read of its own label can fill, if any is left.
    pub fn unsure(&self) -> Option<Slot> {
        Slot::ALL
            .into_iter()
            .find(|slot| self.slots[slot.index()].is_none())
    }

    /// Fills `slot` from a read of its label alone (`None`: the label does not exist).
    pub fn settle(&mut self, slot: Slot, answer: Option<Parameter>) {
        if let Some(read) = &answer {
            if let Some(at) = self.unplaced.iter().position(|p| p.version == read.version) {
                self.unplaced.swap_remove(at);
            }
        }
        self.slots[slot.index()] = Some(answer);
        self.deduce();
    }

    /// The keyring, once no slot is unsure.
    pub fn finish(self) -> Result<Keyring, KeyringError> {
        let [current, previous, pending] = self.slots;
        let Some(Some(current)) = current else {
            return Err(KeyringError::NoCurrent(self.name));
        };
        Ok(Keyring {
            current,
            previous: previous.flatten(),
            pending: pending.flatten(),
        })
    }

    /// Places the unplaced answers where only one placing is possible: as many answers as
    /// open slots, and either one of each or all of one version (then any placing holds
    /// the same values). Answers that cannot match the open slots (a label moved between
    /// two reads) are dropped, and their slots are read on their own.
    fn deduce(&mut self) {
        let open: Vec<Slot> = Slot::ALL
            .into_iter()
            .filter(|slot| self.slots[slot.index()].is_none())
            .collect();
        if self.unplaced.len() != open.len() {
            self.unplaced.clear();
            return;
        }
        let one_version = self
            .unplaced
            .windows(2)
            .all(|pair| pair[0].version == pair[1].version);
        if one_version {
            for (slot, parameter) in open.into_iter().zip(self.unplaced.drain(..)) {
                self.slots[slot.index()] = Some(Some(parameter));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{ParameterExtra, SecretText};

    fn version(version: i64, selector: Option<&str>) -> Parameter {
        Parameter {
            arn: None,
            data_type: None,
            last_modified_date: None,
            name: "/app/key".into(),
            extra: ParameterExtra::new(selector.map(str::to_owned), None),
            kind: "SecureString".into(),
            value: SecretText::new(format!("value-{version}")),
            version,
        }
    }

    fn versions(keyring: &Keyring) -> (i64, Option<i64>, Option<i64>) {
        (
            keyring.current.version,
            keyring.previous.as_ref().map(|p| p.version),
            keyring.pending.as_ref().map(|p| p.version),
        )
    }

    #[test]
    fn echoed_selectors_place_every_answer_whatever_the_order() {
        let found = vec![
            version(3, Some(":pending")),
            version(1, Some(":previous")),
            version(2, Some(":current")),
        ];
        let sorting = Sorting::new("/app/key", found, &[]);
        assert_eq!(sorting.unsure(), None);
        let keyring = sorting.finish().unwrap();
        assert_eq!(versions(&keyring), (2, Some(1), Some(3)));
    }

    #[test]
    fn absent_labels_are_empty_slots_not_errors() {
        let invalid = [
            "/app/key:previous".to_owned(),
            "/app/key:pending".to_owned(),
        ];
        // Without a selector, one answer for one open slot can only be current.
        let sorting = Sorting::new("/app/key", vec![version(1, None)], &invalid);
        assert_eq!(sorting.unsure(), None);
        assert_eq!(versions(&sorting.finish().unwrap()), (1, None, None));
    }

    #[test]
    fn no_current_is_a_typed_error_naming_the_parameter() {
        let invalid = keyring_names("/app/key");
        let err = Sorting::new("/app/key", Vec::new(), &invalid)
            .finish()
            .unwrap_err();
        assert_eq!(err, KeyringError::NoCurrent("/app/key".into()));
        assert!(err
            .to_string()
            .contains("/app/key has no version labelled current"));
        // Only pending there: still no current.
        let invalid = [
            "/app/key:current".to_owned(),
            "/app/key:previous".to_owned(),
        ];
        let sorting = Sorting::new("/app/key", vec![version(2, None)], &invalid);
        assert!(matches!(sorting.finish(), Err(KeyringError::NoCurrent(_))));
    }

    #[test]
    fn unlabelled_answers_of_different_versions_are_never_guessed() {
        let found = vec![version(2, None), version(1, None)];
        let invalid = ["/app/key:pending".to_owned()];
        let mut sorting = Sorting::new("/app/key", found, &invalid);
        // current or previous could be either: current is read on its own...
        assert_eq!(sorting.unsure(), Some(Slot::Current));
        sorting.settle(Slot::Current, Some(version(2, None)));
        // ...and previous is what is left.
        assert_eq!(sorting.unsure(), None);
        assert_eq!(versions(&sorting.finish().unwrap()), (2, Some(1), None));
    }

    #[test]
    fn unlabelled_answers_of_one_version_are_placed_without_a_read() {
        let found = vec![version(4, None), version(4, None)];
        let sorting = Sorting::new("/app/key", found, &["/app/key:previous".to_owned()]);
        assert_eq!(sorting.unsure(), None);
        assert_eq!(versions(&sorting.finish().unwrap()), (4, None, Some(4)));
    }

    #[test]
    fn a_label_that_moved_between_reads_sends_every_open_slot_to_its_own_read() {
        let found = vec![version(3, None), version(2, None), version(1, None)];
        let mut sorting = Sorting::new("/app/key", found, &[]);
        assert_eq!(sorting.unsure(), Some(Slot::Current));
        // current moved on to 4 meanwhile: 3, 2 and 1 no longer match three open slots.
        sorting.settle(Slot::Current, Some(version(4, None)));
        assert_eq!(sorting.unsure(), Some(Slot::Previous));
        sorting.settle(Slot::Previous, Some(version(3, None)));
        assert_eq!(sorting.unsure(), Some(Slot::Pending));
        sorting.settle(Slot::Pending, None);
        assert_eq!(versions(&sorting.finish().unwrap()), (4, Some(3), None));
    }

    #[test]
    fn the_shape_is_name_and_three_versions_with_null_for_an_absent_label() {
        let keyring = Keyring {
            current: version(2, Some(":current")),
            previous: Some(version(1, Some(":previous"))),
            pending: None,
        };
        let json = serde_json::to_value(&keyring).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "Name": "/app/key",
                "Current": {"Value": "value-2", "Version": 2},
                "Previous": {"Value": "value-1", "Version": 1},
                "Pending": null,
            })
        );
        assert!(!format!("{keyring:?}").contains("value-"));
    }
}
