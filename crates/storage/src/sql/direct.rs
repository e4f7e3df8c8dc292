//! SQLite's hot reads, run on the caller's own thread.
//!
//! sqlx runs every SQLite connection on a worker thread of its own: a statement is handed to
//! it and its rows handed back, each a wake-up of another thread. For the one-row reads every
//! request makes (a model, a version, a prediction) those wake-ups were most of the request's
//! CPU. Here the same SQL runs on rusqlite connections, synchronously, in a few microseconds;
//! an indexed read of a page-cached row never waits on a writer (WAL).
//!
//! The writes of a prediction's path (its record, its start, its end) run the same way on one
//! more connection, `DirectWriter`, taken only while holding sqlx's writer (so the two never
//! meet SQLite's busy handler), in a transaction that no `.await` can interrupt. Every other
//! write and transaction stays on sqlx.
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};

use tokio::sync::OwnedMutexGuard;

use rusqlite::types::ValueRef;
use rusqlite::{Connection, OpenFlags};

use crate::rows::Cols;
use crate::{Result, StoreError};

/// A statement's argument.
pub(crate) enum Arg<'a> {
    Int(i64),
    Text(&'a str),
    OptInt(Option<i64>),
    OptText(Option<&'a str>),
}

/// More than the threads that read at once (tokio's workers), so a reader rarely waits.
const CONNS: usize = 4;

pub(crate) struct Direct {
    conns: Vec<Mutex<Connection>>,
    next: AtomicUsize,
}

/// As `StoreError::from(sqlx::Error)`: SQLite's extended codes for a unique key (2067, 1555)
/// and a foreign key (787).
fn corrupt(e: rusqlite::Error) -> StoreError {
    if let rusqlite::Error::SqliteFailure(f, _) = &e {
        match f.extended_code {
            2067 | 1555 => return StoreError::Conflict("already exists".into()),
            787 => return StoreError::ForeignKey,
            _ => {}
        }
    }
    StoreError::Internal(format!("sqlite: {e}"))
}

/// Binds `args` to `stmt`: `$N` is the Nth argument wherever it appears, as sqlx binds it.
fn bind(stmt: &mut rusqlite::Statement<'_>, args: &[Arg<'_>]) -> Result<()> {
    for i in 1..=stmt.parameter_count() {
        let n = stmt
            .parameter_name(i)
            .and_then(|n| n.strip_prefix('$'))
            .and_then(|n| n.parse::<usize>().ok())
            .unwrap_or(i);
        let arg = args
            .get(n - 1)
            .ok_or_else(|| StoreError::Internal(format!("no argument ${n} for a statement")))?;
        match arg {
            Arg::Int(v) => stmt.raw_bind_parameter(i, v),
            Arg::Text(v) => stmt.raw_bind_parameter(i, v),
            Arg::OptInt(v) => stmt.raw_bind_parameter(i, v),
            Arg::OptText(v) => stmt.raw_bind_parameter(i, v),
        }
        .map_err(corrupt)?;
    }
    Ok(())
}

fn rows_of<T>(
    conn: &Connection,
    sql: &str,
    args: &[Arg<'_>],
    mut decode: impl FnMut(&dyn Cols) -> Result<T>,
) -> Result<Vec<T>> {
    let mut stmt = conn.prepare_cached(sql).map_err(corrupt)?;
    bind(&mut stmt, args)?;
    let mut rows = stmt.raw_query();
    let mut out = Vec::new();
    while let Some(row) = rows.next().map_err(corrupt)? {
        let names = row.as_ref().column_names();
        out.push(decode(&LiteRow { row, names })?);
    }
    Ok(out)
}

/// One statement: rows affected (outside a transaction, on the held direct writer).
pub(crate) fn exec(conn: &Connection, sql: &str, args: &[Arg<'_>]) -> Result<u64> {
    let mut stmt = conn.prepare_cached(sql).map_err(corrupt)?;
    bind(&mut stmt, args)?;
    Ok(stmt.raw_execute().map_err(corrupt)? as u64)
}

/// The connection for the prediction path's writes, with the settings of sqlx's writer.
pub(crate) fn open_writer(path: &Path) -> Result<Connection> {
    let c = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(corrupt)?;
    c.busy_timeout(std::time::Duration::from_secs(10))
        .map_err(corrupt)?;
    // Foreign keys are the backstop of every rule, here as on sqlx's connections.
    // No checkpoint inside a prediction's commit: `checkpoints` runs them beside the requests.
    c.execute_batch(
        "PRAGMA foreign_keys = ON; PRAGMA synchronous = NORMAL; PRAGMA wal_autocheckpoint = 0;",
    )
    .map_err(corrupt)?;
    c.set_prepared_statement_cache_capacity(32);
    Ok(c)
}

/// The direct writer, held with sqlx's writer (which is idle meanwhile).
pub(crate) struct Held {
    pub(crate) conn: OwnedMutexGuard<Connection>,
    pub(crate) writer: super::conns::WriteGuard,
}

/// Past this many frames at a checkpoint, the WAL is made to start over (SQLite's own
/// automatic checkpoint waits for as many).
const RESTART_AFTER_FRAMES: i64 = 1000;

/// Checkpoints the WAL into the database every `every`, on a connection of its own, for as long
/// as `alive` has an owner. SQLite would otherwise checkpoint inside whichever commit takes the
/// WAL past 1,000 pages: writing the pages back and syncing the file, a few milliseconds added
/// to one prediction in every few dozen.
///
/// SQLite starts the WAL over only at the first write after a checkpoint that copied all of it.
/// Under steady writes one beside them never does (frames are appended while it copies), and
/// the WAL grew by every page every prediction wrote, hundreds of megabytes a minute, with each
/// commit slower than the last (its index chains lengthen). So once a pass leaves a long WAL,
/// a second pass copies what the first left with `writer` (the process's one writer) held:
/// a few pages and a sync, once a second at most.
pub(crate) fn checkpoints(
    path: &Path,
    writer: std::sync::Arc<tokio::sync::Mutex<sqlx::AnyConnection>>,
    alive: std::sync::Weak<()>,
    every: std::time::Duration,
) -> Result<()> {
    let conn = open_writer(path)?;
    // The frames in the WAL, and how many of them are copied.
    let pass = move |conn: &Connection| {
        conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
            Ok((r.get::<_, i64>(1)?, r.get::<_, i64>(2)?))
        })
    };
    std::thread::Builder::new()
        .name("sqlite-checkpoint".into())
        .spawn(move || loop {
            std::thread::sleep(every);
            if alive.upgrade().is_none() {
                return;
            }
            let done = match pass(&conn) {
                Ok((frames, _)) if frames >= RESTART_AFTER_FRAMES => {
                    let _writes_wait = writer.blocking_lock();
                    pass(&conn)
                }
                other => other,
            };
            if let Err(e) = done {
                tracing::warn!(error = %e, "could not checkpoint the WAL");
            }
        })
        .map_err(|e| StoreError::Internal(format!("no checkpoint thread: {e}")))?;
    Ok(())
}

/// A write transaction on the direct writer (`BEGIN IMMEDIATE` ... `COMMIT`), rolled back
/// unless committed. Its statements never wait on anything but SQLite itself, so no task is
/// ever dropped in the middle of one.
pub(crate) struct DirectTx {
    held: Held,
    done: bool,
}

impl DirectTx {
    pub(crate) fn begin(held: Held) -> Result<Self> {
        held.conn
            .execute_batch("BEGIN IMMEDIATE")
            .map_err(corrupt)?;
        Ok(DirectTx { held, done: false })
    }

    pub(crate) fn exec(&self, sql: &str, args: &[Arg<'_>]) -> Result<u64> {
        exec(&self.held.conn, sql, args)
    }

    pub(crate) fn rows<T>(
        &self,
        sql: &str,
        args: &[Arg<'_>],
        decode: impl FnMut(&dyn Cols) -> Result<T>,
    ) -> Result<Vec<T>> {
        rows_of(&self.held.conn, sql, args, decode)
    }

    pub(crate) fn commit_ran(mut self, model: Option<i64>) -> Result<()> {
        self.held.conn.execute_batch("COMMIT").map_err(corrupt)?;
        self.done = true;
        if let Some(m) = model {
            self.held.writer.writes().ran(m);
        }
        Ok(())
    }
}

impl Drop for DirectTx {
    fn drop(&mut self) {
        if !self.done {
            if let Err(e) = self.held.conn.execute_batch("ROLLBACK") {
                tracing::error!(error = %e, "could not roll back a write");
            }
        }
    }
}

impl Direct {
    /// Read-only connections to the database file at `path` (already created and migrated).
    pub(crate) fn open(path: &Path) -> Result<Self> {
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
            | OpenFlags::SQLITE_OPEN_URI;
        let conns = (0..CONNS)
            .map(|_| {
                let c = Connection::open_with_flags(path, flags).map_err(corrupt)?;
                // As sqlx's connections: wait for a lock (a checkpoint) rather than fail.
                c.busy_timeout(std::time::Duration::from_secs(10))
                    .map_err(corrupt)?;
                c.set_prepared_statement_cache_capacity(64);
                Ok(Mutex::new(c))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Direct {
            conns,
            next: AtomicUsize::new(0),
        })
    }

    fn take(&self) -> MutexGuard<'_, Connection> {
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        for i in 0..self.conns.len() {
            if let Ok(g) = self.conns[(start + i) % self.conns.len()].try_lock() {
                return g;
            }
        }
        // Every connection busy: another thread is mid-statement on each, for microseconds.
        self.conns[start % self.conns.len()]
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Every row of `sql` with `args` (`$1`, `$2`, ... as sqlx binds them), decoded.
    pub(crate) fn rows<T>(
        &self,
        sql: &str,
        args: &[Arg<'_>],
        decode: impl FnMut(&dyn Cols) -> Result<T>,
    ) -> Result<Vec<T>> {
        rows_of(&self.take(), sql, args, decode)
    }
}

struct LiteRow<'r, 's> {
    row: &'r rusqlite::Row<'s>,
    /// Read once per row: rusqlite's own lookup by name asks SQLite for every column's name,
    /// and measures it, on each call.
    names: Vec<&'r str>,
}

impl LiteRow<'_, '_> {
    fn value(&self, column: &str) -> Result<ValueRef<'_>> {
        let i = self
            .names
            .iter()
            .position(|n| *n == column)
            .ok_or_else(|| StoreError::Internal(format!("no column {column}")))?;
        self.row.get_ref(i).map_err(corrupt)
    }
}

impl Cols for LiteRow<'_, '_> {
    fn text(&self, column: &str) -> Result<Option<String>> {
        match self.value(column)? {
            ValueRef::Null => Ok(None),
            ValueRef::Text(t) => std::str::from_utf8(t)
                .map(|s| Some(s.to_owned()))
                .map_err(|_| StoreError::Corrupt(format!("{column} is not UTF-8"))),
            _ => Err(StoreError::Corrupt(format!("{column} is not text"))),
        }
    }

    fn int(&self, column: &str) -> Result<Option<i64>> {
        match self.value(column)? {
            ValueRef::Null => Ok(None),
            ValueRef::Integer(i) => Ok(Some(i)),
            _ => Err(StoreError::Corrupt(format!("{column} is not an integer"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::cache::Scope;
    use super::super::{Arg, SqlStore};
    use super::RESTART_AFTER_FRAMES;

    /// A sqlx write transaction dropped mid-way leaves its rollback queued on sqlx's writer:
    /// the direct writer waits for it (instead of meeting the open transaction's lock), writes,
    /// and what the dropped transaction wrote is gone. A direct transaction dropped before
    /// its commit leaves nothing either.
    #[tokio::test]
    async fn the_direct_writer_follows_a_dropped_sqlx_transaction() {
        let db = crate::sql::scratch::db("direct");
        let url = &db.url;
        let store = SqlStore::connect(url).await.unwrap();
        let count = |store: &SqlStore, v: i64| {
            let store = store.clone();
            async move {
                store
                    .read_rows(
                        "SELECT version FROM schema_migrations WHERE version = $1",
                        &[Arg::Int(v)],
                        |r| crate::rows::get::<i64, _>(r, "version"),
                    )
                    .await
                    .unwrap()
                    .len()
            }
        };
        let insert = "INSERT INTO schema_migrations (version) VALUES ($1)";
        let mut tx = store.begin_write().await.unwrap();
        sqlx::query(insert)
            .bind(98i64)
            .execute(&mut *tx)
            .await
            .unwrap();
        drop(tx);
        let started = std::time::Instant::now();
        assert_eq!(
            store
                .write_one_direct(Scope::All, insert, &[Arg::Int(99)])
                .await
                .unwrap(),
            1
        );
        assert!(
            started.elapsed() < std::time::Duration::from_secs(2),
            "the direct write waited on the dropped transaction's lock"
        );
        assert_eq!(count(&store, 98).await, 0, "the dropped write was kept");
        assert_eq!(count(&store, 99).await, 1, "the direct write was lost");

        let mut tx = store.begin_write_direct(Scope::All).await.unwrap();
        tx.exec(insert, &[Arg::Int(97)]).await.unwrap();
        drop(tx);
        assert_eq!(
            count(&store, 97).await,
            0,
            "an uncommitted direct write was kept"
        );
        let mut tx = store.begin_write_direct(Scope::All).await.unwrap();
        tx.exec(insert, &[Arg::Int(96)]).await.unwrap();
        tx.commit_ran(None).await.unwrap();
        assert_eq!(
            count(&store, 96).await,
            1,
            "a committed direct write was lost"
        );
        drop(store);
    }

    /// Commits leave the WAL alone (no checkpoint inside a prediction's commit), and the
    /// checkpoint thread moves what they wrote into the database file within seconds.
    #[tokio::test]
    async fn the_wal_is_checkpointed_beside_the_commits() {
        let db = crate::sql::scratch::db("ckpt");
        let (path, url) = (db.path.clone(), &db.url);
        let store = SqlStore::connect(url).await.unwrap();
        let before = std::fs::metadata(&path).unwrap().len();
        let mut tx = store.begin_write_direct(Scope::All).await.unwrap();
        tx.exec("CREATE TABLE bulk (b TEXT)", &[]).await.unwrap();
        let text = "x".repeat(4 << 20);
        tx.exec("INSERT INTO bulk (b) VALUES ($1)", &[Arg::Text(&text)])
            .await
            .unwrap();
        tx.commit_ran(None).await.unwrap();
        let end = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::fs::metadata(&path).unwrap().len() < before + (4 << 20) {
            assert!(
                std::time::Instant::now() < end,
                "the 4 MiB written never reached the database file"
            );
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        drop(store);
    }

    /// Under steady writes (one a millisecond), the WAL still starts over: it holds at most
    /// `RESTART_AFTER_FRAMES` and what a checkpoint's second of writes adds, not every frame.
    #[tokio::test]
    async fn the_wal_starts_over_under_steady_writes() {
        let db = crate::sql::scratch::db("restart");
        let (path, url) = (db.path.clone(), &db.url);
        let store = SqlStore::connect(url).await.unwrap();
        // Each commit writes one page of each of four tables: four frames.
        const TABLES: u64 = 4;
        let mut tx = store.begin_write_direct(Scope::All).await.unwrap();
        for t in 0..TABLES {
            tx.exec(&format!("CREATE TABLE steady{t} (n BIGINT)"), &[])
                .await
                .unwrap();
            tx.exec(&format!("INSERT INTO steady{t} (n) VALUES (0)"), &[])
                .await
                .unwrap();
        }
        tx.commit_ran(None).await.unwrap();
        let wal = || {
            let mut p = path.as_os_str().to_owned();
            p.push("-wal");
            std::fs::metadata(p).map_or(0, |m| m.len())
        };
        let seconds = 4;
        let started = std::time::Instant::now();
        let mut commits = 0u64;
        while started.elapsed() < std::time::Duration::from_secs(seconds) {
            let mut tx = store.begin_write_direct(Scope::All).await.unwrap();
            for t in 0..TABLES {
                tx.exec(&format!("UPDATE steady{t} SET n = n + 1"), &[])
                    .await
                    .unwrap();
            }
            tx.commit_ran(None).await.unwrap();
            commits += 1;
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
        // A frame is a 4 KiB page and its 24-byte header.
        let (frames, per_second) = (commits * TABLES, commits * TABLES / seconds);
        let most = (RESTART_AFTER_FRAMES as u64 + 2 * per_second) * 4120 + 32;
        assert!(
            wal() <= most,
            "the WAL holds {} bytes after {frames} frames at {per_second} a second \
             (at most {most} expected)",
            wal()
        );
        drop(store);
    }
}
