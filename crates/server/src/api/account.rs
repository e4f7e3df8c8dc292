use axum::extract::State;
use axum::Json;
use serde_json::{json, Value};

use crate::error::ApiResult;
use crate::extract::Auth;
use crate::ops::accounts;
use crate::state::AppState;
use crate::views;

pub async fn get_account(auth: Auth) -> ApiResult<Json<Value>> {
    Ok(Json(views::account(&auth.required()?.account)))
}

/// Every kind of hardware a model or deployment may ask for; a job waits for a worker that
/// offers its kind (`modelyard serve --hardware`).
pub async fn hardware(_: State<AppState>, auth: Auth) -> ApiResult<Json<Value>> {
    auth.required()?;
    let all: Vec<Value> = modelyard_domain::hardware::CATALOG
        .iter()
        .map(|h| json!({"name": h.name, "sku": h.sku}))
        .collect();
    Ok(Json(Value::Array(all)))
}

/// `GET /v1/webhooks/default/secret`: the caller's signing secret, made on first use.
pub async fn webhook_secret(State(s): State<AppState>, auth: Auth) -> ApiResult<Json<Value>> {
    let key = accounts::webhook_secret(&s, &auth.required()?).await?;
    Ok(Json(json!({ "key": key })))
}
