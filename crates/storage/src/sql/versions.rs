//! Versions of models, and their final deletion. Reads leave out what is in the trash.
use async_trait::async_trait;
use modelyard_domain::rules::{version_deletion_blockers, FineTuneUse, RunsBy, VersionFacts};
use modelyard_domain::*;
use sqlx::Row;

use super::{now, Arg, SqlStore, Tx};
use crate::rows::{self, MODEL_AND_VERSION_SELECT, VERSION_SELECT};
use crate::store::{Deletion, StoredVersion, Unreferenced, VersionStore};
use crate::{Result, StoreError};

#[async_trait]
impl VersionStore for SqlStore {
    async fn versions(&self, model_id: i64, page: PageReq) -> Result<Vec<Version>> {
        sqlx::query(&format!(
            "{VERSION_SELECT} WHERE v.model_id = $1 AND v.trashed_at IS NULL AND v.seq < $2 \
             ORDER BY v.seq DESC LIMIT $3"
        ))
        .bind(model_id)
        .bind(page.after.unwrap_or(i64::MAX))
        .bind(page.limit)
        .fetch_all(&mut *self.reader().await?)
        .await?
        .iter()
        .map(rows::version)
        .collect()
    }

    async fn version(&self, model_id: i64, id: &str) -> Result<Option<Version>> {
        self.read_row_kept(
            "version",
            || {
                format!(
                    "{VERSION_SELECT} WHERE v.model_id = $1 AND v.id = $2 AND v.trashed_at IS NULL"
                )
            },
            &[Arg::Int(model_id), Arg::Text(id)],
            |r| rows::version(r),
        )
        .await
    }

    async fn version_by_id(&self, id: &str) -> Result<Option<ModelVersion>> {
        // Both outside the trash: a version in it, or of a model in it, is gone to every read.
        let row = self
            .read_row_kept(
                "version_by_id",
                || {
                    format!(
                        "{MODEL_AND_VERSION_SELECT} JOIN versions r ON r.model_id = m.id \
                     WHERE r.id = $1 AND r.trashed_at IS NULL AND m.trashed_at IS NULL"
                    )
                },
                &[Arg::Text(id)],
                |r| rows::model_and_version(r),
            )
            .await?;
        match row {
            Some((model, Some(version))) => Ok(Some(ModelVersion { model, version })),
            _ => Ok(None),
        }
    }

    async fn model_and_version(
        &self,
        owner: &str,
        name: &str,
        id: &str,
    ) -> Result<Option<(Model, Option<Version>)>> {
        self.read_row_kept(
            "model_and_version",
            || format!(
                "{MODEL_AND_VERSION_SELECT} LEFT JOIN versions r ON r.model_id = m.id AND r.id = $3 \
                 AND r.trashed_at IS NULL WHERE a.username = $1 AND m.name = $2 AND m.trashed_at IS NULL"
            ),
            &[Arg::Text(owner), Arg::Text(name), Arg::Text(id)],
            |r| rows::model_and_version(r),
        )
        .await
    }

    async fn create_version(&self, v: NewVersion) -> Result<StoredVersion> {
        let id = ids::version_id(v.model_id, &v.content_digest);
        let mut tx = self.begin_write().await?;
        // The model row first, as a deletion locks it: trashing the model (which counts its
        // versions) cannot slip between this check and the insert.
        sqlx::query_scalar::<_, i64>(&format!(
            "SELECT id FROM models WHERE id = $1 AND trashed_at IS NULL{}",
            self.lock()
        ))
        .bind(v.model_id)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(StoreError::NotFound("model"))?;
        let existing = sqlx::query(&format!("{VERSION_SELECT} WHERE v.id = $1"))
            .bind(&id)
            .fetch_optional(&mut *tx)
            .await?;
        if let Some(row) = existing {
            if let Some(purge_at) = row.try_get::<Option<i64>, _>("purge_at")? {
                return Err(StoreError::Conflict(format!(
                    "The version {id} (the same content) is in the trash until {}: restore it, \
                     or purge it to push it again.",
                    rows::time(purge_at).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                )));
            }
            return Ok(StoredVersion {
                version: rows::version(&row)?,
                created: false,
            });
        }
        // A concurrent push of the same content (PostgreSQL does not serialize writers) inserts
        // nothing here and returns the version the other push made.
        let done = sqlx::query(
            "INSERT INTO versions (id, model_id, cog_version, openapi_schema, artifact, \
             base_version_id, training_id, weights, gpu, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(&id)
        .bind(v.model_id)
        .bind(&v.cog_version)
        .bind(v.openapi_schema.to_string())
        .bind(&v.artifact)
        .bind(&v.base_version_id)
        .bind(&v.training_id)
        .bind(&v.weights)
        .bind(i64::from(v.gpu))
        .bind(now())
        .execute(&mut *tx)
        .await
        .map_err(|e| match StoreError::from(e) {
            // The model (or the base) was deleted meanwhile.
            StoreError::ForeignKey => StoreError::NotFound("model"),
            e => e,
        })?;
        let inserted = done.rows_affected() > 0;
        // A fine-tune's base in the trash is as gone as a deleted one. Checked after the insert,
        // whose foreign key waits for a trashing of the base in progress.
        if let Some(base) = &v.base_version_id {
            let live: Option<i64> =
                sqlx::query_scalar("SELECT seq FROM versions WHERE id = $1 AND trashed_at IS NULL")
                    .bind(base)
                    .fetch_optional(&mut *tx)
                    .await?;
            if live.is_none() {
                return Err(StoreError::NotFound("version"));
            }
        }
        let row = sqlx::query(&format!("{VERSION_SELECT} WHERE v.id = $1"))
            .bind(&id)
            .fetch_one(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(StoredVersion {
            version: rows::version(&row)?,
            created: inserted,
        })
    }

    async fn artifact_in_use(&self, artifact: &str) -> Result<bool> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM versions WHERE artifact = $1")
            .bind(artifact)
            .fetch_one(&mut *self.reader().await?)
            .await?;
        Ok(n > 0)
    }

    async fn weights_in_use(&self, weights: &str) -> Result<bool> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM versions WHERE weights = $1")
            .bind(weights)
            .fetch_one(&mut *self.reader().await?)
            .await?;
        Ok(n > 0)
    }

    async fn version_prediction_count(&self, version_id: &str) -> Result<i64> {
        let n: Option<i64> = sqlx::query_scalar(
            "SELECT CAST(SUM(count) AS BIGINT) FROM version_runs WHERE version_id = $1",
        )
        .bind(version_id)
        .fetch_one(&mut *self.reader().await?)
        .await?;
        Ok(n.unwrap_or(0))
    }

    async fn delete_version(
        &self,
        model_id: i64,
        version_id: &str,
        caller: &Caller,
        dry_run: bool,
    ) -> Result<Deletion> {
        let (mut tx, lock) = self.begin_deletion(dry_run).await?;
        let d = decide(&mut tx, lock, model_id, version_id, caller, true).await?;
        if dry_run {
            return Ok(d.preview());
        }
        let mut unreferenced = Unreferenced::default();
        if d.blockers.is_empty() {
            let removed = remove_rows(&mut tx, version_id, caller.account.id).await?;
            sqlx::query("UPDATE models SET run_count = run_count - $1 WHERE id = $2")
                .bind(removed)
                .bind(model_id)
                .execute(&mut *tx)
                .await?;
            unreferenced =
                super::unreferenced(&mut tx, std::slice::from_ref(&d.artifact), &d.weights).await?;
        }
        let done = Deletion {
            unreferenced_artifact: unreferenced.artifacts.first().cloned(),
            unreferenced,
            frees_bytes: d.frees_bytes,
            ..Default::default()
        };
        super::conclude(
            tx,
            caller,
            d.owner_id,
            "delete_version",
            d.target,
            d.blockers,
            "deleted",
            done,
        )
        .await
    }
}

/// A version deletion's facts, read in its transaction (rows locked with `lock`), and what the
/// rules made of them.
pub(super) struct Decision {
    pub owner_id: i64,
    /// "owner/name:id"
    pub target: String,
    pub artifact: String,
    pub weights: Vec<String>,
    pub blockers: Vec<Blocker>,
    pub frees_bytes: i64,
}

impl Decision {
    pub fn preview(self) -> Deletion {
        Deletion {
            blockers: self.blockers,
            frees_bytes: self.frees_bytes,
            ..Default::default()
        }
    }
}

/// Locks the model, then the version (both outside the trash: else `NotFound`), gathers the
/// facts and applies `rules::version_deletion_blockers`; `frees` adds what the deletion frees
/// (a prune counts it once for all its versions instead). A visibility change, a new prediction,
/// training, deployment release or fine-tuned version all wait for (or fail after) the locks.
pub(super) async fn decide(
    tx: &mut Tx,
    lock: &str,
    model_id: i64,
    version_id: &str,
    caller: &Caller,
    frees: bool,
) -> Result<Decision> {
    let m = sqlx::query(&format!(
        "SELECT owner_id, visibility, name FROM models WHERE id = $1 AND trashed_at IS NULL{lock}"
    ))
    .bind(model_id)
    .fetch_optional(&mut **tx)
    .await?
    .ok_or(StoreError::NotFound("model"))?;
    let v = sqlx::query(&format!(
        "SELECT artifact, weights FROM versions \
         WHERE model_id = $1 AND id = $2 AND trashed_at IS NULL{lock}"
    ))
    .bind(model_id)
    .bind(version_id)
    .fetch_optional(&mut **tx)
    .await?
    .ok_or(StoreError::NotFound("version"))?;
    let artifact: String = v.try_get("artifact")?;
    let weights: Option<String> = v.try_get("weights")?;
    let owner_id: i64 = m.try_get("owner_id")?;
    let owner = super::username(tx, owner_id).await?;
    let model = format!("{owner}/{}", m.try_get::<String, _>("name")?);

    // Counts per account, kept beside the predictions: no prediction row is scanned.
    let runs = sqlx::query(
        "SELECT r.account_id, a.username, r.count FROM version_runs r \
         JOIN accounts a ON a.id = r.account_id WHERE r.version_id = $1 ORDER BY a.username",
    )
    .bind(version_id)
    .fetch_all(&mut **tx)
    .await?
    .iter()
    .map(|r| {
        Ok(RunsBy {
            account_id: r.try_get("account_id")?,
            account: r.try_get("username")?,
            count: r.try_get("count")?,
        })
    })
    .collect::<Result<Vec<_>>>()?;

    // Fine-tunes in the trash count too: restored, they would need their base.
    let mut fine_tunes = Vec::new();
    for r in sqlx::query(
        "SELECT v.id, a.username, m.name, v.training_id, v.trashed_at FROM versions v \
         JOIN models m ON m.id = v.model_id JOIN accounts a ON a.id = m.owner_id \
         WHERE v.base_version_id = $1 ORDER BY v.seq",
    )
    .bind(version_id)
    .fetch_all(&mut **tx)
    .await?
    {
        fine_tunes.push(FineTuneUse {
            training_id: r.try_get("training_id")?,
            training_status: None,
            derived_version: Some(format!(
                "{}/{}:{}",
                r.try_get::<String, _>("username")?,
                r.try_get::<String, _>("name")?,
                r.try_get::<String, _>("id")?
            )),
            derived_in_trash: r.try_get::<Option<i64>, _>("trashed_at")?.is_some(),
        });
    }
    for r in sqlx::query(
        "SELECT id, status FROM jobs WHERE version_id = $1 AND kind = 'training' \
         AND status IN ('starting', 'processing') ORDER BY seq",
    )
    .bind(version_id)
    .fetch_all(&mut **tx)
    .await?
    {
        fine_tunes.push(FineTuneUse {
            training_id: r.try_get("id")?,
            training_status: Some(rows::status(&r, "status")?),
            derived_version: None,
            derived_in_trash: false,
        });
    }

    let deployments = sqlx::query(
        "SELECT a.username, d.name FROM deployments d JOIN accounts a ON a.id = d.owner_id \
         WHERE d.version_id = $1 ORDER BY a.username, d.name",
    )
    .bind(version_id)
    .fetch_all(&mut **tx)
    .await?
    .iter()
    .map(|r| {
        Ok(format!(
            "{}/{}",
            r.try_get::<String, _>("username")?,
            r.try_get::<String, _>("name")?
        ))
    })
    .collect::<Result<Vec<_>>>()?;

    let facts = VersionFacts {
        model: model.clone(),
        version_id: version_id.to_string(),
        visibility: rows::visibility(&m, "visibility")?,
        runs,
        fine_tunes,
        deployments,
    };
    let blockers = version_deletion_blockers(&facts, caller.account.id);
    let frees_bytes = if frees {
        super::sizes::frees(tx, &[version_id.to_string()]).await?
    } else {
        0
    };
    Ok(Decision {
        owner_id,
        target: format!("{model}:{version_id}"),
        artifact,
        weights: weights.into_iter().collect(),
        blockers,
        frees_bytes,
    })
}

/// Deletes a version's rows for good: the predictions of `predictions_of` (the account that
/// deleted it; the rules let no other account's through, and if they ever did, the foreign key
/// would refuse the version's DELETE and nothing would happen), its finished trainings, its run
/// counters and the version. Returns how many predictions went.
pub(super) async fn remove_rows(tx: &mut Tx, version_id: &str, predictions_of: i64) -> Result<i64> {
    let removed = sqlx::query(
        "DELETE FROM jobs WHERE version_id = $1 AND kind = 'prediction' AND account_id = $2",
    )
    .bind(version_id)
    .bind(predictions_of)
    .execute(&mut **tx)
    .await?
    .rows_affected() as i64;
    sqlx::query(
        "DELETE FROM jobs WHERE version_id = $1 AND kind = 'training' \
         AND status IN ('succeeded', 'failed', 'canceled')",
    )
    .bind(version_id)
    .execute(&mut **tx)
    .await?;
    sqlx::query("DELETE FROM version_runs WHERE version_id = $1")
        .bind(version_id)
        .execute(&mut **tx)
        .await?;
    sqlx::query("DELETE FROM versions WHERE id = $1")
        .bind(version_id)
        .execute(&mut **tx)
        .await?;
    Ok(removed)
}
