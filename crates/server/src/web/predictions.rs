//! Prediction pages (`/p/{id}`, where the API's `urls.web` points), canceling, and the small
//! JSON the page polls for live status.
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Json;
use modelyard_domain::*;
use serde_json::{json, Value};

use super::error::{WebError, WebResult};
use super::render;
use super::session::{self, Posted, Viewer};
use crate::error::ApiError;
use crate::ops::jobs::{cancel_job, own_job_of_any_kind};
use crate::ops::OpError;
use crate::state::AppState;
use crate::views::{self, time};

pub fn job_row(j: &Job) -> Value {
    json!({
        "id": j.id,
        "model": j.model,
        "version": j.version_id,
        "status": j.status.as_str(),
        "source": j.source,
        "created_at": time(j.created_at),
        "kind": j.kind.as_str(),
    })
}

/// A prediction or training of the signed-in person: anyone else's is the same 404 as none.
async fn own_job(s: &AppState, viewer: &Viewer, id: &str) -> WebResult<Job> {
    let caller = viewer.required()?;
    own_job_of_any_kind(s, caller, id)
        .await
        .map_err(|e| match e {
            OpError::NotFound(_) => WebError::not_found(),
            e => e.into(),
        })
}

/// Output as the page shows it: text as text, images as images, anything else as JSON.
fn output_view(o: &Option<Value>) -> Value {
    let image = |s: &str| {
        s.starts_with("data:image/")
            || (s.starts_with("https://") || s.starts_with("http://"))
                && [".png", ".jpg", ".jpeg", ".gif", ".webp"]
                    .iter()
                    .any(|e| s.to_lowercase().ends_with(e))
    };
    match o {
        None => json!(null),
        Some(Value::String(t)) if image(t) => json!({"image": t}),
        Some(Value::String(t)) => json!({"text": t}),
        Some(v) => json!({"text": serde_json::to_string_pretty(v).unwrap_or_default()}),
    }
}

pub async fn page(State(s): State<AppState>, viewer: Viewer, Path(id): Path<String>) -> WebResult {
    let j = own_job(&s, &viewer, &id).await?;
    let (owner, name) = j.model.split_once('/').unwrap_or_default();
    let input: Vec<Value> = match &j.input {
        Value::Object(o) => o.iter().map(|(k, v)| json!({"name": k, "value": match v { Value::String(t) => t.clone(), v => v.to_string() }})).collect(),
        _ => vec![],
    };
    let ctx = json!({
        "job": job_row(&j),
        "owner": owner,
        "name": name,
        "input": input,
        "output": output_view(&j.output),
        "logs": j.logs,
        "error": j.error,
        "data_removed": j.data_removed,
        "terminal": j.status.is_terminal(),
        "started_at": j.started_at.map(time),
        "completed_at": j.completed_at.map(time),
        "predict_time": j.metrics.get("predict_time"),
        "api_url": s.url(&format!("/v1/{}s/{}", j.kind.as_str(), j.id)),
    });
    Ok(render::page(
        &s,
        &viewer,
        "prediction.html",
        &format!("Prediction {}", j.id),
        ctx,
    ))
}

/// What the prediction page polls: the API's own JSON for the prediction, for its owner.
pub async fn status(State(s): State<AppState>, viewer: Viewer, Path(id): Path<String>) -> Response {
    let j = match own_job(&s, &viewer, &id).await {
        Ok(j) => j,
        Err(_) => {
            return ApiError::NotFound(format!("The prediction {id} does not exist."))
                .into_response()
        }
    };
    let mut v = views::job(&s, &j);
    v["output_view"] = output_view(&if j.data_removed {
        None
    } else {
        j.output.clone()
    });
    let mut resp = Json(v).into_response();
    resp.headers_mut().insert(
        axum::http::header::CACHE_CONTROL,
        axum::http::HeaderValue::from_static("no-store"),
    );
    resp
}

pub async fn cancel(
    State(s): State<AppState>,
    Path(id): Path<String>,
    posted: Posted,
) -> WebResult {
    let j = own_job(&s, &posted.viewer, &id).await?;
    let j = cancel_job(&s, posted.caller(), j.kind, &j.id).await?;
    let msg = if j.status == Status::Canceled {
        "Canceled."
    } else {
        "It had already finished."
    };
    Ok(session::flash(
        &s,
        Redirect::to(&format!("/p/{}", j.id)).into_response(),
        msg,
    ))
}
