//! Versions of models, and their deletion.
use async_trait::async_trait;
use modelyard_domain::rules::{version_deletion_blockers, FineTuneUse, RunsBy, VersionFacts};
use modelyard_domain::*;
use sqlx::Row;

use super::{now, SqlStore};
use crate::rows::{self, MODEL_AND_VERSION_SELECT, VERSION_SELECT};
use crate::store::{Deletion, VersionStore};
use crate::{Result, StoreError};

#[async_trait]
impl VersionStore for SqlStore {
    async fn versions(&self, model_id: i64, page: PageReq) -> Result<Vec<Version>> {
        sqlx::query(&format!(
            "{VERSION_SELECT} WHERE v.model_id = $1 AND v.seq < $2 ORDER BY v.seq DESC LIMIT $3"
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
        sqlx::query(&format!(
            "{VERSION_SELECT} WHERE v.model_id = $1 AND v.id = $2"
        ))
        .bind(model_id)
        .bind(id)
        .fetch_optional(&mut *self.reader().await?)
        .await?
        .as_ref()
        .map(rows::version)
        .transpose()
    }

    async fn version_by_id(&self, id: &str) -> Result<Option<(Model, Version)>> {
        let row = sqlx::query(&format!(
            "{MODEL_AND_VERSION_SELECT} JOIN versions r ON r.model_id = m.id WHERE r.id = $1"
        ))
        .bind(id)
        .fetch_optional(&mut *self.reader().await?)
        .await?;
        match row.as_ref().map(rows::model_and_version).transpose()? {
            Some((m, Some(v))) => Ok(Some((m, v))),
            _ => Ok(None),
        }
    }

    async fn model_and_version(
        &self,
        owner: &str,
        name: &str,
        id: &str,
    ) -> Result<Option<(Model, Option<Version>)>> {
        sqlx::query(&format!(
            "{MODEL_AND_VERSION_SELECT} LEFT JOIN versions r ON r.model_id = m.id AND r.id = $3 \
             WHERE a.username = $1 AND m.name = $2"
        ))
        .bind(owner)
        .bind(name)
        .bind(id)
        .fetch_optional(&mut *self.reader().await?)
        .await?
        .as_ref()
        .map(rows::model_and_version)
        .transpose()
    }

    async fn create_version(&self, v: NewVersion) -> Result<(Version, bool)> {
        let id = ids::version_id(v.model_id, &v.content_digest);
        let mut tx = self.begin_write().await?;
        let existing = sqlx::query(&format!("{VERSION_SELECT} WHERE v.id = $1"))
            .bind(&id)
            .fetch_optional(&mut *tx)
            .await?;
        if let Some(row) = existing {
            return Ok((rows::version(&row)?, false));
        }
        // A concurrent push of the same content (PostgreSQL does not serialize writers) inserts
        // nothing here and returns the version the other push made.
        let done = sqlx::query(
            "INSERT INTO versions (id, model_id, cog_version, openapi_schema, artifact, \
             base_version_id, training_id, weights, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
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
        .bind(now())
        .execute(&mut *tx)
        .await
        .map_err(|e| match StoreError::from(e) {
            // The model (or the base) was deleted meanwhile.
            StoreError::ForeignKey => StoreError::NotFound("model"),
            e => e,
        })?;
        let inserted = done.rows_affected() > 0;
        let row = sqlx::query(&format!("{VERSION_SELECT} WHERE v.id = $1"))
            .bind(&id)
            .fetch_one(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok((rows::version(&row)?, inserted))
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
        // Lock the model, then the version: a visibility change, a new prediction, training,
        // deployment release or fine-tuned version all wait for (or fail after) this.
        let m = sqlx::query(&format!(
            "SELECT owner_id, visibility, name FROM models WHERE id = $1{lock}"
        ))
        .bind(model_id)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(StoreError::NotFound("model"))?;
        let v = sqlx::query(&format!(
            "SELECT artifact FROM versions WHERE model_id = $1 AND id = $2{lock}"
        ))
        .bind(model_id)
        .bind(version_id)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(StoreError::NotFound("version"))?;
        let artifact: String = v.try_get("artifact")?;
        let owner_id: i64 = m.try_get("owner_id")?;
        let owner = super::username(&mut tx, owner_id).await?;
        let model = format!("{owner}/{}", m.try_get::<String, _>("name")?);

        // Counts per account, kept beside the predictions: no prediction row is scanned.
        let runs = sqlx::query(
            "SELECT r.account_id, a.username, r.count FROM version_runs r \
             JOIN accounts a ON a.id = r.account_id WHERE r.version_id = $1 ORDER BY a.username",
        )
        .bind(version_id)
        .fetch_all(&mut *tx)
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

        let mut fine_tunes = Vec::new();
        for r in sqlx::query(
            "SELECT v.id, a.username, m.name, v.training_id FROM versions v \
             JOIN models m ON m.id = v.model_id JOIN accounts a ON a.id = m.owner_id \
             WHERE v.base_version_id = $1 ORDER BY v.seq",
        )
        .bind(version_id)
        .fetch_all(&mut *tx)
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
            });
        }
        for r in sqlx::query(
            "SELECT id, status FROM jobs WHERE version_id = $1 AND kind = 'training' \
             AND status IN ('starting', 'processing') ORDER BY seq",
        )
        .bind(version_id)
        .fetch_all(&mut *tx)
        .await?
        {
            fine_tunes.push(FineTuneUse {
                training_id: r.try_get("id")?,
                training_status: Some(rows::status(&r, "status")?),
                derived_version: None,
            });
        }

        let deployments = sqlx::query(
            "SELECT a.username, d.name FROM deployments d JOIN accounts a ON a.id = d.owner_id \
             WHERE d.version_id = $1 ORDER BY a.username, d.name",
        )
        .bind(version_id)
        .fetch_all(&mut *tx)
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
        if dry_run {
            return Ok(super::preview(blockers));
        }
        let deleted = blockers.is_empty();
        let mut unreferenced_artifact = None;
        if deleted {
            // Only the caller's own predictions can be here; if the rules ever let another
            // account's through, the foreign key refuses the DELETE below and nothing happens.
            let removed = sqlx::query(
                "DELETE FROM jobs WHERE version_id = $1 AND kind = 'prediction' AND account_id = $2",
            )
            .bind(version_id)
            .bind(caller.account.id)
            .execute(&mut *tx)
            .await?
            .rows_affected() as i64;
            sqlx::query(
                "DELETE FROM jobs WHERE version_id = $1 AND kind = 'training' \
                 AND status IN ('succeeded', 'failed', 'canceled')",
            )
            .bind(version_id)
            .execute(&mut *tx)
            .await?;
            sqlx::query("UPDATE models SET run_count = run_count - $1 WHERE id = $2")
                .bind(removed)
                .bind(model_id)
                .execute(&mut *tx)
                .await?;
            sqlx::query("DELETE FROM version_runs WHERE version_id = $1")
                .bind(version_id)
                .execute(&mut *tx)
                .await?;
            sqlx::query("DELETE FROM versions WHERE id = $1")
                .bind(version_id)
                .execute(&mut *tx)
                .await?;
            let refs: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM versions WHERE artifact = $1")
                .bind(&artifact)
                .fetch_one(&mut *tx)
                .await?;
            if refs == 0 {
                unreferenced_artifact = Some(artifact);
            }
        }
        let target = format!("{model}:{version_id}");
        super::conclude(
            tx,
            caller,
            owner_id,
            "delete_version",
            target,
            blockers,
            unreferenced_artifact,
        )
        .await
    }
}
