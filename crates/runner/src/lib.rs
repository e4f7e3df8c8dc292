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
mod cluster;
mod cog_http;
mod dispatch;
mod env;
mod job;
mod live;
mod pool;
pub mod sandbox;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use modelyard_blobs::{BlobError, Blobs};
use modelyard_domain::Status;
use modelyard_storage::{RecoveredJobs, Store, StoreError};
use serde_json::Value;
use tokio::sync::{broadcast, watch, Notify};

pub use cluster::reaper;
pub use env::{tail, Envs};
pub use live::{JobChannel, Live};

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
    /// This worker's id in the cluster, unique to this start.
    pub worker_id: String,
    /// The hardware this worker offers (names from `/v1/hardware`); empty offers every kind.
    pub hardware: Vec<String>,
    /// How many GPUs its servers may be given: a `gpu` version runs only where there are some.
    pub gpus: usize,
    /// How long a job or warm slot this worker holds stays its own without a renewal; the
    /// heartbeat renews them every third of it.
    pub lease: Duration,
    /// At start, fail the jobs that were running and queue again the taken ones, as a single
    /// machine that restarted must (its jobs died with it, and nobody should wait a lease for
    /// that). Never in a cluster: those jobs may be other workers', whose leases decide.
    pub recover_at_start: bool,
    /// One machine that runs everything: it takes every job, GPU versions included even
    /// without a GPU (they run on its CPU). A cluster's workers, or a node that names its
    /// hardware, take only what `hardware` and `gpus` offer.
    pub takes_everything: bool,
    /// The live side of jobs, which the server has whether it runs jobs or not.
    pub live: Arc<Live>,
    /// How many bytes of built Python environments this node keeps: beyond it, the least
    /// recently used that no server runs on are removed (and built again when needed).
    pub env_cache_bytes: u64,
}

/// Why the runner did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot recover the jobs of the previous run: {0}")]
    Recover(#[from] StoreError),
    #[error("cannot register this worker: {0}")]
    Register(StoreError),
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
    /// How to start servers, by version and mode: versions never change once pushed.
    specs: Mutex<HashMap<pool::Key, KnownSpec>>,
    wake: Notify,
    /// The queue may hold jobs the dispatcher has not read (something was queued elsewhere, or
    /// requeued): set by every wake except a place given back and a job handed over in
    /// `fresh`, so a place given back costs no read of an empty queue.
    queue_news: AtomicBool,
    /// Jobs just created on this server, handed over directly: when nothing older waits, the
    /// dispatcher takes them without reading the queue back from the database.
    fresh: Mutex<std::collections::VecDeque<modelyard_domain::Job>>,
    inflight: AtomicUsize,
    /// Jobs whose end is not yet recorded (`inflight` counts the servers they hold, and drops
    /// first): a shutdown waits for these.
    running: AtomicUsize,
    shutdown: watch::Sender<bool>,
    http: reqwest::Client,
}

#[derive(Clone)]
pub struct Runner {
    inner: Arc<Inner>,
}

impl Runner {
    /// Recovers from a previous run when told to (jobs that were running failed; taken ones
    /// are queued again), registers this worker and starts dispatching.
    pub async fn start(store: Arc<dyn Store>, cfg: RunnerConfig) -> Result<Runner, StartError> {
        if cfg.recover_at_start {
            let RecoveredJobs { failed, requeued } = store
                .recover_jobs("The server restarted while this ran; run it again.")
                .await?;
            if failed + requeued > 0 {
                tracing::warn!(failed, requeued, "recovered jobs from the previous run");
            }
        }
        cfg.blobs.prepare_runner()?;
        cluster::register(store.as_ref(), &cfg)
            .await
            .map_err(StartError::Register)?;
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
            specs: Default::default(),
            wake: Notify::new(),
            queue_news: AtomicBool::new(false),
            fresh: Default::default(),
            inflight: AtomicUsize::new(0),
            running: AtomicUsize::new(0),
            shutdown: watch::channel(false).0,
            http: reqwest::Client::new(),
        });
        tokio::spawn(woken(Arc::downgrade(&inner)));
        tokio::spawn(dispatch::run(inner.clone()));
        tokio::spawn(dispatch::housekeeping(inner.clone()));
        tokio::spawn(cluster::heartbeat(inner.clone()));
        let woken = Arc::downgrade(&inner);
        tokio::spawn(cluster::reaper(
            inner.store.clone(),
            inner.cfg.lease,
            move || {
                if let Some(i) = woken.upgrade() {
                    i.queue_changed();
                }
            },
            inner.shutdown.subscribe(),
        ));
        Ok(Runner { inner })
    }

    /// Something was queued.
    pub fn wake(&self) {
        self.inner.queue_changed();
    }

    /// A job this server just recorded: queued as any other, and handed to the dispatcher.
    pub fn submit(&self, job: modelyard_domain::Job) {
        self.inner.cfg.live.queued(&job.id);
        if let Ok(mut q) = self.inner.fresh.lock() {
            q.push_back(job);
        }
        self.inner.wake.notify_one();
    }

    /// The job was canceled in storage; stop it wherever it runs.
    pub fn cancel(&self, id: &str) {
        self.inner.cfg.live.cancel(id);
    }

    /// Where an output file is stored, if the capability path names one.
    /// The events of every job run here that asked for webhooks (see [`Live::follow_all`]).
    pub fn follow_all(&self) -> broadcast::Receiver<(String, Event)> {
        self.inner.cfg.live.follow_all()
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

    /// This worker's id in the cluster.
    pub fn worker_id(&self) -> &str {
        &self.inner.cfg.worker_id
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
        // Its warm slots are free for other workers at once, not when their lease runs out.
        if let Err(e) = self
            .inner
            .store
            .forget_worker(&self.inner.cfg.worker_id)
            .await
        {
            tracing::warn!(error = %e, "could not unregister this worker");
        }
    }
}

impl Inner {
    /// Something may have been queued that the dispatcher has not read.
    fn queue_changed(&self) {
        self.queue_news.store(true, Ordering::SeqCst);
        self.wake.notify_one();
    }

    /// The live channel of a job this runner runs.
    fn channel(&self, id: &str) -> Arc<JobChannel> {
        self.cfg.live.run_here(id)
    }

    fn emit(&self, ch: &JobChannel, id: &str, e: Event) {
        self.cfg.live.emit(ch, id, e);
    }

    fn forget(&self, id: &str) {
        self.cfg.live.forget(id);
    }
}

/// Another server queued a job, or one was canceled: the dispatcher looks at the queue.
async fn woken(inner: std::sync::Weak<Inner>) {
    loop {
        let Some(live) = inner.upgrade().map(|i| i.cfg.live.clone()) else {
            return;
        };
        live.woken.notified().await;
        match inner.upgrade() {
            Some(i) => i.queue_changed(),
            None => return,
        }
    }
}
