//! Deployments: the list, creating one, reading it, new releases and deleting it.
use axum::extract::State;
use axum::response::Response;
use axum::Json as JsonOut;
use modelyard_domain::*;
use serde::Deserialize;
use serde_json::Value;

use crate::error::ApiResult;
use crate::extract::{next_cursor, Auth, DryRun, Json, PageQuery, Path, Query};
use crate::ops::deployments::{self as op, DeploymentRequest, ReleaseChange};
use crate::state::AppState;
use crate::views;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateDeployment {
    name: String,
    model: String,
    version: String,
    hardware: String,
    min_instances: i64,
    max_instances: i64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateDeployment {
    version: Option<String>,
    hardware: Option<String>,
    min_instances: Option<i64>,
    max_instances: Option<i64>,
}

async fn created_by(s: &AppState, caller: &Caller, d: &Deployment) -> ApiResult<Value> {
    let by = s.store.account(&d.release.created_by).await?;
    let visible = op::release_visible(s, caller, d).await?;
    Ok(views::deployment(d, by.as_ref(), visible))
}

pub async fn create(
    State(s): State<AppState>,
    auth: Auth,
    Json(b): Json<CreateDeployment>,
) -> ApiResult<JsonOut<Value>> {
    let caller = auth.required()?;
    let r = DeploymentRequest {
        name: b.name,
        model: b.model,
        version: b.version,
        hardware: b.hardware,
        min_instances: b.min_instances,
        max_instances: b.max_instances,
    };
    let d = op::create_deployment(&s, &caller, r).await?;
    Ok(JsonOut(created_by(&s, &caller, &d).await?))
}

pub async fn list(
    State(s): State<AppState>,
    auth: Auth,
    Query(q): Query<PageQuery>,
) -> ApiResult<JsonOut<Value>> {
    let caller = auth.required()?;
    let ds = op::list_deployments(&s, &caller, q.page()?).await?;
    let next = next_cursor(&ds, |d| d.id);
    let mut results = Vec::with_capacity(ds.len());
    for d in &ds {
        results.push(created_by(&s, &caller, d).await?);
    }
    Ok(JsonOut(views::page(&s, "/v1/deployments", results, next)))
}

pub async fn get_deployment(
    State(s): State<AppState>,
    auth: Auth,
    Path((owner, name)): Path<(String, String)>,
) -> ApiResult<JsonOut<Value>> {
    let caller = auth.required()?;
    let d = op::owned_deployment(&s, &caller, &owner, &name).await?;
    Ok(JsonOut(created_by(&s, &caller, &d).await?))
}

pub async fn update(
    State(s): State<AppState>,
    auth: Auth,
    Path((owner, name)): Path<(String, String)>,
    Json(b): Json<UpdateDeployment>,
) -> ApiResult<JsonOut<Value>> {
    let caller = auth.required()?;
    let d = op::owned_deployment(&s, &caller, &owner, &name).await?;
    let c = ReleaseChange {
        version: b.version,
        hardware: b.hardware,
        min_instances: b.min_instances,
        max_instances: b.max_instances,
    };
    let d = op::update_deployment(&s, &caller, &d, c).await?;
    Ok(JsonOut(created_by(&s, &caller, &d).await?))
}

pub async fn delete_deployment(
    State(s): State<AppState>,
    auth: Auth,
    Path((owner, name)): Path<(String, String)>,
    Query(q): Query<DryRun>,
) -> ApiResult<Response> {
    let caller = auth.required()?;
    let o = op::delete_deployment(&s, &caller, &owner, &name, q.get()?).await?;
    Ok(super::models::delete_response(o))
}
