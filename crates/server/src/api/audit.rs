use axum::extract::State;
use axum::Json;
use serde_json::Value;

use crate::error::ApiResult;
use crate::extract::{next_cursor, Auth, PageQuery, Query};
use crate::state::AppState;
use crate::views;

/// The deletions and refusals on everything the caller owns, newest first (an extension).
pub async fn list(
    State(s): State<AppState>,
    auth: Auth,
    Query(q): Query<PageQuery>,
) -> ApiResult<Json<Value>> {
    let caller = auth.required()?;
    let mut owners = caller.org_ids.clone();
    owners.push(caller.account.id);
    let events = s.store.audit_events(&owners, q.page()?).await?;
    let next = next_cursor(&events, |e| e.id);
    let results = events.iter().map(views::audit_event).collect();
    Ok(Json(views::page(&s, "/v1/audit-log", results, next)))
}
