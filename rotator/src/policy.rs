//! Password policy: what a generated value must look like.
//!
//! [`PolicySpec`] is the user's JSON (`length`, `classes`, `exclude`, `requireEachClass`);
//! [`PolicySpec::compile`] validates it into a [`Policy`] whose alphabets already have the
//! excluded characters removed, so generation (see `generate`) cannot produce a character
//! the downstream system rejects. [`Policy::check`] tells whether a value satisfies the
//! policy; the Secrets Manager `testSecret` step and the tests use it.

use serde::{Deserialize, Serialize};

use crate::value::SecretValue;

/// Longest value a policy may ask for: the Advanced tier's 8 KB limit (all characters are
/// ASCII, so characters and bytes agree).
pub const MAX_LENGTH: usize = 8192;

/// Length used when a policy omits `length`.
pub const DEFAULT_LENGTH: usize = 32;

/// A character class a policy can draw from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CharClass {
    /// `A`-`Z`.
    Upper,
    /// `a`-`z`.
    Lower,
    /// `0`-`9`.
    Digits,
    /// The 32 printable ASCII punctuation characters.
    Symbols,
}

impl CharClass {
    /// Every class, in a fixed order (the default when `classes` is omitted).
    pub const ALL: [CharClass; 4] = [Self::Upper, Self::Lower, Self::Digits, Self::Symbols];

    /// The characters of this class, before exclusion.
    pub fn chars(self) -> &'static [u8] {
        match self {
            Self::Upper => b"ABCDEFGHIJKLMNOPQRSTUVWXYZ",
            Self::Lower => b"abcdefghijklmnopqrstuvwxyz",
            Self::Digits => b"0123456789",
            Self::Symbols => b"!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~",
        }
    }

    /// The name used in the JSON input.
    pub fn name(self) -> &'static str {
        match self {
            Self::Upper => "upper",
            Self::Lower => "lower",
            Self::Digits => "digits",
            Self::Symbols => "symbols",
        }
    }
}

/// A policy as written in the input (camelCase JSON); unknown fields are an error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PolicySpec {
    /// Number of characters to generate.
    #[serde(default = "default_length")]
    pub length: usize,
    /// Classes to draw from; all four when omitted.
    #[serde(default = "default_classes")]
    pub classes: Vec<CharClass>,
    /// Characters never to produce (for example `/@"'\` that break a connection string).
    #[serde(default)]
    pub exclude: String,
    /// Whether every listed class must appear at least once.
    #[serde(default = "default_require_each")]
    pub require_each_class: bool,
}

fn default_length() -> usize {
    DEFAULT_LENGTH
}

fn default_classes() -> Vec<CharClass> {
    CharClass::ALL.to_vec()
}

fn default_require_each() -> bool {
    true
}

impl Default for PolicySpec {
    fn default() -> Self {
        Self {
            length: DEFAULT_LENGTH,
            classes: default_classes(),
            exclude: String::new(),
            require_each_class: true,
        }
    }
}

/// Why a policy cannot be satisfied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// `length` outside `1..=MAX_LENGTH`.
    #[error("policy length {0} is out of range (1..={MAX_LENGTH})")]
    Length(usize),
    /// `classes` is empty.
    #[error("policy classes is empty: list at least one of upper, lower, digits, symbols")]
    NoClasses,
    /// A class is listed twice.
    #[error("policy class {0} is listed twice")]
    DuplicateClass(&'static str),
    /// `exclude` removes every character of a listed class.
    #[error("policy exclude removes every character of class {0}")]
    ClassEmptied(&'static str),
    /// `requireEachClass` with fewer characters than classes.
    #[error("policy length {length} is shorter than the {classes} classes requireEachClass needs")]
    TooShortForClasses {
        /// The policy's length.
        length: usize,
        /// How many classes must each appear.
        classes: usize,
    },
}

impl PolicySpec {
    /// Validates the policy and computes its alphabets.
    pub fn compile(&self) -> Result<Policy, PolicyError> {
        if self.length == 0 || self.length > MAX_LENGTH {
            return Err(PolicyError::Length(self.length));
        }
        if self.classes.is_empty() {
            return Err(PolicyError::NoClasses);
        }
        let mut classes = Vec::with_capacity(self.classes.len());
        for (i, class) in self.classes.iter().enumerate() {
            if self.classes[..i].contains(class) {
                return Err(PolicyError::DuplicateClass(class.name()));
            }
            let chars: Vec<u8> = class
                .chars()
                .iter()
                .copied()
                .filter(|c| !self.exclude.as_bytes().contains(c))
                .collect();
            if chars.is_empty() {
                return Err(PolicyError::ClassEmptied(class.name()));
            }
            classes.push(chars);
        }
        if self.require_each_class && self.length < classes.len() {
            return Err(PolicyError::TooShortForClasses {
                length: self.length,
                classes: classes.len(),
            });
        }
        let alphabet = classes.concat();
        Ok(Policy {
            length: self.length,
            classes,
            alphabet,
            require_each_class: self.require_each_class,
        })
    }
}

/// A validated policy, ready for generation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    length: usize,
    /// Per listed class, its characters minus the excluded ones.
    classes: Vec<Vec<u8>>,
    /// Union of `classes`: every character a value may contain.
    alphabet: Vec<u8>,
    require_each_class: bool,
}

/// How a value fails a policy (never includes the value).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Violation {
    /// Wrong number of characters.
    #[error("value has {actual} characters, policy requires {expected}")]
    Length {
        /// Length the policy requires.
        expected: usize,
        /// Length found.
        actual: usize,
    },
    /// A character outside the allowed alphabet (position only, never the character).
    #[error("character at position {0} is not allowed by the policy")]
    Disallowed(usize),
    /// A required class does not appear.
    #[error("a required character class does not appear")]
    MissingClass,
}

impl Policy {
    /// Number of characters a generated value has.
    pub fn length(&self) -> usize {
        self.length
    }

    /// Allowed characters per listed class (exclusions applied).
    pub fn classes(&self) -> &[Vec<u8>] {
        &self.classes
    }

    /// Every allowed character.
    pub fn alphabet(&self) -> &[u8] {
        &self.alphabet
    }

    /// Whether each class must appear at least once.
    pub fn require_each_class(&self) -> bool {
        self.require_each_class
    }

    /// Checks a value against the policy.
    pub fn check(&self, value: &SecretValue) -> Result<(), Violation> {
        let bytes = value.expose().as_bytes();
        // Count characters, not bytes, so a multi-byte character is one wrong character.
        let chars = value.expose().chars().count();
        if chars != self.length {
            return Err(Violation::Length {
                expected: self.length,
                actual: chars,
            });
        }
        if let Some(pos) = bytes.iter().position(|b| !self.alphabet.contains(b)) {
            return Err(Violation::Disallowed(pos));
        }
        if self.require_each_class
            && !self
                .classes
                .iter()
                .all(|class| bytes.iter().any(|b| class.contains(b)))
        {
            return Err(Violation::MissingClass);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(json: &str) -> PolicySpec {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn defaults_are_32_characters_of_all_classes_each_required() {
        let p = spec("{}").compile().unwrap();
        assert_eq!(p.length(), 32);
        assert_eq!(p.classes().len(), 4);
        assert_eq!(p.alphabet().len(), 26 + 26 + 10 + 32);
        assert!(p.require_each_class());
    }

    #[test]
    fn exclude_removes_characters_from_their_class() {
        let p = spec(r#"{"length":8,"classes":["symbols","digits"],"exclude":"/@\"'\\0"}"#)
            .compile()
            .unwrap();
        for c in b"/@\"'\\0" {
            assert!(!p.alphabet().contains(c), "{}", *c as char);
        }
        assert_eq!(p.classes()[0].len(), 32 - 5);
        assert_eq!(p.classes()[1].len(), 9);
    }

    #[test]
    fn invalid_policies_name_the_problem() {
        assert_eq!(
            spec(r#"{"length":0}"#).compile(),
            Err(PolicyError::Length(0))
        );
        assert_eq!(
            spec(r#"{"length":9000}"#).compile(),
            Err(PolicyError::Length(9000))
        );
        assert_eq!(
            spec(r#"{"classes":[]}"#).compile(),
            Err(PolicyError::NoClasses)
        );
        assert_eq!(
            spec(r#"{"classes":["upper","upper"]}"#).compile(),
            Err(PolicyError::DuplicateClass("upper"))
        );
        assert_eq!(
            spec(r#"{"classes":["digits"],"exclude":"0123456789"}"#).compile(),
            Err(PolicyError::ClassEmptied("digits"))
        );
        assert_eq!(
            spec(r#"{"length":3}"#).compile(),
            Err(PolicyError::TooShortForClasses {
                length: 3,
                classes: 4
            })
        );
        // Without requireEachClass a short value is fine.
        assert!(spec(r#"{"length":3,"requireEachClass":false}"#)
            .compile()
            .is_ok());
    }

    #[test]
    fn unknown_policy_fields_are_rejected() {
        let err = serde_json::from_str::<PolicySpec>(r#"{"lenght":12}"#).unwrap_err();
        assert!(err.to_string().contains("lenght"), "{err}");
    }

    #[test]
    fn check_reports_without_the_value() {
        let p = spec(r#"{"length":4,"classes":["digits","upper"]}"#)
            .compile()
            .unwrap();
        assert!(p.check(&SecretValue::new("1A2B".into())).is_ok());
        assert_eq!(
            p.check(&SecretValue::new("1A2".into())),
            Err(Violation::Length {
                expected: 4,
                actual: 3
            })
        );
        assert_eq!(
            p.check(&SecretValue::new("1a2B".into())),
            Err(Violation::Disallowed(1))
        );
        assert_eq!(
            p.check(&SecretValue::new("1234".into())),
            Err(Violation::MissingClass)
        );
    }
}
