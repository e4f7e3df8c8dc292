//! What the runner needs: a queue in the jobs table, and the transitions of a job's life.
use chrono::{DateTime, Utc};
use modelyard_domain::*;

use super::{now, SqlStore};
use crate::rows::{self, micros, DEPLOYMENT_SELECT, JOB_SELECT};
use crate::{JobEnd, Result};

impl SqlStore {
    pub(super) async fn queued_jobs_(&self, limit: i64) -> Result<Vec<Job>> {
        sqlx::query(&format!(
            "{JOB_SELECT} WHERE j.status = 'starting' AND j.claimed = 0 ORDER BY j.seq LIMIT $1"
        ))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(rows::job)
        .collect()
    }

    pub(super) async fn claim_job_(&self, id: &str) -> Result<bool> {
        let r = sqlx::query(
            "UPDATE jobs SET claimed = 1 WHERE id = $1 AND status = 'starting' AND claimed = 0",
        )
        .bind(id)
        .execute(&self.writer)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    pub(super) async fn release_job_(&self, id: &str) -> Result<()> {
        sqlx::query("UPDATE jobs SET claimed = 0 WHERE id = $1 AND status = 'starting'")
            .bind(id)
            .execute(&self.writer)
            .await?;
        Ok(())
    }

    pub(super) async fn job_started_(&self, id: &str, at: DateTime<Utc>) -> Result<bool> {
        let r = sqlx::query(
            "UPDATE jobs SET status = 'processing', started_at = $1 WHERE id = $2 AND status = 'starting'",
        )
        .bind(micros(at))
        .bind(id)
        .execute(&self.writer)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    pub(super) async fn claim_and_start_job_(&self, id: &str, at: DateTime<Utc>) -> Result<bool> {
        let r = sqlx::query(
            "UPDATE jobs SET claimed = 1, status = 'processing', started_at = $1 \
             WHERE id = $2 AND status = 'starting' AND claimed = 0",
        )
        .bind(micros(at))
        .bind(id)
        .execute(&self.writer)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    pub(super) async fn job_progress_(
        &self,
        id: &str,
        logs: &str,
        output: Option<&serde_json::Value>,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE jobs SET logs = $1, output = COALESCE($2, output) WHERE id = $3 AND status = 'processing'",
        )
        .bind(logs)
        .bind(output.map(|o| o.to_string()))
        .bind(id)
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    pub(super) async fn finish_job_(&self, id: &str, end: JobEnd) -> Result<bool> {
        let r = sqlx::query(
            "UPDATE jobs SET status = $1, output = $2, error = $3, logs = $4, metrics = $5, \
             result_version_id = $6, completed_at = $7 \
             WHERE id = $8 AND status IN ('starting', 'processing')",
        )
        .bind(end.status.as_str())
        .bind(end.output.map(|o| o.to_string()))
        .bind(end.error)
        .bind(end.logs)
        .bind(end.metrics.to_string())
        .bind(end.result_version_id)
        .bind(micros(end.completed_at))
        .bind(id)
        .execute(&self.writer)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    pub(super) async fn recover_jobs_(&self, error: &str) -> Result<(u64, u64)> {
        let failed = sqlx::query(
            "UPDATE jobs SET status = 'failed', error = $1, completed_at = $2 WHERE status = 'processing'",
        )
        .bind(error)
        .bind(now())
        .execute(&self.writer)
        .await?
        .rows_affected();
        let requeued =
            sqlx::query("UPDATE jobs SET claimed = 0 WHERE status = 'starting' AND claimed = 1")
                .execute(&self.writer)
                .await?
                .rows_affected();
        Ok((failed, requeued))
    }

    pub(super) async fn cancel_queued_for_deployment_(&self, deployment_id: i64) -> Result<u64> {
        Ok(sqlx::query(
            "UPDATE jobs SET status = 'canceled', completed_at = $1 \
             WHERE deployment_id = $2 AND status = 'starting' AND claimed = 0",
        )
        .bind(now())
        .bind(deployment_id)
        .execute(&self.writer)
        .await?
        .rows_affected())
    }

    pub(super) async fn all_deployments_(&self) -> Result<Vec<Deployment>> {
        sqlx::query(&format!("{DEPLOYMENT_SELECT} ORDER BY d.id"))
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(rows::deployment)
            .collect()
    }

    pub(super) async fn remove_job_data_(
        &self,
        source: &str,
        before: DateTime<Utc>,
    ) -> Result<Vec<String>> {
        let mut tx = self.begin_write().await?;
        let ids: Vec<String> = sqlx::query_scalar(
            "SELECT id FROM jobs WHERE source = $1 AND created_at < $2 AND data_removed = 0 \
             AND status IN ('succeeded', 'failed', 'canceled')",
        )
        .bind(source)
        .bind(micros(before))
        .fetch_all(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE jobs SET input = '{}', output = NULL, logs = '', data_removed = 1 \
             WHERE source = $1 AND created_at < $2 AND data_removed = 0 \
             AND status IN ('succeeded', 'failed', 'canceled')",
        )
        .bind(source)
        .bind(micros(before))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(ids)
    }
}
