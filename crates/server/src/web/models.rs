//! The model page and its tabs: Overview, API, Predictions, Settings (and deleting). The
//! Playground is `playground.rs`.
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect};
use modelyard_domain::rules::can_manage;
use modelyard_domain::*;
use serde_json::{json, Value};

use super::error::{WebError, WebResult};
use super::predictions::job_row;
use super::render;
use super::schema;
use super::session::{self, Posted, Viewer};
use crate::ops::models::{delete_model, managed_model, update_model, visible_model};
use crate::ops::{DeleteMode, DeleteOutcome, OpError};
use crate::state::AppState;
use crate::views::time;

/// Only http(s) links are shown as links: never `javascript:` or the like.
pub fn safe_url(u: &Option<String>) -> Option<String> {
    u.as_ref()
        .filter(|u| u.starts_with("https://") || u.starts_with("http://"))
        .cloned()
}

pub fn model_card(m: &Model) -> Value {
    json!({
        "owner": m.owner,
        "name": m.name,
        "full_name": m.full_name(),
        "description": m.description,
        "visibility": m.visibility.as_str(),
        "run_count": m.run_count,
        "created_at": time(m.created_at),
        "latest_version": m.latest_version.as_ref().map(|v| v.id.clone()),
    })
}

/// Everything the model page's header and tabs need.
pub fn model_ctx(viewer: &Viewer, m: &Model, tab: &str) -> Value {
    let mut c = model_card(m);
    c["hardware"] = json!(m.hardware);
    c["github_url"] = json!(safe_url(&m.github_url));
    c["paper_url"] = json!(safe_url(&m.paper_url));
    c["license_url"] = json!(safe_url(&m.license_url));
    c["cover_image_url"] = json!(safe_url(&m.cover_image_url));
    c["latest_created_at"] = json!(m.latest_version.as_ref().map(|v| time(v.created_at)));
    json!({
        "model": c,
        "tab": tab,
        "can_manage": viewer.caller().is_some_and(|c| can_manage(c, m.owner_id)),
    })
}

pub fn merge(mut a: Value, b: Value) -> Value {
    if let (Value::Object(a), Value::Object(b)) = (&mut a, b) {
        a.extend(b);
    }
    a
}

pub async fn visible(s: &AppState, viewer: &Viewer, owner: &str, name: &str) -> WebResult<Model> {
    Ok(visible_model(s, viewer.caller(), owner, name).await?)
}

pub async fn overview(
    State(s): State<AppState>,
    viewer: Viewer,
    Path((owner, name)): Path<(String, String)>,
) -> WebResult {
    let m = visible(&s, &viewer, &owner, &name).await?;
    let ctx = model_ctx(&viewer, &m, "overview");
    Ok(render::page(
        &s,
        &viewer,
        "overview.html",
        &m.full_name(),
        ctx,
    ))
}

pub async fn api_tab(
    State(s): State<AppState>,
    viewer: Viewer,
    Path((owner, name)): Path<(String, String)>,
) -> WebResult {
    let m = visible(&s, &viewer, &owner, &name).await?;
    let example = m
        .latest_version
        .as_ref()
        .map(|v| schema::example(&v.openapi_schema))
        .unwrap_or_default();
    let input = Value::Object(example);
    let version = m
        .latest_version
        .as_ref()
        .map(|v| v.id.clone())
        .unwrap_or_else(|| "VERSION_ID".into());
    let body = json!({"version": format!("{}:{version}", m.full_name()), "input": input});
    let ctx = merge(
        model_ctx(&viewer, &m, "api"),
        json!({
            "base": s.public_url.as_ref(),
            "body_json": serde_json::to_string_pretty(&body).unwrap_or_default(),
            "input_json": serde_json::to_string_pretty(&input).unwrap_or_default(),
            "ref": format!("{}:{version}", m.full_name()),
        }),
    );
    Ok(render::page(
        &s,
        &viewer,
        "api.html",
        &format!("API · {}", m.full_name()),
        ctx,
    ))
}

pub async fn predictions_tab(
    State(s): State<AppState>,
    viewer: Viewer,
    Path((owner, name)): Path<(String, String)>,
) -> WebResult {
    let m = visible(&s, &viewer, &owner, &name).await?;
    let jobs = match viewer.caller() {
        Some(c) => s.store.model_jobs(m.id, c.account.id, 100).await?,
        None => vec![],
    };
    let ctx = merge(
        model_ctx(&viewer, &m, "predictions"),
        json!({"predictions": jobs.iter().map(job_row).collect::<Vec<_>>()}),
    );
    Ok(render::page(
        &s,
        &viewer,
        "model_predictions.html",
        &format!("Predictions · {}", m.full_name()),
        ctx,
    ))
}

/// A blocker as the page shows it: the sentence, and a link to what blocks.
pub fn blocker_view(b: &Blocker, m: &Model) -> Value {
    let (href, label) = match b.kind {
        BlockerKind::Public => (
            Some(format!("/{}/settings#visibility", m.full_name())),
            "Change the visibility".to_string(),
        ),
        BlockerKind::HasVersions => (
            Some(format!("/{}/versions", m.full_name())),
            "See the versions".to_string(),
        ),
        BlockerKind::PredictionsByOthers | BlockerKind::LastMember | BlockerKind::ModelInTrash => {
            (None, String::new())
        }
        BlockerKind::FineTuneBase => match (&b.version, &b.training) {
            (Some(v), _) => match v.split_once(':') {
                Some((model, id)) => (
                    Some(format!("/{model}/versions/{id}")),
                    format!("Open {model}:{}", &id[..id.len().min(12)]),
                ),
                None => (None, String::new()),
            },
            (None, Some(t)) => (Some(format!("/p/{t}")), format!("Training {t}")),
            _ => (None, String::new()),
        },
        BlockerKind::Deployment
        | BlockerKind::DeploymentEnabled
        | BlockerKind::DeploymentRecentlyUsed => match &b.deployment {
            Some(d) => (
                Some(format!("/deployments/{d}")),
                format!("Open the deployment {d}"),
            ),
            None => (None, String::new()),
        },
    };
    let versions: Vec<Value> = b
        .versions
        .iter()
        .flatten()
        .map(|id| json!({"id": id, "href": format!("/{}/versions/{id}", m.full_name())}))
        .collect();
    json!({
        "kind": b.kind,
        "detail": b.detail,
        "href": href,
        "label": label,
        "versions": versions,
        "more_versions": b.version_count.map(|n| n - versions.len() as i64).filter(|n| *n > 0),
    })
}

async fn settings_page(
    s: &AppState,
    viewer: &Viewer,
    m: &Model,
    status: StatusCode,
    error: Option<String>,
    delete_error: Option<String>,
) -> WebResult {
    let caller = viewer.required()?;
    // The same preview as DELETE ?dry_run=true.
    let (blockers, frees) =
        match delete_model(s, caller, &m.owner, &m.name, DeleteMode::preview()).await? {
            DeleteOutcome::Preview {
                blockers,
                frees_bytes,
            } => (blockers, frees_bytes),
            DeleteOutcome::Deleted => (vec![], None),
        };
    let ctx = merge(
        model_ctx(viewer, m, "settings"),
        json!({
            "raw": {
                "description": m.description,
                "github_url": m.github_url,
                "paper_url": m.paper_url,
                "license_url": m.license_url,
                "cover_image_url": m.cover_image_url,
            },
            "blockers": blockers.iter().map(|b| blocker_view(b, m)).collect::<Vec<_>>(),
            "frees": frees.map(super::render::bytes),
            "to_trash": !s.config.trash.is_zero(),
            "error": error,
            "delete_error": delete_error,
        }),
    );
    Ok(render::page_status(
        s,
        viewer,
        status,
        "settings.html",
        &format!("Settings · {}", m.full_name()),
        ctx,
    ))
}

pub async fn settings(
    State(s): State<AppState>,
    viewer: Viewer,
    Path((owner, name)): Path<(String, String)>,
) -> WebResult {
    let caller = viewer.required()?;
    let m = managed_model(&s, caller, &owner, &name).await?;
    settings_page(&s, &viewer, &m, StatusCode::OK, None, None).await
}

fn url_field(form: &super::form::Form, key: &str, label: &str) -> Result<Option<String>, String> {
    match form.text(key) {
        None => Ok(None),
        Some(u) => match modelyard_domain::names::validate_link(&format!("The {label}"), &u) {
            Ok(()) => Ok(Some(u)),
            Err(e) => Err(format!("{e}.")),
        },
    }
}

pub async fn save_settings(
    State(s): State<AppState>,
    Path((owner, name)): Path<(String, String)>,
    posted: Posted,
) -> WebResult {
    let m = managed_model(&s, posted.caller(), &owner, &name).await?;
    let f = &posted.form;
    let patch = (|| -> Result<ModelPatch, String> {
        Ok(ModelPatch {
            description: Some(f.text("description")),
            visibility: Some(
                f.get("visibility")
                    .and_then(Visibility::parse)
                    .ok_or("Choose public or private.")?,
            ),
            hardware: None,
            github_url: Some(url_field(f, "github_url", "GitHub link")?),
            paper_url: Some(url_field(f, "paper_url", "paper link")?),
            license_url: Some(url_field(f, "license_url", "license link")?),
            cover_image_url: Some(url_field(f, "cover_image_url", "cover image")?),
        })
    })();
    let patch = match patch {
        Ok(p) => p,
        Err(e) => {
            return settings_page(
                &s,
                &posted.viewer,
                &m,
                StatusCode::UNPROCESSABLE_ENTITY,
                Some(e),
                None,
            )
            .await
        }
    };
    let changed_visibility = patch.visibility.filter(|v| *v != m.visibility);
    let m = update_model(&s, posted.caller(), &m, patch).await?;
    let msg = match changed_visibility {
        Some(v) => format!("Saved. {} is now {}.", m.full_name(), v.as_str()),
        None => "Saved.".to_string(),
    };
    Ok(session::flash(
        &s,
        Redirect::to(&format!("/{}/settings", m.full_name())).into_response(),
        &msg,
    ))
}

pub async fn delete(
    State(s): State<AppState>,
    Path((owner, name)): Path<(String, String)>,
    posted: Posted,
) -> WebResult {
    let caller = posted.caller();
    let m = managed_model(&s, caller, &owner, &name).await?;
    if posted.form.text("confirm").as_deref() != Some(m.full_name().as_str()) {
        let msg = format!(
            "Type {} exactly to confirm. Nothing was deleted.",
            m.full_name()
        );
        return settings_page(
            &s,
            &posted.viewer,
            &m,
            StatusCode::UNPROCESSABLE_ENTITY,
            None,
            Some(msg),
        )
        .await;
    }
    match delete_model(&s, caller, &owner, &name, DeleteMode::apply()).await {
        Ok(_) => {
            let msg = deleted_message(&s, &format!("the model {}", m.full_name()));
            Ok(session::flash(&s, Redirect::to("/").into_response(), &msg))
        }
        // Something came to block it since the page was drawn: show the blockers again.
        Err(OpError::Blocked { .. }) => {
            let msg =
                "Something now blocks this deletion; see below. Nothing was deleted.".to_string();
            settings_page(
                &s,
                &posted.viewer,
                &m,
                StatusCode::CONFLICT,
                None,
                Some(msg),
            )
            .await
        }
        Err(e) => Err(WebError::from(e)),
    }
}

/// What a deletion's flash says: that it is done, and for how long it can be undone.
pub(super) fn deleted_message(s: &AppState, what: &str) -> String {
    let days = s.config.trash.as_secs() / 86400;
    if s.config.trash.is_zero() {
        format!("Deleted {what}.")
    } else if days == 0 {
        format!("Deleted {what}. Restore it from Account › Trash before it is purged.")
    } else {
        format!(
            "Deleted {what}. It stays in your trash for {days} day{}: restore it from Account › Trash.",
            if days == 1 { "" } else { "s" }
        )
    }
}
