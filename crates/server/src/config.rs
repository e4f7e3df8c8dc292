use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use modelyard_blobs::Layout;

pub use modelyard_runner::sandbox::{Gpus, SandboxConfig};

/// Everything `modelyard serve` can be told.
#[derive(Debug, Clone)]
pub struct Config {
    pub addr: SocketAddr,
    pub data_dir: PathBuf,
    /// `sqlite://...` or `postgres://...`; `None` means the SQLite file in the data dir.
    pub database_url: Option<String>,
    /// The base of every absolute URL in responses; `None` means `http://{addr}`.
    pub public_url: Option<String>,
    /// The Python that has Cog installed, used to read a pushed predictor's schema.
    pub python: String,
    /// The largest accepted push (a Cog project, compressed, and its unpacked content): real
    /// models carry gigabytes of weights, and pushes are streamed to disk, never held in memory.
    pub max_upload_bytes: usize,
    /// How long a disabled deployment must stay unused before it can be deleted.
    pub deployment_idle: Duration,
    /// Whether this server runs queued predictions and trainings (an API-only node does not).
    pub run_jobs: bool,
    /// How many Cog servers may run at once.
    pub max_servers: usize,
    /// How long an unused Cog server stays warm.
    pub server_idle: Duration,
    /// How long a Cog server may take to set up.
    pub setup_timeout: Duration,
    /// API predictions lose input, output, files and logs after this long.
    pub api_retention: Duration,
    /// How long a deleted model or version stays in its owner's trash (`--trash-days`); zero
    /// deletes at once and for good.
    pub trash: Duration,
    /// How often the sweep purges what the trash kept past its time.
    pub trash_sweep_every: Duration,
    /// Whether webhooks may go to http URLs and private, loopback or link-local addresses.
    pub allow_private_webhooks: bool,
    /// How pushed model code is confined.
    pub sandbox: SandboxConfig,
    /// What this node does in a cluster (`--role`): everything, the API only, or models only.
    pub role: Role,
    /// The hardware this node's runner offers (`--hardware`, names from `/v1/hardware`); empty
    /// means every kind, as one machine that runs everything does.
    pub hardware: Vec<String>,
    /// Where bytes live (`--blob-store`): `None` is the data directory; `s3://bucket/prefix` an
    /// S3-compatible object store (endpoint and credentials from the standard AWS variables).
    pub blob_store: Option<String>,
    /// How many bytes a node keeps of each of its caches: artifacts and weights fetched from the
    /// object store, and built Python environments.
    pub worker_cache_bytes: u64,
    /// How often a node drops cached trees and weights no version refers to any more.
    pub cache_check: Duration,
    /// How long a worker's hold on a job lasts without being renewed.
    pub lease: Duration,
}

/// What a node runs (`modelyard serve --role`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Role {
    /// The API, the web UI and the runner: one machine, today's behaviour.
    #[default]
    All,
    /// The HTTP API and web UI only: stateless, any number behind a load balancer.
    Api,
    /// Runs models only: takes jobs from the shared queue, serves no clients.
    Worker,
}

impl Role {
    pub fn parse(s: &str) -> Result<Role, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "all" => Ok(Role::All),
            "api" => Ok(Role::Api),
            "worker" => Ok(Role::Worker),
            other => Err(format!("unknown role {other:?}: use all, api or worker")),
        }
    }
}

impl Config {
    /// Whether this node takes queued jobs and runs them.
    pub fn runs_jobs(&self) -> bool {
        self.run_jobs && self.role != Role::Api
    }

    /// Whether this node serves the API and the web UI.
    pub fn serves_clients(&self) -> bool {
        self.role != Role::Worker
    }

    /// A node of a cluster (`--role api` or `worker`) shares its state and bytes with others:
    /// it needs PostgreSQL, an object store and the address clients use. `Err` names what is
    /// missing.
    pub fn check_cluster(&self) -> Result<(), String> {
        if self.role == Role::All {
            return Ok(());
        }
        let mut missing = Vec::new();
        if !self.database_url().starts_with("postgres") {
            missing.push("PostgreSQL (--database-url postgres://...)");
        }
        if self.blob_store.is_none() {
            missing.push("an object store (--blob-store s3://bucket/prefix)");
        }
        if self.public_url.is_none() {
            // A worker writes output URLs and every node writes stream and file URLs: they must
            // name the address clients use (the load balancer), not this node's own.
            missing.push("the address clients reach the API at (--public-url)");
        }
        if missing.is_empty() {
            return Ok(());
        }
        Err(format!(
            "--role {} makes this node part of a cluster, which needs {}: every node must \
             share them. For one machine, leave --role out.",
            if self.role == Role::Api {
                "api"
            } else {
                "worker"
            },
            missing.join(" and ")
        ))
    }

    pub fn database_url(&self) -> String {
        match &self.database_url {
            Some(u) => u.clone(),
            None => format!("sqlite://{}", self.layout().database().display()),
        }
    }

    /// What the data directory holds, and where.
    pub fn layout(&self) -> Layout {
        Layout::new(&self.data_dir)
    }
}

/// Every default, once, in the units `modelyard serve` takes them: its flags and
/// [`Config::default`] both read them here.
pub mod defaults {
    pub use modelyard_runner::sandbox::{
        DEFAULT_MAX_PROCESSES as MODEL_MAX_PROCESSES, DEFAULT_MEMORY_MB as MODEL_MEMORY_MB,
        DEFAULT_SCRATCH_MB as MODEL_SCRATCH_MB,
    };
    pub const ADDR: &str = "127.0.0.1:5080";
    pub const DATA_DIR: &str = "./modelyard-data";
    pub const PYTHON: &str = "python3";
    pub const MAX_UPLOAD_MB: u64 = 50 * 1024;
    pub const DEPLOYMENT_IDLE_SECS: u64 = 15 * 60;
    pub const MAX_SERVERS: usize = 2;
    pub const SERVER_IDLE_SECS: u64 = 300;
    pub const SETUP_TIMEOUT_SECS: u64 = 300;
    pub const API_RETENTION_SECS: u64 = 3600;
    pub const TRASH_DAYS: u64 = 7;
    pub const TRASH_SWEEP_SECS: u64 = 60;
    pub const WORKER_CACHE_GB: u64 = 20;
    pub const LEASE_SECS: u64 = 30;
}

impl Default for Config {
    fn default() -> Self {
        Config {
            addr: defaults::ADDR
                .parse()
                .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 5080))),
            data_dir: PathBuf::from(defaults::DATA_DIR),
            database_url: None,
            public_url: None,
            python: defaults::PYTHON.into(),
            max_upload_bytes: (defaults::MAX_UPLOAD_MB * 1024 * 1024) as usize,
            deployment_idle: Duration::from_secs(defaults::DEPLOYMENT_IDLE_SECS),
            run_jobs: true,
            max_servers: defaults::MAX_SERVERS,
            server_idle: Duration::from_secs(defaults::SERVER_IDLE_SECS),
            setup_timeout: Duration::from_secs(defaults::SETUP_TIMEOUT_SECS),
            api_retention: Duration::from_secs(defaults::API_RETENTION_SECS),
            trash: trash_days(defaults::TRASH_DAYS),
            trash_sweep_every: Duration::from_secs(defaults::TRASH_SWEEP_SECS),
            allow_private_webhooks: false,
            sandbox: SandboxConfig::default(),
            role: Role::All,
            hardware: Vec::new(),
            blob_store: None,
            worker_cache_bytes: defaults::WORKER_CACHE_GB * 1024 * 1024 * 1024,
            cache_check: Duration::from_secs(30),
            lease: Duration::from_secs(defaults::LEASE_SECS),
        }
    }
}

/// `--trash-days` as a duration.
pub fn trash_days(days: u64) -> Duration {
    Duration::from_secs(days.saturating_mul(24 * 3600))
}
