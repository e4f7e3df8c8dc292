use axum::extract::{Path, Query, State};
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
    let next = (versions.len() as i64 == PAGE_SIZE).then(|| versions.last().map(|v| v.cursor)).flatten();
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
