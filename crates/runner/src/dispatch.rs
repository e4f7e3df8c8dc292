//! Taking queued jobs fairly, and the background chores of the pool.
use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use modelyard_domain::{Job, JobKind};

use crate::{job, pool, Inner};

/// Round-robin over accounts, and within an account over versions, each oldest first: one
/// account's thousand queued predictions do not hold up another's one.
pub fn fair_order(jobs: Vec<Job>) -> Vec<Job> {
    type Versions = Vec<(String, VecDeque<Job>)>;
    let mut accounts: Vec<(i64, Versions)> = Vec::new();
    for j in jobs {
        let a = match accounts.iter_mut().position(|(id, _)| *id == j.account_id) {
            Some(p) => &mut accounts[p].1,
            None => {
                accounts.push((j.account_id, Vec::new()));
                &mut accounts.last_mut().unwrap().1
            }
        };
        match a.iter_mut().find(|(v, _)| *v == j.version_id) {
            Some((_, q)) => q.push_back(j),
            None => a.push((j.version_id.clone(), VecDeque::from([j]))),
        }
    }
    let mut cursors = vec![0usize; accounts.len()];
    let mut out = Vec::new();
    loop {
        let mut took = false;
        for (i, (_, versions)) in accounts.iter_mut().enumerate() {
            for _ in 0..versions.len() {
                let c = cursors[i] % versions.len();
                cursors[i] += 1;
                if let Some(j) = versions[c].1.pop_front() {
                    out.push(j);
                    took = true;
                    break;
                }
            }
        }
        if !took {
            return out;
        }
    }
}

/// One of the `--max-servers` places a taken job holds. It is given back as soon as the job's
/// server is (before the job's end is written), so the next job starts on that server while
/// this one's record is being written.
pub struct Slot(Option<Arc<Inner>>);

impl Slot {
    fn take(inner: &Arc<Inner>) -> Self {
        inner.inflight.fetch_add(1, Ordering::SeqCst);
        Slot(Some(inner.clone()))
    }

    pub fn give_back(&mut self) {
        if let Some(inner) = self.0.take() {
            inner.inflight.fetch_sub(1, Ordering::SeqCst);
            inner.wake.notify_one();
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.give_back();
    }
}

pub async fn run(inner: Arc<Inner>) {
    let mut shutdown = inner.shutdown.subscribe();
    // Each worker reads only what it may take, and orders that fairly.
    let offer = inner.offer();
    // Whether the last read of the queue left jobs waiting: then fresh jobs wait their turn.
    let mut backlog = true;
    loop {
        if *shutdown.borrow() {
            return;
        }
        let free = inner
            .cfg
            .max_servers
            .max(1)
            .saturating_sub(inner.inflight.load(Ordering::SeqCst));
        let fresh: Vec<Job> = inner
            .fresh
            .lock()
            .map(|mut q| q.drain(..).collect())
            .unwrap_or_default();
        let news = inner.queue_news.swap(false, Ordering::SeqCst);
        if free > 0 {
            let jobs = if !backlog && !news && fresh.len() <= free {
                // Nothing else waits: the last read of the queue left nothing behind, and
                // whatever was queued since is in `fresh` (none when a place was given back).
                Ok(fresh)
            } else {
                inner.store.queued_jobs(&offer, 500).await
            };
            match jobs {
                Ok(jobs) => {
                    let waiting = jobs.len();
                    let mut started = 0;
                    for j in fair_order(jobs) {
                        if started == free {
                            break;
                        }
                        if j.deadline.is_some_and(|d| d <= Utc::now()) {
                            job::expire_queued(&inner, &j).await;
                            continue;
                        }
                        let key = pool::Key {
                            version_id: j.version_id.clone(),
                            train: j.kind == JobKind::Training,
                        };
                        // With a warm server free for it, taking and starting are one write.
                        let now = inner.pool.has_idle(&key).then(Utc::now);
                        let lease = inner.job_lease();
                        let claimed = match now {
                            Some(at) => {
                                inner
                                    .store
                                    .claim_and_start_job(&j.id, &offer, &lease, at)
                                    .await
                            }
                            None => inner.store.claim_job(&j.id, &offer, &lease).await,
                        };
                        match claimed {
                            Ok(true) => {
                                started += 1;
                                let slot = Slot::take(&inner);
                                let inner = inner.clone();
                                inner.running.fetch_add(1, Ordering::SeqCst);
                                tokio::spawn(async move {
                                    // Boxed where it starts: a job's future is kilobytes,
                                    // copied three times over by a spawn otherwise.
                                    Box::pin(job::run(&inner, j, now, slot)).await;
                                    inner.running.fetch_sub(1, Ordering::SeqCst);
                                });
                            }
                            Ok(false) => {}
                            Err(e) => tracing::error!(error = %e, "could not take a job"),
                        }
                    }
                    backlog = waiting > started;
                }
                Err(e) => tracing::error!(error = %e, "could not read the queue"),
            }
        } else if !fresh.is_empty() || news {
            // They are in the table: the next read of the queue finds them in their turn.
            backlog = true;
        }
        tokio::select! {
            _ = inner.wake.notified() => {}
            _ = tokio::time::sleep(Duration::from_secs(1)) => { backlog = true; }
            _ = shutdown.changed() => {}
        }
    }
}

/// Idle servers stop, deployments keep their minimum warm, old API data is removed.
pub async fn housekeeping(inner: Arc<Inner>) {
    let mut shutdown = inner.shutdown.subscribe();
    let mut tick = 0u64;
    loop {
        inner.pool.reap().await;
        if tick.is_multiple_of(4) {
            keep_warm(&inner).await;
        }
        if tick.is_multiple_of(10) {
            job::remove_expired(&inner).await;
        }
        if tick.is_multiple_of(120) {
            trim_envs(&inner).await;
        }
        tick += 1;
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            _ = shutdown.changed() => return,
        }
    }
}

/// Keeps warm the servers of the deployments' warm slots this worker holds: the cluster
/// keeps each deployment's `min_instances` between its workers, one slot a server.
/// Keeps the built Python environments within `env_cache_bytes` (every minute): the least
/// recently used go first, never one a server runs or starts on, nor one a job was handed in
/// the last ten minutes. Specs that named a removed one are forgotten, so the next job of their
/// version builds it again.
async fn trim_envs(inner: &Arc<Inner>) {
    const KEEP: Duration = Duration::from_secs(600);
    let in_use: std::collections::HashSet<std::path::PathBuf> = {
        let keys = inner.pool.keys_in_use();
        let specs = inner.specs.lock().map(|m| m.clone()).unwrap_or_default();
        keys.iter()
            .filter_map(|k| specs.get(k))
            .filter_map(|(spec, ..)| crate::env::Envs::dir_of(&spec.env))
            .collect()
    };
    let task = {
        let inner = inner.clone();
        tokio::task::spawn_blocking(move || {
            inner.envs.evict(inner.cfg.env_cache_bytes, &in_use, KEEP)
        })
    };
    let Ok(gone) = task.await else {
        return;
    };
    if !gone.is_empty() {
        if let Ok(mut specs) = inner.specs.lock() {
            specs.retain(|_, (spec, ..)| {
                crate::env::Envs::dir_of(&spec.env).is_none_or(|d| !gone.contains(&d))
            });
        }
    }
}

async fn keep_warm(inner: &Arc<Inner>) {
    let now = Utc::now();
    let lease = inner.job_lease();
    let slots = match inner
        .store
        .hold_warm_slots(
            &inner.cfg.worker_id,
            &inner.offer(),
            inner.cfg.max_servers as i64,
            now,
            lease.until,
        )
        .await
    {
        Ok(slots) => slots,
        Err(e) => {
            tracing::warn!(error = %e, "could not read the warm slots");
            return;
        }
    };
    let mut warm: Vec<(pool::Key, usize)> = Vec::new();
    for s in slots {
        let key = pool::Key {
            version_id: s.version_id,
            train: false,
        };
        match warm.iter_mut().find(|(k, _)| *k == key) {
            Some((_, n)) => *n += 1,
            None => warm.push((key, 1)),
        }
    }
    inner.pool.set_warm(warm);
    for (key, missing) in inner.pool.warm_deficit() {
        let Ok(spec) = job::spec_for(inner, &key.version_id, JobKind::Prediction, &|_| {}).await
        else {
            continue;
        };
        for _ in 0..missing {
            if let Err(e) = inner.pool.warm_up(&spec).await {
                tracing::warn!(version = %key.version_id, error = %e.0, "could not keep a server warm");
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fair_order;
    use modelyard_domain::*;

    fn job(id: &str, account: i64, version: &str) -> Job {
        Job {
            cursor: 0,
            id: id.into(),
            kind: JobKind::Prediction,
            account_id: account,
            account: String::new(),
            version_id: version.into(),
            model: String::new(),
            deployment: None,
            destination: None,
            input: serde_json::json!({}),
            output: None,
            logs: String::new(),
            error: None,
            status: Status::Starting,
            source: "api".into(),
            webhook: None,
            webhook_events_filter: vec![],
            data_removed: false,
            metrics: serde_json::json!({}),
            deadline: None,
            created_at: chrono::Utc::now(),
            started_at: None,
            completed_at: None,
        }
    }

    #[test]
    fn accounts_and_versions_take_turns() {
        let jobs = vec![
            job("a1", 1, "x"),
            job("a2", 1, "x"),
            job("a3", 1, "y"),
            job("b1", 2, "x"),
            job("a4", 1, "x"),
        ];
        let order: Vec<String> = fair_order(jobs).into_iter().map(|j| j.id).collect();
        assert_eq!(order, ["a1", "b1", "a3", "a2", "a4"]);
    }
}
