use axum::extract::State;
use axum::Json;
use serde_json::{json, Value};

use crate::error::ApiResult;
use crate::extract::Auth;
use crate::state::AppState;
use crate::views;

pub async fn get_account(auth: Auth) -> ApiResult<Json<Value>> {
    Ok(Json(views::account(&auth.required()?.account)))
}

/// The runner runs every version on this machine's CPU.
pub async fn hardware(_: State<AppState>, auth: Auth) -> ApiResult<Json<Value>> {
    auth.required()?;
    Ok(Json(json!([{"name": "CPU", "sku": "cpu"}])))
}
