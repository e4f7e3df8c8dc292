use axum::extract::State;

use crate::extract::{Path, Query};
use axum::response::Response;
use axum::Json as JsonOut;
use modelyard_domain::names::validate_name;
use modelyard_domain::*;
use serde::Deserialize;
use serde_json::Value;

use crate::error::{ApiError, ApiResult};
use crate::extract::{Auth, DryRun, Json, PageQuery, PAGE_SIZE};
use crate::ops;
use crate::state::AppState;
use crate::views;

use super::models::HARDWARE;

/// Upper bound on instances: this server runs everything on one machine.
pub(crate) const MAX_INSTANCES: i64 = 64;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateDeployment {
    pub(crate) name: String,
    pub(crate) model: String,
    pub(crate) version: String,
    pub(crate) hardware: String,
    pub(crate) min_instances: i64,
    pub(crate) max_instances: i64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateDeployment {
    pub(crate) version: Option<String>,
    pub(crate) hardware: Option<String>,
    pub(crate) min_instances: Option<i64>,
    pub(crate) max_instances: Option<i64>,
}

pub(crate) fn check_release(r: &NewRelease) -> ApiResult<()> {
    if !HARDWARE.contains(&r.hardware.as_str()) {
        return Err(ApiError::invalid(
            "hardware",
            "is not available here; GET /v1/hardware lists what is",
        ));
    }
    if !(0..=MAX_INSTANCES).contains(&r.min_instances) {
        return Err(ApiError::invalid(
            "min_instances",
            format!("must be between 0 and {MAX_INSTANCES}"),
        ));
    }
    if !(0..=MAX_INSTANCES).contains(&r.max_instances) {
        return Err(ApiError::invalid(
            "max_instances",
            format!("must be between 0 and {MAX_INSTANCES}"),
        ));
    }
    if r.min_instances > r.max_instances {
        return Err(ApiError::invalid(
            "min_instances",
            "must not exceed max_instances",
        ));
    }
    Ok(())
}

async fn created_by(s: &AppState, caller: &Caller, d: &Deployment) -> ApiResult<Value> {
    let by = s.store.account(&d.release.created_by).await?;
    let visible = ops::release_visible(s, caller, d).await?;
    Ok(views::deployment(d, by.as_ref(), visible))
}

pub async fn create(
    State(s): State<AppState>,
    auth: Auth,
    Json(b): Json<CreateDeployment>,
) -> ApiResult<JsonOut<Value>> {
    let caller = auth.required()?;
    let d = create_deployment(&s, &caller, b).await?;
    Ok(JsonOut(created_by(&s, &caller, &d).await?))
}

/// Creates a deployment by the rules: the one path for the API and the web UI.
pub(crate) async fn create_deployment(
    s: &AppState,
    caller: &Caller,
    b: CreateDeployment,
) -> ApiResult<Deployment> {
    validate_name("deployment", &b.name).map_err(|e| ApiError::invalid("name", e))?;
    let (owner, name) = b
        .model
        .split_once('/')
        .ok_or_else(|| ApiError::invalid("model", "must be owner/name"))?;
    let (_, v) = ops::visible_version(s, Some(caller), owner, name, &b.version).await?;
    let release = NewRelease {
        version_id: v.id,
        hardware: b.hardware,
        min_instances: b.min_instances,
        max_instances: b.max_instances,
    };
    check_release(&release)?;
    Ok(s.store
        .create_deployment(
            caller.account.id,
            &b.name,
            release,
            &caller.account.username,
        )
        .await?)
}

pub async fn list(
    State(s): State<AppState>,
    auth: Auth,
    Query(q): Query<PageQuery>,
) -> ApiResult<JsonOut<Value>> {
    let caller = auth.required()?;
    let mut owners = caller.org_ids.clone();
    owners.push(caller.account.id);
    let ds = s.store.list_deployments(&owners, q.page()?).await?;
    let next = (ds.len() as i64 == PAGE_SIZE)
        .then(|| ds.last().map(|d| d.id))
        .flatten();
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
    let d = ops::owned_deployment(&s, &caller, &owner, &name).await?;
    Ok(JsonOut(created_by(&s, &caller, &d).await?))
}

pub async fn update(
    State(s): State<AppState>,
    auth: Auth,
    Path((owner, name)): Path<(String, String)>,
    Json(b): Json<UpdateDeployment>,
) -> ApiResult<JsonOut<Value>> {
    let caller = auth.required()?;
    let d = ops::owned_deployment(&s, &caller, &owner, &name).await?;
    let d = update_deployment(&s, &caller, &d, b).await?;
    Ok(JsonOut(created_by(&s, &caller, &d).await?))
}

/// Makes a new release of a deployment: the one path for the API and the web UI.
pub(crate) async fn update_deployment(
    s: &AppState,
    caller: &Caller,
    d: &Deployment,
    b: UpdateDeployment,
) -> ApiResult<Deployment> {
    if b.version.is_none()
        && b.hardware.is_none()
        && b.min_instances.is_none()
        && b.max_instances.is_none()
    {
        return Err(ApiError::invalid(
            "body",
            "nothing to change: give version, hardware, min_instances or max_instances",
        ));
    }
    // Disabling is always allowed (it is the way to delete a deployment); any other release
    // uses the version, so the caller must still be able to see it.
    let disabling = b.version.is_none() && b.min_instances == Some(0) && b.max_instances == Some(0);
    if !disabling {
        ops::deployment_version(s, caller, d).await?;
    }
    let version_id = match b.version {
        Some(v) => {
            let (m_owner, m_name) = d.release.model.split_once('/').unwrap_or_default();
            ops::visible_version(s, Some(caller), m_owner, m_name, &v)
                .await?
                .1
                .id
        }
        None => d.release.version_id.clone(),
    };
    let release = NewRelease {
        version_id,
        hardware: b.hardware.unwrap_or(d.release.hardware.clone()),
        min_instances: b.min_instances.unwrap_or(d.release.min_instances),
        max_instances: b.max_instances.unwrap_or(d.release.max_instances),
    };
    check_release(&release)?;
    let disabled = release.min_instances == 0 && release.max_instances == 0;
    let d = s
        .store
        .update_deployment(d.id, release, &caller.account.username)
        .await?;
    if disabled {
        // A disabled deployment runs nothing: its queued work is canceled, not left waiting.
        let n = s.store.cancel_queued_for_deployment(d.id).await?;
        if n > 0 {
            tracing::info!(deployment = %d.full_name(), canceled = n, "disabled; queued predictions canceled");
        }
    }
    Ok(d)
}

pub async fn delete_deployment(
    State(s): State<AppState>,
    auth: Auth,
    Path((owner, name)): Path<(String, String)>,
    Query(q): Query<DryRun>,
) -> ApiResult<Response> {
    let caller = auth.required()?;
    let o = ops::delete_deployment(&s, &caller, &owner, &name, q.get()?).await?;
    Ok(super::models::delete_response(o))
}
