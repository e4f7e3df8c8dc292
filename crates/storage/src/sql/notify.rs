//! The notice bus: PostgreSQL's `NOTIFY`, heard through a `LISTEN` connection of its own, or,
//! on SQLite (one server), a broadcast inside this process.
use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::PgListener;
use tokio::sync::{broadcast, oneshot};

use super::SqlStore;
use crate::store::{Listener, Notice, NotifyStore, NOTICE_MAX};
use crate::{Result, StoreError};

/// How many notices a listener may fall behind by before it is told it missed some.
const BACKLOG: usize = 4096;

/// Where notices go.
#[derive(Clone)]
pub(crate) enum Bus {
    InProcess(broadcast::Sender<Notice>),
    /// Each listener holds a connection of its own (a `LISTEN` lasts as long as its session).
    Postgres {
        url: String,
    },
}

impl Bus {
    pub(crate) fn new(notifies_other_processes: bool, url: &str) -> Bus {
        if notifies_other_processes {
            Bus::Postgres { url: url.into() }
        } else {
            Bus::InProcess(broadcast::channel(BACKLOG).0)
        }
    }
}

#[async_trait]
impl NotifyStore for SqlStore {
    fn notifies_other_processes(&self) -> bool {
        self.dialect.notifies_other_processes()
    }

    async fn notify(&self, topic: &str, payload: &str) -> Result<()> {
        if payload.len() > NOTICE_MAX {
            return Err(StoreError::TooLarge(payload.len()));
        }
        match &self.bus {
            Bus::InProcess(tx) => {
                // No listener is no error: nobody needed to hear it.
                let _ = tx.send(Notice::Message {
                    topic: topic.into(),
                    payload: payload.into(),
                });
            }
            Bus::Postgres { .. } => {
                sqlx::query("SELECT pg_notify($1, $2)")
                    .bind(topic)
                    .bind(payload)
                    .execute(&self.writer)
                    .await?;
            }
        }
        Ok(())
    }

    async fn listen(&self, topics: &[&str]) -> Result<Listener> {
        let topics: Vec<String> = topics.iter().map(|t| t.to_string()).collect();
        match &self.bus {
            Bus::InProcess(tx) => Ok(Listener::new(tx.subscribe(), topics, None)),
            Bus::Postgres { url } => {
                let mut pg = PgListener::connect(url).await?;
                pg.listen_all(topics.iter().map(String::as_str)).await?;
                let (tx, rx) = broadcast::channel(BACKLOG);
                let (stop, stopped) = oneshot::channel();
                tokio::spawn(hear(pg, tx, stopped));
                Ok(Listener::new(rx, topics, Some(stop)))
            }
        }
    }
}

/// Passes on what the `LISTEN` connection hears until the listener is dropped. A lost
/// connection is made again (`PgListener` listens to the same topics on the new one); what was
/// sent meanwhile is gone, so listeners are told to re-read.
async fn hear(
    mut pg: PgListener,
    tx: broadcast::Sender<Notice>,
    mut stopped: oneshot::Receiver<()>,
) {
    loop {
        let heard = tokio::select! {
            _ = &mut stopped => return,
            heard = pg.try_recv() => heard,
        };
        match heard {
            Ok(Some(n)) => {
                let _ = tx.send(Notice::Message {
                    topic: n.channel().into(),
                    payload: n.payload().into(),
                });
            }
            Ok(None) => {
                tracing::warn!("lost the connection that listens for notices; making it again");
                let _ = tx.send(Notice::Missed);
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for notices; trying again in a second");
                tokio::select! {
                    _ = &mut stopped => return,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
                let _ = tx.send(Notice::Missed);
            }
        }
    }
}
