//! Versions: the list, one version, its environment's build log, and deleting one. (Pushing a
//! version is `push/`.)
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::Value;

use crate::error::ApiResult;
use crate::extract::{next_cursor, Auth, DryRun, PageQuery, Path, Query, WithStorage};
use crate::ops::versions as op;
use crate::state::AppState;
use crate::views;

pub async fn list(
    State(s): State<AppState>,
    auth: Auth,
    Path((owner, name)): Path<(String, String)>,
    Query(q): Query<PageQuery>,
) -> ApiResult<Json<Value>> {
    let versions = op::list_versions(&s, auth.0.as_ref(), &owner, &name, q.page()?).await?;
    let next = next_cursor(&versions, |v| v.cursor);
    let results = versions.iter().map(views::version).collect();
    let path = format!("/v1/models/{owner}/{name}/versions");
    Ok(Json(views::page(&s, &path, results, next)))
}

pub async fn get_version(
    State(s): State<AppState>,
    auth: Auth,
    Path((owner, name, id)): Path<(String, String, String)>,
    Query(q): Query<WithStorage>,
) -> ApiResult<Response> {
    let storage = q.get()?;
    let mv = op::visible_version(&s, auth.0.as_ref(), &owner, &name, &id).await?;
    let mut body = views::version_json(&mv.version);
    // Its model's owners may ask for what it stores (an extension).
    if storage {
        let st = crate::ops::trash::version_storage(&s, auth.0.as_ref(), &mv.model, &mv.version);
        if let Some(st) = st.await? {
            body.storage = Some(views::storage(&st));
        }
    }
    Ok(Json(body).into_response())
}

/// The log of building the version's Python environment (an extension), for its owners.
pub async fn build_log(
    State(s): State<AppState>,
    auth: Auth,
    Path((owner, name, id)): Path<(String, String, String)>,
) -> ApiResult<Response> {
    let caller = auth.required()?;
    let log = op::build_log(&s, &caller, &owner, &name, &id).await?;
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
    Query(p): Query<super::trash::PurgeQuery>,
) -> ApiResult<Response> {
    let caller = auth.required()?;
    let mode = crate::ops::DeleteMode {
        dry_run: q.get()?,
        purge: p.get()?,
    };
    let o = op::delete_version(&s, &caller, &owner, &name, &id, mode).await?;
    Ok(super::models::delete_response(o))
}
