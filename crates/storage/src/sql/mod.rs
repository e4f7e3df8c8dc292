//! The one SQL implementation of [`Store`], for SQLite and PostgreSQL alike.
mod accounts;
mod audit;
mod deployments;
mod files;
mod jobs;
mod models;
mod runner;
mod versions;
mod web;

use std::str::FromStr;

use async_trait::async_trait;
use chrono::{DateTime, Duration, Utc};
use modelyard_domain::*;
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, Executor};

use crate::dialect::Dialect;
use crate::store::{Deletion, Store};
use crate::{Result, StoreError};
pub use files::{FileRecord, NewFile};

const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("../migrations/0001_initial.sql")),
    (2, include_str!("../migrations/0002_runner.sql")),
    (3, include_str!("../migrations/0003_web.sql")),
];

#[derive(Clone)]
pub struct SqlStore {
    pool: AnyPool,
    /// Where every write goes. On SQLite one connection: writers queue here, in order, instead
    /// of meeting SQLite's busy handler, which backs off with sleeps under contention. On
    /// PostgreSQL the same pool as reads.
    writer: AnyPool,
    dialect: Dialect,
}

impl SqlStore {
    /// Connects to `sqlite://PATH` (created if missing) or `postgres://...`, and migrates.
    pub async fn connect(url: &str) -> Result<Self> {
        sqlx::any::install_default_drivers();
        let dialect = Dialect::from_url(url).ok_or_else(|| {
            StoreError::Internal(format!(
                "unsupported database URL {url:?}: use sqlite://PATH or postgres://..."
            ))
        })?;
        let url = match dialect {
            Dialect::Sqlite if !url.contains('?') => format!("{url}?mode=rwc"),
            _ => url.to_string(),
        };
        let opts = AnyConnectOptions::from_str(&url)?;
        let pool_with = |max: u32| {
            AnyPoolOptions::new()
                .max_connections(max)
                .after_connect(move |conn, _| {
                    Box::pin(async move {
                        if dialect == Dialect::Sqlite {
                            // Per connection: foreign keys are the backstop of every rule, and a
                            // writer waits for the lock instead of failing at once.
                            conn.execute("PRAGMA foreign_keys = ON").await?;
                            conn.execute("PRAGMA busy_timeout = 10000").await?;
                            conn.execute("PRAGMA synchronous = NORMAL").await?;
                        }
                        Ok(())
                    })
                })
        };
        let pool = pool_with(if dialect == Dialect::Sqlite { 8 } else { 16 })
            .connect_with(opts.clone())
            .await?;
        let writer = match dialect {
            Dialect::Sqlite => {
                pool.execute("PRAGMA journal_mode = WAL").await?;
                pool_with(1).connect_with(opts).await?
            }
            Dialect::Postgres => pool.clone(),
        };
        let store = SqlStore {
            pool,
            writer,
            dialect,
        };
        store.migrate().await?;
        Ok(store)
    }

    async fn migrate(&self) -> Result<()> {
        let mut tx = self.writer.begin_with(self.dialect.begin_write()).await?;
        if self.dialect == Dialect::Postgres {
            // Two servers starting at once must not both migrate.
            tx.execute("SELECT pg_advisory_xact_lock(7710212)").await?;
        }
        tx.execute("CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY)")
            .await?;
        let done: Vec<i64> = sqlx::query_scalar("SELECT version FROM schema_migrations")
            .fetch_all(&mut *tx)
            .await?;
        for (version, sql) in MIGRATIONS {
            if done.contains(version) {
                continue;
            }
            for stmt in self
                .dialect
                .ddl(sql)
                .split(';')
                .filter(|s| !s.trim().is_empty())
            {
                tx.execute(stmt).await?;
            }
            sqlx::query("INSERT INTO schema_migrations (version) VALUES ($1)")
                .bind(*version)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub fn backend(&self) -> &'static str {
        match self.dialect {
            Dialect::Sqlite => "sqlite",
            Dialect::Postgres => "postgres",
        }
    }

    async fn begin_write(&self) -> Result<sqlx::Transaction<'static, sqlx::Any>> {
        Ok(self.writer.begin_with(self.dialect.begin_write()).await?)
    }

    fn lock(&self) -> &'static str {
        self.dialect.lock_rows()
    }

    /// A deletion's transaction and the suffix that locks rows in it: a plain read transaction
    /// for a preview, a write transaction with row locks for the real thing.
    async fn begin_deletion(
        &self,
        dry_run: bool,
    ) -> Result<(sqlx::Transaction<'static, sqlx::Any>, &'static str)> {
        if dry_run {
            Ok((self.pool.begin().await?, ""))
        } else {
            Ok((self.begin_write().await?, self.lock()))
        }
    }
}

/// An account's username, inside a transaction.
async fn username(tx: &mut sqlx::Transaction<'static, sqlx::Any>, id: i64) -> Result<String> {
    Ok(
        sqlx::query_scalar("SELECT username FROM accounts WHERE id = $1")
            .bind(id)
            .fetch_one(&mut **tx)
            .await?,
    )
}

fn now() -> i64 {
    crate::rows::micros(Utc::now())
}

/// A non-empty IN list: an empty one is a syntax error, and no account has id -1.
fn ids_or_none(ids: &[i64]) -> Vec<i64> {
    if ids.is_empty() {
        vec![-1]
    } else {
        ids.to_vec()
    }
}

#[async_trait]
impl Store for SqlStore {
    async fn create_account(
        &self,
        kind: AccountKind,
        username: &str,
        name: &str,
    ) -> Result<Account> {
        self.create_account_(kind, username, name).await
    }
    async fn account(&self, username: &str) -> Result<Option<Account>> {
        self.account_(username).await
    }
    async fn add_member(&self, org_id: i64, user_id: i64) -> Result<()> {
        self.add_member_(org_id, user_id).await
    }
    async fn members(&self, org_id: i64) -> Result<Vec<Account>> {
        self.members_(org_id).await
    }
    async fn add_token(&self, account_id: i64, token_hash: &str) -> Result<()> {
        self.add_token_(account_id, token_hash).await
    }
    async fn caller_by_token(&self, token_hash: &str) -> Result<Option<Caller>> {
        self.caller_by_token_(token_hash).await
    }
    async fn create_model(&self, m: NewModel) -> Result<Model> {
        self.create_model_(m).await
    }
    async fn model(&self, owner: &str, name: &str) -> Result<Option<Model>> {
        self.model_(owner, name).await
    }
    async fn list_models(
        &self,
        viewer: Option<&Caller>,
        query: Option<&str>,
        page: PageReq,
    ) -> Result<Vec<Model>> {
        self.list_models_(viewer, query, page).await
    }
    async fn update_model(&self, id: i64, patch: ModelPatch) -> Result<Model> {
        self.update_model_(id, patch).await
    }
    async fn delete_model(
        &self,
        model_id: i64,
        caller: &Caller,
        dry_run: bool,
    ) -> Result<Deletion> {
        self.delete_model_(model_id, caller, dry_run).await
    }
    async fn versions(&self, model_id: i64, page: PageReq) -> Result<Vec<Version>> {
        self.versions_(model_id, page).await
    }
    async fn version(&self, model_id: i64, id: &str) -> Result<Option<Version>> {
        self.version_(model_id, id).await
    }
    async fn version_by_id(&self, id: &str) -> Result<Option<(Model, Version)>> {
        self.version_by_id_(id).await
    }
    async fn create_version(&self, v: NewVersion) -> Result<(Version, bool)> {
        self.create_version_(v).await
    }
    async fn artifact_in_use(&self, artifact: &str) -> Result<bool> {
        self.artifact_in_use_(artifact).await
    }
    async fn weights_in_use(&self, weights: &str) -> Result<bool> {
        self.weights_in_use_(weights).await
    }
    async fn delete_version(
        &self,
        model_id: i64,
        version_id: &str,
        caller: &Caller,
        dry_run: bool,
    ) -> Result<Deletion> {
        self.delete_version_(model_id, version_id, caller, dry_run)
            .await
    }
    async fn create_job(&self, j: NewJob) -> Result<Job> {
        self.create_job_(j).await
    }
    async fn job(&self, kind: JobKind, id: &str) -> Result<Option<Job>> {
        self.job_(kind, id).await
    }
    async fn list_jobs(&self, kind: JobKind, account_id: i64, page: PageReq) -> Result<Vec<Job>> {
        self.list_jobs_(kind, account_id, page).await
    }
    async fn cancel_job(&self, kind: JobKind, id: &str) -> Result<Job> {
        self.cancel_job_(kind, id).await
    }
    async fn create_deployment(
        &self,
        owner_id: i64,
        name: &str,
        release: NewRelease,
        created_by: &str,
    ) -> Result<Deployment> {
        self.create_deployment_(owner_id, name, release, created_by)
            .await
    }
    async fn deployment(&self, owner: &str, name: &str) -> Result<Option<Deployment>> {
        self.deployment_(owner, name).await
    }
    async fn list_deployments(&self, owner_ids: &[i64], page: PageReq) -> Result<Vec<Deployment>> {
        self.list_deployments_(owner_ids, page).await
    }
    async fn update_deployment(
        &self,
        id: i64,
        release: NewRelease,
        created_by: &str,
    ) -> Result<Deployment> {
        self.update_deployment_(id, release, created_by).await
    }
    async fn delete_deployment(
        &self,
        id: i64,
        caller: &Caller,
        dry_run: bool,
        now: DateTime<Utc>,
        idle: Duration,
    ) -> Result<Deletion> {
        self.delete_deployment_(id, caller, dry_run, now, idle)
            .await
    }
    async fn queued_jobs(&self, limit: i64) -> Result<Vec<Job>> {
        self.queued_jobs_(limit).await
    }
    async fn claim_job(&self, id: &str) -> Result<bool> {
        self.claim_job_(id).await
    }
    async fn release_job(&self, id: &str) -> Result<()> {
        self.release_job_(id).await
    }
    async fn job_started(&self, id: &str, at: DateTime<Utc>) -> Result<bool> {
        self.job_started_(id, at).await
    }
    async fn claim_and_start_job(&self, id: &str, at: DateTime<Utc>) -> Result<bool> {
        self.claim_and_start_job_(id, at).await
    }
    async fn job_progress(
        &self,
        id: &str,
        logs: &str,
        output: Option<&serde_json::Value>,
    ) -> Result<()> {
        self.job_progress_(id, logs, output).await
    }
    async fn finish_job(&self, id: &str, end: crate::JobEnd) -> Result<bool> {
        self.finish_job_(id, end).await
    }
    async fn recover_jobs(&self, error: &str) -> Result<(u64, u64)> {
        self.recover_jobs_(error).await
    }
    async fn cancel_queued_for_deployment(&self, deployment_id: i64) -> Result<u64> {
        self.cancel_queued_for_deployment_(deployment_id).await
    }
    async fn all_deployments(&self) -> Result<Vec<Deployment>> {
        self.all_deployments_().await
    }
    async fn remove_job_data(&self, source: &str, before: DateTime<Utc>) -> Result<Vec<String>> {
        self.remove_job_data_(source, before).await
    }
    async fn set_password_hash(&self, account_id: i64, hash: Option<&str>) -> Result<()> {
        self.set_password_hash_(account_id, hash).await
    }
    async fn password_hash(&self, username: &str) -> Result<Option<(Account, Option<String>)>> {
        self.password_hash_(username).await
    }
    async fn create_session(
        &self,
        hash: &str,
        account_id: i64,
        expires_at: DateTime<Utc>,
    ) -> Result<()> {
        self.create_session_(hash, account_id, expires_at).await
    }
    async fn session_caller(&self, hash: &str, now: DateTime<Utc>) -> Result<Option<Caller>> {
        self.session_caller_(hash, now).await
    }
    async fn delete_session(&self, hash: &str) -> Result<()> {
        self.delete_session_(hash).await
    }
    async fn models_owned_by(&self, owner_ids: &[i64], limit: i64) -> Result<Vec<Model>> {
        self.models_owned_by_(owner_ids, limit).await
    }
    async fn model_jobs(&self, model_id: i64, account_id: i64, limit: i64) -> Result<Vec<Job>> {
        self.model_jobs_(model_id, account_id, limit).await
    }
    async fn version_prediction_count(&self, version_id: &str) -> Result<i64> {
        self.version_prediction_count_(version_id).await
    }
    async fn accounts_by_ids(&self, ids: &[i64]) -> Result<Vec<Account>> {
        self.accounts_by_ids_(ids).await
    }
    async fn tokens(
        &self,
        account_id: i64,
    ) -> Result<Vec<(String, Option<String>, DateTime<Utc>)>> {
        self.tokens_(account_id).await
    }
    async fn add_named_token(&self, account_id: i64, token_hash: &str, name: &str) -> Result<()> {
        self.add_named_token_(account_id, token_hash, name).await
    }
    async fn revoke_token(&self, account_id: i64, token_hash: &str) -> Result<bool> {
        self.revoke_token_(account_id, token_hash).await
    }
    async fn remove_member(&self, org_id: i64, user_id: i64) -> Result<crate::MemberRemoval> {
        self.remove_member_(org_id, user_id).await
    }
    async fn webhook_secret(&self, account_id: i64, candidate: &str) -> Result<String> {
        self.webhook_secret_(account_id, candidate).await
    }
    async fn create_file(&self, f: files::NewFile) -> Result<files::FileRecord> {
        self.create_file_(f).await
    }
    async fn file(&self, id: &str) -> Result<Option<files::FileRecord>> {
        self.file_(id).await
    }
    async fn list_files(&self, account_id: i64, page: PageReq) -> Result<Vec<files::FileRecord>> {
        self.list_files_(account_id, page).await
    }
    async fn delete_file(&self, account_id: i64, id: &str) -> Result<bool> {
        self.delete_file_(account_id, id).await
    }
    async fn remove_expired_files(&self, now: DateTime<Utc>) -> Result<Vec<String>> {
        self.expired_files_(now).await
    }
    async fn record_audit(&self, e: NewAuditEvent) -> Result<()> {
        let mut tx = self.begin_write().await?;
        audit::insert(&mut tx, &e).await?;
        tx.commit().await?;
        Ok(())
    }
    async fn audit_events(&self, owner_ids: &[i64], page: PageReq) -> Result<Vec<AuditEvent>> {
        self.audit_events_(owner_ids, page).await
    }
}
