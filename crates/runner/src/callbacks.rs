//! What a Cog server may tell the platform: webhooks and uploaded output files, each server on
//! an endpoint of its own (a Unix socket bound into its sandbox), accepted only for the job it
//! runs now, and webhooks only with that job's own token. No model can reach another job's
//! record, and no secret shared between servers exists.
use std::sync::{Arc, Mutex, Weak};

use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::Router;
use futures_util::StreamExt;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::Inner;

/// The largest output file a model server may upload, checked while it streams to disk.
const MAX_UPLOAD: u64 = 1024 * 1024 * 1024;

/// The largest webhook body (held in memory to be parsed). Cog uploads files rather than
/// inlining them, but a model may still return a long string.
const MAX_WEBHOOK: usize = 1024 * 1024 * 1024;

/// The job a server runs now, shared by the pool (which sets it) and the server's endpoint,
/// with the URLs of this platform among its inputs, which the server fetches through its
/// endpoint (it cannot reach the platform itself).
#[derive(Clone, Default)]
pub struct Current(Arc<Mutex<Option<Job>>>);

/// A job id and the platform URLs among its inputs.
type Job = (String, Vec<String>);

impl Current {
    pub fn set(&self, job: Option<&str>) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = job.map(|j| (j.to_string(), vec![]));
    }

    fn is(&self, job: &str) -> bool {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .is_some_and(|(j, _)| j == job)
    }

    /// Replaces each input string that is a URL of this platform (`public`) with one of the
    /// server's endpoint (`base`), remembered for this job.
    pub fn route_inputs(&self, key: &[u8], public: &str, base: &str, input: &mut Value) {
        let mut guard = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let Some((job, urls)) = guard.as_mut() else {
            return;
        };
        let token = job_token(key, job);
        let prefix = format!("{}/", public.trim_end_matches('/'));
        let mut visit = |v: &mut Value| {
            if let Value::String(s) = v {
                if s.starts_with(&prefix) {
                    urls.push(std::mem::take(s));
                    *s = format!("{base}/inputs/{job}/{token}/{}", urls.len() - 1);
                }
            }
        };
        match input {
            Value::Object(m) => m.values_mut().for_each(|v| match v {
                Value::Array(items) => items.iter_mut().for_each(&mut visit),
                other => visit(other),
            }),
            other => visit(other),
        }
    }

    fn input(&self, job: &str, n: usize) -> Option<String> {
        let guard = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let (j, urls) = guard.as_ref()?;
        (j == job).then(|| urls.get(n).cloned()).flatten()
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
        .route("/inputs/{id}/{token}/{n}", get(input))
        // Applies to the webhook's `Bytes` only: uploads stream to disk under their own cap.
        .layer(DefaultBodyLimit::max(MAX_WEBHOOK))
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
    body: Body,
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
    // Written chunk by chunk as it arrives: an output file costs a copy buffer, not its size.
    let body = tokio_util::io::StreamReader::new(
        body.into_data_stream()
            .map(|chunk| chunk.map_err(std::io::Error::other)),
    );
    match crate::job::store_output_from(&inner, job, &name, body, MAX_UPLOAD).await {
        Ok(url) => (StatusCode::CREATED, [(header::LOCATION, url)]).into_response(),
        Err(e @ crate::job::StoreError::TooLarge(_)) => {
            (StatusCode::PAYLOAD_TOO_LARGE, e.to_string()).into_response()
        }
        Err(e) => (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    }
}

/// An input file of the job the server runs, fetched from the platform on its behalf.
async fn input(
    State(c): State<Ctx>,
    Path((id, token, n)): Path<(String, String, usize)>,
) -> Response {
    let Some(inner) = c.inner.upgrade() else {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    };
    if token != job_token(&inner.callback_key, &id) {
        return StatusCode::NOT_FOUND.into_response();
    }
    let Some(url) = c.current.input(&id, n) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let resp = match inner.http.get(&url).send().await {
        Ok(r) => r,
        Err(e) => return (StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
    };
    let status = resp.status();
    let ctype = resp.headers().get(header::CONTENT_TYPE).cloned();
    let disposition = resp.headers().get(header::CONTENT_DISPOSITION).cloned();
    let length = resp.headers().get(header::CONTENT_LENGTH).cloned();
    // Passed on as it arrives: an input file (up to the Files API's cap, or another job's
    // output) is never held whole.
    let mut out = (status, Body::from_stream(resp.bytes_stream())).into_response();
    for (name, value) in [
        (header::CONTENT_TYPE, ctype),
        (header::CONTENT_DISPOSITION, disposition),
        (header::CONTENT_LENGTH, length),
    ] {
        if let Some(v) = value {
            out.headers_mut().insert(name, v);
        }
    }
    out
}
