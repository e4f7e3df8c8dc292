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

type Manager = <Any as Database>::TransactionManager;

#[derive(Clone)]
pub(crate) enum Conns {
    Pool(AnyPool),
    Held(Arc<Mutex<AnyConnection>>),
}

impl Conns {
    /// A plain (read) transaction.
    pub(crate) async fn begin(&self) -> sqlx::Result<Tx> {
        match self {
            Conns::Pool(p) => Ok(Tx(Some(TxConn::Pooled(p.begin().await?)))),
            Conns::Held(_) => self.begin_with("BEGIN").await,
        }
    }

    pub(crate) async fn begin_with(&self, statement: &'static str) -> sqlx::Result<Tx> {
        match self {
            Conns::Pool(p) => Ok(Tx(Some(TxConn::Pooled(p.begin_with(statement).await?)))),
            Conns::Held(c) => {
                let mut g = c.clone().lock_owned().await;
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
            Conns::Held(c) => super::Reader::Held(c.clone().lock_owned().await),
        })
    }
}

impl std::fmt::Debug for Conns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Conns::Pool(_) => "Conns::Pool",
            Conns::Held(_) => "Conns::Held",
        })
    }
}

/// A transaction, committed with `commit` and rolled back when dropped without it.
pub(crate) struct Tx(Option<TxConn>);

enum TxConn {
    Pooled(Transaction<'static, Any>),
    Held(OwnedMutexGuard<AnyConnection>),
}

impl Tx {
    pub(crate) async fn commit(mut self) -> sqlx::Result<()> {
        match self.0.as_mut() {
            // The guard stays in `self` until COMMIT answered: if this future is dropped
            // before, or COMMIT fails, `drop` rolls back (a no-op once committed).
            Some(TxConn::Held(g)) => {
                Manager::commit(g).await?;
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
            Conns::Held(c) => {
                let c = c.clone();
                // Writes answer few rows; collected while the connection is held.
                stream::once(async move {
                    let mut g = c.lock_owned().await;
                    (&mut *g).fetch_many(query).collect::<Vec<_>>().await
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
            Conns::Held(c) => {
                let c = c.clone();
                Box::pin(async move { (&mut *c.lock_owned().await).fetch_optional(query).await })
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
            Conns::Held(c) => {
                let c = c.clone();
                Box::pin(async move {
                    (&mut *c.lock_owned().await)
                        .prepare_with(sql, parameters)
                        .await
                })
            }
        }
    }

    fn describe<'e, 'q: 'e>(self, sql: &'q str) -> BoxFuture<'e, sqlx::Result<Describe<Any>>> {
        match self {
            Conns::Pool(p) => p.describe(sql),
            Conns::Held(c) => {
                let c = c.clone();
                Box::pin(async move { (&mut *c.lock_owned().await).describe(sql).await })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::SqlStore;

    /// The held writer: a write transaction dropped before its end leaves nothing behind, and
    /// the next one (on the same connection) starts clean and commits.
    #[tokio::test]
    async fn dropped_write_is_rolled_back_on_the_held_writer() {
        let path = std::env::temp_dir().join(format!("modelyard-conns-{}.db", std::process::id()));
        let store = SqlStore::connect(&format!("sqlite://{}", path.display()))
            .await
            .unwrap();
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
        for suffix in ["", "-wal", "-shm"] {
            let mut p = path.clone().into_os_string();
            p.push(suffix);
            let _ = std::fs::remove_file(p);
        }
    }
}
