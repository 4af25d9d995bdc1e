//! The rules for AWS names, in one place for both lockbox binaries (the extension and the
//! rotator), so that they accept and refuse the same ARNs, regions, roles and session
//! names, and classify an AWS error the same way.
//!
//! - [`Partition`]: every current partition, the isolated ones and the European Sovereign
//!   Cloud's included; nothing here assumes `arn:aws:`.
//! - [`Arn`]: `arn:PARTITION:SERVICE:REGION:ACCOUNT:RESOURCE`, split and checked.
//! - [`AccountId`], [`RegionName`], [`RoleArn`], [`SessionName`], [`ExternalId`]: checked
//!   names, each with a typed error that says what is wrong.
//! - [`ErrorClass`] and [`classify`]: transient, throttled or permanent, from an AWS error
//!   code and HTTP status.
//!
//! No I/O and no AWS SDK: the crate is the rules alone.

mod arn;
mod classify;
mod names;

pub use arn::{Arn, ArnError, Partition};
pub use classify::{classify, is_throttling_code, ErrorClass};
pub use names::{AccountId, ExternalId, NameError, RegionName, RoleArn, SessionName};
