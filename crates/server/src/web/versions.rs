//! The Versions tab, a version's page (schema, use, deleting) and its deletion.
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect};
use modelyard_domain::rules::can_manage;
use modelyard_domain::*;
use serde_json::{json, Value};

use super::error::{WebError, WebResult};
use super::models::{blocker_view, model_ctx, visible};
use super::render;
use super::schema;
use super::session::{self, Posted, Viewer};
use crate::ops::versions::{delete_version, visible_version};
use crate::ops::{DeleteMode, DeleteOutcome, OpError};
use crate::state::AppState;
use crate::views::time;
use modelyard_domain::ModelVersion;

/// How much of a version id a person types to confirm its deletion.
const CONFIRM_LEN: usize = 12;

pub async fn list(
    State(s): State<AppState>,
    viewer: Viewer,
    Path((owner, name)): Path<(String, String)>,
    keep: axum::extract::Query<super::trash::KeepQuery>,
) -> WebResult {
    let m = visible(&s, &viewer, &owner, &name).await?;
    let versions = s
        .store
        .versions(
            m.id,
            PageReq {
                after: None,
                limit: 100,
            },
        )
        .await?;
    let rows: Vec<Value> = versions
        .iter()
        .map(|v| json!({"id": v.id, "created_at": time(v.created_at), "cog_version": v.cog_version, "base": v.base_version_id}))
        .collect();
    let mut ctx = model_ctx(&viewer, &m, "versions");
    ctx["versions"] = json!(rows);
    ctx["prune"] = super::trash::preview(&s, &viewer, &m, &keep).await?;
    Ok(render::page(
        &s,
        &viewer,
        "versions.html",
        &format!("Versions · {}", m.full_name()),
        ctx,
    ))
}

async fn version_page(
    s: &AppState,
    viewer: &Viewer,
    m: &Model,
    v: &Version,
    status: StatusCode,
    delete_error: Option<String>,
) -> WebResult {
    let manager = viewer.caller().filter(|c| can_manage(c, m.owner_id));
    // Owners see what uses the version: the same preview as DELETE ?dry_run=true.
    let (blockers, frees) = match manager {
        Some(c) => {
            match delete_version(s, c, &m.owner, &m.name, &v.id, DeleteMode::preview()).await? {
                DeleteOutcome::Preview {
                    blockers,
                    frees_bytes,
                } => (Some(blockers), frees_bytes),
                DeleteOutcome::Deleted => (Some(vec![]), None),
            }
        }
        None => (None, None),
    };
    let count = s.store.version_prediction_count(&v.id).await?;
    let deployments: Vec<String> = blockers
        .iter()
        .flatten()
        .filter_map(|b| {
            (b.kind == BlockerKind::Deployment)
                .then(|| b.deployment.clone())
                .flatten()
        })
        .collect();
    let mut ctx = model_ctx(viewer, m, "versions");
    ctx["version"] = json!({
        "id": v.id,
        "short": &v.id[..CONFIRM_LEN.min(v.id.len())],
        "created_at": time(v.created_at),
        "cog_version": v.cog_version,
        "base": v.base_version_id,
        "schema_json": serde_json::to_string_pretty(&*v.openapi_schema).unwrap_or_default(),
        "fields": schema::fields(&v.openapi_schema, None, &[]),
        "prediction_count": count,
        "is_latest": m.latest_version.as_ref().is_some_and(|l| l.id == v.id),
    });
    ctx["blockers"] = json!(blockers
        .as_ref()
        .map(|b| b.iter().map(|b| blocker_view(b, m)).collect::<Vec<_>>()));
    ctx["deployments"] = json!(deployments);
    ctx["delete_error"] = json!(delete_error);
    ctx["frees"] = json!(frees.map(super::render::bytes));
    ctx["trash_days"] = json!(s.config.trash.as_secs() / 86400);
    ctx["to_trash"] = json!(!s.config.trash.is_zero());
    let title = format!(
        "Version {} · {}",
        &v.id[..CONFIRM_LEN.min(v.id.len())],
        m.full_name()
    );
    Ok(render::page_status(
        s,
        viewer,
        status,
        "version.html",
        &title,
        ctx,
    ))
}

pub async fn page(
    State(s): State<AppState>,
    viewer: Viewer,
    Path((owner, name, id)): Path<(String, String, String)>,
) -> WebResult {
    let ModelVersion {
        model: m,
        version: v,
    } = visible_version(&s, viewer.caller(), &owner, &name, &id).await?;
    version_page(&s, &viewer, &m, &v, StatusCode::OK, None).await
}

pub async fn delete(
    State(s): State<AppState>,
    Path((owner, name, id)): Path<(String, String, String)>,
    posted: Posted,
) -> WebResult {
    let caller = posted.caller();
    let ModelVersion {
        model: m,
        version: v,
    } = visible_version(&s, Some(caller), &owner, &name, &id).await?;
    let typed = posted.form.text("confirm").unwrap_or_default();
    if typed.len() < CONFIRM_LEN || !v.id.starts_with(&typed) {
        let msg = format!(
            "Type {} (the start of the version id) to confirm. Nothing was deleted.",
            &v.id[..CONFIRM_LEN]
        );
        return version_page(
            &s,
            &posted.viewer,
            &m,
            &v,
            StatusCode::UNPROCESSABLE_ENTITY,
            Some(msg),
        )
        .await;
    }
    match delete_version(&s, caller, &owner, &name, &v.id, DeleteMode::apply()).await {
        Ok(_) => {
            let what = format!("the version {} of {}", &v.id[..CONFIRM_LEN], m.full_name());
            let msg = super::models::deleted_message(&s, &what);
            Ok(session::flash(
                &s,
                Redirect::to(&format!("/{}/versions", m.full_name())).into_response(),
                &msg,
            ))
        }
        Err(OpError::Blocked { .. }) => {
            let msg =
                "Something now blocks this deletion; see below. Nothing was deleted.".to_string();
            version_page(&s, &posted.viewer, &m, &v, StatusCode::CONFLICT, Some(msg)).await
        }
        Err(e) => Err(WebError::from(e)),
    }
}
