//! Models: the list and search, creating, reading, changing and deleting one.
use axum::body::Bytes;
use axum::extract::{FromRequest, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use modelyard_domain::*;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::error::{ApiError, ApiResult};
use crate::extract::{
    body_rejection, next_cursor, Auth, DryRun, Json, PageQuery, Path, Query, WithStorage,
};
use crate::ops::models::{self as op, check_link, known_hardware, ModelRequest};
use crate::ops::{DeleteMode, DeleteOutcome};
use crate::state::AppState;
use crate::views;

fn models_page(s: &AppState, path: &str, models: Vec<Model>) -> Value {
    let next = next_cursor(&models, |m| m.id);
    let results = models.iter().map(|m| views::model(s, m)).collect();
    views::page(s, path, results, next)
}

#[derive(Deserialize)]
pub struct Search {
    query: Option<String>,
}

/// The list; with `?query=` (an extension) a search, which is also where the `next` link of a
/// `QUERY` search leads, since a link cannot carry a body.
pub async fn list(
    State(s): State<AppState>,
    auth: Auth,
    Query(q): Query<PageQuery>,
    Query(search): Query<Search>,
) -> ApiResult<axum::Json<Value>> {
    let text = search
        .query
        .as_deref()
        .map(str::trim)
        .filter(|t| !t.is_empty());
    let models = s
        .store
        .list_models(auth.0.as_ref(), text, q.page()?)
        .await?;
    Ok(axum::Json(models_page(&s, &search_path(text), models)))
}

fn search_path(text: Option<&str>) -> String {
    match text {
        Some(t) => format!(
            "/v1/models?query={}",
            url::form_urlencoded::byte_serialize(t.as_bytes()).collect::<String>()
        ),
        None => "/v1/models".into(),
    }
}

/// `QUERY /v1/models`: the body is the search text (the JavaScript client JSON-quotes it).
pub async fn search(s: AppState, req: Request) -> ApiResult<axum::Json<Value>> {
    use axum::extract::FromRequestParts;
    let (mut parts, body) = req.into_parts();
    let auth = Auth::from_request_parts(&mut parts, &s).await?;
    let Query(q) = Query::<PageQuery>::from_request_parts(&mut parts, &s).await?;
    let bytes = Bytes::from_request(Request::from_parts(parts, body), &s)
        .await
        .map_err(body_rejection)?;
    let text = std::str::from_utf8(&bytes)
        .map_err(|_| ApiError::BadRequest("The search text must be UTF-8.".into()))?
        .trim();
    let text = match serde_json::from_str::<Value>(text) {
        Ok(Value::String(t)) => t,
        Ok(Value::Object(o)) => o
            .get("query")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string(),
        _ => text.to_string(),
    };
    let text = text.trim();
    let models = s
        .store
        .list_models(auth.0.as_ref(), Some(text), q.page()?)
        .await?;
    Ok(axum::Json(models_page(
        &s,
        &search_path(Some(text)),
        models,
    )))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateModel {
    owner: String,
    name: String,
    visibility: Visibility,
    hardware: String,
    description: Option<String>,
    github_url: Option<String>,
    paper_url: Option<String>,
    license_url: Option<String>,
    cover_image_url: Option<String>,
}

pub async fn create(
    State(s): State<AppState>,
    auth: Auth,
    Json(b): Json<CreateModel>,
) -> ApiResult<Response> {
    let caller = auth.required()?;
    let r = ModelRequest {
        owner: b.owner,
        name: b.name,
        visibility: b.visibility,
        hardware: b.hardware,
        description: b.description,
        github_url: b.github_url,
        paper_url: b.paper_url,
        license_url: b.license_url,
        cover_image_url: b.cover_image_url,
    };
    let m = op::create_model(&s, &caller, r).await?;
    Ok((StatusCode::CREATED, axum::Json(views::model(&s, &m))).into_response())
}

pub async fn get_model(
    State(s): State<AppState>,
    auth: Auth,
    Path((owner, name)): Path<(String, String)>,
    Query(q): Query<WithStorage>,
) -> ApiResult<Response> {
    let storage = q.get()?;
    let m = op::visible_model(&s, auth.0.as_ref(), &owner, &name).await?;
    let mut body = views::model_json(&s, &m);
    // Its owners may ask for what it stores (an extension).
    if storage {
        if let Some(st) = crate::ops::trash::model_storage(&s, auth.0.as_ref(), &m).await? {
            body.storage = Some(views::storage(&st));
        }
    }
    Ok(axum::Json(body).into_response())
}

/// A link field: a string (an http(s) address) or null.
fn opt_link(field: &str, v: &Value) -> ApiResult<Option<String>> {
    let link = opt_string(field, v)?;
    check_link(field, &link)?;
    Ok(link)
}

fn opt_string(field: &str, v: &Value) -> ApiResult<Option<String>> {
    match v {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(s.clone())),
        _ => Err(ApiError::invalid(field, "must be a string or null")),
    }
}

/// The document's fields, plus `visibility`, which Replicate changes in its web settings.
fn parse_patch(body: &Map<String, Value>) -> ApiResult<ModelPatch> {
    let mut p = ModelPatch::default();
    for (k, v) in body {
        match k.as_str() {
            "description" => p.description = Some(opt_string(k, v)?),
            "github_url" => p.github_url = Some(opt_link(k, v)?),
            "paper_url" => p.paper_url = Some(opt_link(k, v)?),
            "license_url" => p.license_url = Some(opt_link(k, v)?),
            "cover_image_url" => p.cover_image_url = Some(opt_link(k, v)?),
            "visibility" => {
                p.visibility = Some(v.as_str().and_then(Visibility::parse).ok_or_else(|| {
                    ApiError::invalid("visibility", "must be \"public\" or \"private\"")
                })?)
            }
            "hardware" => {
                let h = v.as_str().filter(|h| known_hardware(h)).ok_or_else(|| {
                    ApiError::invalid(
                        "hardware",
                        "is not available here; GET /v1/hardware lists what is",
                    )
                })?;
                p.hardware = Some(h.to_string());
            }
            other => {
                return Err(ApiError::invalid(
                    other,
                    "is not a field that can be changed",
                ));
            }
        }
    }
    Ok(p)
}

pub async fn update(
    State(s): State<AppState>,
    auth: Auth,
    Path((owner, name)): Path<(String, String)>,
    Json(body): Json<Map<String, Value>>,
) -> ApiResult<axum::Json<Value>> {
    let caller = auth.required()?;
    let m = op::managed_model(&s, &caller, &owner, &name).await?;
    let patch = parse_patch(&body)?;
    let m = op::update_model(&s, &caller, &m, patch).await?;
    Ok(axum::Json(views::model(&s, &m)))
}

/// The answer to a DELETE: 204, or with `?dry_run=true` the preview.
pub fn delete_response(o: DeleteOutcome) -> Response {
    match o {
        DeleteOutcome::Deleted => StatusCode::NO_CONTENT.into_response(),
        DeleteOutcome::Preview {
            blockers,
            frees_bytes,
        } => {
            let mut body = json!({
                "deletable": blockers.is_empty(),
                "blockers": blockers,
            });
            if let Some(n) = frees_bytes {
                body["frees_bytes"] = json!(n);
            }
            axum::Json(body).into_response()
        }
    }
}

pub async fn delete_model(
    State(s): State<AppState>,
    auth: Auth,
    Path((owner, name)): Path<(String, String)>,
    Query(q): Query<DryRun>,
    Query(p): Query<super::trash::PurgeQuery>,
) -> ApiResult<Response> {
    let caller = auth.required()?;
    let mode = DeleteMode {
        dry_run: q.get()?,
        purge: p.get()?,
    };
    let o = op::delete_model(&s, &caller, &owner, &name, mode).await?;
    Ok(delete_response(o))
}
