//! SQLite's hot reads, run on the caller's own thread.
//!
//! sqlx runs every SQLite connection on a worker thread of its own: a statement is handed to
//! it and its rows handed back, each a wake-up of another thread. For the one-row reads every
//! request makes (a model, a version, a prediction) those wake-ups were most of the request's
//! CPU. Here the same SQL runs on rusqlite connections, synchronously, in a few microseconds;
//! an indexed read of a page-cached row never waits on a writer (WAL). Writes and
//! transactions stay on sqlx.
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};

use rusqlite::types::ValueRef;
use rusqlite::{Connection, OpenFlags};

use crate::rows::Cols;
use crate::{Result, StoreError};

/// A statement's argument.
pub(crate) enum Arg<'a> {
    Int(i64),
    Text(&'a str),
}

/// More than the threads that read at once (tokio's workers), so a reader rarely waits.
const CONNS: usize = 4;

pub(crate) struct Direct {
    conns: Vec<Mutex<Connection>>,
    next: AtomicUsize,
}

fn corrupt(e: rusqlite::Error) -> StoreError {
    StoreError::Internal(format!("sqlite: {e}"))
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
        mut decode: impl FnMut(&dyn Cols) -> Result<T>,
    ) -> Result<Vec<T>> {
        let conn = self.take();
        let mut stmt = conn.prepare_cached(sql).map_err(corrupt)?;
        for i in 1..=stmt.parameter_count() {
            // `$N` is the Nth argument wherever it appears, as sqlx binds it.
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
            }
            .map_err(corrupt)?;
        }
        let mut rows = stmt.raw_query();
        let mut out = Vec::new();
        while let Some(row) = rows.next().map_err(corrupt)? {
            let names = row.as_ref().column_names();
            out.push(decode(&LiteRow { row, names })?);
        }
        Ok(out)
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
