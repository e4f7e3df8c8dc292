//! The use cases: every operation the API, the web UI and (through the API) the CLI perform,
//! written once. Each takes plain values and request structs, applies the rules and returns
//! domain records or an [`OpError`]; none knows HTTP. `api/` and `web/` are adapters around
//! these: they parse their input, call one operation, and render its answer.
mod deletion;
mod error;
mod validate;

pub mod accounts;
pub mod deployments;
pub mod files;
pub mod jobs;
pub mod models;
pub mod trash;
pub mod versions;

pub use deletion::{DeleteMode, DeleteOutcome};
pub use error::{InvalidField, OpError, OpResult};
// Pushing (`push/`) looks its model up through here.
pub use models::managed_model;
