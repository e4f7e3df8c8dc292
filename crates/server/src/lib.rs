//! modelyard's HTTP server: the Replicate-compatible API under /v1 and its extensions.
#![forbid(unsafe_code)]

pub mod api;
mod config;
mod error;
mod extract;
mod health;
pub mod ops;
mod push;
mod retention;
mod start_error;
pub mod state;
mod throttle;
mod user_content;
mod views;
mod web;
mod webhooks;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::Router;
use modelyard_blobs::Blobs;
use modelyard_runner::sandbox::Sandbox;
use modelyard_storage::{SqlStore, Store};
use tower_http::trace::TraceLayer;

pub use config::{defaults, trash_days, Config, Gpus, Role, SandboxConfig};
pub use error::ApiError;
pub use start_error::StartError;
pub use state::AppState;
pub use web::hash_password;

/// The largest JSON body the API reads; pushes have their own, configurable limit.
pub(crate) const JSON_LIMIT: usize = 1024 * 1024;

/// Creates the data directory and the SQLite file if missing, as the server user's alone: the
/// directory 0700, the database 0600 (SQLite gives its `-wal` and `-shm` files the database's
/// mode). `modelyard admin` calls this too, so whichever runs first, the result is the same.
pub fn prepare_data_dir(config: &Config) -> Result<(), StartError> {
    modelyard_blobs::private_dir(&config.data_dir).map_err(|source| StartError::DataDir {
        path: config.data_dir.clone(),
        source,
    })?;
    if config.database_url.is_none() {
        use std::os::unix::fs::OpenOptionsExt;
        let db = config.layout().database();
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&db)
        {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(source) => return Err(StartError::DatabaseFile { path: db, source }),
        }
    }
    Ok(())
}

/// Opens (and migrates) the configured database, creating the data dir when needed.
pub async fn open_store(config: &Config) -> Result<SqlStore, StartError> {
    prepare_data_dir(config)?;
    SqlStore::connect(&config.database_url())
        .await
        .map_err(StartError::Database)
}

/// The whole HTTP application.
pub fn app(state: AppState) -> Router {
    // Addresses neither serves: problem+json under /v1, the web UI's HTML page elsewhere.
    api::router(state.clone(), web::not_found)
        .merge(web::router(state))
        .layer(DefaultBodyLimit::max(JSON_LIMIT))
        .layer(TraceLayer::new_for_http())
}

/// A bound, not yet serving, server: tests bind port 0 and read the address.
pub struct Bound {
    pub addr: SocketAddr,
    pub state: AppState,
    listener: tokio::net::TcpListener,
    /// Stops the lease reaper of an API node (a runner stops its own).
    stop_reaper: Option<tokio::sync::watch::Sender<bool>>,
}

pub async fn bind(config: Config) -> Result<Bound, StartError> {
    config.check_cluster().map_err(StartError::Config)?;
    modelyard_domain::hardware::check_all(&config.hardware).map_err(StartError::Config)?;
    let store = open_store(&config).await?;
    // One server per SQLite database: rows it keeps in memory must see every write.
    store.claim_for_server().map_err(StartError::Database)?;
    let store: Arc<dyn Store> = Arc::new(store);
    let blobs = Arc::new(match &config.blob_store {
        None => Blobs::new(&config.data_dir, store.clone()),
        Some(url) => Blobs::with_object_store(
            &config.data_dir,
            store.clone(),
            url,
            config.worker_cache_bytes,
        )
        .map_err(|e| StartError::Config(e.to_string()))?,
    });
    blobs.clean_staging();
    blobs.start_cache_sweep(config.cache_check);
    let listen = |source| StartError::Listen {
        addr: config.addr,
        source,
    };
    let listener = tokio::net::TcpListener::bind(config.addr)
        .await
        .map_err(listen)?;
    let addr = listener.local_addr().map_err(listen)?;
    let public = config
        .public_url
        .clone()
        .unwrap_or_else(|| format!("http://{addr}"));
    // Every node of one database signs capability URLs with the same key: the first to start
    // offers its own, the others take it.
    let key = store
        .shared_setting("server_key", &state::server_key(blobs.layout())?)
        .await
        .map_err(StartError::Database)?;
    let sandbox = start_sandbox(&config).await?;
    let mut state = AppState::new(store.clone(), blobs, config, public, key, sandbox.clone());
    if state.config.runs_jobs() {
        let c = &state.config;
        let runner = modelyard_runner::Runner::start(
            store,
            modelyard_runner::RunnerConfig {
                blobs: state.blobs.clone(),
                python: c.python.clone(),
                max_servers: c.max_servers,
                idle: c.server_idle,
                setup_timeout: c.setup_timeout,
                public_url: state.public_url.to_string(),
                sandbox,
                api_retention: c.api_retention,
                worker_id: worker_id(),
                hardware: c.hardware.clone(),
                gpus: c.sandbox.gpu_count(),
                lease: c.lease,
                // One machine recovers at once; a cluster's workers leave it to the leases.
                recover_at_start: c.role == Role::All,
                takes_everything: c.role == Role::All && c.hardware.is_empty(),
                live: state.live.clone(),
                env_cache_bytes: c.worker_cache_bytes,
            },
        )
        .await
        .map_err(StartError::Runner)?;
        state.set_runner(runner.clone());
        // Webhooks follow the runner's events; expired uploads go with its housekeeping.
        webhooks::start(state.clone(), &runner);
        ops::files::sweep_expired(state.clone());
        retention::start(state.clone());
    }
    state.follow_caller_changes();
    push::audit_artifacts(state.blobs.layout().artifacts());
    ops::trash::backfill_sizes(state.clone());
    ops::trash::start_sweep(state.clone(), state.config.trash_sweep_every);
    // An API node of a cluster reaps leases too, so a dead worker's jobs end even while no
    // worker is left to do it.
    let stop_reaper = (state.runner.is_none() && state.config.role == Role::Api).then(|| {
        let (stop, stopped) = tokio::sync::watch::channel(false);
        tokio::spawn(modelyard_runner::reaper(
            state.store.clone(),
            state.config.lease,
            || {},
            stopped,
        ));
        stop
    });
    Ok(Bound {
        addr,
        state,
        listener,
        stop_reaper,
    })
}

/// This node's worker id: the host's name, so an operator can tell workers apart, and a random
/// part, since each start is a new worker (it must not renew its predecessor's leases).
fn worker_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default();
    let random = modelyard_domain::ids::object_id();
    let random = &random[..10];
    if host.is_empty() {
        random.to_string()
    } else {
        format!("{host}-{random}")
    }
}

/// The sandbox pushed code runs in, checked now: a host that cannot confine model code refuses
/// to start (naming the fix) rather than run it unconfined by surprise.
async fn start_sandbox(config: &Config) -> Result<Arc<Sandbox>, StartError> {
    let sandbox = Sandbox::new(
        config.sandbox.clone(),
        &config.python,
        &config.layout().sandbox(),
    )
    .map_err(StartError::Sandbox)?;
    if sandbox.confined() {
        sandbox.check().await.map_err(StartError::Unconfined)?;
    } else {
        tracing::warn!(
            "--unsafe-no-sandbox: pushed model code runs UNCONFINED as this server's user. \
             Anyone who can push a model can read and change every model, account and token \
             on this server. Only use this when every account is fully trusted."
        );
    }
    Ok(Arc::new(sandbox))
}

impl Bound {
    pub async fn serve(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<(), StartError> {
        tracing::info!(addr = %self.addr, url = %self.state.public_url, "modelyard is serving");
        let runner = self.state.runner.clone();
        let stop_reaper = self.stop_reaper;
        let app = if !self.state.config.serves_clients() {
            health::router(self.state)
        } else {
            app(self.state)
        };
        // The peer address: sign-in attempts are limited per client address.
        let app = app.into_make_service_with_connect_info::<SocketAddr>();
        let served = axum::serve(self.listener, app)
            .with_graceful_shutdown(shutdown)
            .await
            .map_err(StartError::Serve);
        // Every Cog server stops with us.
        if let Some(r) = runner {
            r.shutdown().await;
        }
        if let Some(stop) = stop_reaper {
            let _ = stop.send(true);
        }
        served
    }
}

/// Runs the server until `shutdown` resolves.
pub async fn serve(
    config: Config,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), StartError> {
    bind(config).await?.serve(shutdown).await
}
