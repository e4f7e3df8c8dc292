//! The content lock across nodes: a PostgreSQL advisory lock held by a connection of its own,
//! outside the pool, so no other work on that connection can give it back by accident.
use async_trait::async_trait;
use sqlx::{AnyConnection, Connection, Executor};

use super::SqlStore;
use crate::store::{ContentLock, ContentLockStore};
use crate::Result;

#[async_trait]
impl ContentLockStore for SqlStore {
    async fn content_lock(&self) -> Result<ContentLock> {
        let Some((lock, unlock)) = self.dialect.content_lock() else {
            return Ok(ContentLock { _release: None });
        };
        let mut conn = AnyConnection::connect_with(&self.opts).await?;
        conn.execute(lock).await?;
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        // A drop cannot wait for the unlock: a task does it. Were it never to run (the runtime
        // stopping), closing the connection gives the lock back all the same.
        tokio::spawn(async move {
            let _ = rx.await;
            if conn.execute(unlock).await.is_err() {
                tracing::warn!("could not give the content lock back; its connection closes");
            }
            let _ = conn.close().await;
        });
        Ok(ContentLock { _release: Some(tx) })
    }
}
