//! What a worker node serves: `GET /health` only, for orchestrators to probe. Clients go to
//! the API nodes.
use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};

use crate::state::AppState;

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/health", get(health))
        .with_state(state)
}

async fn health(State(s): State<AppState>) -> Json<Value> {
    let runner = s.runner.as_ref();
    Json(json!({
        "status": "ok",
        "role": "worker",
        "worker_id": runner.map(|r| r.worker_id()),
        "servers": runner.map_or(0, |r| r.servers()),
    }))
}

/// A worker's id: the host's name, so an operator can tell workers apart, and a random part,
/// since each start is a new worker (a restarted one must not renew its predecessor's leases).
pub fn worker_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default();
    let random = modelyard_domain::ids::object_id();
    let random = &random[..random.len().min(10)];
    if host.is_empty() {
        random.to_string()
    } else {
        format!("{host}-{random}")
    }
}

/// How many GPUs this node's model servers may be given.
pub fn gpu_count(sandbox: &crate::SandboxConfig) -> usize {
    sandbox.gpus.ids(&sandbox.device_root).len()
}
