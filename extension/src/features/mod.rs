//! What lockbox does beyond answering one request: [`prefetch`] during Init, [`refresh`]
//! ahead of expiry on each INVOKE, [`render`] template files, and [`reference`]s
//! (`{{resolve:...}}`) parsed and resolved in one round of batch reads. Each works on the
//! core the lifecycle hands it, through the reads of `read`.

pub mod prefetch;
pub mod reference;
pub mod refresh;
pub mod render;
