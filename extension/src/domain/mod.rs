//! The domain: what lockbox reads, caches and serves, with no I/O. Every layer above uses
//! these types; this layer imports none of them.
//!
//! - [`value`]: text and bytes that may be secret (zeroized on drop, never in `Debug`),
//!   labels, timestamps;
//! - [`parameter`] and [`secret`]: the values as AWS returns them;
//! - [`keyring`]: a parameter's `current`, `previous` and `pending` versions together,
//!   and how one `GetParameters` answer is placed into them;
//! - [`selector`]: how a read names a parameter (name or ARN, version or label);
//! - [`json_key`]: one key out of a JSON value, for `jsonKey=` and references alike,
//!   wiping what it parsed;
//! - [`scope`]: ARNs, role ARNs, region names, and the scope (role and region) a value is
//!   read with, part of every cache key;
//! - [`mode`]: the kind of Lambda environment (`AWS_LAMBDA_INITIALIZATION_TYPE`) and what
//!   it allows an extension.

pub mod json_key;
pub mod keyring;
pub mod mode;
pub mod parameter;
pub mod scope;
pub mod secret;
pub mod selector;
pub mod value;

pub use keyring::{keyring_names, Keyring, KeyringError, Slot, Sorting};
pub use parameter::{ArnPrefixes, Parameter, ParameterArn, ParameterExtra};
pub use scope::{Arn, AskedScope, NameError, RegionName, RoleArn, RolePolicy, Scope, HOME};
pub use secret::{secret_answers_to, Secret, SecretBatchError, SecretVersion};
pub use selector::{ParameterName, Selector};
pub use value::{label, Label, SecretBytes, SecretText, Timestamp};
