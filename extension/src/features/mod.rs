//! What lockbox does beyond answering one request: [`prefetch`] during Init, [`refresh`]
//! ahead of expiry on each INVOKE (or on a [`background`] timer where the environment is
//! never frozen), [`render`] template files, [`reference`]s (`{{resolve:...}}`) parsed and
//! resolved in one round of batch reads, and under SnapStart a [`restore`] watch that
//! forgets the cache as soon as a request shows a restore. Each works on the core the
//! lifecycle hands it, through the reads of `read`.

pub mod background;
pub mod prefetch;
pub mod reference;
pub mod refresh;
pub mod render;
pub mod restore;
