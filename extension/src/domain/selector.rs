//! How a read names a parameter: its name or ARN, and which version.

use std::fmt;

/// Which version of a parameter: `name:3` or `name:label`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Selector {
    /// A version number.
    Version(u64),
    /// A label attached to one version.
    Label(String),
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Selector::Version(v) => write!(f, ":{v}"),
            Selector::Label(l) => write!(f, ":{l}"),
        }
    }
}

/// A parameter as a read names it: name (or ARN) and an optional selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParameterName {
    /// Name or ARN without selector.
    pub name: String,
    /// Version or label.
    pub selector: Option<Selector>,
}

impl ParameterName {
    /// The name as SSM's `GetParameter` takes it, selector inline (`/app/db:3`).
    pub fn api_name(&self) -> String {
        match &self.selector {
            Some(selector) => format!("{}{selector}", self.name),
            None => self.name.clone(),
        }
    }
}
