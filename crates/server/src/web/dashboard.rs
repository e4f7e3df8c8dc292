//! The home page: your models and recent predictions, or the public models when signed out.
use axum::extract::State;
use axum::response::Response;
use modelyard_domain::{JobKind, PageReq};
use serde_json::json;

use super::error::WebResult;
use super::models::model_card;
use super::predictions::job_row;
use super::render;
use super::session::Viewer;
use crate::ops::jobs::list_jobs;
use crate::ops::models::owned_models;
use crate::state::AppState;

pub async fn home(State(s): State<AppState>, viewer: Viewer) -> WebResult<Response> {
    let page = PageReq {
        after: None,
        limit: 50,
    };
    let Some(caller) = viewer.caller() else {
        let public = s.store.list_models(None, None, page).await?;
        let ctx = json!({"public_models": public.iter().map(model_card).collect::<Vec<_>>()});
        return Ok(render::page(
            &s,
            &viewer,
            "dashboard.html",
            "modelyard",
            ctx,
        ));
    };
    let mine = owned_models(&s, caller, 100).await?;
    let recent = PageReq {
        after: None,
        limit: 10,
    };
    let jobs = list_jobs(&s, caller, JobKind::Prediction, recent).await?;
    let others = s.store.list_models(Some(caller), None, page).await?;
    let ctx = json!({
        "models": mine.iter().map(model_card).collect::<Vec<_>>(),
        "predictions": jobs.iter().map(job_row).collect::<Vec<_>>(),
        "public_models": others.iter().filter(|m| !caller.org_ids.contains(&m.owner_id) && m.owner_id != caller.account.id).map(model_card).collect::<Vec<_>>(),
    });
    Ok(render::page(
        &s,
        &viewer,
        "dashboard.html",
        "Dashboard",
        ctx,
    ))
}
