//! What a Cog server may tell the platform: webhooks and uploaded output files, each server on
//! an endpoint of its own (a Unix socket bound into its sandbox), accepted only for the job it
//! runs now, and webhooks only with that job's own token. No model can reach another job's
//! record, and no secret shared between servers exists.
use std::sync::{Arc, Mutex, Weak};

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{post, put};
use axum::Router;
use sha2::{Digest, Sha256};

use crate::Inner;

/// The largest output file a model server may upload.
const MAX_UPLOAD: usize = 1024 * 1024 * 1024;

/// The job a server runs now, shared by the pool (which sets it) and the server's endpoint.
#[derive(Clone, Default)]
pub struct Current(Arc<Mutex<Option<String>>>);

impl Current {
    pub fn set(&self, job: Option<&str>) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = job.map(str::to_string);
    }

    fn is(&self, job: &str) -> bool {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).as_deref() == Some(job)
    }
}

/// A job's webhook token: only the runner, which knows its random key, can make it.
pub fn job_token(key: &[u8], job: &str) -> String {
    let mut h = Sha256::new();
    h.update(b"modelyard-job-callback\0");
    h.update(key);
    h.update(b"\0");
    h.update(job.as_bytes());
    hex::encode(&h.finalize()[..16])
}

#[derive(Clone)]
struct Ctx {
    inner: Weak<Inner>,
    current: Current,
    /// This server's upload path segment.
    label: String,
}

/// The endpoint of one server.
pub fn router(inner: Weak<Inner>, current: Current, label: String) -> Router {
    Router::new()
        .route("/jobs/{id}/{token}", post(webhook))
        .route("/uploads/{label}/{name}", put(upload))
        .layer(DefaultBodyLimit::max(MAX_UPLOAD))
        .with_state(Ctx {
            inner,
            current,
            label,
        })
}

async fn webhook(
    State(c): State<Ctx>,
    Path((id, token)): Path<(String, String)>,
    body: Bytes,
) -> StatusCode {
    let Some(inner) = c.inner.upgrade() else {
        return StatusCode::SERVICE_UNAVAILABLE;
    };
    if !c.current.is(&id) || token != job_token(&inner.callback_key, &id) {
        return StatusCode::NOT_FOUND;
    }
    let Ok(payload) = serde_json::from_slice(&body) else {
        return StatusCode::BAD_REQUEST;
    };
    crate::job::cog_update(&inner, &id, payload).await;
    StatusCode::OK
}

async fn upload(
    State(c): State<Ctx>,
    Path((label, name)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(inner) = c.inner.upgrade() else {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    };
    let job = headers
        .get("x-prediction-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if label != c.label || !c.current.is(job) {
        return StatusCode::NOT_FOUND.into_response();
    }
    match crate::job::store_output(&inner, job, &name, &body).await {
        Ok(url) => (StatusCode::CREATED, [(header::LOCATION, url)]).into_response(),
        Err(e) => (StatusCode::BAD_REQUEST, e).into_response(),
    }
}
