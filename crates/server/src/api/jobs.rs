//! Predictions and trainings: recorded, validated against the version's schema, and queued.
use std::time::Duration;

use axum::extract::State;

use crate::extract::{Path, Query};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json as JsonOut;
use modelyard_domain::rules::{can_manage, can_view};
use modelyard_domain::*;
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::error::{ApiError, ApiResult};
use crate::extract::{Auth, Json, PageQuery, PAGE_SIZE};
use crate::ops;
use crate::state::AppState;
use crate::validate;
use crate::views;

const EVENTS: &[&str] = &["start", "output", "logs", "completed"];

#[derive(Deserialize)]
pub struct CreateJob {
    version: Option<String>,
    #[serde(default)]
    input: Map<String, Value>,
    webhook: Option<String>,
    webhook_events_filter: Option<Vec<String>>,
    destination: Option<String>,
    // Accepted and ignored, as the clients send them.
    #[serde(default, rename = "stream")]
    _stream: Option<Value>,
    #[serde(default, rename = "webhook_completed")]
    _webhook_completed: Option<Value>,
    /// From the `Cancel-After` header, not the body.
    #[serde(skip)]
    deadline: Option<chrono::DateTime<chrono::Utc>>,
}

fn webhook_filter(b: &CreateJob) -> ApiResult<Vec<String>> {
    let filter = b.webhook_events_filter.clone().unwrap_or_default();
    if let Some(bad) = filter.iter().find(|e| !EVENTS.contains(&e.as_str())) {
        return Err(ApiError::invalid(
            "webhook_events_filter",
            format!("{bad:?} is not one of start, output, logs, completed"),
        ));
    }
    if let Some(w) = &b.webhook {
        let ok = url::Url::parse(w).is_ok_and(|u| matches!(u.scheme(), "http" | "https"));
        if !ok {
            return Err(ApiError::invalid("webhook", "must be an http(s) URL"));
        }
    }
    Ok(filter)
}

impl CreateJob {
    /// A prediction with this input and nothing else: what the web playground submits.
    pub(crate) fn with_input(input: Map<String, Value>) -> Self {
        CreateJob {
            version: None,
            input,
            webhook: None,
            webhook_events_filter: None,
            destination: None,
            _stream: None,
            _webhook_completed: None,
            deadline: None,
        }
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
    let job = match (wait, &s.runner) {
        (Some(secs), Some(runner)) => {
            let limit = Duration::from_secs(secs);
            match runner.wait(job.kind, &job.id, limit).await {
                // Ended here: the runner has it as recorded, no need to read it back.
                Some(done) => done,
                None => s.store.job(job.kind, &job.id).await?.unwrap_or(job),
            }
        }
        _ => job,
    };
    let body = views::job(s, &job);
    let mut resp = (StatusCode::CREATED, JsonOut(body.clone())).into_response();
    if let Ok(loc) = HeaderValue::from_str(body["urls"]["get"].as_str().unwrap_or_default()) {
        resp.headers_mut().insert("location", loc);
    }
    if let Some(secs) = wait {
        if let Ok(v) = HeaderValue::from_str(&format!("wait={secs}")) {
            resp.headers_mut().insert("preference-applied", v);
        }
    }
    Ok(resp)
}

async fn create(
    s: &AppState,
    h: &HeaderMap,
    caller: &Caller,
    (m, v): (&Model, &Version),
    mut b: CreateJob,
    deployment_id: Option<i64>,
) -> ApiResult<Response> {
    b.deadline = cancel_after(h)?;
    let job = record_prediction(s, caller, m, v, b, deployment_id, "api").await?;
    created(s, h, job).await
}

/// Validates and records a prediction: the one path for the API (`source` "api") and the web
/// playground ("web").
pub(crate) async fn record_prediction(
    s: &AppState,
    caller: &Caller,
    m: &Model,
    v: &Version,
    b: CreateJob,
    deployment_id: Option<i64>,
    source: &str,
) -> ApiResult<Job> {
    let filter = webhook_filter(&b)?;
    if let Some(w) = &b.webhook {
        crate::webhooks::check_target(s.config.allow_private_webhooks, w).await?;
    }
    let mut b = b;
    super::files::resolve_inputs(s, caller, &mut b.input).await?;
    let input = validate::input(s, v, validate::Schema::Predict, Value::Object(b.input))?;
    let job = s
        .store
        .create_job(NewJob {
            kind: JobKind::Prediction,
            account_id: caller.account.id,
            version_id: v.id.clone(),
            deployment_id,
            destination_model_id: None,
            input,
            source: source.into(),
            webhook: b.webhook,
            webhook_events_filter: filter,
            deadline: b.deadline,
        })
        .await
        .map_err(|e| match e {
            modelyard_storage::StoreError::NotFound(_) => ApiError::NotFound(format!(
                "The version {} of {} was deleted.",
                v.id,
                m.full_name()
            )),
            e => e.into(),
        })?;
    if let Some(r) = &s.runner {
        r.submit(job.clone());
    }
    Ok(job)
}

/// `version` is "owner/name:id", a bare id, or "owner/name" for the latest version.
async fn resolve_version(s: &AppState, caller: &Caller, spec: &str) -> ApiResult<(Model, Version)> {
    let not_found = || ApiError::NotFound(format!("The version {spec} does not exist."));
    if let Some((model, id)) = spec.split_once(':') {
        let (owner, name) = model.split_once('/').ok_or_else(not_found)?;
        return ops::visible_version(s, Some(caller), owner, name, id).await;
    }
    if let Some((owner, name)) = spec.split_once('/') {
        let m = ops::visible_model(s, Some(caller), owner, name).await?;
        let v = m.latest_version.clone().ok_or_else(|| {
            ApiError::invalid("version", format!("{owner}/{name} has no versions yet"))
        })?;
        return Ok((m, v));
    }
    if !ids::is_version_id(spec) {
        return Err(ApiError::invalid(
            "version",
            "must be owner/name:id, owner/name, or a 64-character version id",
        ));
    }
    match s.store.version_by_id(spec).await? {
        Some((m, v)) if can_view(Some(caller), m.owner_id, m.visibility) => Ok((m, v)),
        _ => Err(not_found()),
    }
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
    let (m, v) = resolve_version(&s, &caller, &spec).await?;
    create(&s, &headers, &caller, (&m, &v), b, None).await
}

pub async fn create_for_model(
    State(s): State<AppState>,
    auth: Auth,
    headers: HeaderMap,
    Path((owner, name)): Path<(String, String)>,
    Json(b): Json<CreateJob>,
) -> ApiResult<Response> {
    let caller = auth.required()?;
    let m = ops::visible_model(&s, Some(&caller), &owner, &name).await?;
    let v = m.latest_version.clone().ok_or_else(|| {
        ApiError::NotFound(format!(
            "{owner}/{name} has no versions yet; push one first."
        ))
    })?;
    create(&s, &headers, &caller, (&m, &v), b, None).await
}

pub async fn create_for_deployment(
    State(s): State<AppState>,
    auth: Auth,
    headers: HeaderMap,
    Path((owner, name)): Path<(String, String)>,
    Json(b): Json<CreateJob>,
) -> ApiResult<Response> {
    let caller = auth.required()?;
    let d = ops::owned_deployment(&s, &caller, &owner, &name).await?;
    if d.release.max_instances == 0 {
        return Err(ApiError::Conflict(format!(
            "The deployment {} is disabled (max_instances is 0); raise max_instances to run it.",
            d.full_name()
        )));
    }
    let (m, v) = ops::deployment_version(&s, &caller, &d).await?;
    create(&s, &headers, &caller, (&m, &v), b, Some(d.id)).await
}

pub async fn create_training(
    State(s): State<AppState>,
    auth: Auth,
    headers: HeaderMap,
    Path((owner, name, id)): Path<(String, String, String)>,
    Json(b): Json<CreateJob>,
) -> ApiResult<Response> {
    let caller = auth.required()?;
    let (_, v) = ops::visible_version(&s, Some(&caller), &owner, &name, &id).await?;
    let dest = b.destination.clone().ok_or_else(|| {
        ApiError::invalid("destination", "is required (owner/name of your model)")
    })?;
    let (d_owner, d_name) = dest
        .split_once('/')
        .ok_or_else(|| ApiError::invalid("destination", "must be owner/name"))?;
    let dest_model = match s.store.model(d_owner, d_name).await? {
        Some(m) if can_manage(&caller, m.owner_id) => m,
        Some(m) if can_view(Some(&caller), m.owner_id, m.visibility) => {
            return Err(ApiError::Forbidden(format!(
                "The destination {dest} is not yours: train into a model you own."
            )))
        }
        _ => {
            return Err(ApiError::invalid(
                "destination",
                format!("the model {dest} does not exist; create it first"),
            ))
        }
    };
    let filter = webhook_filter(&b)?;
    if let Some(w) = &b.webhook {
        crate::webhooks::check_target(s.config.allow_private_webhooks, w).await?;
    }
    let mut b = b;
    super::files::resolve_inputs(&s, &caller, &mut b.input).await?;
    let deadline = cancel_after(&headers)?;
    let input = validate::input(&s, &v, validate::Schema::Train, Value::Object(b.input))?;
    let job = s
        .store
        .create_job(NewJob {
            kind: JobKind::Training,
            account_id: caller.account.id,
            version_id: v.id.clone(),
            deployment_id: None,
            destination_model_id: Some(dest_model.id),
            input,
            source: "api".into(),
            webhook: b.webhook,
            webhook_events_filter: filter,
            deadline,
        })
        .await?;
    if let Some(r) = &s.runner {
        r.submit(job.clone());
    }
    created(&s, &headers, job).await
}

async fn own_job(s: &AppState, caller: &Caller, kind: JobKind, id: &str) -> ApiResult<Job> {
    match s.store.job(kind, id).await? {
        Some(j) if j.account_id == caller.account.id => Ok(j),
        _ => Err(ApiError::NotFound(format!(
            "The {} {id} does not exist.",
            kind.as_str()
        ))),
    }
}

async fn list(s: &AppState, caller: &Caller, kind: JobKind, q: PageQuery) -> ApiResult<Value> {
    let jobs = s
        .store
        .list_jobs(kind, caller.account.id, q.page()?)
        .await?;
    let next = (jobs.len() as i64 == PAGE_SIZE)
        .then(|| jobs.last().map(|j| j.cursor))
        .flatten();
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
) -> ApiResult<JsonOut<Value>> {
    let j = own_job(&s, &auth.required()?, JobKind::Prediction, &id).await?;
    Ok(JsonOut(views::job(&s, &j)))
}

pub async fn get_training(
    State(s): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> ApiResult<JsonOut<Value>> {
    let j = own_job(&s, &auth.required()?, JobKind::Training, &id).await?;
    Ok(JsonOut(views::job(&s, &j)))
}

pub async fn cancel_prediction(
    State(s): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> ApiResult<JsonOut<Value>> {
    let j = own_job(&s, &auth.required()?, JobKind::Prediction, &id).await?;
    let j = ops::cancel_job(&s, JobKind::Prediction, &j.id).await?;
    Ok(JsonOut(views::job(&s, &j)))
}

pub async fn cancel_training(
    State(s): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> ApiResult<JsonOut<Value>> {
    let j = own_job(&s, &auth.required()?, JobKind::Training, &id).await?;
    let j = ops::cancel_job(&s, JobKind::Training, &j.id).await?;
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
