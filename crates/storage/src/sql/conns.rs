//! Where statements go: sqlx's pool, or one SQLite connection held outside it (the writer),
//! and the write transaction on either.
//!
//! sqlx's pool pings every connection it takes back, a round trip to SQLite's worker thread as
//! costly as a small statement, three times per prediction on the writer alone. SQLite has one
//! writer anyway, so it is held like the readers: a file cannot hang up, and a transaction
//! dropped before its end is rolled back by the next command on the connection, in order (what
//! the ping on return was for).
use std::ops::{Deref, DerefMut};
use std::sync::Arc;

use futures_util::future::BoxFuture;
use futures_util::stream::{self, BoxStream, StreamExt};
use sqlx::any::{AnyQueryResult, AnyRow};
use sqlx::{Any, AnyConnection, AnyPool, Database, Describe, Either, Execute, Executor};
use sqlx::{Transaction, TransactionManager};
use tokio::sync::{Mutex, OwnedMutexGuard};

use super::cache::{Scope, Writes};

type Manager = <Any as Database>::TransactionManager;

#[derive(Clone)]
pub(crate) enum Conns {
    Pool(AnyPool),
    /// SQLite's writer, and the count of its uses that the row cache follows (`cache.rs`).
    Held(Arc<Mutex<AnyConnection>>, Arc<Writes>),
}

/// SQLite's writer, taken. While it is held no row is cached; when it is given back, every row
/// cached before is stale. A command still in flight when it is given back (its future dropped
/// mid-way) may commit later: `settle` was not called, so the cache stays off until a command
/// queued behind it on the same connection has answered.
pub(crate) struct WriteGuard {
    conn: Option<OwnedMutexGuard<AnyConnection>>,
    mutex: Arc<Mutex<AnyConnection>>,
    writes: Arc<Writes>,
    scope: Scope,
    settled: bool,
}

impl WriteGuard {
    pub(crate) async fn lock(mutex: &Arc<Mutex<AnyConnection>>, writes: &Arc<Writes>) -> Self {
        Self::lock_for(mutex, writes, Scope::All).await
    }

    /// The writer, for writes of `scope` only.
    pub(crate) async fn lock_for(
        mutex: &Arc<Mutex<AnyConnection>>,
        writes: &Arc<Writes>,
        scope: Scope,
    ) -> Self {
        let conn = mutex.clone().lock_owned().await;
        writes.taken(scope);
        WriteGuard {
            conn: Some(conn),
            mutex: mutex.clone(),
            writes: writes.clone(),
            scope,
            settled: true,
        }
    }

    pub(crate) fn writes(&self) -> &Writes {
        &self.writes
    }

    /// A command that may commit is being sent: until `settle`, a drop leaves it in flight.
    fn unsettle(&mut self) {
        self.settled = false;
    }

    fn settle(&mut self) {
        self.settled = true;
    }
}

impl Drop for WriteGuard {
    fn drop(&mut self) {
        if !self.settled {
            if self.scope == Scope::Jobs {
                // Whether it committed, and so what it did to a run count, is unknown.
                self.writes.written_around();
            }
            self.writes.unsettled();
            // SQLite's commands run in order on the connection's thread: once one sent after
            // the orphan has answered, the orphan has ended.
            let (mutex, writes) = (self.mutex.clone(), self.writes.clone());
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(async move {
                    let mut g = WriteGuard::lock(&mutex, &writes).await;
                    if (&mut *g).execute("SELECT 1").await.is_ok() {
                        writes.settled();
                    }
                });
            }
        }
        drop(self.conn.take());
        self.writes.given_back(self.scope);
    }
}

impl Deref for WriteGuard {
    type Target = AnyConnection;
    fn deref(&self) -> &AnyConnection {
        self.conn.as_ref().expect("held until dropped")
    }
}

impl DerefMut for WriteGuard {
    fn deref_mut(&mut self) -> &mut AnyConnection {
        self.conn.as_mut().expect("held until dropped")
    }
}

impl Conns {
    /// A plain (read) transaction.
    pub(crate) async fn begin(&self) -> sqlx::Result<Tx> {
        match self {
            Conns::Pool(p) => Ok(Tx(Some(TxConn::Pooled(p.begin().await?)))),
            Conns::Held(..) => self.begin_with("BEGIN").await,
        }
    }

    pub(crate) async fn begin_with(&self, statement: &'static str) -> sqlx::Result<Tx> {
        match self {
            Conns::Pool(p) => Ok(Tx(Some(TxConn::Pooled(p.begin_with(statement).await?)))),
            Conns::Held(c, w) => {
                let mut g = WriteGuard::lock(c, w).await;
                if Manager::get_transaction_depth(&g) > 0 {
                    // Left open by a task dropped mid-way; never build on it.
                    Manager::rollback(&mut g).await?;
                }
                Manager::begin(&mut g, Some(statement.into())).await?;
                Ok(Tx(Some(TxConn::Held(g))))
            }
        }
    }

    pub(crate) async fn acquire(&self) -> sqlx::Result<super::Reader> {
        Ok(match self {
            Conns::Pool(p) => super::Reader::Pooled(p.acquire().await?),
            // Only the pool lends connections for reads: the writer is taken as a `WriteGuard`.
            Conns::Held(..) => {
                return Err(sqlx::Error::Protocol(
                    "the writer is not lent for reads".into(),
                ))
            }
        })
    }
}

impl std::fmt::Debug for Conns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Conns::Pool(_) => "Conns::Pool",
            Conns::Held(..) => "Conns::Held",
        })
    }
}

/// A transaction, committed with `commit` and rolled back when dropped without it.
pub(crate) struct Tx(Option<TxConn>);

enum TxConn {
    Pooled(Transaction<'static, Any>),
    Held(WriteGuard),
}

impl Tx {
    pub(crate) async fn commit(mut self) -> sqlx::Result<()> {
        match self.0.as_mut() {
            // The guard stays in `self` until COMMIT answered: if this future is dropped
            // before, or COMMIT fails, `drop` rolls back (a no-op once committed).
            Some(TxConn::Held(g)) => {
                g.unsettle();
                Manager::commit(g).await?;
                g.settle();
                self.0 = None;
                Ok(())
            }
            Some(TxConn::Pooled(_)) => match self.0.take() {
                Some(TxConn::Pooled(t)) => t.commit().await,
                _ => Ok(()),
            },
            None => Ok(()),
        }
    }
}

impl Drop for Tx {
    fn drop(&mut self) {
        if let Some(TxConn::Held(mut g)) = self.0.take() {
            Manager::start_rollback(&mut g);
        }
    }
}

impl Deref for Tx {
    type Target = AnyConnection;
    fn deref(&self) -> &AnyConnection {
        match self.0.as_ref().expect("transaction in use") {
            TxConn::Pooled(t) => t,
            TxConn::Held(g) => g,
        }
    }
}

impl DerefMut for Tx {
    fn deref_mut(&mut self) -> &mut AnyConnection {
        match self.0.as_mut().expect("transaction in use") {
            TxConn::Pooled(t) => t,
            TxConn::Held(g) => g,
        }
    }
}

impl<'p> Executor<'p> for &'_ Conns {
    type Database = Any;

    fn fetch_many<'e, 'q: 'e, E>(
        self,
        query: E,
    ) -> BoxStream<'e, sqlx::Result<Either<AnyQueryResult, AnyRow>>>
    where
        E: 'q + Execute<'q, Any>,
    {
        match self {
            Conns::Pool(p) => p.fetch_many(query),
            Conns::Held(c, w) => {
                let (c, w) = (c.clone(), w.clone());
                // Writes answer few rows; collected while the connection is held.
                stream::once(async move {
                    let mut g = WriteGuard::lock(&c, &w).await;
                    g.unsettle();
                    let rows = (&mut *g).fetch_many(query).collect::<Vec<_>>().await;
                    g.settle();
                    rows
                })
                .flat_map(stream::iter)
                .boxed()
            }
        }
    }

    fn fetch_optional<'e, 'q: 'e, E>(self, query: E) -> BoxFuture<'e, sqlx::Result<Option<AnyRow>>>
    where
        E: 'q + Execute<'q, Any>,
    {
        match self {
            Conns::Pool(p) => p.fetch_optional(query),
            Conns::Held(c, w) => {
                let (c, w) = (c.clone(), w.clone());
                Box::pin(async move {
                    let mut g = WriteGuard::lock(&c, &w).await;
                    g.unsettle();
                    let row = (&mut *g).fetch_optional(query).await;
                    g.settle();
                    row
                })
            }
        }
    }

    fn prepare_with<'e, 'q: 'e>(
        self,
        sql: &'q str,
        parameters: &'e [<Any as Database>::TypeInfo],
    ) -> BoxFuture<'e, sqlx::Result<<Any as Database>::Statement<'q>>> {
        match self {
            Conns::Pool(p) => p.prepare_with(sql, parameters),
            Conns::Held(c, w) => {
                let (c, w) = (c.clone(), w.clone());
                Box::pin(async move {
                    (&mut *WriteGuard::lock(&c, &w).await)
                        .prepare_with(sql, parameters)
                        .await
                })
            }
        }
    }

    fn describe<'e, 'q: 'e>(self, sql: &'q str) -> BoxFuture<'e, sqlx::Result<Describe<Any>>> {
        match self {
            Conns::Pool(p) => p.describe(sql),
            Conns::Held(c, w) => {
                let (c, w) = (c.clone(), w.clone());
                Box::pin(async move { (&mut *WriteGuard::lock(&c, &w).await).describe(sql).await })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::SqlStore;
    use super::Conns;

    /// A write whose future is dropped while SQLite runs it may still commit after the writer
    /// is given back: until a command behind it has answered, no row is kept or served.
    #[tokio::test]
    async fn rows_are_not_kept_while_a_dropped_write_may_still_commit() {
        let db = crate::sql::scratch::db("unsettled");
        let url = &db.url;
        let store = SqlStore::connect(url).await.unwrap();
        let Conns::Held(_, writes) = &store.writer else {
            panic!("SQLite's writer is held")
        };
        assert!(writes.stamp().is_some(), "nothing written yet");
        // A write that takes SQLite a while (counting to three million first).
        let write = sqlx::query(
            "INSERT INTO schema_migrations (version) SELECT 99 FROM (WITH RECURSIVE c(x) AS \
             (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 3000000) SELECT max(x) FROM c)",
        )
        .execute(&store.writer);
        // Polled once (the statement is sent to SQLite's thread), then dropped.
        let r = tokio::time::timeout(std::time::Duration::ZERO, write).await;
        assert!(r.is_err(), "the write answered on its first poll");
        assert_eq!(
            writes.stamp(),
            None,
            "kept rows while the write was in flight"
        );
        let until = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while writes.stamp().is_none() {
            assert!(std::time::Instant::now() < until, "never settled");
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        drop(store);
    }

    /// The held writer: a write transaction dropped before its end leaves nothing behind, and
    /// the next one (on the same connection) starts clean and commits.
    #[tokio::test]
    async fn dropped_write_is_rolled_back_on_the_held_writer() {
        let db = crate::sql::scratch::db("conns");
        let url = &db.url;
        let store = SqlStore::connect(url).await.unwrap();
        let count = |store: SqlStore| async move {
            sqlx::query_scalar::<_, i64>(
                "SELECT COUNT(*) FROM schema_migrations WHERE version = 99",
            )
            .fetch_one(&store.pool)
            .await
            .unwrap()
        };
        let insert = "INSERT INTO schema_migrations (version) VALUES (99)";
        let mut tx = store.begin_write().await.unwrap();
        sqlx::query(insert).execute(&mut *tx).await.unwrap();
        drop(tx);
        assert_eq!(count(store.clone()).await, 0, "dropped write was kept");
        let mut tx = store.begin_write().await.unwrap();
        sqlx::query(insert).execute(&mut *tx).await.unwrap();
        tx.commit().await.unwrap();
        assert_eq!(count(store.clone()).await, 1, "committed write was lost");
        // A single statement outside a transaction goes to the same connection.
        sqlx::query("DELETE FROM schema_migrations WHERE version = 99")
            .execute(&store.writer)
            .await
            .unwrap();
        assert_eq!(count(store.clone()).await, 0);
        drop(store);
    }
}
