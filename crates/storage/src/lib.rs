//! modelyard's storage: one trait per entity, in domain terms, with SQLite and PostgreSQL
//! behind them. [`Store`] is all of them at once, for callers holding an `Arc<dyn Store>`.
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
pub use sql::{written_elsewhere, FileRecord, NewFile, SqlStore};
pub use store::{
    AccountStorage, AccountStore, AuditStore, ContentLock, ContentLockStore, Deletion,
    DeploymentStore, FileStore, JobEnd, JobLease, JobStore, KeptReason, Listener, MemberRemoval,
    ModelStore, NameInTrash, Notice, NotifyStore, PasswordRecord, Prune, Purge, PurgeBy,
    RecoveredJobs, Restore, SessionStore, SettingStore, SizeStore, Storage, Store, StoredVersion,
    TokenRecord, TrashItem, TrashKind, TrashStore, Unreferenced, VersionStore, WarmSlot,
    WorkerStore, NOTICE_MAX,
};

/// Every storage trait, for code that calls methods on a concrete [`SqlStore`].
pub mod prelude {
    pub use crate::store::{
        AccountStore, AuditStore, ContentLockStore, DeploymentStore, FileStore, JobStore,
        ModelStore, NotifyStore, SessionStore, SettingStore, SizeStore, Store, TrashStore,
        VersionStore, WorkerStore,
    };
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;
