//! A node's cache drops copies of trees and weights no version refers to any more: a release
//! on another node cannot reach this node's disk, so each node checks its own, periodically.
use std::sync::{Arc, Weak};
use std::time::Duration;

use crate::{Blobs, Result};

impl Blobs {
    /// Checks this node's cached trees and weights every `every`, dropping those no version
    /// refers to and nothing here holds open. Ends when the `Blobs` is dropped. Nothing to do
    /// without an object store (a release removes the data directory's content itself).
    pub fn start_cache_sweep(self: &Arc<Self>, every: Duration) {
        if self.shared.is_none() {
            return;
        }
        let weak: Weak<Blobs> = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(b) = weak.upgrade() else { return };
                if let Err(e) = b.sweep_cache().await {
                    tracing::warn!(error = %e, "could not check the cache of stored content");
                }
            }
        });
    }

    /// One pass of [`Blobs::start_cache_sweep`]: answers how many copies went.
    pub async fn sweep_cache(&self) -> Result<usize> {
        let Some(sh) = &self.shared else {
            return Ok(0);
        };
        let mut gone = 0;
        for name in sh.cache.names() {
            let used = if let Some(d) = name.strip_prefix("trees/") {
                self.store.artifact_in_use(d).await?
            } else if let Some(k) = name.strip_prefix("weights/") {
                self.store.weights_in_use(k).await?
            } else {
                true
            };
            if !used && sh.cache.drop_unpinned(&name) {
                gone += 1;
            }
        }
        Ok(gone)
    }

    /// The bytes of this node's cached copies (0 without an object store).
    pub fn cached_bytes(&self) -> u64 {
        self.shared.as_ref().map_or(0, |sh| sh.cache.bytes())
    }
}
