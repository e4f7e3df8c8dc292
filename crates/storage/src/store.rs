use async_trait::async_trait;
use chrono::{DateTime, Duration, Utc};
use modelyard_domain::worker::{Need, Offer, Worker};
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
/// or when it was only a preview. A deletion to the trash is `deleted` too (it is gone from
/// every read at once), with `purge_at` set.
/// What [`VersionStore::create_version`] did: `created` is false when the same content was
/// already a version of the model (a push of the same project twice).
#[derive(Debug, Clone)]
pub struct StoredVersion {
    pub version: Version,
    pub created: bool,
}

/// A worker's hold on a job it takes: the job goes back to the queue, or fails, once `until`
/// passes without a renewal ([`JobStore::expire_leases`]).
#[derive(Debug, Clone)]
pub struct JobLease {
    pub worker_id: String,
    pub until: DateTime<Utc>,
}

/// One of a deployment's `min_instances`, held by this worker: it keeps one server of
/// `version_id` warm.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WarmSlot {
    pub deployment_id: i64,
    pub slot: i64,
    pub version_id: String,
}

/// What [`JobStore::recover_jobs`] and [`JobStore::expire_leases`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecoveredJobs {
    /// Jobs that were running: they failed.
    pub failed: u64,
    /// Jobs that were taken but not started: they are queued again.
    pub requeued: u64,
}

#[derive(Debug, Clone, Default)]
pub struct Deletion {
    pub blockers: Vec<Blocker>,
    pub deleted: bool,
    /// An artifact that no version references any more, for the caller to remove from disk.
    /// Also in `unreferenced.artifacts`, which a final model deletion may fill with more.
    pub unreferenced_artifact: Option<String>,
    /// Every artifact and weights file a final deletion left unreferenced (a model's final
    /// deletion also purges its versions in the trash). Empty for a move to the trash.
    pub unreferenced: Unreferenced,
    /// Set when the item went to the trash: when the sweep will purge it.
    pub purge_at: Option<DateTime<Utc>>,
    /// The bytes the deletion frees once purged (also in a preview): the stored files of what
    /// goes that no other version keeps, counting what is already in the trash as going too.
    pub frees_bytes: i64,
}

/// Stored files no version references any more, for the caller to release from disk
/// (`Blobs::release`, which checks again with `artifact_in_use` / `weights_in_use`), then to
/// forget with [`SizeStore::forget_artifact`] / [`SizeStore::forget_weights`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Unreferenced {
    pub artifacts: Vec<String>,
    pub weights: Vec<String>,
}

/// A model or a version in its owner's trash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrashKind {
    Model,
    Version,
}

impl TrashKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TrashKind::Model => "model",
            TrashKind::Version => "version",
        }
    }
}

/// One item of a trash. A version of a trashed model is an item of its own (with its own
/// `purge_at`); it can be restored once its model is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrashItem {
    pub kind: TrashKind,
    pub model_id: i64,
    pub owner_id: i64,
    pub owner: String,
    pub name: String,
    /// For a version.
    pub version_id: Option<String>,
    pub trashed_at: DateTime<Utc>,
    pub purge_at: DateTime<Utc>,
    /// The account that deleted it (`None` if that account is gone).
    pub trashed_by: Option<String>,
    /// What purging it frees: its stored bytes that no version outside the trash keeps.
    pub frees_bytes: i64,
}

impl TrashItem {
    /// "owner/name", or "owner/name:id" for a version.
    pub fn target(&self) -> String {
        match &self.version_id {
            Some(v) => format!("{}/{}:{v}", self.owner, self.name),
            None => format!("{}/{}", self.owner, self.name),
        }
    }
}

/// What restoring from the trash came to. Nothing changed unless `Restored`.
#[derive(Debug, Clone)]
pub enum Restore<T> {
    Restored(T),
    /// Not in the trash, or not in a trash the caller acts for (`rules::can_manage`): a 404.
    NotInTrash,
    /// The rules refused (`rules::restore_blockers`), with every blocker; the refusal is audited.
    Refused(Vec<Blocker>),
}

/// Who purges: an owner at once (`rules::can_manage` decides), or the sweep, which purges only
/// what expired by `now` (checked again in the purging transaction, so an item restored and
/// deleted again meanwhile waits for its new time).
#[derive(Debug, Clone, Copy)]
pub enum PurgeBy<'a> {
    Owner(&'a Caller),
    Sweep { now: DateTime<Utc> },
}

/// What purging came to. Nothing changed unless `Purged`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Purge {
    /// The rows are gone; these files are no longer referenced, for the caller to release.
    Purged(Unreferenced),
    /// Not in the trash (restored or purged meanwhile), not yet expired (sweep), or not in a
    /// trash the caller acts for.
    NotInTrash,
    /// The rules refused (`rules::purge_blockers`).
    Refused(Vec<Blocker>),
}

/// A model name that its owner's trash keeps: creating a model with it is refused until the
/// trashed model is purged (or restored, and then it is simply taken).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameInTrash {
    pub owner: String,
    pub name: String,
    pub purge_at: DateTime<Utc>,
}

impl std::fmt::Display for NameInTrash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "The model {}/{} is in the trash until {}: restore it, or purge it to use its name \
             for a new model.",
            self.owner,
            self.name,
            self.purge_at
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        )
    }
}

/// Why a version was kept by a prune.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeptReason {
    /// One of the `keep` newest.
    Newest,
    /// The rules refused its deletion.
    Blocked(Vec<Blocker>),
}

/// What pruning a model's versions came to (or would, for a dry run): one decision per version,
/// newest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Prune {
    /// Deleted (or, in a dry run, deletable) versions.
    pub deleted: Vec<String>,
    pub kept: Vec<(String, KeptReason)>,
    /// What the deleted versions free once purged, together.
    pub frees_bytes: i64,
    /// Files the final deletions (no trash) left unreferenced.
    pub unreferenced: Unreferenced,
}

/// Stored bytes of a version or a model: its artifact's files and its weights, and how many of
/// those bytes no other version (of another model, for a model) keeps, in the trash or not.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Storage {
    pub bytes: i64,
    pub unique_bytes: i64,
}

/// An account's stored bytes: its models' versions (in the trash too), those no other account's
/// version keeps, and what purging its trash would free.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AccountStorage {
    pub bytes: i64,
    pub unique_bytes: i64,
    pub trash_bytes: i64,
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
    + TrashStore
    + SizeStore
    + SettingStore
    + WorkerStore
    + NotifyStore
    + ContentLockStore
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
        + TrashStore
        + SizeStore
        + SettingStore
        + WorkerStore
        + NotifyStore
        + ContentLockStore
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

/// Models, and their final deletion (`sql/models.rs`). Every read here leaves out models in the
/// trash (see [`TrashStore`]).
#[async_trait]
pub trait ModelStore: Send + Sync {
    /// Creates a model; a name that is taken is `Conflict`, with a sentence saying so (and, for
    /// a name its owner's trash keeps, until when: see [`Self::create_model_checked`]).
    async fn create_model(&self, m: NewModel) -> Result<Model>;
    /// Like [`Self::create_model`], but a name kept by a model in its owner's trash comes back
    /// typed, with the time it is purged, for a 409 that says how to free it.
    async fn create_model_checked(&self, m: NewModel) -> Result<Result<Model, NameInTrash>>;
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
    /// Deletes a model at once and for good (no trash: `--trash-days 0`), under
    /// `rules::model_deletion_blockers`, counting only versions outside the trash; its versions
    /// in the trash go with it (`unreferenced` names their files). A preview reports
    /// `frees_bytes`.
    async fn delete_model(&self, model_id: i64, caller: &Caller, dry_run: bool)
        -> Result<Deletion>;
}

/// Versions of models, and their final deletion (`sql/versions.rs`). Every read here leaves out
/// versions in the trash, and versions of models in the trash.
#[async_trait]
pub trait VersionStore: Send + Sync {
    async fn versions(&self, model_id: i64, page: PageReq) -> Result<Vec<Version>>;
    async fn version(&self, model_id: i64, id: &str) -> Result<Option<Version>>;
    /// A bare version id, unique across models, with the model it belongs to.
    async fn version_by_id(&self, id: &str) -> Result<Option<ModelVersion>>;
    /// The model `owner/name` and its version `id` (`None` when the model has no such
    /// version), in one statement; neither in the trash.
    async fn model_and_version(
        &self,
        owner: &str,
        name: &str,
        id: &str,
    ) -> Result<Option<(Model, Option<Version>)>>;
    /// Creates the version, or returns the existing one for the same content (`false`). A model
    /// (or fine-tune base) that is gone or in the trash is `NotFound`; the same content as a
    /// version in the trash is `Conflict`, saying to restore or purge it.
    async fn create_version(&self, v: NewVersion) -> Result<StoredVersion>;
    /// Whether any version, in the trash or not, references the artifact (its files stay).
    async fn artifact_in_use(&self, artifact: &str) -> Result<bool>;
    /// Whether any version, in the trash or not, is set up with these stored weights.
    async fn weights_in_use(&self, weights: &str) -> Result<bool>;
    /// How many predictions anyone has run with the version.
    async fn version_prediction_count(&self, version_id: &str) -> Result<i64>;
    /// Deletes a version at once and for good (no trash: `--trash-days 0`), under
    /// `rules::version_deletion_blockers`, in one transaction with its audit event. A preview
    /// reports `frees_bytes`.
    async fn delete_version(
        &self,
        model_id: i64,
        version_id: &str,
        caller: &Caller,
        dry_run: bool,
    ) -> Result<Deletion>;
}

/// The trash (`sql/trash.rs`): a deletion that passes the rules hides the model or version from
/// every read at once and keeps it until `purge_at`; the owner may restore it until then, or
/// purge it at once; the sweep purges what expired. Each of these is one transaction with its
/// audit event. A trashed model keeps its name (the unique key still holds it).
///
/// While a version is in the trash, its owner's predictions and its finished trainings are
/// kept, hidden (unfinished ones are canceled when it goes), and its model's `run_count` leaves
/// them out; a restore brings all of it back. Nothing can be created against it: predictions,
/// trainings, deployment releases and fine-tunes answer `NotFound("version")`.
#[async_trait]
pub trait TrashStore: Send + Sync {
    /// [`ModelStore::delete_model`]'s rules and transaction, but the model goes to the trash
    /// until `purge_at`. A preview changes nothing.
    async fn trash_model(
        &self,
        model_id: i64,
        caller: &Caller,
        dry_run: bool,
        purge_at: DateTime<Utc>,
    ) -> Result<Deletion>;
    /// [`VersionStore::delete_version`]'s rules and transaction, but the version goes to the
    /// trash until `purge_at`. A preview changes nothing.
    async fn trash_version(
        &self,
        model_id: i64,
        version_id: &str,
        caller: &Caller,
        dry_run: bool,
        purge_at: DateTime<Utc>,
    ) -> Result<Deletion>;
    /// The model "owner/name" if it is in the trash.
    async fn trashed_model(&self, owner: &str, name: &str) -> Result<Option<TrashItem>>;
    /// The version of "owner/name" if it is in the trash (its model may be live or trashed).
    async fn trashed_version(
        &self,
        owner: &str,
        name: &str,
        version_id: &str,
    ) -> Result<Option<TrashItem>>;
    /// Brings a model back, by its owner (`rules::can_manage`), with the name it kept. Its
    /// versions in the trash stay there, to be restored one by one.
    async fn restore_model(&self, model_id: i64, caller: &Caller) -> Result<Restore<Model>>;
    /// Brings a version back with everything it had, by its owner; refused while its model is
    /// in the trash (`rules::restore_blockers`).
    async fn restore_version(
        &self,
        model_id: i64,
        version_id: &str,
        caller: &Caller,
    ) -> Result<Restore<Version>>;
    /// Deletes a trashed model for good, with its versions (all in the trash).
    async fn purge_model(&self, model_id: i64, by: PurgeBy<'_>) -> Result<Purge>;
    /// Deletes a trashed version for good, with its owner's predictions and its trainings.
    async fn purge_version(
        &self,
        model_id: i64,
        version_id: &str,
        by: PurgeBy<'_>,
    ) -> Result<Purge>;
    /// The trashes of these accounts, most recently deleted first, with what each item frees.
    /// Paged by the time of deletion: `page.after` is the last item's `trashed_at` in
    /// microseconds.
    async fn trash(&self, owner_ids: &[i64], page: PageReq) -> Result<Vec<TrashItem>>;
    /// At most `limit` items whose `purge_at` is past `now`, soonest first, for the sweep
    /// (`frees_bytes` is 0 here: the sweep needs none). Versions of a trashed model are listed
    /// too (purging the model takes them along, and then their own purge finds them gone:
    /// `NotInTrash`).
    async fn expired_trash(&self, now: DateTime<Utc>, limit: i64) -> Result<Vec<TrashItem>>;
    /// Deletes every version of the model that the rules let go, except the `keep` newest:
    /// one decision per version, each in its own transaction like a single deletion, to the
    /// trash until `purge_at` (or for good with `None`). A dry run changes nothing and reports
    /// the same decisions, with what the deletions would free together.
    async fn prune_versions(
        &self,
        model_id: i64,
        keep: usize,
        caller: &Caller,
        dry_run: bool,
        purge_at: Option<DateTime<Utc>>,
    ) -> Result<Prune>;
}

/// Sizes of stored files, for what a deletion frees (`sql/sizes.rs`). The server records an
/// artifact's contents and a weights file's size when it stores them; the queries reach them
/// only through versions, so a version's storage is what its artifact and weights hold.
#[async_trait]
pub trait SizeStore: Send + Sync {
    /// Records which blobs (file names under `blobs/`: the sha256, `-x` for an executable) an
    /// artifact tree links, and their sizes. Idempotent. Call it after the version exists and
    /// under the data directory's lock (`Blobs::lock`), like [`Self::forget_artifact`].
    async fn record_artifact(&self, artifact: &str, blobs: &[(String, i64)]) -> Result<()>;
    /// Records the size of a stored weights file ("<sha256>/<name>", as versions name it).
    async fn record_weights(&self, weights: &str, bytes: i64) -> Result<()>;
    /// Forgets an artifact's contents once no version references it (after `Blobs::release`
    /// removed its tree, under the same lock), and the blobs no artifact links any more.
    async fn forget_artifact(&self, artifact: &str) -> Result<()>;
    /// Forgets a weights file's size once no version uses it.
    async fn forget_weights(&self, weights: &str) -> Result<()>;
    /// The blobs recorded for an artifact (what its tree links), for a release to check only
    /// those once the tree is gone; empty when none were recorded.
    async fn artifact_blobs(&self, artifact: &str) -> Result<Vec<String>>;
    /// Whether any recorded artifact still links the blob `blob`.
    async fn blob_in_use(&self, blob: &str) -> Result<bool>;
    /// Artifacts some version references whose contents were never recorded (stored before
    /// sizes were), at most `limit`, for the server to record from disk.
    async fn artifacts_without_sizes(&self, limit: i64) -> Result<Vec<String>>;
    /// A version's storage (in the trash or not): `NotFound` when there is no such version.
    async fn version_storage(&self, version_id: &str) -> Result<Storage>;
    /// A model's storage, over all its versions; `unique_bytes` is what no other model's
    /// version keeps.
    async fn model_storage(&self, model_id: i64) -> Result<Storage>;
    /// An account's storage over its models' versions, and what purging its trash frees.
    async fn account_storage(&self, owner_id: i64) -> Result<AccountStorage>;
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
    /// Queued jobs that no worker has taken and that this offer may take, oldest first: the
    /// job's hardware (its deployment's, else its model's) is offered, and a `gpu` version
    /// only where a GPU is ([`Offer::takes`]).
    async fn queued_jobs(&self, offer: &Offer, limit: i64) -> Result<Vec<Job>>;
    /// Takes a queued job for a worker, under a lease; false when it was taken or canceled
    /// meanwhile, when the offer does not take it, or when its deployment already runs `max_instances` jobs across the cluster.
    /// On PostgreSQL a job another worker is taking is skipped, not waited for.
    async fn claim_job(&self, id: &str, offer: &Offer, lease: &JobLease) -> Result<bool>;
    /// As [`Self::claim_job`], and marks it `processing` at once (a warm server is free for it).
    async fn claim_and_start_job(
        &self,
        id: &str,
        offer: &Offer,
        lease: &JobLease,
        at: DateTime<Utc>,
    ) -> Result<bool>;
    /// Puts a job the worker took back in the queue (not one its lease lost meanwhile).
    async fn release_job(&self, id: &str, worker_id: &str) -> Result<()>;
    /// Extends the lease of every job the worker holds, in one statement.
    async fn renew_leases(&self, worker_id: &str, until: DateTime<Utc>) -> Result<u64>;
    /// Jobs whose lease passed before `now` (their worker stopped answering): those that had
    /// started fail with `error`, those only taken are queued again. Idempotent, so every node
    /// may run it.
    async fn expire_leases(&self, now: DateTime<Utc>, error: &str) -> Result<RecoveredJobs>;
    /// Queued jobs whose logs do not yet say what they wait for, oldest first, with what
    /// they need, for the runner to tell those that no live worker could take.
    async fn unnoted_needs(&self, limit: i64) -> Result<Vec<Need>>;
    /// Appends `line` to a queued job's logs, once; false when it was noted, taken or ended.
    async fn note_waiting(&self, id: &str, line: &str) -> Result<bool>;
    /// starting -> processing for the worker holding the job; false when it was canceled
    /// meanwhile, or when the worker's lease ran out and the job went back to the queue (it
    /// may run elsewhere now).
    async fn job_started(&self, id: &str, worker_id: &str, at: DateTime<Utc>) -> Result<bool>;
    /// Logs and output so far, while the job runs.
    async fn job_progress(
        &self,
        id: &str,
        logs: &str,
        output: Option<&serde_json::Value>,
    ) -> Result<()>;
    /// Ends a job that has not ended; false when it had (a cancel won the race).
    async fn finish_job(&self, id: &str, end: JobEnd) -> Result<bool>;
    /// After a restart: jobs that were running failed, jobs that were taken are queued again.
    async fn recover_jobs(&self, error: &str) -> Result<RecoveredJobs>;
    /// Cancels the queued work of a deployment (it was disabled).
    async fn cancel_queued_for_deployment(&self, deployment_id: i64) -> Result<u64>;
    /// Clears input, output and logs of finished jobs from `source` created before `before`;
    /// returns their ids, for their files to go too.
    async fn remove_job_data(&self, source: &str, before: DateTime<Utc>) -> Result<Vec<String>>;
}

/// The workers of a cluster, their heartbeats, and the warm servers of deployments they hold
/// (`sql/workers.rs`). A worker is live while its heartbeat is younger than its lease.
#[async_trait]
pub trait WorkerStore: Send + Sync {
    /// Records a worker that starts, its heartbeat now.
    async fn register_worker(&self, w: &Worker) -> Result<()>;
    /// The worker is alive and runs `servers` Cog servers; renews the warm slots it holds
    /// until `until`. False when the worker was forgotten (it must register again).
    async fn heartbeat(
        &self,
        id: &str,
        servers: i64,
        at: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<bool>;
    /// The worker stops: its row and its warm slots go.
    async fn forget_worker(&self, id: &str) -> Result<()>;
    /// Workers whose heartbeat came at `since` or later.
    async fn live_workers(&self, since: DateTime<Utc>) -> Result<Vec<Worker>>;
    /// Forgets workers silent since before `before`, and their warm slots.
    async fn forget_stale_workers(&self, before: DateTime<Utc>) -> Result<u64>;
    /// The warm slots the worker holds after this round: slots of deployments it no longer
    /// serves (or past their `min_instances`) are let go, and of each deployment it may serve
    /// (its release's hardware and version fit `offer`) it takes at most one more free slot (one
    /// nobody holds, or whose lease passed before `now`), while it holds fewer than `room`.
    /// Taking one slot per round lets several workers share a deployment's instances.
    async fn hold_warm_slots(
        &self,
        worker_id: &str,
        offer: &Offer,
        room: i64,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<Vec<WarmSlot>>;
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

/// Values every node of one database shares (`sql/settings.rs`).
#[async_trait]
pub trait SettingStore: Send + Sync {
    /// The value of `name`, set to `candidate` if it had none: the first node to start decides,
    /// and every node reads the same value back.
    async fn shared_setting(&self, name: &str, candidate: &str) -> Result<String>;
}

/// The longest notice payload, in bytes: PostgreSQL's `NOTIFY` takes less than 8000.
pub const NOTICE_MAX: usize = 7900;

/// What a [`Listener`] hears.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    Message {
        topic: String,
        payload: String,
    },
    /// Notices may have been lost (the connection was lost and is back, or this listener fell
    /// behind): whatever they would have said must be read from the records.
    Missed,
}

/// A short message to every server on the database, this one included (`sql/notify.rs`):
/// PostgreSQL's `NOTIFY`; on SQLite, which has one server, within this process.
#[async_trait]
pub trait NotifyStore: Send + Sync {
    /// Whether notices reach other processes, so other servers may be listening.
    fn notifies_other_processes(&self) -> bool;
    /// Sends `payload` to the listeners of `topic` (a plain lower-case name). A payload longer
    /// than [`NOTICE_MAX`] is refused with [`crate::StoreError::TooLarge`].
    async fn notify(&self, topic: &str, payload: &str) -> Result<()>;
    /// Listens to `topics` until the listener is dropped.
    async fn listen(&self, topics: &[&str]) -> Result<Listener>;
}

/// Notices on the topics it listens to, in the order they were sent.
pub struct Listener {
    rx: tokio::sync::broadcast::Receiver<Notice>,
    topics: Vec<String>,
    /// Stops the task that holds the listening connection, when there is one.
    _stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Listener {
    pub(crate) fn new(
        rx: tokio::sync::broadcast::Receiver<Notice>,
        topics: Vec<String>,
        stop: Option<tokio::sync::oneshot::Sender<()>>,
    ) -> Listener {
        Listener {
            rx,
            topics,
            _stop: stop,
        }
    }

    /// The next notice; `None` once the bus is gone.
    pub async fn recv(&mut self) -> Option<Notice> {
        use tokio::sync::broadcast::error::RecvError;
        loop {
            match self.rx.recv().await {
                Ok(Notice::Message { topic, .. }) if !self.topics.contains(&topic) => continue,
                Ok(n) => return Some(n),
                Err(RecvError::Lagged(_)) => return Some(Notice::Missed),
                Err(RecvError::Closed) => return None,
            }
        }
    }
}

/// The lock under which stored content is placed and released, shared by every node of one
/// database: a push records its version and a deletion removes content no version uses under
/// it, so neither loses the other's files in a shared object store.
#[async_trait]
pub trait ContentLockStore: Send + Sync {
    /// Waits for the lock; it is held until the guard is dropped. On SQLite (one node) the
    /// guard holds nothing: the node's own mutex is the lock.
    async fn content_lock(&self) -> Result<ContentLock>;
}

/// Holds [`ContentLockStore::content_lock`] until dropped.
pub struct ContentLock {
    /// Dropping it tells the task holding the lock's connection to give the lock back.
    pub(crate) _release: Option<tokio::sync::oneshot::Sender<()>>,
}
