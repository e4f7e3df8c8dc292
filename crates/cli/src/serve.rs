//! `modelyard serve`.
use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;

use tracing_subscriber::EnvFilter;

use crate::{admin, non_empty, Failure, Outcome, ServeArgs};

pub async fn run(args: ServeArgs) -> Outcome {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    // Options first: a bad one changes nothing on disk.
    let sandbox = sandbox_config(&args)?;
    let config = modelyard_server::Config {
        addr: args.addr,
        data_dir: args.db.data_dir.clone(),
        database_url: non_empty(args.db.database_url.clone()),
        public_url: non_empty(args.public_url),
        python: args.python,
        max_upload_bytes: usize::try_from(args.max_upload_mb.saturating_mul(1024 * 1024))
            .unwrap_or(usize::MAX),
        deployment_idle: Duration::from_secs(args.deployment_idle_secs),
        run_jobs: !args.no_runner,
        max_servers: args.max_servers.max(1),
        server_idle: Duration::from_secs(args.server_idle_secs),
        setup_timeout: Duration::from_secs(args.setup_timeout_secs),
        api_retention: Duration::from_secs(args.api_retention_secs),
        trash: modelyard_server::trash_days(args.trash_days),
        trash_sweep_every: Duration::from_secs(modelyard_server::defaults::TRASH_SWEEP_SECS),
        allow_private_webhooks: args.allow_private_webhooks,
        sandbox,
        role: args.role,
        hardware: args
            .hardware
            .iter()
            .map(|h| h.trim().to_string())
            .filter(|h| !h.is_empty())
            .collect(),
        blob_store: non_empty(args.blob_store),
        worker_cache_bytes: args.worker_cache_gb.saturating_mul(1024 * 1024 * 1024),
        cache_check: Duration::from_secs(30),
        lease: Duration::from_secs(args.lease_secs.max(1)),
    };
    config.check_cluster().map_err(Failure::Message)?;
    modelyard_domain::hardware::check_all(&config.hardware)
        .map_err(|e| Failure::Message(format!("--hardware: {e}")))?;
    // Made here too, so a fresh data directory just works.
    admin::database_url(&args.db)?;
    modelyard_server::serve(config, shutdown())
        .await
        .map_err(|e| Failure::Message(e.to_string()))?;
    Ok(ExitCode::SUCCESS)
}

fn sandbox_config(args: &ServeArgs) -> Result<modelyard_server::SandboxConfig, Failure> {
    let mib = |m: u64| m.saturating_mul(1024 * 1024);
    let gpus = match args.gpus.trim() {
        "auto" if std::path::Path::new("/dev/nvidiactl").exists() => modelyard_server::Gpus::All,
        "auto" => modelyard_server::Gpus::None,
        other => modelyard_server::Gpus::parse(other)
            .map_err(|e| Failure::Message(format!("--gpus: {e}")))?,
    };
    Ok(modelyard_server::SandboxConfig {
        confine: !args.unsafe_no_sandbox,
        egress: args.model_egress,
        memory_limit: (args.model_memory_mb > 0).then(|| mib(args.model_memory_mb)),
        max_processes: args.model_max_processes.max(16),
        scratch_limit: mib(args.model_scratch_mb.max(1)),
        gpus,
        ..Default::default()
    })
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
async fn shutdown() {
    let interrupt = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = interrupt => tracing::info!("interrupted: shutting down"),
        _ = terminate => tracing::info!("terminated: shutting down"),
    }
}
