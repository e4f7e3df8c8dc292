//! This worker in the cluster: its registration and heartbeat, which renews the leases of the
//! jobs and warm slots it holds, and the reaper any node runs over everyone's leases.
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use modelyard_domain::worker::{Offer, Worker};
use modelyard_storage::{JobLease, Store, StoreError};

use crate::Inner;

/// What a job's error says when its worker's lease ran out while it ran.
pub const WORKER_LOST: &str =
    "The worker running this stopped answering (its lease ran out); run it again.";

/// A worker silent for this many leases is forgotten (its jobs went long before).
const FORGET_AFTER_LEASES: i32 = 10;

/// How often the reaper looks for passed leases and jobs nobody can take.
const REAP_EVERY: Duration = Duration::from_secs(2);

impl Inner {
    pub(crate) fn offer(&self) -> Offer {
        offer(&self.cfg)
    }

    /// A lease from now on, for a job this worker takes.
    pub(crate) fn job_lease(&self) -> JobLease {
        JobLease {
            worker_id: self.cfg.worker_id.clone(),
            until: Utc::now() + lease(self),
        }
    }
}

fn offer(cfg: &crate::RunnerConfig) -> Offer {
    if cfg.takes_everything {
        Offer::everything()
    } else {
        Offer::new(cfg.hardware.clone(), cfg.gpus)
    }
}

fn lease(inner: &Inner) -> chrono::Duration {
    chrono_lease(inner.cfg.lease)
}

fn chrono_lease(lease: Duration) -> chrono::Duration {
    chrono::Duration::from_std(lease).unwrap_or(chrono::Duration::seconds(30))
}

/// Records this worker, its heartbeat now.
pub async fn register(store: &dyn Store, cfg: &crate::RunnerConfig) -> Result<(), StoreError> {
    let now = Utc::now();
    store
        .register_worker(&Worker {
            id: cfg.worker_id.clone(),
            offer: offer(cfg),
            gpus: cfg.gpus as i64,
            max_servers: cfg.max_servers as i64,
            servers: 0,
            started_at: now,
            heartbeat_at: now,
        })
        .await
}

/// Every third of a lease: this worker's jobs and warm slots are renewed and its heartbeat
/// written. A worker the reaper forgot (it stalled past many leases) registers again.
pub async fn heartbeat(inner: Arc<Inner>) {
    let mut shutdown = inner.shutdown.subscribe();
    let every = (inner.cfg.lease / 3).max(Duration::from_millis(100));
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.changed() => return,
        }
        let now = Utc::now();
        let until = now + lease(&inner);
        let id = &inner.cfg.worker_id;
        if let Err(e) = inner.store.renew_leases(id, until).await {
            tracing::error!(error = %e, "could not renew this worker's leases");
        }
        let servers = inner.pool.count() as i64;
        match inner.store.heartbeat(id, servers, now, until).await {
            Ok(true) => {}
            Ok(false) => {
                if let Err(e) = register(inner.store.as_ref(), &inner.cfg).await {
                    tracing::error!(error = %e, "could not register this worker again");
                }
            }
            Err(e) => tracing::error!(error = %e, "could not write this worker's heartbeat"),
        }
    }
}

/// The reaper, run by every runner and by API nodes of a cluster (so leases end even while
/// no worker is left): every `REAP_EVERY`, jobs whose lease passed end failed (started) or go
/// back to the queue (only taken), silent workers are forgotten, and queued jobs nobody can
/// take say why. Its writes are conditional, so several nodes running it is harmless. `reaped`
/// hears when leases ran out (a runner wakes its dispatcher). Ends when `stop` says so.
pub async fn reaper(
    store: Arc<dyn Store>,
    lease: Duration,
    reaped: impl Fn() + Send + 'static,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let lease = chrono_lease(lease);
    loop {
        reap(store.as_ref(), lease, &reaped).await;
        tokio::select! {
            _ = tokio::time::sleep(REAP_EVERY) => {}
            _ = stop.changed() => return,
        }
    }
}

async fn reap(store: &dyn Store, lease: chrono::Duration, reaped: &impl Fn()) {
    let now = Utc::now();
    match store.expire_leases(now, WORKER_LOST).await {
        Ok(r) if r.failed + r.requeued > 0 => {
            tracing::warn!(failed = r.failed, requeued = r.requeued, "leases ran out");
            reaped();
        }
        Ok(_) => {}
        Err(e) => tracing::error!(error = %e, "could not expire leases"),
    }
    let stale = now - lease * FORGET_AFTER_LEASES;
    if let Err(e) = store.forget_stale_workers(stale).await {
        tracing::error!(error = %e, "could not forget silent workers");
    }
    note_waiting(store, lease, now).await;
}

/// Queued jobs that no live worker offers the hardware (or the GPU) for get one line in their
/// logs, once, so whoever waits on them knows why.
async fn note_waiting(store: &dyn Store, lease: chrono::Duration, now: chrono::DateTime<Utc>) {
    let Ok(needs) = store.unnoted_needs(500).await else {
        return;
    };
    if needs.is_empty() {
        return;
    }
    let Ok(workers) = store.live_workers(now - lease).await else {
        return;
    };
    for need in needs {
        if workers
            .iter()
            .any(|w| w.offer.takes(&need.hardware, need.gpu))
        {
            continue;
        }
        if let Err(e) = store.note_waiting(&need.job_id, &need.waiting_line()).await {
            tracing::error!(error = %e, "could not note why a job waits");
        }
    }
}
