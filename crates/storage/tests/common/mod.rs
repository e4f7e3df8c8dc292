//! The harness of the storage conformance suite: a fresh database per test on each backend,
//! and small builders for the records the tests need.
//!
//! SQLite gets a new file under the system temp directory; PostgreSQL gets a new database
//! (`modelyard_test_<random>`) on the server named by `MODELYARD_TEST_PG_URL`, by default
//! `postgres://postgres@127.0.0.1:5432/postgres`. An unreachable server fails the test: CI
//! starts one, and a silently skipped backend is a backend nobody tests.
// Each test file uses its own share of the helpers.
#![allow(dead_code)]
/// One test per backend for each behaviour: `behaviour => sqlite_name, postgres_name;`.
macro_rules! conformance {
    ($($test:ident => $sqlite:ident, $postgres:ident;)*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $sqlite() {
                common::run(common::Backend::Sqlite, $test).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $postgres() {
                common::run(common::Backend::Postgres, $test).await
            }
        )*
    };
}

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;

use modelyard_domain::*;
use modelyard_storage::prelude::*;
use modelyard_storage::{Deletion, SqlStore, StoreError, StoredVersion};
use serde_json::json;
use sqlx::{AnyPool, Connection, Executor, PgConnection};
use tokio::sync::Barrier;
use tokio::task::JoinHandle;

pub const DEFAULT_PG_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

tokio::task_local! {
    /// The URL of the current test's database, for the few checks that need plain SQL.
    static DB_URL: String;
}

enum Cleanup {
    Files(PathBuf),
    Database { admin_url: String, name: String },
}

struct TestDb {
    url: String,
    cleanup: Cleanup,
}

fn random_suffix() -> String {
    format!("{:016x}", rand::random::<u64>())
}

/// `postgres://user@host:port/db?params` with the database replaced by `name`.
fn with_database(base: &str, name: &str) -> String {
    let (rest, params) = match base.split_once('?') {
        Some((r, p)) => (r, Some(p)),
        None => (base, None),
    };
    let authority_start = rest.find("://").map(|i| i + 3).unwrap_or(0);
    let prefix = match rest[authority_start..].find('/') {
        Some(i) => &rest[..authority_start + i],
        None => rest,
    };
    match params {
        Some(p) => format!("{prefix}/{name}?{p}"),
        None => format!("{prefix}/{name}"),
    }
}

impl TestDb {
    async fn create(backend: Backend) -> TestDb {
        match backend {
            Backend::Sqlite => {
                let path =
                    std::env::temp_dir().join(format!("modelyard-test-{}.sqlite", random_suffix()));
                TestDb {
                    url: format!("sqlite://{}", path.display()),
                    cleanup: Cleanup::Files(path),
                }
            }
            Backend::Postgres => {
                let admin_url = std::env::var("MODELYARD_TEST_PG_URL")
                    .ok()
                    .filter(|s| !s.is_empty())
                    .unwrap_or_else(|| DEFAULT_PG_URL.to_string());
                let name = format!("modelyard_test_{}", random_suffix());
                let mut admin = PgConnection::connect(&admin_url).await.unwrap_or_else(|e| {
                    panic!(
                        "PostgreSQL at {admin_url} is unreachable ({e}); the conformance suite \
                         needs it (set MODELYARD_TEST_PG_URL to point elsewhere)"
                    )
                });
                admin
                    .execute(format!("CREATE DATABASE {name}").as_str())
                    .await
                    .unwrap_or_else(|e| panic!("CREATE DATABASE {name}: {e}"));
                let _ = admin.close().await;
                TestDb {
                    url: with_database(&admin_url, &name),
                    cleanup: Cleanup::Database { admin_url, name },
                }
            }
        }
    }

    /// Best effort: a database left behind is litter, not a failure.
    async fn destroy(self) {
        match self.cleanup {
            Cleanup::Files(path) => {
                for suffix in ["", "-wal", "-shm"] {
                    let mut p = path.clone().into_os_string();
                    p.push(suffix);
                    let _ = std::fs::remove_file(p);
                }
            }
            Cleanup::Database { admin_url, name } => {
                if let Ok(mut admin) = PgConnection::connect(&admin_url).await {
                    let _ = admin
                        .execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str())
                        .await;
                    let _ = admin.close().await;
                }
            }
        }
    }
}

/// Runs one conformance test against a fresh database of `backend`, then removes the database,
/// whether the test passed or panicked.
pub async fn run<F, Fut>(backend: Backend, test: F)
where
    F: FnOnce(SqlStore) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let db = TestDb::create(backend).await;
    let store = match SqlStore::connect(&db.url).await {
        Ok(s) => s,
        Err(e) => {
            let url = db.url.clone();
            db.destroy().await;
            panic!("SqlStore::connect({url}): {e}");
        }
    };
    assert_eq!(store.backend(), backend.name());
    let outcome = tokio::spawn(DB_URL.scope(db.url.clone(), test(store))).await;
    db.destroy().await;
    if let Err(e) = outcome {
        match e.try_into_panic() {
            Ok(panic) => std::panic::resume_unwind(panic),
            Err(e) => panic!("test task failed: {e}"),
        }
    }
}

/// A separate connection pool to the current test's database, for facts the `Store` trait has
/// no way to set (a job's status, as a worker would set it).
pub async fn raw() -> AnyPool {
    let url = DB_URL.with(|u| u.clone());
    sqlx::any::install_default_drivers();
    AnyPool::connect(&url)
        .await
        .expect("raw connection to the test database")
}

/// Another store on the current test's database, as a second server would open it.
pub async fn second_store() -> SqlStore {
    let url = DB_URL.with(|u| u.clone());
    SqlStore::connect(&url).await.expect("a second store")
}

/// Runs statements on one raw connection, in order (so a per-connection PRAGMA holds for the
/// statements after it).
pub async fn write_raw(statements: &[&str]) {
    let pool = raw().await;
    let mut conn = pool.acquire().await.expect("raw connection");
    for sql in statements {
        conn.execute(*sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
    drop(conn);
    pool.close().await;
    modelyard_storage::written_elsewhere(&DB_URL.with(|u| u.clone()));
}

/// Sets a job's status directly, as a worker would.
pub async fn set_job_status(id: &str, status: Status) {
    let pool = raw().await;
    let n = sqlx::query("UPDATE jobs SET status = $1 WHERE id = $2")
        .bind(status.as_str())
        .bind(id)
        .execute(&pool)
        .await
        .expect("update job status")
        .rows_affected();
    assert_eq!(n, 1, "job {id} not found");
    pool.close().await;
    modelyard_storage::written_elsewhere(&DB_URL.with(|u| u.clone()));
}

// Builders.

pub fn all() -> PageReq {
    PageReq {
        after: None,
        limit: 1000,
    }
}

pub fn page(after: Option<i64>, limit: i64) -> PageReq {
    PageReq { after, limit }
}

fn token_of(username: &str) -> String {
    ids::token_hash(&format!("token-of-{username}"))
}

/// A user with a token; returns the caller as `caller_by_token` sees it.
pub async fn user(store: &SqlStore, username: &str) -> Caller {
    let a = store
        .create_account(AccountKind::User, username, &format!("{username} (user)"))
        .await
        .expect("create user");
    store
        .add_token(a.id, &token_of(username))
        .await
        .expect("add token");
    caller(store, username).await
}

/// An organization with a token of its own.
pub async fn org(store: &SqlStore, username: &str) -> Caller {
    let a = store
        .create_account(
            AccountKind::Organization,
            username,
            &format!("{username} (org)"),
        )
        .await
        .expect("create org");
    store
        .add_token(a.id, &token_of(username))
        .await
        .expect("add token");
    caller(store, username).await
}

/// The caller of an account made by [`user`] or [`org`], as it is now (memberships included).
pub async fn caller(store: &SqlStore, username: &str) -> Caller {
    store
        .caller_by_token(&token_of(username))
        .await
        .expect("caller_by_token")
        .expect("token known")
}

pub async fn model(store: &SqlStore, owner_id: i64, name: &str, visibility: Visibility) -> Model {
    store
        .create_model(NewModel {
            owner_id,
            name: name.into(),
            visibility: Some(visibility),
            hardware: "cpu".into(),
            ..Default::default()
        })
        .await
        .expect("create model")
}

pub fn new_version(model_id: i64, digest: &str, artifact: &str) -> NewVersion {
    NewVersion {
        model_id,
        content_digest: digest.into(),
        cog_version: "0.9.4".into(),
        openapi_schema: json!({"openapi": "3.0.2", "components": {"schemas": {"Input": {}}}}),
        artifact: artifact.into(),
        base_version_id: None,
        training_id: None,
        weights: None,
        gpu: false,
    }
}

pub async fn version(store: &SqlStore, model_id: i64, digest: &str, artifact: &str) -> Version {
    let StoredVersion {
        version: v,
        created,
    } = store
        .create_version(new_version(model_id, digest, artifact))
        .await
        .expect("create version");
    assert!(created, "version {digest} already existed");
    v
}

pub fn new_job(kind: JobKind, account_id: i64, version_id: &str) -> NewJob {
    NewJob {
        kind,
        account_id,
        version_id: version_id.into(),
        deployment_id: None,
        destination_model_id: None,
        input: json!({"prompt": "a cat"}),
        source: "api".into(),
        webhook: None,
        webhook_events_filter: vec![],
        deadline: None,
    }
}

pub async fn predict(store: &SqlStore, account_id: i64, version_id: &str) -> Job {
    store
        .create_job(new_job(JobKind::Prediction, account_id, version_id))
        .await
        .expect("create prediction")
}

pub async fn train(
    store: &SqlStore,
    account_id: i64,
    version_id: &str,
    destination_model_id: i64,
) -> Job {
    let mut j = new_job(JobKind::Training, account_id, version_id);
    j.destination_model_id = Some(destination_model_id);
    store.create_job(j).await.expect("create training")
}

pub fn release(version_id: &str, min: i64, max: i64) -> NewRelease {
    NewRelease {
        version_id: version_id.into(),
        hardware: "gpu-t4".into(),
        min_instances: min,
        max_instances: max,
    }
}

// Steps the tests repeat, each named for what it does.

pub async fn set_visibility(store: &SqlStore, model_id: i64, visibility: Visibility) {
    store
        .update_model(
            model_id,
            ModelPatch {
                visibility: Some(visibility),
                ..Default::default()
            },
        )
        .await
        .expect("update_model");
}

/// The `run_count` of "owner/name".
pub async fn run_count(store: &SqlStore, full_name: &str) -> i64 {
    let (owner, name) = full_name.split_once('/').expect("owner/name");
    store
        .model(owner, name)
        .await
        .expect("model")
        .expect("model exists")
        .run_count
}

/// Deletes a version for real (the rules may still refuse: see `deleted` and `blockers`).
pub async fn remove_version(
    store: &SqlStore,
    model_id: i64,
    version_id: &str,
    who: &Caller,
) -> Deletion {
    store
        .delete_version(model_id, version_id, who, false)
        .await
        .expect("delete_version")
}

/// What deleting a version would do (a dry run).
pub async fn preview_version_deletion(
    store: &SqlStore,
    model_id: i64,
    version_id: &str,
    who: &Caller,
) -> Deletion {
    store
        .delete_version(model_id, version_id, who, true)
        .await
        .expect("delete_version (dry run)")
}

/// Makes the user `username` a member of `org`; returns the user's caller as it is now.
pub async fn join(store: &SqlStore, org: &Caller, username: &str) -> Caller {
    let user = caller(store, username).await;
    store
        .add_member(org.account.id, user.account.id)
        .await
        .expect("add_member");
    caller(store, username).await
}

/// The usernames of an organization's members, in order.
pub async fn member_names(store: &SqlStore, org_id: i64) -> Vec<String> {
    store
        .members(org_id)
        .await
        .expect("members")
        .into_iter()
        .map(|a| a.username)
        .collect()
}

/// Spawns `contender` to start when every other contender of the round has reached `barrier`.
pub fn contend<T, F>(barrier: &Arc<Barrier>, contender: F) -> JoinHandle<T>
where
    T: Send + 'static,
    F: Future<Output = T> + Send + 'static,
{
    let barrier = barrier.clone();
    tokio::spawn(async move {
        barrier.wait().await;
        contender.await
    })
}

pub fn kinds(blockers: &[Blocker]) -> Vec<BlockerKind> {
    blockers.iter().map(|b| b.kind).collect()
}

pub fn is_not_found<T: std::fmt::Debug>(r: &Result<T, StoreError>) -> bool {
    matches!(r, Err(StoreError::NotFound(_)))
}

pub fn is_corrupt<T: std::fmt::Debug>(r: &Result<T, StoreError>) -> bool {
    matches!(r, Err(StoreError::Corrupt(_)))
}

pub fn is_conflict<T: std::fmt::Debug>(r: &Result<T, StoreError>) -> bool {
    matches!(r, Err(StoreError::Conflict(_)))
}

#[test]
fn database_urls() {
    assert_eq!(
        with_database("postgres://postgres@127.0.0.1:5432/postgres", "x"),
        "postgres://postgres@127.0.0.1:5432/x"
    );
    assert_eq!(
        with_database("postgres://u:p@h/db?sslmode=disable", "x"),
        "postgres://u:p@h/x?sslmode=disable"
    );
    assert_eq!(with_database("postgres://h:1", "x"), "postgres://h:1/x");
}
