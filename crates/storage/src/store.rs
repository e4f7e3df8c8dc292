use async_trait::async_trait;
use chrono::{DateTime, Duration, Utc};
use modelyard_domain::*;

use crate::{FileRecord, NewFile, Result};

/// How a job ended.
#[derive(Debug, Clone)]
pub struct JobEnd {
    pub status: Status,
    pub output: Option<serde_json::Value>,
    pub error: Option<String>,
    pub logs: String,
    pub metrics: serde_json::Value,
    /// For a training: the version it produced.
    pub result_version_id: Option<String>,
    /// Given by the runner, so the answer it builds matches the record to the microsecond.
    pub completed_at: DateTime<Utc>,
}

/// What a deletion (or its preview) came to. `deleted` is false when blockers stood in the way
/// or when it was only a preview.
#[derive(Debug, Clone, Default)]
pub struct Deletion {
    pub blockers: Vec<Blocker>,
    pub deleted: bool,
    /// An artifact that no version references any more, for the caller to remove from disk.
    pub unreferenced_artifact: Option<String>,
}

/// What removing a member from an organization came to. Nothing changed unless `Removed`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MemberRemoval {
    Removed,
    /// The account is not a member of the organization (or the organization does not exist).
    NotAMember,
    /// The rules refused (`rules::member_removal_blockers`).
    Refused(Vec<Blocker>),
}

/// One of an account's API tokens, as the account page lists it (never the token itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRecord {
    /// The SHA-256 of the token, in hex.
    pub hash: String,
    pub name: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// What signing in needs: the account, and its password hash (`None` when no password is set).
#[derive(Debug, Clone)]
pub struct PasswordRecord {
    pub account: Account,
    /// An argon2 PHC string.
    pub hash: Option<String>,
}

/// The platform's storage, in domain terms: every entity's trait at once, for the callers that
/// hold an `Arc<dyn Store>`. Each trait is implemented for [`crate::SqlStore`] in the file of
/// its entity (`sql/accounts.rs`, `sql/models.rs`, ...); a caller `use`s the traits whose
/// methods it calls (or `modelyard_storage::prelude::*`).
pub trait Store:
    AccountStore
    + SessionStore
    + ModelStore
    + VersionStore
    + JobStore
    + DeploymentStore
    + FileStore
    + AuditStore
    + 'static
{
}

impl<T> Store for T where
    T: AccountStore
        + SessionStore
        + ModelStore
        + VersionStore
        + JobStore
        + DeploymentStore
        + FileStore
        + AuditStore
        + 'static
{
}

/// Accounts (users and organizations), memberships, API tokens and webhook secrets
/// (`sql/accounts.rs`).
#[async_trait]
pub trait AccountStore: Send + Sync {
    async fn create_account(
        &self,
        kind: AccountKind,
        username: &str,
        name: &str,
    ) -> Result<Account>;
    async fn account(&self, username: &str) -> Result<Option<Account>>;
    /// These accounts, by username.
    async fn accounts_by_ids(&self, ids: &[i64]) -> Result<Vec<Account>>;
    async fn add_member(&self, org_id: i64, user_id: i64) -> Result<()>;
    async fn members(&self, org_id: i64) -> Result<Vec<Account>>;
    /// Removes a member, checking in the same write transaction that the organization keeps
    /// one (`rules::member_removal_blockers`).
    async fn remove_member(&self, org_id: i64, user_id: i64) -> Result<MemberRemoval>;
    async fn add_token(&self, account_id: i64, token_hash: &str) -> Result<()>;
    async fn add_named_token(&self, account_id: i64, token_hash: &str, name: &str) -> Result<()>;
    /// The account's API tokens, newest first.
    async fn tokens(&self, account_id: i64) -> Result<Vec<TokenRecord>>;
    /// Deletes one of the account's tokens; false when it has no such token.
    async fn revoke_token(&self, account_id: i64, token_hash: &str) -> Result<bool>;
    async fn caller_by_token(&self, token_hash: &str) -> Result<Option<Caller>>;
    /// The account's webhook signing secret; `candidate` becomes it on first use.
    async fn webhook_secret(&self, account_id: i64, candidate: &str) -> Result<String>;
}

/// Signing in to the web UI: passwords and sessions (`sql/sessions.rs`).
#[async_trait]
pub trait SessionStore: Send + Sync {
    /// Sets a user's password (an argon2 PHC string), or with `None` removes it and ends the
    /// account's sessions.
    async fn set_password_hash(&self, account_id: i64, hash: Option<&str>) -> Result<()>;
    /// The account and its password hash, for signing in.
    async fn password_hash(&self, username: &str) -> Result<Option<PasswordRecord>>;
    /// Records a session by the SHA-256 of its cookie.
    async fn create_session(
        &self,
        hash: &str,
        account_id: i64,
        expires_at: DateTime<Utc>,
    ) -> Result<()>;
    /// The signed-in caller of a session that has not expired at `now`.
    async fn session_caller(&self, hash: &str, now: DateTime<Utc>) -> Result<Option<Caller>>;
    async fn delete_session(&self, hash: &str) -> Result<()>;
}

/// Models, and their deletion (`sql/models.rs`).
#[async_trait]
pub trait ModelStore: Send + Sync {
    async fn create_model(&self, m: NewModel) -> Result<Model>;
    async fn model(&self, owner: &str, name: &str) -> Result<Option<Model>>;
    /// Models the viewer may see (public ones, and those of the accounts it acts for), newest
    /// first, optionally matching `query` in the name, owner or description.
    async fn list_models(
        &self,
        viewer: Option<&Caller>,
        query: Option<&str>,
        page: PageReq,
    ) -> Result<Vec<Model>>;
    /// Models owned by these accounts, newest first.
    async fn models_owned_by(&self, owner_ids: &[i64], limit: i64) -> Result<Vec<Model>>;
    async fn update_model(&self, id: i64, patch: ModelPatch) -> Result<Model>;
    async fn delete_model(&self, model_id: i64, caller: &Caller, dry_run: bool)
        -> Result<Deletion>;
}

/// Versions of models, and their deletion (`sql/versions.rs`).
#[async_trait]
pub trait VersionStore: Send + Sync {
    async fn versions(&self, model_id: i64, page: PageReq) -> Result<Vec<Version>>;
    async fn version(&self, model_id: i64, id: &str) -> Result<Option<Version>>;
    /// A bare version id, unique across models, with the model it belongs to.
    async fn version_by_id(&self, id: &str) -> Result<Option<(Model, Version)>>;
    /// The model `owner/name` and its version `id` (`None` when the model has no such
    /// version), in one statement.
    async fn model_and_version(
        &self,
        owner: &str,
        name: &str,
        id: &str,
    ) -> Result<Option<(Model, Option<Version>)>>;
    /// Creates the version, or returns the existing one for the same content (`false`).
    async fn create_version(&self, v: NewVersion) -> Result<(Version, bool)>;
    async fn artifact_in_use(&self, artifact: &str) -> Result<bool>;
    /// Whether any version is set up with these stored weights.
    async fn weights_in_use(&self, weights: &str) -> Result<bool>;
    /// How many predictions anyone has run with the version.
    async fn version_prediction_count(&self, version_id: &str) -> Result<i64>;
    async fn delete_version(
        &self,
        model_id: i64,
        version_id: &str,
        caller: &Caller,
        dry_run: bool,
    ) -> Result<Deletion>;
}

/// Predictions and trainings, and the queue the runner takes them from (`sql/jobs.rs`).
#[async_trait]
pub trait JobStore: Send + Sync {
    async fn create_job(&self, j: NewJob) -> Result<Job>;
    async fn job(&self, kind: JobKind, id: &str) -> Result<Option<Job>>;
    async fn list_jobs(&self, kind: JobKind, account_id: i64, page: PageReq) -> Result<Vec<Job>>;
    /// One account's predictions of one model, newest first.
    async fn model_jobs(&self, model_id: i64, account_id: i64, limit: i64) -> Result<Vec<Job>>;
    /// Cancels a job that has not finished; a finished one is returned unchanged.
    async fn cancel_job(&self, kind: JobKind, id: &str) -> Result<Job>;
    /// Queued jobs that no runner has taken, oldest first.
    async fn queued_jobs(&self, limit: i64) -> Result<Vec<Job>>;
    /// Takes a queued job; false when it was taken or canceled meanwhile.
    async fn claim_job(&self, id: &str) -> Result<bool>;
    /// Takes a queued job and marks it `processing` at once (a warm server is free for it).
    async fn claim_and_start_job(&self, id: &str, at: DateTime<Utc>) -> Result<bool>;
    /// Puts a taken job back in the queue.
    async fn release_job(&self, id: &str) -> Result<()>;
    /// starting -> processing; false when the job was canceled meanwhile.
    async fn job_started(&self, id: &str, at: DateTime<Utc>) -> Result<bool>;
    /// Logs and output so far, while the job runs.
    async fn job_progress(
        &self,
        id: &str,
        logs: &str,
        output: Option<&serde_json::Value>,
    ) -> Result<()>;
    /// Ends a job that has not ended; false when it had (a cancel won the race).
    async fn finish_job(&self, id: &str, end: JobEnd) -> Result<bool>;
    /// After a restart: jobs that were running failed, jobs that were taken are queued again;
    /// returns (failed, requeued).
    async fn recover_jobs(&self, error: &str) -> Result<(u64, u64)>;
    /// Cancels the queued work of a deployment (it was disabled).
    async fn cancel_queued_for_deployment(&self, deployment_id: i64) -> Result<u64>;
    /// Clears input, output and logs of finished jobs from `source` created before `before`;
    /// returns their ids, for their files to go too.
    async fn remove_job_data(&self, source: &str, before: DateTime<Utc>) -> Result<Vec<String>>;
}

/// Deployments and their releases, and their deletion (`sql/deployments.rs`).
#[async_trait]
pub trait DeploymentStore: Send + Sync {
    async fn create_deployment(
        &self,
        owner_id: i64,
        name: &str,
        release: NewRelease,
        created_by: &str,
    ) -> Result<Deployment>;
    async fn deployment(&self, owner: &str, name: &str) -> Result<Option<Deployment>>;
    async fn list_deployments(&self, owner_ids: &[i64], page: PageReq) -> Result<Vec<Deployment>>;
    /// Every deployment, for the runner to keep their instances warm.
    async fn all_deployments(&self) -> Result<Vec<Deployment>>;
    async fn update_deployment(
        &self,
        id: i64,
        release: NewRelease,
        created_by: &str,
    ) -> Result<Deployment>;
    async fn delete_deployment(
        &self,
        id: i64,
        caller: &Caller,
        dry_run: bool,
        now: DateTime<Utc>,
        idle: Duration,
    ) -> Result<Deletion>;
}

/// Uploaded files (the Files API); their bytes live in the data directory (`sql/files.rs`).
#[async_trait]
pub trait FileStore: Send + Sync {
    async fn create_file(&self, f: NewFile) -> Result<FileRecord>;
    async fn file(&self, id: &str) -> Result<Option<FileRecord>>;
    /// The account's files, newest first.
    async fn list_files(&self, account_id: i64, page: PageReq) -> Result<Vec<FileRecord>>;
    /// Deletes one of the account's files; false when it has no such file.
    async fn delete_file(&self, account_id: i64, id: &str) -> Result<bool>;
    /// Forgets the files that expired before `now`; returns their ids, for their bytes to go too.
    async fn remove_expired_files(&self, now: DateTime<Utc>) -> Result<Vec<String>>;
}

/// The audit log (`sql/audit.rs`). Deletions write theirs inside their own transaction.
#[async_trait]
pub trait AuditStore: Send + Sync {
    async fn record_audit(&self, e: NewAuditEvent) -> Result<()>;
    async fn audit_events(&self, owner_ids: &[i64], page: PageReq) -> Result<Vec<AuditEvent>>;
}
