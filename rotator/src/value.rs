//! The one type that holds a parameter or secret value.
//!
//! Every value the rotator reads or generates lives in a [`SecretValue`]: its memory is
//! wiped on drop, and its `Debug` never shows the content, so a stray `{:?}` in a log line
//! or an error cannot leak it.

use std::fmt;

use zeroize::Zeroizing;

/// A parameter or secret value: zeroized on drop, redacted in `Debug`, never `Display`.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretValue(Zeroizing<String>);

impl SecretValue {
    /// Takes ownership of `value`; its buffer is wiped when this value drops.
    pub fn new(value: String) -> Self {
        Self(Zeroizing::new(value))
    }

    /// The plaintext, for the API call that needs it and nothing else.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Length in bytes: what decides the parameter tier.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the value is empty (SSM and Secrets Manager refuse empty values).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretValue(<{} bytes redacted>)", self.0.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_value() {
        let v = SecretValue::new("hunter2-very-secret".to_owned());
        let shown = format!("{v:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("19 bytes"), "{shown}");
    }
}
