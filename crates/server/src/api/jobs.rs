//! Predictions and trainings over HTTP: the body and the `Cancel-After` and `Prefer: wait`
//! headers in, the job's JSON out (held until it ends, when asked to). `ops::jobs` does the rest.
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json as JsonOut;
use modelyard_domain::*;
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::error::{ApiError, ApiResult};
use crate::extract::{next_cursor, Auth, Json, PageQuery, Path, Query};
use crate::ops::deployments;
use crate::ops::jobs::{self as op, JobRequest, JobSource, JobTarget};
use crate::ops::versions;
use crate::state::AppState;
use crate::views;
use modelyard_domain::ModelVersion;

#[derive(Deserialize)]
pub struct CreateJob {
    version: Option<String>,
    #[serde(default)]
    input: Map<String, Value>,
    webhook: Option<String>,
    webhook_events_filter: Option<Vec<String>>,
    destination: Option<String>,
    // Accepted and ignored, as the clients send them: every prediction can be streamed.
    #[serde(default, rename = "stream")]
    _stream: Option<Value>,
    #[serde(default, rename = "webhook_completed")]
    _webhook_completed: Option<Value>,
}

impl CreateJob {
    /// The operation's request: the body, with `Cancel-After` from the headers.
    fn request(self, h: &HeaderMap, target: JobTarget) -> ApiResult<JobRequest> {
        Ok(JobRequest {
            target,
            input: self.input,
            webhook: self.webhook,
            webhook_events_filter: self.webhook_events_filter,
            deadline: cancel_after(h)?,
            source: JobSource::Api,
        })
    }
}

/// The longest `Prefer: wait` honoured, in seconds; longer asks are held this long.
pub const MAX_WAIT_SECS: u64 = 60;
/// The longest `Cancel-After` accepted, in seconds (24 hours); longer is 422.
pub const MAX_CANCEL_AFTER_SECS: u64 = 24 * 3600;
/// The shortest `Cancel-After` accepted, in seconds.
pub const MIN_CANCEL_AFTER_SECS: u64 = 5;

/// `Prefer: wait` or `wait=N`: how long to hold the request, clamped to 1..=60 seconds (a number
/// too large for any integer type is clamped too). Other preferences are ignored (RFC 7240).
fn prefer_wait(h: &HeaderMap) -> Option<u64> {
    let v = h.get("prefer")?.to_str().ok()?;
    v.split(',')
        .map(str::trim)
        .find_map(|p| match p.strip_prefix("wait") {
            Some("") => Some(MAX_WAIT_SECS),
            Some(rest) => {
                let n = rest.strip_prefix('=')?.trim();
                if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
                    return None;
                }
                // Only digits: the one way to fail is being too large.
                let n = n.parse::<u64>().unwrap_or(u64::MAX);
                Some(n.clamp(1, MAX_WAIT_SECS))
            }
            None => None,
        })
}

/// `30s | 5m | 1h30m | 90` (a bare number is seconds) in seconds, saturating rather than
/// overflowing; `None` when it is not a duration.
fn parse_duration(text: &str) -> Option<u64> {
    let text = text.trim().to_ascii_lowercase();
    if text.is_empty() {
        return None;
    }
    let mut total = 0u64;
    let mut num = String::new();
    for c in text.chars() {
        if c.is_ascii_digit() {
            num.push(c);
            continue;
        }
        let unit = match c {
            'h' => 3600,
            'm' => 60,
            's' => 1,
            _ => return None,
        };
        if num.is_empty() {
            return None;
        }
        let n = num.parse::<u64>().unwrap_or(u64::MAX);
        total = total.saturating_add(n.saturating_mul(unit));
        num.clear();
    }
    if !num.is_empty() {
        total = total.saturating_add(num.parse::<u64>().unwrap_or(u64::MAX));
    }
    Some(total)
}

/// `Cancel-After`: the deadline it sets, between 5 seconds and 24 hours from now (422 outside).
fn cancel_after(h: &HeaderMap) -> ApiResult<Option<chrono::DateTime<chrono::Utc>>> {
    let Some(v) = h.get("cancel-after") else {
        return Ok(None);
    };
    let secs = v.to_str().ok().and_then(parse_duration).ok_or_else(|| {
        ApiError::invalid(
            "Cancel-After",
            "must be a duration such as 30s, 5m or 1h30m",
        )
    })?;
    if secs < MIN_CANCEL_AFTER_SECS {
        return Err(ApiError::invalid(
            "Cancel-After",
            "must be at least 5 seconds",
        ));
    }
    if secs > MAX_CANCEL_AFTER_SECS {
        return Err(ApiError::invalid(
            "Cancel-After",
            "must be at most 24h (86400 seconds)",
        ));
    }
    // At most a day: well inside chrono's range.
    Ok(Some(
        chrono::Utc::now() + chrono::Duration::seconds(secs as i64),
    ))
}

/// The answer to a create: 201, after waiting for the end when the client asked to.
async fn created(s: &AppState, h: &HeaderMap, job: Job) -> ApiResult<Response> {
    let wait = prefer_wait(h);
    let job = match wait {
        Some(secs) if s.follows_jobs() => {
            let limit = Duration::from_secs(secs);
            match s.live.wait(job.kind, &job.id, limit).await {
                // Ended as recorded: no need to read it back.
                Some(done) => done,
                None => s.store.job(job.kind, &job.id).await?.unwrap_or(job),
            }
        }
        _ => job,
    };
    let body = views::job_json(s, &job);
    let location = HeaderValue::from_str(&body.urls.get);
    let mut resp = (StatusCode::CREATED, JsonOut(body)).into_response();
    if let Ok(loc) = location {
        resp.headers_mut().insert("location", loc);
    }
    if let Some(secs) = wait {
        if let Ok(v) = HeaderValue::from_str(&format!("wait={secs}")) {
            resp.headers_mut().insert("preference-applied", v);
        }
    }
    Ok(resp)
}

/// A prediction of `mv`, answered 201 (after waiting, when asked to).
async fn predict(
    s: &AppState,
    h: &HeaderMap,
    caller: &Caller,
    mv: &ModelVersion,
    b: CreateJob,
    deployment_id: Option<i64>,
) -> ApiResult<Response> {
    let r = b.request(h, JobTarget::Prediction { deployment_id })?;
    let job = op::create_job(s, caller, mv, r).await?;
    created(s, h, job).await
}

pub async fn create_prediction(
    State(s): State<AppState>,
    auth: Auth,
    headers: HeaderMap,
    Json(b): Json<CreateJob>,
) -> ApiResult<Response> {
    let caller = auth.required()?;
    let spec = b
        .version
        .clone()
        .ok_or_else(|| ApiError::invalid("version", "is required"))?;
    let mv = versions::resolve_version(&s, &caller, &spec).await?;
    predict(&s, &headers, &caller, &mv, b, None).await
}

pub async fn create_for_model(
    State(s): State<AppState>,
    auth: Auth,
    headers: HeaderMap,
    Path((owner, name)): Path<(String, String)>,
    Json(b): Json<CreateJob>,
) -> ApiResult<Response> {
    let caller = auth.required()?;
    let mv = versions::latest_version(&s, &caller, &owner, &name).await?;
    predict(&s, &headers, &caller, &mv, b, None).await
}

pub async fn create_for_deployment(
    State(s): State<AppState>,
    auth: Auth,
    headers: HeaderMap,
    Path((owner, name)): Path<(String, String)>,
    Json(b): Json<CreateJob>,
) -> ApiResult<Response> {
    let caller = auth.required()?;
    let d = deployments::owned_deployment(&s, &caller, &owner, &name).await?;
    let mv = deployments::version_to_run(&s, &caller, &d).await?;
    predict(&s, &headers, &caller, &mv, b, Some(d.id)).await
}

pub async fn create_training(
    State(s): State<AppState>,
    auth: Auth,
    headers: HeaderMap,
    Path((owner, name, id)): Path<(String, String, String)>,
    Json(b): Json<CreateJob>,
) -> ApiResult<Response> {
    let caller = auth.required()?;
    let mv = versions::visible_version(&s, Some(&caller), &owner, &name, &id).await?;
    let destination = b.destination.clone();
    let r = b.request(&headers, JobTarget::Training { destination })?;
    let job = op::create_job(&s, &caller, &mv, r).await?;
    created(&s, &headers, job).await
}

async fn list(s: &AppState, caller: &Caller, kind: JobKind, q: PageQuery) -> ApiResult<Value> {
    let jobs = op::list_jobs(s, caller, kind, q.page()?).await?;
    let next = next_cursor(&jobs, |j| j.cursor);
    let results = jobs.iter().map(|j| views::job(s, j)).collect();
    let path = match kind {
        JobKind::Prediction => "/v1/predictions",
        JobKind::Training => "/v1/trainings",
    };
    Ok(views::page(s, path, results, next))
}

pub async fn list_predictions(
    State(s): State<AppState>,
    auth: Auth,
    Query(q): Query<PageQuery>,
) -> ApiResult<JsonOut<Value>> {
    Ok(JsonOut(
        list(&s, &auth.required()?, JobKind::Prediction, q).await?,
    ))
}

pub async fn list_trainings(
    State(s): State<AppState>,
    auth: Auth,
    Query(q): Query<PageQuery>,
) -> ApiResult<JsonOut<Value>> {
    Ok(JsonOut(
        list(&s, &auth.required()?, JobKind::Training, q).await?,
    ))
}

pub async fn get_prediction(
    State(s): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let j = op::own_job(&s, &auth.required()?, JobKind::Prediction, &id).await?;
    Ok(JsonOut(views::job_json(&s, &j)).into_response())
}

pub async fn get_training(
    State(s): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> ApiResult<JsonOut<Value>> {
    let j = op::own_job(&s, &auth.required()?, JobKind::Training, &id).await?;
    Ok(JsonOut(views::job(&s, &j)))
}

pub async fn cancel_prediction(
    State(s): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> ApiResult<JsonOut<Value>> {
    let j = op::cancel_job(&s, &auth.required()?, JobKind::Prediction, &id).await?;
    Ok(JsonOut(views::job(&s, &j)))
}

pub async fn cancel_training(
    State(s): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> ApiResult<JsonOut<Value>> {
    let j = op::cancel_job(&s, &auth.required()?, JobKind::Training, &id).await?;
    Ok(JsonOut(views::job(&s, &j)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(name: &'static str, v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(name, HeaderValue::from_str(v).unwrap());
        h
    }

    #[test]
    fn durations_saturate_instead_of_overflowing() {
        assert_eq!(parse_duration("30s"), Some(30));
        assert_eq!(parse_duration("1h30m"), Some(5400));
        assert_eq!(parse_duration(" 90 "), Some(90));
        assert_eq!(parse_duration("18446744073709551615h"), Some(u64::MAX));
        assert_eq!(parse_duration("99999999999999999999999999"), Some(u64::MAX));
        assert_eq!(parse_duration("5124095576030432h"), Some(u64::MAX));
        for bad in ["", "h", "5x", "-5s", "1.5h", "5 s"] {
            assert_eq!(parse_duration(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn cancel_after_is_bounded_both_ways() {
        let ok = |v: &str| cancel_after(&headers("cancel-after", v));
        let d = ok("24h").unwrap().unwrap();
        assert!(d > chrono::Utc::now() + chrono::Duration::hours(23));
        for too_big in [
            "24h1s",
            "86401",
            "18446744073709551615h",
            "9223372036854775807s",
        ] {
            assert!(ok(too_big).is_err(), "{too_big}");
        }
        assert!(ok("4s").is_err());
        assert!(ok("5").is_ok());
    }

    #[test]
    fn prefer_wait_is_clamped() {
        let w = |v: &str| prefer_wait(&headers("prefer", v));
        assert_eq!(w("wait"), Some(60));
        assert_eq!(w("wait=5"), Some(5));
        assert_eq!(w("wait=0"), Some(1));
        assert_eq!(w("wait=61"), Some(60));
        assert_eq!(w("wait=99999999999999999999999"), Some(60));
        assert_eq!(w("respond-async, wait=10"), Some(10));
        assert_eq!(w("wait=-1"), None);
        assert_eq!(w("waiting"), None);
    }
}
