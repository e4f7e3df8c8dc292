//! modelyard's HTTP server: the Replicate-compatible API under /v1 and its extensions.
#![forbid(unsafe_code)]

mod config;
pub use config::Config;

/// Runs the server until `shutdown` resolves.
pub async fn serve(
    config: Config,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), String> {
    let _ = (config, shutdown);
    Err("not yet".into())
}
