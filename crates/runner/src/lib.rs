//! modelyard's runner: takes queued predictions and trainings from storage and runs them on
//! Cog servers on this machine, without Docker.
//!
//! The queue is the jobs table; a job is taken with a conditional UPDATE, so nothing is lost
//! across restarts. Every model's code runs in a sandbox (`sandbox.rs`); each Cog server
//! reports progress through webhooks to an endpoint of its own (`callbacks.rs`).
#![forbid(unsafe_code)]

mod bridge;
mod callbacks;
mod cgroup;
mod dispatch;
mod env;
mod job;
mod pool;
pub mod sandbox;

use std::collections::HashMap;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use modelyard_blobs::{BlobError, Blobs};
use modelyard_domain::Status;
use modelyard_storage::{RecoveredJobs, Store, StoreError};
use serde_json::Value;
use tokio::sync::{broadcast, watch, Notify};

pub use env::{tail, Envs};

#[derive(Clone)]
pub struct RunnerConfig {
    /// The data directory, shared with the server: its paths, and the lock under which a
    /// training stores weights and records its version.
    pub blobs: Arc<Blobs>,
    /// The Python that has Cog installed; version environments are built from it.
    pub python: String,
    /// How many Cog servers may run at once.
    pub max_servers: usize,
    /// How long an unused server stays warm.
    pub idle: Duration,
    /// How long a server may take to become ready.
    pub setup_timeout: Duration,
    /// The base of public URLs (files).
    pub public_url: String,
    /// Where model code runs.
    pub sandbox: Arc<sandbox::Sandbox>,
    /// API predictions lose input, output, files and logs after this long.
    pub api_retention: Duration,
}

/// Why the runner did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot recover the jobs of the previous run: {0}")]
    Recover(#[from] StoreError),
    #[error("cannot prepare the data directory: {0}")]
    DataDir(#[from] BlobError),
}

/// What happens to a job while it runs, for server-sent events.
#[derive(Clone, Debug)]
pub enum Event {
    /// The job reached a model server and runs.
    Started,
    /// An output item of an iterator (with its index), or the whole output of anything else.
    Output {
        index: Option<usize>,
        value: Value,
    },
    /// Log text appended at `offset` of the logs.
    Logs {
        offset: usize,
        text: String,
    },
    Done(Status),
}

/// The live side of one job: its events, its end, and a way to cancel it.
pub struct JobChannel {
    pub events: broadcast::Sender<Event>,
    pub done: watch::Sender<bool>,
    cancel: watch::Sender<bool>,
    seen: Mutex<Seen>,
    result: Mutex<Option<tokio::sync::oneshot::Sender<Value>>>,
    /// The finished job as recorded, for a request waiting on it.
    final_job: Mutex<Option<modelyard_domain::Job>>,
    /// Whether the job asked for webhooks: only then do its events go to `follow_all`, whose
    /// follower would otherwise read every job's record to find it has none.
    webhook: std::sync::atomic::AtomicBool,
}

#[derive(Default)]
struct Seen {
    logs: usize,
    outputs: usize,
    ended: bool,
    /// The longest logs seen, for an end that reports fewer.
    logs_text: String,
    /// When progress was last written to the record: at most every half second, so a short
    /// prediction costs no write until it ends.
    written: Option<std::time::Instant>,
    /// What the job's logs say before the model's own: the environment build, when this job
    /// waited for one. Cog's logs count from their own start, after it.
    prefix: String,
    /// The output items sent so far, for a follower that comes late (the record is written at
    /// most every half second).
    items: Vec<Value>,
}

/// A spec with the artifact and weights key it opened, to open them again (and pin them).
type KnownSpec = (pool::Spec, String, Option<String>);

struct Inner {
    /// Makes each job's callback token.
    callback_key: [u8; 32],
    /// Names this runner's servers: `<pid>-<random>`.
    label: String,
    store: Arc<dyn Store>,
    cfg: RunnerConfig,
    pool: pool::Pool,
    envs: Envs,
    channels: Mutex<HashMap<String, Arc<JobChannel>>>,
    /// How to start servers, by version and mode: versions never change once pushed.
    specs: Mutex<HashMap<pool::Key, KnownSpec>>,
    wake: Notify,
    /// Jobs just created on this server, handed over directly: when nothing older waits, the
    /// dispatcher takes them without reading the queue back from the database.
    fresh: Mutex<std::collections::VecDeque<modelyard_domain::Job>>,
    inflight: AtomicUsize,
    /// Jobs whose end is not yet recorded (`inflight` counts the servers they hold, and drops
    /// first): a shutdown waits for these.
    running: AtomicUsize,
    shutdown: watch::Sender<bool>,
    http: reqwest::Client,
    /// Every job's events, for whoever follows all of them (webhook delivery).
    all: broadcast::Sender<(String, Event)>,
}

#[derive(Clone)]
pub struct Runner {
    inner: Arc<Inner>,
}

impl Runner {
    /// Recovers from a previous run (jobs that were running failed; taken ones are queued
    /// again) and starts dispatching.
    pub async fn start(store: Arc<dyn Store>, cfg: RunnerConfig) -> Result<Runner, StartError> {
        let RecoveredJobs { failed, requeued } = store
            .recover_jobs("The server restarted while this ran; run it again.")
            .await?;
        if failed + requeued > 0 {
            tracing::warn!(failed, requeued, "recovered jobs from the previous run");
        }
        cfg.blobs.prepare_runner()?;
        let mut callback_key = [0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut callback_key);
        let label = format!(
            "{}-{:08x}",
            std::process::id(),
            rand::Rng::gen::<u32>(&mut rand::thread_rng())
        );
        let inner = Arc::new_cyclic(|weak| Inner {
            callback_key,
            label: label.clone(),
            pool: pool::Pool::new(
                pool::PoolConfig {
                    work_dir: cfg.blobs.layout().work(),
                    max: cfg.max_servers,
                    idle: cfg.idle,
                    setup_timeout: cfg.setup_timeout,
                    sandbox: cfg.sandbox.clone(),
                    label,
                },
                weak.clone(),
            ),
            envs: Envs::new(cfg.blobs.layout().envs(), cfg.sandbox.clone()),
            store,
            cfg,
            channels: Default::default(),
            specs: Default::default(),
            wake: Notify::new(),
            fresh: Default::default(),
            inflight: AtomicUsize::new(0),
            running: AtomicUsize::new(0),
            shutdown: watch::channel(false).0,
            http: reqwest::Client::new(),
            all: broadcast::channel(4096).0,
        });
        tokio::spawn(dispatch::run(inner.clone()));
        tokio::spawn(dispatch::housekeeping(inner.clone()));
        Ok(Runner { inner })
    }

    /// Something was queued.
    pub fn wake(&self) {
        self.inner.wake.notify_one();
    }

    /// A job this server just recorded: queued as any other, and handed to the dispatcher.
    pub fn submit(&self, job: modelyard_domain::Job) {
        if let Ok(mut q) = self.inner.fresh.lock() {
            q.push_back(job);
        }
        self.wake();
    }

    /// Follows a job's events from now on, with the output items it already sent: together
    /// they miss nothing and repeat nothing.
    pub fn follow(&self, id: &str) -> (broadcast::Receiver<Event>, Vec<Value>) {
        let ch = self.inner.channel(id);
        // Events are sent under this lock: none can slip between the copy and the subscription.
        let seen = ch.seen.lock().unwrap_or_else(|p| p.into_inner());
        (ch.events.subscribe(), seen.items.clone())
    }

    /// The live channel of a job, created on first use.
    pub fn channel(&self, id: &str) -> Arc<JobChannel> {
        self.inner.channel(id)
    }

    /// Waits until the job ends or `limit` passes. Returns the ended job when this runner ended
    /// it; otherwise the caller reads the record.
    pub async fn wait(
        &self,
        kind: modelyard_domain::JobKind,
        id: &str,
        limit: Duration,
    ) -> Option<modelyard_domain::Job> {
        let (ch, existed) = self.inner.channel_and_whether_it_existed(id);
        let mut done = ch.done.subscribe();
        // A job this runner ends says so on its channel and only then removes it. So a channel
        // that was there, or one made here for a job still in the hand-over queue (its run
        // takes this channel), cannot have missed the end. Otherwise the job may have ended,
        // its channel gone, before: subscribed first, then the record, which says so.
        let queued_here = || {
            self.inner
                .fresh
                .lock()
                .is_ok_and(|q| q.iter().any(|j| j.id == id))
        };
        let ended_before = !existed
            && !queued_here()
            && matches!(self.inner.store.job(kind, id).await, Ok(Some(j)) if j.status.is_terminal());
        if ended_before {
            self.inner.forget_if_idle(id, &ch);
            return None;
        }
        let ended = async {
            loop {
                if *done.borrow_and_update() {
                    return;
                }
                if done.changed().await.is_err() {
                    return;
                }
            }
        };
        let _ = tokio::time::timeout(limit, ended).await;
        let done = ch
            .final_job
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        done
    }

    /// The job was canceled in storage; stop it if it runs.
    pub fn cancel(&self, id: &str) {
        if let Some(ch) = self
            .inner
            .channels
            .lock()
            .ok()
            .and_then(|m| m.get(id).cloned())
        {
            let _ = ch.cancel.send(true);
        }
        self.wake();
    }

    /// Where an output file is stored, if the capability path names one.
    /// The events of every job that asked for webhooks, as they happen: (job id, event). A
    /// slow follower may lag and miss some; the job's record stays the truth.
    pub fn follow_all(&self) -> broadcast::Receiver<(String, Event)> {
        self.inner.all.subscribe()
    }

    /// Names this runner's model servers: their upload URLs start `/uploads/<label>-`.
    pub fn label(&self) -> &str {
        &self.inner.label
    }

    pub fn servers(&self) -> usize {
        self.inner.pool.count()
    }

    /// The build log of the environment for these packages.
    pub fn build_log(&self, packages: &[String]) -> Option<String> {
        std::fs::read_to_string(self.inner.envs.log_path(packages)).ok()
    }

    /// Stops dispatching and every Cog server.
    pub async fn shutdown(&self) {
        let _ = self.inner.shutdown.send(true);
        self.inner.pool.shutdown().await;
        // Let the jobs that were running record how they ended.
        let until = std::time::Instant::now() + Duration::from_secs(10);
        while self.inner.running.load(std::sync::atomic::Ordering::SeqCst) > 0
            && std::time::Instant::now() < until
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Inner {
    fn channel(&self, id: &str) -> Arc<JobChannel> {
        self.channel_and_whether_it_existed(id).0
    }

    fn channel_and_whether_it_existed(&self, id: &str) -> (Arc<JobChannel>, bool) {
        let mut map = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(ch) = map.get(id) {
            return (ch.clone(), true);
        }
        let ch = map
            .entry(id.to_string())
            .or_insert_with(|| {
                Arc::new(JobChannel {
                    events: broadcast::channel(256).0,
                    done: watch::channel(false).0,
                    cancel: watch::channel(false).0,
                    seen: Default::default(),
                    result: Mutex::new(None),
                    final_job: Mutex::new(None),
                    webhook: Default::default(),
                })
            })
            .clone();
        (ch, false)
    }

    fn emit(&self, ch: &JobChannel, id: &str, e: Event) {
        if ch.webhook.load(std::sync::atomic::Ordering::Relaxed) {
            let _ = self.all.send((id.to_string(), e.clone()));
        }
        let _ = ch.events.send(e);
    }

    /// Drops a channel made only to wait on a job that had already ended.
    fn forget_if_idle(&self, id: &str, ch: &Arc<JobChannel>) {
        if let Ok(mut map) = self.channels.lock() {
            // Ours and the map's: nobody else follows it.
            if map.get(id).is_some_and(|c| Arc::ptr_eq(c, ch)) && Arc::strong_count(ch) <= 2 {
                map.remove(id);
            }
        }
    }

    fn forget(&self, id: &str) {
        if let Ok(mut map) = self.channels.lock() {
            map.remove(id);
        }
    }
}
