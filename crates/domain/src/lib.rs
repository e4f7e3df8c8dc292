//! modelyard's domain: the types every layer speaks and the lifecycle rules.
//!
//! Nothing here does I/O. The rules are plain functions of facts that storage gathers inside
//! the transaction that acts on them, so the API, the web UI and the CLI all get the same answer.
#![forbid(unsafe_code)]

pub mod cog_yaml;
pub mod hardware;
pub mod ids;
pub mod names;
pub mod rules;
pub mod types;
pub mod worker;

pub use rules::{Blocker, BlockerKind};
pub use types::*;
