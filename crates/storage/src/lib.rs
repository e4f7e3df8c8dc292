//! modelyard's storage: one trait in domain terms, with SQLite and PostgreSQL behind it.
//!
//! Both backends run the same SQL through sqlx's `Any` driver; the few places where they differ
//! are named in [`dialect::Dialect`]. Every check-and-act happens in one transaction that holds
//! the write lock (SQLite `BEGIN IMMEDIATE`) or row locks (PostgreSQL `FOR UPDATE`), with
//! foreign keys as the backstop.
#![forbid(unsafe_code)]

mod dialect;
mod error;
mod rows;
mod sql;
mod store;

pub use error::StoreError;
pub use sql::{FileRecord, NewFile, SqlStore};
pub use store::{Deletion, JobEnd, MemberRemoval, Store};

pub type Result<T, E = StoreError> = std::result::Result<T, E>;
