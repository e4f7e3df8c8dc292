use axum::extract::State;

use crate::extract::{Path, Query};
use axum::response::Response;
use axum::Json;
use serde_json::Value;

use crate::error::ApiResult;
use crate::extract::{Auth, DryRun, PageQuery, PAGE_SIZE};
use crate::ops;
use crate::state::AppState;
use crate::views;

pub async fn list(
    State(s): State<AppState>,
    auth: Auth,
    Path((owner, name)): Path<(String, String)>,
    Query(q): Query<PageQuery>,
) -> ApiResult<Json<Value>> {
    let m = ops::visible_model(&s, auth.0.as_ref(), &owner, &name).await?;
    let versions = s.store.versions(m.id, q.page()?).await?;
    let next = (versions.len() as i64 == PAGE_SIZE)
        .then(|| versions.last().map(|v| v.cursor))
        .flatten();
    let results = versions.iter().map(views::version).collect();
    let path = format!("/v1/models/{owner}/{name}/versions");
    Ok(Json(views::page(&s, &path, results, next)))
}

pub async fn get_version(
    State(s): State<AppState>,
    auth: Auth,
    Path((owner, name, id)): Path<(String, String, String)>,
) -> ApiResult<Json<Value>> {
    let (_, v) = ops::visible_version(&s, auth.0.as_ref(), &owner, &name, &id).await?;
    Ok(Json(views::version(&v)))
}

/// The log of building the version's Python environment (an extension), for its owners.
pub async fn build_log(
    State(s): State<AppState>,
    auth: Auth,
    Path((owner, name, id)): Path<(String, String, String)>,
) -> ApiResult<axum::response::Response> {
    use axum::response::IntoResponse;
    let caller = auth.required()?;
    let m = ops::managed_model(&s, &caller, &owner, &name).await?;
    let v = s.store.version(m.id, &id).await?.ok_or_else(|| {
        crate::error::ApiError::NotFound(format!(
            "The version {id} of {owner}/{name} does not exist."
        ))
    })?;
    let yaml = std::fs::read_to_string(s.blobs.tree(&v.artifact)?.join("cog.yaml"))
        .map_err(|e| crate::error::ApiError::Internal(format!("cog.yaml of {id}: {e}")))?;
    let cog = modelyard_domain::cog_yaml::parse(&yaml).map_err(crate::error::ApiError::Internal)?;
    let none = || {
        crate::error::ApiError::NotFound(if cog.python_packages.is_empty() {
            "This version needs no environment of its own (its cog.yaml lists no python_packages)."
                .into()
        } else {
            "The environment has not been built yet: it is built when the version first runs."
                .into()
        })
    };
    if cog.python_packages.is_empty() {
        return Err(none());
    }
    let log = s
        .runner
        .as_ref()
        .and_then(|r| r.build_log(&cog.python_packages))
        .ok_or_else(none)?;
    // The log holds what the model's packages printed: served like any user-supplied text.
    let mut resp = (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; charset=utf-8",
        )],
        log,
    )
        .into_response();
    crate::user_content::harden(&mut resp);
    Ok(resp)
}

pub async fn delete_version(
    State(s): State<AppState>,
    auth: Auth,
    Path((owner, name, id)): Path<(String, String, String)>,
    Query(q): Query<DryRun>,
) -> ApiResult<Response> {
    let caller = auth.required()?;
    let o = ops::delete_version(&s, &caller, &owner, &name, &id, q.get()?).await?;
    Ok(super::models::delete_response(o))
}
