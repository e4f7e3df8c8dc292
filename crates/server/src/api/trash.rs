//! The trash (extensions): restoring, the listing, pruning a model's versions, an account's
//! storage, and `?purge=true` on the model and version DELETEs.
use axum::extract::State;
use axum::Json as JsonOut;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::error::{ApiError, ApiResult};
use crate::extract::{next_cursor, Auth, Json, PageQuery, Path, Query};
use crate::ops::trash as op;
use crate::state::AppState;
use crate::views;

/// `?purge=true` on a DELETE: for good at once, also what is in the trash already.
#[derive(Deserialize)]
pub struct PurgeQuery {
    #[serde(default)]
    purge: Option<String>,
}

impl PurgeQuery {
    pub fn get(&self) -> Result<bool, ApiError> {
        crate::extract::query_flag("purge", self.purge.as_deref())
    }
}

pub async fn restore_model(
    State(s): State<AppState>,
    auth: Auth,
    Path((owner, name)): Path<(String, String)>,
) -> ApiResult<JsonOut<Value>> {
    let caller = auth.required()?;
    let m = op::restore_model(&s, &caller, &owner, &name).await?;
    Ok(JsonOut(views::model(&s, &m)))
}

pub async fn restore_version(
    State(s): State<AppState>,
    auth: Auth,
    Path((owner, name, id)): Path<(String, String, String)>,
) -> ApiResult<JsonOut<Value>> {
    let caller = auth.required()?;
    let v = op::restore_version(&s, &caller, &owner, &name, &id).await?;
    Ok(JsonOut(views::version(&v)))
}

#[derive(Deserialize)]
pub struct TrashQuery {
    owner: Option<String>,
}

pub async fn list(
    State(s): State<AppState>,
    auth: Auth,
    Query(q): Query<PageQuery>,
    Query(t): Query<TrashQuery>,
) -> ApiResult<JsonOut<Value>> {
    let caller = auth.required()?;
    let owner = t.owner.as_deref().filter(|o| !o.is_empty());
    let items = op::trash(&s, &caller, owner, q.page()?).await?;
    let next = next_cursor(&items, |i| i.trashed_at.timestamp_micros());
    let results = items.iter().map(views::trash_item).collect();
    let path = match owner {
        Some(o) => format!(
            "/v1/trash?owner={}",
            url::form_urlencoded::byte_serialize(o.as_bytes()).collect::<String>()
        ),
        None => "/v1/trash".into(),
    };
    Ok(JsonOut(views::page(&s, &path, results, next)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PruneBody {
    keep: u32,
    #[serde(default)]
    dry_run: bool,
}

pub async fn prune(
    State(s): State<AppState>,
    auth: Auth,
    Path((owner, name)): Path<(String, String)>,
    Json(b): Json<PruneBody>,
) -> ApiResult<JsonOut<Value>> {
    let caller = auth.required()?;
    let p =
        crate::ops::versions::prune(&s, &caller, &owner, &name, b.keep as usize, b.dry_run).await?;
    Ok(JsonOut(views::prune(&p)))
}

pub async fn storage(
    State(s): State<AppState>,
    auth: Auth,
    Query(t): Query<TrashQuery>,
) -> ApiResult<JsonOut<Value>> {
    let caller = auth.required()?;
    let owner = t.owner.as_deref().filter(|o| !o.is_empty());
    let a = op::account_storage(&s, &caller, owner).await?;
    Ok(JsonOut(json!({
        "bytes": a.bytes,
        "unique_bytes": a.unique_bytes,
        "trash_bytes": a.trash_bytes,
    })))
}
