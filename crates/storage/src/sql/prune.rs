//! Pruning a model's versions: one decision per version under the rules of a single deletion.
use chrono::{DateTime, Utc};
use modelyard_domain::*;

use super::{sizes, versions, SqlStore};
use crate::store::{KeptReason, Prune, TrashStore, VersionStore};
use crate::{Result, StoreError};

/// [`TrashStore::prune_versions`].
pub(super) async fn prune(
    store: &SqlStore,
    model_id: i64,
    keep: usize,
    caller: &Caller,
    dry_run: bool,
    purge_at: Option<DateTime<Utc>>,
) -> Result<Prune> {
    let live: Option<i64> =
        sqlx::query_scalar("SELECT id FROM models WHERE id = $1 AND trashed_at IS NULL")
            .bind(model_id)
            .fetch_optional(&store.pool)
            .await?;
    live.ok_or(StoreError::NotFound("model"))?;
    let ids: Vec<String> = sqlx::query_scalar(
        "SELECT id FROM versions WHERE model_id = $1 AND trashed_at IS NULL ORDER BY seq DESC",
    )
    .bind(model_id)
    .fetch_all(&store.pool)
    .await?;
    let mut out = Prune::default();
    let (newest, rest) = ids.split_at(keep.min(ids.len()));
    out.kept = newest
        .iter()
        .map(|id| (id.clone(), KeptReason::Newest))
        .collect();
    if dry_run {
        // One read transaction for the whole preview; nothing is locked or written.
        let mut tx = store.pool.begin().await?;
        for id in rest {
            match versions::decide(&mut tx, "", model_id, id, caller, false).await {
                Ok(d) if d.blockers.is_empty() => out.deleted.push(id.clone()),
                Ok(d) => out.kept.push((id.clone(), KeptReason::Blocked(d.blockers))),
                Err(StoreError::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        // Together: content the pruned versions share is freed once all of them go.
        out.frees_bytes = sizes::frees(&mut tx, &out.deleted).await?;
        return Ok(out);
    }
    // Newest first, each its own transaction like a single deletion. Each one's
    // frees_bytes counts the ones before it as going, so the sum counts shared content once.
    for id in rest {
        let d = match purge_at {
            Some(at) => store.trash_version(model_id, id, caller, false, at).await,
            None => store.delete_version(model_id, id, caller, false).await,
        };
        match d {
            Ok(d) if d.deleted => {
                out.frees_bytes += d.frees_bytes;
                out.unreferenced.artifacts.extend(d.unreferenced.artifacts);
                out.unreferenced.weights.extend(d.unreferenced.weights);
                out.deleted.push(id.clone());
            }
            Ok(d) => out.kept.push((id.clone(), KeptReason::Blocked(d.blockers))),
            // Deleted by someone else meanwhile: not this prune's decision.
            Err(StoreError::NotFound(_)) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}
