//! The one SQL implementation of the storage traits, for SQLite and PostgreSQL alike: the
//! connection, migrations and transaction helpers here, and each entity's trait implemented in
//! its own file (accounts, sessions, models, versions, jobs, deployments, files, audit).
mod accounts;
mod audit;
mod cache;
mod conns;
mod content_lock;
mod deployments;
mod direct;
mod files;
mod jobs;
mod models;
mod notify;
mod prune;
mod sessions;
mod settings;
mod sizes;
mod trash;
mod versions;
mod workers;

use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use chrono::Utc;
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::pool::PoolConnection;
use sqlx::{Any, AnyConnection, Connection, Executor, TransactionManager};
use tokio::sync::{Mutex, OwnedMutexGuard};

use crate::dialect::Dialect;
use crate::store::Unreferenced;
use crate::{Deletion, Result, StoreError};
use conns::Conns;
pub(crate) use conns::Tx;
pub(crate) use direct::Arg;
use direct::Direct;
pub use files::{FileRecord, NewFile};
use modelyard_domain::{Blocker, Caller};

const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("../migrations/0001_initial.sql")),
    (2, include_str!("../migrations/0002_runner.sql")),
    (3, include_str!("../migrations/0003_web.sql")),
    (4, include_str!("../migrations/0004_trash.sql")),
    (5, include_str!("../migrations/0005_cluster.sql")),
    (6, include_str!("../migrations/0006_settings.sql")),
    (7, include_str!("../migrations/0007_unfinished_jobs.sql")),
];

#[derive(Clone)]
pub struct SqlStore {
    pool: Conns,
    /// Where every write goes. On SQLite one connection, held outside the pool (see
    /// `conns.rs`): writers queue here, in order, instead of meeting SQLite's busy handler,
    /// which backs off with sleeps under contention. On PostgreSQL the same pool as reads.
    writer: Conns,
    /// On SQLite, connections held for the one-statement reads every request makes (see
    /// `reader`); on PostgreSQL none.
    readers: Option<Arc<Readers>>,
    /// On SQLite, connections for the hot reads run on the caller's thread (`direct.rs`).
    direct: Option<Arc<Direct>>,
    /// On SQLite, the connection for the prediction path's writes (`direct.rs`).
    direct_writer: Option<Arc<Mutex<rusqlite::Connection>>>,
    /// On SQLite, rows kept while nothing is written (`cache.rs`).
    kept: Option<Arc<cache::RowCache>>,
    /// On SQLite, the database file.
    file: Option<std::path::PathBuf>,
    /// Held by every copy of the store: the WAL's checkpoint thread ends with the last one.
    _alive: Arc<()>,
    dialect: Dialect,
    /// Where notices go (`notify.rs`).
    bus: notify::Bus,
    /// For connections of their own (the content lock's).
    opts: AnyConnectOptions,
}

/// Something wrote to the SQLite database at `url` around this process's stores (a test's raw
/// statements): rows they keep are no longer served.
pub fn written_elsewhere(url: &str) {
    let file =
        sqlx::sqlite::SqliteConnectOptions::from_str(url).map(|o| o.get_filename().to_path_buf());
    if let Ok(file) = file {
        cache::Writes::of_file(&file).written_around();
    }
}

/// `sql` with `args` bound, for sqlx.
fn bound<'q>(
    sql: &'q str,
    args: &[Arg<'q>],
) -> sqlx::query::Query<'q, Any, sqlx::any::AnyArguments<'q>> {
    let mut q = sqlx::query(sql);
    for a in args {
        q = match a {
            Arg::Int(v) => q.bind(*v),
            Arg::Text(v) => q.bind(*v),
            Arg::OptInt(v) => q.bind(*v),
            Arg::OptText(v) => q.bind(*v),
        };
    }
    q
}

/// sqlx's rows through the decoders both drivers share.
fn decode_all<T>(
    rows: &[sqlx::any::AnyRow],
    decode: impl FnMut(&dyn crate::rows::Cols) -> Result<T>,
) -> Result<Vec<T>> {
    rows.iter()
        .map(|r| r as &dyn crate::rows::Cols)
        .map(decode)
        .collect()
}

/// A write transaction written once for both drivers: on SQLite the direct writer
/// (`direct.rs`), on PostgreSQL sqlx's.
pub(crate) enum WriteTx {
    Sqlx(Tx),
    Direct(direct::DirectTx),
}

impl WriteTx {
    pub(crate) async fn exec(&mut self, sql: &str, args: &[Arg<'_>]) -> Result<u64> {
        match self {
            WriteTx::Direct(d) => d.exec(sql, args),
            WriteTx::Sqlx(tx) => Ok(bound(sql, args).execute(&mut **tx).await?.rows_affected()),
        }
    }

    pub(crate) async fn rows<T>(
        &mut self,
        sql: &str,
        args: &[Arg<'_>],
        decode: impl FnMut(&dyn crate::rows::Cols) -> Result<T>,
    ) -> Result<Vec<T>> {
        match self {
            WriteTx::Direct(d) => d.rows(sql, args, decode),
            WriteTx::Sqlx(tx) => decode_all(&bound(sql, args).fetch_all(&mut **tx).await?, decode),
        }
    }

    /// Commits, noting (on SQLite, before the writer is given back) that the transaction
    /// raised `model`'s `run_count` by one, for the rows kept with it (`cache.rs`).
    pub(crate) async fn commit_ran(self, model: Option<i64>) -> Result<()> {
        match self {
            WriteTx::Direct(d) => d.commit_ran(model),
            WriteTx::Sqlx(tx) => Ok(tx.commit().await?),
        }
    }
}

/// How often SQLite's WAL is checkpointed (`direct::checkpoints`).
const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// How many SQLite connections are held for reads.
const READERS: usize = 4;

/// SQLite connections held outside the pool. sqlx's pool pings each connection it takes back
/// (a round trip to the connection's worker thread, costing as much as a small query, and a
/// task spawned for it): for the single-statement reads of every request that is half the
/// work. A SQLite file cannot hang up, and reads leave nothing behind to roll back.
struct Readers {
    conns: Vec<Arc<Mutex<AnyConnection>>>,
    next: AtomicUsize,
}

impl Readers {
    async fn take(&self) -> OwnedMutexGuard<AnyConnection> {
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        for i in 0..self.conns.len() {
            if let Ok(g) = self.conns[(start + i) % self.conns.len()]
                .clone()
                .try_lock_owned()
            {
                return g;
            }
        }
        self.conns[start % self.conns.len()]
            .clone()
            .lock_owned()
            .await
    }
}

/// A connection for a read: held (SQLite) or from the pool (PostgreSQL).
pub(crate) enum Reader {
    Held(OwnedMutexGuard<AnyConnection>),
    Pooled(PoolConnection<Any>),
}

impl std::ops::Deref for Reader {
    type Target = AnyConnection;
    fn deref(&self) -> &AnyConnection {
        match self {
            Reader::Held(c) => c,
            Reader::Pooled(c) => c,
        }
    }
}

impl std::ops::DerefMut for Reader {
    fn deref_mut(&mut self) -> &mut AnyConnection {
        match self {
            Reader::Held(c) => c,
            Reader::Pooled(c) => c,
        }
    }
}

/// The per-connection settings on SQLite: foreign keys are the backstop of every rule, and a
/// writer waits for the lock instead of failing at once.
async fn sqlite_pragmas(conn: &mut AnyConnection) -> sqlx::Result<()> {
    conn.execute("PRAGMA foreign_keys = ON").await?;
    conn.execute("PRAGMA busy_timeout = 10000").await?;
    conn.execute("PRAGMA synchronous = NORMAL").await?;
    // Checkpoints run beside the requests (`direct::checkpoints`), not inside a commit.
    conn.execute("PRAGMA wal_autocheckpoint = 0").await?;
    Ok(())
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
                // sqlx pings a connection when it is taken from the pool and again when it goes
                // back; each ping is a round trip (to SQLite's worker thread, or to PostgreSQL),
                // as costly as the query itself. A SQLite file cannot hang up, and on
                // PostgreSQL the ping on return already checks every connection after each
                // use, so the one on taking is dropped.
                .test_before_acquire(false)
                .after_connect(move |conn, _| {
                    Box::pin(async move {
                        if dialect == Dialect::Sqlite {
                            sqlite_pragmas(conn).await?;
                        }
                        Ok(())
                    })
                })
        };
        let pool = pool_with(if dialect == Dialect::Sqlite { 8 } else { 16 })
            .connect_with(opts.clone())
            .await?;
        // The database file (SQLite): its writes are counted per file, for the row cache.
        let file = match dialect {
            Dialect::Sqlite => Some(
                sqlx::sqlite::SqliteConnectOptions::from_str(&url)?
                    .get_filename()
                    .to_path_buf(),
            )
            .filter(|f| f.as_os_str() != ":memory:"),
            Dialect::Postgres => None,
        };
        let writes = file
            .as_deref()
            .map(cache::Writes::of_file)
            .unwrap_or_default();
        let (writer, readers) = match dialect {
            Dialect::Sqlite => {
                pool.execute("PRAGMA journal_mode = WAL").await?;
                let mut conns = Vec::with_capacity(READERS);
                for _ in 0..READERS {
                    let mut c = AnyConnection::connect_with(&opts).await?;
                    sqlite_pragmas(&mut c).await?;
                    conns.push(Arc::new(Mutex::new(c)));
                }
                let readers = Readers {
                    conns,
                    next: AtomicUsize::new(0),
                };
                let mut w = AnyConnection::connect_with(&opts).await?;
                sqlite_pragmas(&mut w).await?;
                (
                    Conns::Held(Arc::new(Mutex::new(w)), writes.clone()),
                    Some(Arc::new(readers)),
                )
            }
            Dialect::Postgres => (Conns::Pool(pool.clone()), None),
        };
        let mut store = SqlStore {
            pool: Conns::Pool(pool),
            writer,
            readers,
            direct: None,
            direct_writer: None,
            kept: None,
            file: file.clone(),
            _alive: Arc::new(()),
            dialect,
            bus: notify::Bus::new(dialect.notifies_other_processes(), &url),
            opts,
        };
        store.migrate().await?;
        if let Some(file) = file {
            // Opened after migrating, so every table is there.
            store.direct = Some(Arc::new(Direct::open(&file)?));
            store.direct_writer = Some(Arc::new(Mutex::new(direct::open_writer(&file)?)));
            store.kept = Some(Arc::new(cache::RowCache::new(writes)));
            if let Conns::Held(writer, _) = &store.writer {
                direct::checkpoints(
                    &file,
                    writer.clone(),
                    Arc::downgrade(&store._alive),
                    CHECKPOINT_EVERY,
                )?;
            }
        }
        Ok(store)
    }

    /// Claims a SQLite database for the servers of this process, until the last store on it
    /// is dropped: another process's server claiming it is refused, since rows kept here
    /// (`cache.rs`) would not see its writes. On PostgreSQL, where every node writes, nothing.
    pub fn claim_for_server(&self) -> Result<()> {
        match (&self.writer, &self.file) {
            (Conns::Held(_, writes), Some(file)) => writes.claim(file),
            _ => Ok(()),
        }
    }

    /// The direct writer (SQLite), taken with sqlx's writer so the two never meet.
    async fn direct_writer(&self, scope: cache::Scope) -> Result<Option<direct::Held>> {
        let (Conns::Held(w, writes), Some(dw)) = (&self.writer, &self.direct_writer) else {
            return Ok(None);
        };
        let mut writer = conns::WriteGuard::lock_for(w, writes, scope).await;
        if <Any as sqlx::Database>::TransactionManager::get_transaction_depth(&writer) > 0 {
            // A transaction dropped mid-way: its rollback is queued on sqlx's connection and
            // must be done before this connection can write.
            <Any as sqlx::Database>::TransactionManager::rollback(&mut writer).await?;
        }
        let conn = dw.clone().lock_owned().await;
        Ok(Some(direct::Held { conn, writer }))
    }

    /// A write transaction of the job path, which writes only what `Scope::Jobs` says; a raise
    /// of a model's `run_count` is noted with `WriteTx::commit_ran`.
    pub(crate) async fn begin_job_write(&self) -> Result<WriteTx> {
        self.begin_write_direct(cache::Scope::Jobs).await
    }

    /// A write transaction of `scope`: on SQLite's direct writer, else sqlx's (`WriteTx`).
    pub(crate) async fn begin_write_direct(&self, scope: cache::Scope) -> Result<WriteTx> {
        match self.direct_writer(scope).await? {
            Some(held) => Ok(WriteTx::Direct(direct::DirectTx::begin(held)?)),
            None => Ok(WriteTx::Sqlx(self.begin_write().await?)),
        }
    }

    /// One write statement of the job path, to the `jobs` table only: rows affected.
    pub(crate) async fn write_job(&self, sql: &str, args: &[Arg<'_>]) -> Result<u64> {
        self.write_one_direct(cache::Scope::Jobs, sql, args).await
    }

    /// One write statement of `scope`, outside a transaction: rows affected.
    pub(crate) async fn write_one_direct(
        &self,
        scope: cache::Scope,
        sql: &str,
        args: &[Arg<'_>],
    ) -> Result<u64> {
        match self.direct_writer(scope).await? {
            Some(held) => direct::exec(&held.conn, sql, args),
            None => Ok(bound(sql, args)
                .execute(&self.writer)
                .await?
                .rows_affected()),
        }
    }

    /// Every row of a one-statement read, decoded: on SQLite's direct connections, else on a
    /// reader. The same SQL either way.
    pub(crate) async fn read_rows<T>(
        &self,
        sql: &str,
        args: &[Arg<'_>],
        decode: impl FnMut(&dyn crate::rows::Cols) -> Result<T>,
    ) -> Result<Vec<T>> {
        if let Some(d) = &self.direct {
            return d.rows(sql, args, decode);
        }
        let rows = bound(sql, args)
            .fetch_all(&mut *self.reader().await?)
            .await?;
        decode_all(&rows, decode)
    }

    /// As `read_row`, kept (on SQLite) until anything is written: for reads of one row that
    /// every request makes. `tag` names the query; the SQL is made only when it runs.
    pub(crate) async fn read_row_kept<T: cache::Kept>(
        &self,
        tag: &'static str,
        sql: impl FnOnce() -> String,
        args: &[Arg<'_>],
        decode: impl FnMut(&dyn crate::rows::Cols) -> Result<T>,
    ) -> Result<Option<T>> {
        if let (Some(kept), Some(d)) = (&self.kept, &self.direct) {
            return kept.get_or_read(tag, args, || {
                Ok(d.rows(&sql(), args, decode)?.into_iter().next())
            });
        }
        self.read_row(&sql(), args, decode).await
    }

    /// The one row (or none) of a one-statement read, as `read_rows`.
    pub(crate) async fn read_row<T>(
        &self,
        sql: &str,
        args: &[Arg<'_>],
        decode: impl FnMut(&dyn crate::rows::Cols) -> Result<T>,
    ) -> Result<Option<T>> {
        Ok(self.read_rows(sql, args, decode).await?.into_iter().next())
    }

    async fn migrate(&self) -> Result<()> {
        let mut tx = self.begin_write().await?;
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

    /// A connection for one-statement reads outside a transaction.
    pub(crate) async fn reader(&self) -> Result<Reader> {
        Ok(match &self.readers {
            Some(r) => Reader::Held(r.take().await),
            None => self.pool.acquire().await?,
        })
    }

    pub fn backend(&self) -> &'static str {
        match self.dialect {
            Dialect::Sqlite => "sqlite",
            Dialect::Postgres => "postgres",
        }
    }

    async fn begin_write(&self) -> Result<Tx> {
        Ok(self.writer.begin_with(self.dialect.begin_write()).await?)
    }

    fn lock(&self) -> &'static str {
        self.dialect.lock_rows()
    }

    /// A deletion's transaction and the suffix that locks rows in it: a plain read transaction
    /// for a preview, a write transaction with row locks for the real thing.
    async fn begin_deletion(&self, dry_run: bool) -> Result<(Tx, &'static str)> {
        if dry_run {
            Ok((self.pool.begin().await?, ""))
        } else {
            Ok((self.begin_write().await?, self.lock()))
        }
    }
}

/// What a deletion's preview answers: the blockers, nothing written.
fn preview(blockers: Vec<Blocker>) -> Deletion {
    Deletion {
        blockers,
        ..Default::default()
    }
}

/// The shared end of every deletion, once its facts were gathered, the rules applied and (with
/// no blocker) the rows deleted or trashed: its audit event, `done` (`deleted`, `trashed`) or
/// `refused`, is written in the same transaction, which then commits, so a deletion and its
/// record stand or fall together. `d` carries what the deletion found besides its blockers.
#[allow(clippy::too_many_arguments)]
async fn conclude(
    mut tx: Tx,
    caller: &Caller,
    owner_id: i64,
    action: &str,
    target: String,
    blockers: Vec<Blocker>,
    done: &str,
    mut d: Deletion,
) -> Result<Deletion> {
    let mut e = audit::event(caller, owner_id, action, target, &blockers);
    if blockers.is_empty() {
        e.outcome = done.into();
    }
    audit::insert(&mut tx, &e).await?;
    tx.commit().await?;
    d.deleted = blockers.is_empty();
    d.blockers = blockers;
    Ok(d)
}

/// Of these artifacts and weights, the ones no version (in the trash or not) references any
/// more, inside the transaction that removed versions.
async fn unreferenced(
    tx: &mut Tx,
    artifacts: &[String],
    weights: &[String],
) -> Result<Unreferenced> {
    let mut out = Unreferenced::default();
    for a in artifacts {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM versions WHERE artifact = $1")
            .bind(a)
            .fetch_one(&mut **tx)
            .await?;
        if n == 0 && !out.artifacts.contains(a) {
            out.artifacts.push(a.clone());
        }
    }
    for w in weights {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM versions WHERE weights = $1")
            .bind(w)
            .fetch_one(&mut **tx)
            .await?;
        if n == 0 && !out.weights.contains(w) {
            out.weights.push(w.clone());
        }
    }
    Ok(out)
}

/// An account's username, inside a transaction.
async fn username(tx: &mut Tx, id: i64) -> Result<String> {
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

/// Database files of the unit tests' own.
#[cfg(test)]
pub(crate) mod scratch {
    use std::path::PathBuf;

    /// A SQLite file of one test's, removed with its WAL and shared memory when dropped (also
    /// when the test fails).
    pub(crate) struct Db {
        pub(crate) path: PathBuf,
        pub(crate) url: String,
    }

    /// The file for the test `name`, in the temp directory.
    pub(crate) fn db(name: &str) -> Db {
        let path = std::env::temp_dir().join(format!("modelyard-{name}-{}.db", std::process::id()));
        let url = format!("sqlite://{}", path.display());
        Db { path, url }
    }

    impl Drop for Db {
        fn drop(&mut self) {
            for suffix in ["", "-wal", "-shm"] {
                let mut p = self.path.as_os_str().to_owned();
                p.push(suffix);
                let _ = std::fs::remove_file(p);
            }
        }
    }
}
