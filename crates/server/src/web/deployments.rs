//! Deployments: the list and creating one, a deployment's page (change the release, disable)
//! and deleting it by the rules.
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect};
use modelyard_domain::*;
use serde_json::{json, Value};

use super::error::{WebError, WebResult};
use super::form::Form;
use super::render;
use super::session::{self, Posted, Viewer};
use crate::ops::deployments::{
    self as op, create_deployment, update_deployment, DeploymentRequest, ReleaseChange,
};
use crate::ops::models::{owned_models, visible_model};
use crate::ops::versions::list_versions;
use crate::ops::{DeleteOutcome, OpError};
use crate::state::AppState;
use crate::views::time;

/// `visible`: whether the viewer may still see the release's version (see
/// `ops::deployments::deployment_version`); the page says so when not.
fn deployment_view(d: &Deployment, visible: bool) -> Value {
    let r = &d.release;
    json!({
        "version_gone": !visible,
        "owner": d.owner,
        "name": d.name,
        "full_name": d.full_name(),
        "model": r.model,
        "version": if visible { r.version_id.as_str() } else { "" },
        "number": r.number,
        "hardware": r.hardware,
        "min_instances": r.min_instances,
        "max_instances": r.max_instances,
        "created_by": r.created_by,
        "created_at": time(r.created_at),
        "last_used_at": time(d.last_used_at),
        "enabled": r.min_instances != 0 || r.max_instances != 0,
    })
}

async fn list_page(
    s: &AppState,
    viewer: &Viewer,
    status: StatusCode,
    form: Option<&Form>,
    error: Option<String>,
) -> WebResult {
    let caller = viewer.required()?;
    let ds = op::list_deployments(
        s,
        caller,
        PageReq {
            after: None,
            limit: 100,
        },
    )
    .await?;
    let mut views = Vec::with_capacity(ds.len());
    for d in &ds {
        views.push(deployment_view(d, op::release_visible(s, caller, d).await?));
    }
    let mine = owned_models(s, caller, 100).await?;
    let models: Vec<String> = mine
        .iter()
        .filter(|m| m.latest_version.is_some())
        .map(|m| m.full_name())
        .collect();
    let ctx = json!({
        "deployments": views,
        "models": models,
        "form": {
            "name": form.and_then(|f| f.get("name")).unwrap_or_default(),
            "model": form.and_then(|f| f.get("model")).unwrap_or_default(),
            "version": form.and_then(|f| f.get("version")).unwrap_or_default(),
            "min_instances": form.and_then(|f| f.get("min_instances")).unwrap_or("0"),
            "max_instances": form.and_then(|f| f.get("max_instances")).unwrap_or("1"),
        },
        "error": error,
    });
    Ok(render::page_status(
        s,
        viewer,
        status,
        "deployments.html",
        "Deployments",
        ctx,
    ))
}

pub async fn list(State(s): State<AppState>, viewer: Viewer) -> WebResult {
    list_page(&s, &viewer, StatusCode::OK, None, None).await
}

fn number(f: &Form, key: &str) -> Result<i64, String> {
    f.text(key)
        .unwrap_or_default()
        .parse()
        .map_err(|_| format!("{key} must be a whole number"))
}

/// A refusal the form's page explains; anything else is an error page.
fn problem(e: OpError) -> Result<String, WebError> {
    match e {
        OpError::Invalid { detail, .. } | OpError::Conflict(detail) | OpError::NotFound(detail) => {
            Ok(detail)
        }
        e => Err(e.into()),
    }
}

pub async fn create(State(s): State<AppState>, posted: Posted) -> WebResult {
    let f = &posted.form;
    let caller = posted.caller();
    let model = f.text("model").unwrap_or_default();
    let b = (|| -> Result<DeploymentRequest, String> {
        Ok(DeploymentRequest {
            name: f.text("name").unwrap_or_default(),
            model: model.clone(),
            version: String::new(),
            hardware: "cpu".into(),
            min_instances: number(f, "min_instances")?,
            max_instances: number(f, "max_instances")?,
        })
    })();
    let mut b = match b {
        Ok(b) => b,
        Err(e) => {
            return list_page(
                &s,
                &posted.viewer,
                StatusCode::UNPROCESSABLE_ENTITY,
                Some(f),
                Some(e),
            )
            .await
        }
    };
    // The version: the one typed, or the model's latest.
    b.version = match f.text("version") {
        Some(v) => v,
        None => {
            let (o, n) = model.split_once('/').unwrap_or_default();
            match visible_model(&s, Some(caller), o, n).await {
                Ok(m) => m.latest_version.map(|v| v.id).unwrap_or_default(),
                Err(e) => {
                    let msg = problem(e)?;
                    return list_page(
                        &s,
                        &posted.viewer,
                        StatusCode::UNPROCESSABLE_ENTITY,
                        Some(f),
                        Some(msg),
                    )
                    .await;
                }
            }
        }
    };
    match create_deployment(&s, caller, b).await {
        Ok(d) => {
            let msg = format!("Created the deployment {}.", d.full_name());
            Ok(session::flash(
                &s,
                Redirect::to(&format!("/deployments/{}", d.full_name())).into_response(),
                &msg,
            ))
        }
        Err(e) => {
            let msg = problem(e)?;
            list_page(
                &s,
                &posted.viewer,
                StatusCode::UNPROCESSABLE_ENTITY,
                Some(f),
                Some(msg),
            )
            .await
        }
    }
}

async fn deployment_page(
    s: &AppState,
    viewer: &Viewer,
    d: &Deployment,
    status: StatusCode,
    error: Option<String>,
    delete_error: Option<String>,
) -> WebResult {
    let caller = viewer.required()?;
    let blockers = match op::delete_deployment(s, caller, &d.owner, &d.name, true).await? {
        DeleteOutcome::Preview { blockers, .. } => blockers,
        DeleteOutcome::Deleted => vec![],
    };
    let (mo, mn) = d.release.model.split_once('/').unwrap_or_default();
    let page = PageReq {
        after: None,
        limit: 100,
    };
    // The versions to choose from; none when the model is no longer visible.
    let versions: Vec<String> = match list_versions(s, Some(caller), mo, mn, page).await {
        Ok(vs) => vs.into_iter().map(|v| v.id).collect(),
        Err(OpError::NotFound(_)) => vec![],
        Err(e) => return Err(e.into()),
    };
    let ctx = json!({
        "deployment": deployment_view(d, op::release_visible(s, caller, d).await?),
        "versions": versions,
        "blockers": blockers.iter().map(|b| json!({"kind": b.kind, "detail": b.detail})).collect::<Vec<_>>(),
        "error": error,
        "delete_error": delete_error,
    });
    Ok(render::page_status(
        s,
        viewer,
        status,
        "deployment.html",
        &format!("Deployment {}", d.full_name()),
        ctx,
    ))
}

pub async fn page(
    State(s): State<AppState>,
    viewer: Viewer,
    Path((owner, name)): Path<(String, String)>,
) -> WebResult {
    let caller = viewer.required()?;
    let d = op::owned_deployment(&s, caller, &owner, &name).await?;
    deployment_page(&s, &viewer, &d, StatusCode::OK, None, None).await
}

/// A new release: another version or instance counts, or (`action=disable`) 0 and 0.
pub async fn update(
    State(s): State<AppState>,
    Path((owner, name)): Path<(String, String)>,
    posted: Posted,
) -> WebResult {
    let caller = posted.caller();
    let d = op::owned_deployment(&s, caller, &owner, &name).await?;
    let f = &posted.form;
    let b = if f.get("action") == Some("disable") {
        Ok(ReleaseChange::disable())
    } else {
        (|| -> Result<ReleaseChange, String> {
            Ok(ReleaseChange {
                version: f.text("version").filter(|v| *v != d.release.version_id),
                hardware: None,
                min_instances: Some(number(f, "min_instances")?),
                max_instances: Some(number(f, "max_instances")?),
            })
        })()
    };
    let result = match b {
        Ok(b) => update_deployment(&s, caller, &d, b).await.map_err(problem),
        Err(e) => Err(Ok(e)),
    };
    match result {
        Ok(d) => {
            let msg = format!("Release {} of {} is live.", d.release.number, d.full_name());
            Ok(session::flash(
                &s,
                Redirect::to(&format!("/deployments/{}", d.full_name())).into_response(),
                &msg,
            ))
        }
        Err(Ok(msg)) => {
            deployment_page(
                &s,
                &posted.viewer,
                &d,
                StatusCode::UNPROCESSABLE_ENTITY,
                Some(msg),
                None,
            )
            .await
        }
        Err(Err(e)) => Err(e),
    }
}

pub async fn delete(
    State(s): State<AppState>,
    Path((owner, name)): Path<(String, String)>,
    posted: Posted,
) -> WebResult {
    let caller = posted.caller();
    let d = op::owned_deployment(&s, caller, &owner, &name).await?;
    if posted.form.text("confirm").as_deref() != Some(d.full_name().as_str()) {
        let msg = format!(
            "Type {} exactly to confirm. Nothing was deleted.",
            d.full_name()
        );
        return deployment_page(
            &s,
            &posted.viewer,
            &d,
            StatusCode::UNPROCESSABLE_ENTITY,
            None,
            Some(msg),
        )
        .await;
    }
    match op::delete_deployment(&s, caller, &owner, &name, false).await {
        Ok(_) => {
            let msg = format!("Deleted the deployment {}.", d.full_name());
            Ok(session::flash(
                &s,
                Redirect::to("/deployments").into_response(),
                &msg,
            ))
        }
        Err(OpError::Blocked { .. }) => {
            let msg = "Something blocks this deletion; see below. Nothing was deleted.".to_string();
            deployment_page(
                &s,
                &posted.viewer,
                &d,
                StatusCode::CONFLICT,
                None,
                Some(msg),
            )
            .await
        }
        Err(e) => Err(e.into()),
    }
}
