//! What is wrong with an input. Its own module because both the input's parser and the
//! account settings it holds (`account.rs`) report it, and neither should import the other
//! for it.

/// What is wrong with an input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InputError {
    /// Not JSON, wrong types, unknown or missing fields.
    #[error("input does not parse: {0}")]
    Parse(String),
    /// Parsed, but a value is not acceptable.
    #[error("invalid input: {0}")]
    Invalid(String),
}
