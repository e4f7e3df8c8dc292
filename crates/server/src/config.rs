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
}

impl Config {
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
        }
    }
}

/// `--trash-days` as a duration.
pub fn trash_days(days: u64) -> Duration {
    Duration::from_secs(days.saturating_mul(24 * 3600))
}
