//! The localhost HTTP API: [`api`] (routes, headers, token: the contract the exec wrapper's
//! client shares), [`query`] (query strings into typed requests), [`envelope`] (the AWS
//! layer's JSON shapes), [`body`] (the wiping response buffer), [`error`] (every failure
//! as one status and JSON body) [`server`] (the router, the guard and the socket) and [`write_timeout`] (a bound on how
//! long a response waits for a client that stopped reading).

pub mod api;
pub mod body;
pub mod envelope;
pub mod error;
pub mod query;
pub mod server;
pub mod write_timeout;

pub use api::AuthToken;
pub use error::ApiError;
pub use server::{bind, router, serve, App, ServerLimits};
