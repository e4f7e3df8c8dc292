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
