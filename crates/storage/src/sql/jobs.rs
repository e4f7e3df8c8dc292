use modelyard_domain::*;

use super::{now, SqlStore};
use crate::rows::{self, micros, JOB_SELECT};
use crate::{Result, StoreError};

impl SqlStore {
    pub(super) async fn create_job_(&self, j: NewJob) -> Result<Job> {
        let id = ids::object_id();
        let at = now();
        let mut tx = self.begin_write().await?;
        // Locks are taken model first, then version, as a deletion takes them; the other order
        // deadlocks against a concurrent deletion on PostgreSQL.
        if j.kind == JobKind::Prediction {
            sqlx::query(
                "UPDATE models SET run_count = run_count + 1 \
                 WHERE id = (SELECT model_id FROM versions WHERE id = $1)",
            )
            .bind(&j.version_id)
            .execute(&mut *tx)
            .await?;
        }
        // The version row is referenced by a foreign key: a version deleted a moment ago makes
        // this INSERT fail, and on PostgreSQL a deletion in progress makes it wait first.
        sqlx::query(
            "INSERT INTO jobs (id, kind, account_id, version_id, deployment_id, \
             destination_model_id, input, status, source, webhook, webhook_events_filter, \
             deadline, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, 'starting', $8, $9, $10, $11, $12)",
        )
        .bind(&id)
        .bind(j.kind.as_str())
        .bind(j.account_id)
        .bind(&j.version_id)
        .bind(j.deployment_id)
        .bind(j.destination_model_id)
        .bind(j.input.to_string())
        .bind(&j.source)
        .bind(&j.webhook)
        .bind(serde_json::to_string(&j.webhook_events_filter).unwrap_or_else(|_| "[]".into()))
        .bind(j.deadline.map(micros))
        .bind(at)
        .execute(&mut *tx)
        .await
        .map_err(|e| match StoreError::from(e) {
            // Job ids are random, so a conflict here is only ever the version's foreign key.
            StoreError::Conflict(_) | StoreError::ForeignKey => StoreError::NotFound("version"),
            e => e,
        })?;
        if j.kind == JobKind::Prediction {
            sqlx::query(
                "INSERT INTO version_runs (version_id, account_id, count) VALUES ($1, $2, 1) \
                 ON CONFLICT (version_id, account_id) DO UPDATE SET count = version_runs.count + 1",
            )
            .bind(&j.version_id)
            .bind(j.account_id)
            .execute(&mut *tx)
            .await?;
        }
        if let Some(d) = j.deployment_id {
            sqlx::query("UPDATE deployments SET last_used_at = $1 WHERE id = $2")
                .bind(at)
                .bind(d)
                .execute(&mut *tx)
                .await?;
        }
        let row = sqlx::query(&format!("{JOB_SELECT} WHERE j.id = $1"))
            .bind(&id)
            .fetch_one(&mut *tx)
            .await?;
        tx.commit().await?;
        rows::job(&row)
    }

    pub(super) async fn job_(&self, kind: JobKind, id: &str) -> Result<Option<Job>> {
        sqlx::query(&format!("{JOB_SELECT} WHERE j.id = $1 AND j.kind = $2"))
            .bind(id)
            .bind(kind.as_str())
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(rows::job)
            .transpose()
    }

    pub(super) async fn list_jobs_(
        &self,
        kind: JobKind,
        account_id: i64,
        page: PageReq,
    ) -> Result<Vec<Job>> {
        sqlx::query(&format!(
            "{JOB_SELECT} WHERE j.account_id = $1 AND j.kind = $2 AND j.seq < $3 \
             ORDER BY j.seq DESC LIMIT $4"
        ))
        .bind(account_id)
        .bind(kind.as_str())
        .bind(page.after.unwrap_or(i64::MAX))
        .bind(page.limit)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(rows::job)
        .collect()
    }

    pub(super) async fn cancel_job_(&self, kind: JobKind, id: &str) -> Result<Job> {
        let at = now();
        sqlx::query(
            "UPDATE jobs SET status = 'canceled', completed_at = $1 \
             WHERE id = $2 AND kind = $3 AND status IN ('starting', 'processing')",
        )
        .bind(at)
        .bind(id)
        .bind(kind.as_str())
        .execute(&self.writer)
        .await?;
        self.job_(kind, id)
            .await?
            .ok_or(StoreError::NotFound("prediction"))
    }
}
