//! The Playground tab: the version's inputs as a form, and running it (a prediction recorded
//! with `source: "web"`, through the same operation as the API's).
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use modelyard_domain::*;
use serde_json::json;

use super::error::WebResult;
use super::form::Form;
use super::models::{merge, model_ctx, visible};
use super::render;
use super::schema;
use super::session::{Posted, Viewer};
use crate::ops::jobs::{create_job, JobRequest, JobSource};
use crate::ops::versions::latest_version;
use crate::ops::OpError;
use crate::state::AppState;

/// The playground's page; `form` and `errors` when a submitted form comes back to be fixed.
fn playground_page(
    s: &AppState,
    viewer: &Viewer,
    m: &Model,
    form: Option<&Form>,
    errors: &[(String, String)],
    message: Option<String>,
) -> Response {
    let fields = m
        .latest_version
        .as_ref()
        .map(|v| schema::fields(&v.openapi_schema, form, errors));
    let ctx = merge(
        model_ctx(viewer, m, "playground"),
        json!({"fields": fields, "errors": errors.iter().map(|(f, e)| format!("{f}: {e}")).collect::<Vec<_>>(), "message": message}),
    );
    let status = if errors.is_empty() && message.is_none() {
        StatusCode::OK
    } else {
        StatusCode::UNPROCESSABLE_ENTITY
    };
    render::page_status(
        s,
        viewer,
        status,
        "playground.html",
        &format!("Playground · {}", m.full_name()),
        ctx,
    )
}

pub async fn playground(
    State(s): State<AppState>,
    viewer: Viewer,
    Path((owner, name)): Path<(String, String)>,
) -> WebResult {
    let m = visible(&s, &viewer, &owner, &name).await?;
    Ok(playground_page(&s, &viewer, &m, None, &[], None))
}

/// Runs the latest version with the submitted form; a refused input comes back to be fixed.
pub async fn run(
    State(s): State<AppState>,
    Path((owner, name)): Path<(String, String)>,
    posted: Posted,
) -> WebResult {
    let mv = latest_version(&s, posted.caller(), &owner, &name).await?;
    let input = schema::input(&mv.version.openapi_schema, &posted.form);
    let request = JobRequest::prediction(input, JobSource::Web);
    match create_job(&s, posted.caller(), &mv, request).await {
        Ok(j) => Ok(Redirect::to(&format!("/p/{}", j.id)).into_response()),
        Err(OpError::Invalid { fields, detail }) => {
            let errors: Vec<(String, String)> = fields
                .into_iter()
                .map(|f| {
                    (
                        f.field
                            .strip_prefix("input.")
                            .unwrap_or(&f.field)
                            .to_string(),
                        f.description,
                    )
                })
                .collect();
            let message = errors.is_empty().then_some(detail);
            Ok(playground_page(
                &s,
                &posted.viewer,
                &mv.model,
                Some(&posted.form),
                &errors,
                message,
            ))
        }
        Err(e) => Err(e.into()),
    }
}
