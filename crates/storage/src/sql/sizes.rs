//! Sizes of stored files, and what a deletion frees. Each figure is one SQL query over a set
//! of versions: the blobs their artifacts link and the weights they use, counting a blob (or
//! weights file) only when no version outside the set keeps it.
use async_trait::async_trait;
use sqlx::Row;

use super::{SqlStore, Tx};
use crate::rows::placeholders;
use crate::store::{AccountStorage, SizeStore, Storage};
use crate::{Result, StoreError};

/// Rows per INSERT when recording an artifact's blobs (two parameters each, well under both
/// backends' limits).
const RECORD_CHUNK: usize = 500;

/// Which versions outside the set still keep a file.
#[derive(Clone, Copy)]
enum KeptBy {
    /// None: every byte of the set counts.
    Nobody,
    /// Any other version, in the trash or not (what the set alone holds).
    AnyOther,
    /// Another version outside the trash (what deleting the set frees once the trash is purged).
    OtherLive,
}

/// The bytes of the set `set` (a subquery giving version ids; it may be used several times)
/// that `kept` lets count, as one integer expression.
fn bytes_of(set: &str, kept: KeptBy) -> String {
    let holder = match kept {
        KeptBy::Nobody => None,
        KeptBy::AnyOther => Some(format!("h.id NOT IN ({set})")),
        KeptBy::OtherLive => Some(format!("h.trashed_at IS NULL AND h.id NOT IN ({set})")),
    };
    let (blob_kept, weights_kept) = match &holder {
        None => (String::new(), String::new()),
        Some(h) => (
            format!(
                " AND NOT EXISTS (SELECT 1 FROM artifact_blobs hb JOIN versions h \
                 ON h.artifact = hb.artifact WHERE hb.blob = bl.blob AND {h})"
            ),
            format!(
                " AND NOT EXISTS (SELECT 1 FROM versions h WHERE h.weights = w.weights AND {h})"
            ),
        ),
    };
    // SUM is NUMERIC on PostgreSQL: cast back to an integer both backends decode alike.
    format!(
        "(CAST(COALESCE((SELECT SUM(bl.bytes) FROM blobs bl WHERE bl.blob IN \
         (SELECT ab.blob FROM artifact_blobs ab JOIN versions s ON s.artifact = ab.artifact \
         WHERE s.id IN ({set})){blob_kept}), 0) AS BIGINT) + \
         CAST(COALESCE((SELECT SUM(w.bytes) FROM weights_sizes w WHERE w.weights IN \
         (SELECT s.weights FROM versions s WHERE s.id IN ({set})){weights_kept}), 0) AS BIGINT))"
    )
}

/// What deleting these versions frees once purged: what is already in the trash counts as
/// going too.
pub(super) async fn frees(tx: &mut Tx, version_ids: &[String]) -> Result<i64> {
    if version_ids.is_empty() {
        return Ok(0);
    }
    let set = format!(
        "SELECT xv.id FROM versions xv WHERE xv.id IN ({})",
        placeholders(1, version_ids.len())
    );
    let sql = format!("SELECT {} AS n", bytes_of(&set, KeptBy::OtherLive));
    let mut q = sqlx::query_scalar(&sql);
    for id in version_ids {
        q = q.bind(id);
    }
    Ok(q.fetch_one(&mut **tx).await?)
}

/// What deleting the model (with all its versions, in the trash or not) frees once purged.
pub(super) async fn frees_of_model(tx: &mut Tx, model_id: i64) -> Result<i64> {
    Ok(sqlx::query_scalar(&format!(
        "SELECT {} AS n",
        bytes_of(MODEL_SET, KeptBy::OtherLive)
    ))
    .bind(model_id)
    .fetch_one(&mut **tx)
    .await?)
}

const MODEL_SET: &str = "SELECT xv.id FROM versions xv WHERE xv.model_id = $1";
const ACCOUNT_SET: &str =
    "SELECT xv.id FROM versions xv JOIN models xm ON xm.id = xv.model_id WHERE xm.owner_id = $1";
/// Versions of a trashed model are in the trash themselves.
const ACCOUNT_TRASH_SET: &str = "SELECT xv.id FROM versions xv JOIN models xm \
    ON xm.id = xv.model_id WHERE xm.owner_id = $1 AND xv.trashed_at IS NOT NULL";

/// What purging a trashed model frees, for a row of the trash listing whose model is `m`: its
/// versions' bytes that no version outside the trash keeps.
pub(super) fn model_item_frees() -> String {
    bytes_of(
        "SELECT xv.id FROM versions xv WHERE xv.model_id = m.id",
        KeptBy::OtherLive,
    )
}

/// The same for a trashed version `v`.
pub(super) fn version_item_frees() -> String {
    bytes_of("SELECT v.id", KeptBy::OtherLive)
}

#[async_trait]
impl SizeStore for SqlStore {
    async fn record_artifact(&self, artifact: &str, blobs: &[(String, i64)]) -> Result<()> {
        // One statement per chunk: a project can hold thousands of files. Each blob once, since
        // PostgreSQL refuses to update a row twice in one statement.
        let mut unique: Vec<&(String, i64)> = blobs.iter().collect();
        unique.sort_by(|a, b| a.0.cmp(&b.0));
        unique.dedup_by(|a, b| a.0 == b.0);
        let mut tx = self.begin_write().await?;
        for chunk in unique.chunks(RECORD_CHUNK) {
            let values = (0..chunk.len())
                .map(|i| format!("(${}, ${})", 2 * i + 1, 2 * i + 2))
                .collect::<Vec<_>>()
                .join(", ");
            let sql = format!(
                "INSERT INTO blobs (blob, bytes) VALUES {values} \
                 ON CONFLICT (blob) DO UPDATE SET bytes = excluded.bytes"
            );
            let mut q = sqlx::query(&sql);
            for (blob, bytes) in chunk {
                q = q.bind(blob).bind(bytes);
            }
            q.execute(&mut *tx).await?;
            let sql = format!(
                "INSERT INTO artifact_blobs (artifact, blob) VALUES {values} \
                 ON CONFLICT (artifact, blob) DO NOTHING"
            );
            let mut q = sqlx::query(&sql);
            for (blob, _) in chunk {
                q = q.bind(artifact).bind(blob);
            }
            q.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn record_weights(&self, weights: &str, bytes: i64) -> Result<()> {
        sqlx::query(
            "INSERT INTO weights_sizes (weights, bytes) VALUES ($1, $2) \
             ON CONFLICT (weights) DO UPDATE SET bytes = excluded.bytes",
        )
        .bind(weights)
        .bind(bytes)
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    async fn forget_artifact(&self, artifact: &str) -> Result<()> {
        let mut tx = self.begin_write().await?;
        let blobs: Vec<String> = sqlx::query_scalar(
            "SELECT blob FROM artifact_blobs WHERE artifact = $1 \
             AND NOT EXISTS (SELECT 1 FROM versions WHERE artifact = $1)",
        )
        .bind(artifact)
        .fetch_all(&mut *tx)
        .await?;
        sqlx::query(
            "DELETE FROM artifact_blobs WHERE artifact = $1 \
             AND NOT EXISTS (SELECT 1 FROM versions WHERE artifact = $1)",
        )
        .bind(artifact)
        .execute(&mut *tx)
        .await?;
        for blob in blobs {
            sqlx::query(
                "DELETE FROM blobs WHERE blob = $1 \
                 AND NOT EXISTS (SELECT 1 FROM artifact_blobs WHERE blob = $1)",
            )
            .bind(blob)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn forget_weights(&self, weights: &str) -> Result<()> {
        sqlx::query(
            "DELETE FROM weights_sizes WHERE weights = $1 \
             AND NOT EXISTS (SELECT 1 FROM versions WHERE weights = $1)",
        )
        .bind(weights)
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    async fn artifact_blobs(&self, artifact: &str) -> Result<Vec<String>> {
        Ok(
            sqlx::query_scalar("SELECT blob FROM artifact_blobs WHERE artifact = $1")
                .bind(artifact)
                .fetch_all(&self.pool)
                .await?,
        )
    }

    async fn blob_in_use(&self, blob: &str) -> Result<bool> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM artifact_blobs WHERE blob = $1")
            .bind(blob)
            .fetch_one(&self.pool)
            .await?;
        Ok(n > 0)
    }

    async fn artifacts_without_sizes(&self, limit: i64) -> Result<Vec<String>> {
        Ok(sqlx::query_scalar(
            "SELECT DISTINCT v.artifact FROM versions v WHERE NOT EXISTS \
             (SELECT 1 FROM artifact_blobs ab WHERE ab.artifact = v.artifact) \
             ORDER BY v.artifact LIMIT $1",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }

    async fn version_storage(&self, version_id: &str) -> Result<Storage> {
        let set = "SELECT xv.id FROM versions xv WHERE xv.id = $1";
        let row = sqlx::query(&format!(
            "SELECT {} AS bytes, {} AS unique_bytes FROM versions WHERE id = $1",
            bytes_of(set, KeptBy::Nobody),
            bytes_of(set, KeptBy::AnyOther)
        ))
        .bind(version_id)
        .fetch_optional(&self.pool)
        .await?
        .ok_or(StoreError::NotFound("version"))?;
        Ok(Storage {
            bytes: row.try_get("bytes")?,
            unique_bytes: row.try_get("unique_bytes")?,
        })
    }

    async fn model_storage(&self, model_id: i64) -> Result<Storage> {
        let row = sqlx::query(&format!(
            "SELECT {} AS bytes, {} AS unique_bytes",
            bytes_of(MODEL_SET, KeptBy::Nobody),
            bytes_of(MODEL_SET, KeptBy::AnyOther)
        ))
        .bind(model_id)
        .fetch_one(&self.pool)
        .await?;
        Ok(Storage {
            bytes: row.try_get("bytes")?,
            unique_bytes: row.try_get("unique_bytes")?,
        })
    }

    async fn account_storage(&self, owner_id: i64) -> Result<AccountStorage> {
        let row = sqlx::query(&format!(
            "SELECT {} AS bytes, {} AS unique_bytes, {} AS trash_bytes",
            bytes_of(ACCOUNT_SET, KeptBy::Nobody),
            bytes_of(ACCOUNT_SET, KeptBy::AnyOther),
            bytes_of(ACCOUNT_TRASH_SET, KeptBy::OtherLive)
        ))
        .bind(owner_id)
        .fetch_one(&self.pool)
        .await?;
        Ok(AccountStorage {
            bytes: row.try_get("bytes")?,
            unique_bytes: row.try_get("unique_bytes")?,
            trash_bytes: row.try_get("trash_bytes")?,
        })
    }
}
