//! Deployments, their releases, and their deletion.
use async_trait::async_trait;
use chrono::{DateTime, Duration, Utc};
use modelyard_domain::rules::{deployment_deletion_blockers, DeploymentFacts};
use modelyard_domain::*;
use sqlx::Row;

use super::{ids_or_none, now, SqlStore, Tx};
use crate::rows::{self, placeholders, time, DEPLOYMENT_SELECT};
use crate::store::{Deletion, DeploymentStore};
use crate::{Result, StoreError};

/// Run after the deployment's row points at the version: that write's foreign key waits for a
/// deletion of the version in progress, so a version in the trash by now is seen as gone.
async fn insert_release(
    tx: &mut Tx,
    deployment_id: i64,
    number: i64,
    r: &NewRelease,
    created_by: &str,
    at: i64,
) -> Result<()> {
    let model: String = sqlx::query_scalar(
        "SELECT a.username || '/' || m.name FROM versions v JOIN models m ON m.id = v.model_id \
         JOIN accounts a ON a.id = m.owner_id WHERE v.id = $1 AND v.trashed_at IS NULL",
    )
    .bind(&r.version_id)
    .fetch_optional(&mut **tx)
    .await?
    .ok_or(StoreError::NotFound("version"))?;
    sqlx::query(
        "INSERT INTO deployment_releases (deployment_id, number, model, version_id, hardware, \
         min_instances, max_instances, created_by, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(deployment_id)
    .bind(number)
    .bind(model)
    .bind(&r.version_id)
    .bind(&r.hardware)
    .bind(r.min_instances)
    .bind(r.max_instances)
    .bind(created_by)
    .bind(at)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// The release's version was deleted a moment ago: its foreign key refused the write.
fn version_gone(e: sqlx::Error) -> StoreError {
    match StoreError::from(e) {
        StoreError::ForeignKey => StoreError::NotFound("version"),
        e => e,
    }
}

#[async_trait]
impl DeploymentStore for SqlStore {
    async fn create_deployment(
        &self,
        owner_id: i64,
        name: &str,
        release: NewRelease,
        created_by: &str,
    ) -> Result<Deployment> {
        let at = now();
        let mut tx = self.begin_write().await?;
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO deployments (owner_id, name, release_number, version_id, last_used_at, \
             created_at) VALUES ($1, $2, 1, $3, $4, $4) RETURNING id",
        )
        .bind(owner_id)
        .bind(name)
        .bind(&release.version_id)
        .bind(at)
        .fetch_one(&mut *tx)
        .await
        .map_err(|e| match version_gone(e) {
            StoreError::Conflict(_) => {
                StoreError::Conflict(format!("a deployment named {name:?} already exists"))
            }
            e => e,
        })?;
        insert_release(&mut tx, id, 1, &release, created_by, at).await?;
        tx.commit().await?;
        self.deployment_by_id(id).await
    }

    async fn deployment(&self, owner: &str, name: &str) -> Result<Option<Deployment>> {
        sqlx::query(&format!(
            "{DEPLOYMENT_SELECT} WHERE a.username = $1 AND d.name = $2"
        ))
        .bind(owner)
        .bind(name)
        .fetch_optional(&mut *self.reader().await?)
        .await?
        .as_ref()
        .map(rows::deployment)
        .transpose()
    }

    async fn list_deployments(&self, owner_ids: &[i64], page: PageReq) -> Result<Vec<Deployment>> {
        let ids = ids_or_none(owner_ids);
        let sql = format!(
            "{DEPLOYMENT_SELECT} WHERE d.owner_id IN ({}) AND d.id < $1 ORDER BY d.id DESC LIMIT $2",
            placeholders(3, ids.len())
        );
        let mut q = sqlx::query(&sql)
            .bind(page.after.unwrap_or(i64::MAX))
            .bind(page.limit);
        for id in ids {
            q = q.bind(id);
        }
        q.fetch_all(&mut *self.reader().await?)
            .await?
            .iter()
            .map(rows::deployment)
            .collect()
    }

    async fn all_deployments(&self) -> Result<Vec<Deployment>> {
        sqlx::query(&format!("{DEPLOYMENT_SELECT} ORDER BY d.id"))
            .fetch_all(&mut *self.reader().await?)
            .await?
            .iter()
            .map(rows::deployment)
            .collect()
    }

    async fn update_deployment(
        &self,
        id: i64,
        release: NewRelease,
        created_by: &str,
    ) -> Result<Deployment> {
        let at = now();
        let mut tx = self.begin_write().await?;
        let number: i64 = sqlx::query_scalar(&format!(
            "SELECT release_number FROM deployments WHERE id = $1{}",
            self.lock()
        ))
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(StoreError::NotFound("deployment"))?;
        sqlx::query(
            "UPDATE deployments SET release_number = $1, version_id = $2, last_used_at = $3 \
             WHERE id = $4",
        )
        .bind(number + 1)
        .bind(&release.version_id)
        .bind(at)
        .bind(id)
        .execute(&mut *tx)
        .await
        .map_err(version_gone)?;
        insert_release(&mut tx, id, number + 1, &release, created_by, at).await?;
        tx.commit().await?;
        self.deployment_by_id(id).await
    }

    async fn delete_deployment(
        &self,
        id: i64,
        caller: &Caller,
        dry_run: bool,
        now: DateTime<Utc>,
        idle: Duration,
    ) -> Result<Deletion> {
        let (mut tx, lock) = self.begin_deletion(dry_run).await?;
        let d = sqlx::query(&format!(
            "SELECT owner_id, name, release_number, last_used_at FROM deployments WHERE id = $1{lock}"
        ))
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(StoreError::NotFound("deployment"))?;
        let owner_id: i64 = d.try_get("owner_id")?;
        let owner = super::username(&mut tx, owner_id).await?;
        let r = sqlx::query(
            "SELECT min_instances, max_instances FROM deployment_releases \
             WHERE deployment_id = $1 AND number = $2",
        )
        .bind(id)
        .bind(d.try_get::<i64, _>("release_number")?)
        .fetch_one(&mut *tx)
        .await?;
        let full_name = format!("{owner}/{}", d.try_get::<String, _>("name")?);
        let facts = DeploymentFacts {
            deployment: full_name.clone(),
            min_instances: r.try_get("min_instances")?,
            max_instances: r.try_get("max_instances")?,
            last_used_at: time(d.try_get("last_used_at")?),
        };
        let blockers = deployment_deletion_blockers(&facts, now, idle);
        if dry_run {
            return Ok(super::preview(blockers));
        }
        let deleted = blockers.is_empty();
        if deleted {
            sqlx::query("DELETE FROM deployments WHERE id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        super::conclude(
            tx,
            caller,
            owner_id,
            "delete_deployment",
            full_name,
            blockers,
            "deleted",
            Deletion::default(),
        )
        .await
    }
}

impl SqlStore {
    async fn deployment_by_id(&self, id: i64) -> Result<Deployment> {
        let row = sqlx::query(&format!("{DEPLOYMENT_SELECT} WHERE d.id = $1"))
            .bind(id)
            .fetch_optional(&mut *self.reader().await?)
            .await?
            .ok_or(StoreError::NotFound("deployment"))?;
        rows::deployment(&row)
    }
}
