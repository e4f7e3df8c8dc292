//! The upload read as it arrives: a blocking `Read` over the request body, so the archive is
//! unpacked while it is received and never held whole in memory.
use std::io::Read;

use axum::body::{Body, Bytes};
use futures_util::StreamExt;
use tokio::sync::mpsc;

/// How much of a refused upload is still read, so the client hears the answer rather than a
/// connection reset (as `extract::read_body` does).
const DRAIN_LIMIT: u64 = 64 * 1024 * 1024;

/// Why the body stopped.
#[derive(Debug)]
pub enum Stop {
    /// More compressed bytes than the limit.
    TooLarge,
    /// The connection broke.
    Broken(String),
}

/// Forwards `body` to the returned reader, a few chunks ahead at most. Stops at `limit` bytes;
/// when the reader is dropped early (the archive was refused), reads on, discarding, up to a
/// bound.
pub fn reader(body: Body, limit: u64) -> BodyReader {
    let (tx, rx) = mpsc::channel::<Result<Bytes, Stop>>(8);
    tokio::spawn(async move {
        let mut stream = body.into_data_stream();
        let mut total: u64 = 0;
        let mut receiving = true;
        while let Some(chunk) = stream.next().await {
            let chunk = match chunk {
                Ok(c) => c,
                Err(e) => {
                    let _ = tx.send(Err(Stop::Broken(e.to_string()))).await;
                    return;
                }
            };
            total = total.saturating_add(chunk.len() as u64);
            if receiving && total > limit {
                let _ = tx.send(Err(Stop::TooLarge)).await;
                receiving = false;
            }
            if receiving && tx.send(Ok(chunk)).await.is_err() {
                receiving = false;
            }
            if !receiving && total > limit.max(DRAIN_LIMIT) {
                return;
            }
        }
    });
    BodyReader {
        rx,
        current: Bytes::new(),
        stopped: None,
    }
}

pub struct BodyReader {
    rx: mpsc::Receiver<Result<Bytes, Stop>>,
    current: Bytes,
    /// Why the body ended early, for the answer.
    pub stopped: Option<Stop>,
}

impl Read for BodyReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(chunk)) => self.current = chunk,
                Some(Err(stop)) => {
                    let msg = match &stop {
                        Stop::TooLarge => "the upload is larger than this server's limit".into(),
                        Stop::Broken(e) => format!("the upload broke off: {e}"),
                    };
                    self.stopped = Some(stop);
                    return Err(std::io::Error::other(msg));
                }
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
    }
}
