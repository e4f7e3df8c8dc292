//! Predictions and trainings, and the queue in the jobs table that the runner takes them from.
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use modelyard_domain::worker::{Need, Offer};
use modelyard_domain::*;
use sqlx::Row;

use super::{now, Arg, SqlStore};
use crate::rows::{self, micros, placeholders, JOB_SELECT};
use crate::store::{JobEnd, JobLease, JobStore, RecoveredJobs};
use crate::{Result, StoreError};

/// A job's deployment's current release, after `JOB_SELECT` (or any join naming the job's
/// deployment `d`).
const RELEASE_JOIN: &str =
    "LEFT JOIN deployment_releases dr ON dr.deployment_id = d.id AND dr.number = d.release_number";

/// The condition of `jobs_unfinished`, a partial index. SQLite uses a partial index only for
/// a statement whose WHERE holds its condition word for word, so every statement that looks
/// for unfinished jobs by status says it, even beside a narrower `status = ...`; one that
/// did not would scan every job ever run (the `plans` test below checks).
macro_rules! unfinished {
    () => {
        "status IN ('starting', 'processing')"
    };
}

/// A worker's lease on its unfinished jobs, renewed.
const RENEW: &str = concat!(
    "UPDATE jobs SET lease_until = $1 WHERE worker_id = $2 AND claimed = 1 AND ",
    unfinished!()
);

/// Started jobs whose worker's lease ran out: failed.
const EXPIRE_STARTED: &str = concat!(
    "UPDATE jobs SET status = 'failed', error = $1, completed_at = $2 WHERE ",
    unfinished!(),
    " AND status = 'processing' AND lease_until < $2"
);

/// Taken but not started, under a lease that ran out: queued again.
const EXPIRE_QUEUED: &str = concat!(
    "UPDATE jobs SET claimed = 0, worker_id = NULL, lease_until = NULL WHERE ",
    unfinished!(),
    " AND status = 'starting' AND claimed = 1 AND lease_until < $1"
);

/// At a start on one node: what was running when it stopped has failed.
const RECOVER_STARTED: &str = concat!(
    "UPDATE jobs SET status = 'failed', error = $1, completed_at = $2 WHERE ",
    unfinished!(),
    " AND status = 'processing'"
);

/// At a start on one node: what was taken but not started is queued again.
const RECOVER_QUEUED: &str = concat!(
    "UPDATE jobs SET claimed = 0 WHERE ",
    unfinished!(),
    " AND status = 'starting' AND claimed = 1"
);

/// How many of a deployment's jobs are taken and unfinished.
const DEPLOYMENT_RUNNING: &str = concat!(
    "SELECT COUNT(*) FROM jobs WHERE deployment_id = $1 AND claimed = 1 AND ",
    unfinished!()
);

/// The hardware a queued job needs: its deployment's, else its model's (`mo`, the version's).
const NEEDED_HARDWARE: &str = "COALESCE(dr.hardware, mo.hardware)";

/// `Offer::takes` in SQL, over the job's version `v` and its `NEEDED_HARDWARE`; the offered
/// names are bound from placeholder `$first` on.
fn offer_filter(offer: &Offer, first: usize) -> String {
    let mut sql = String::new();
    if !offer.gpu {
        sql.push_str(" AND v.gpu = 0");
    }
    if !offer.hardware.is_empty() {
        sql.push_str(&format!(
            " AND {NEEDED_HARDWARE} IN ({})",
            placeholders(first, offer.hardware.len())
        ));
    }
    sql
}

/// The queue, oldest first: jobs not yet taken that `offer` takes (`$1` the limit).
fn queued_sql(offer: &Offer) -> String {
    format!(
        "{JOB_SELECT} {RELEASE_JOIN} WHERE j.{} AND j.status = 'starting' AND j.claimed = 0{} \
         ORDER BY j.seq LIMIT $1",
        unfinished!(),
        offer_filter(offer, 2)
    )
}

/// Queued jobs whose logs do not yet say that no worker offers what they need.
fn unnoted_sql() -> String {
    format!(
        "SELECT j.id, {NEEDED_HARDWARE} AS hardware, v.gpu FROM jobs j \
         JOIN versions v ON v.id = j.version_id AND v.trashed_at IS NULL \
         JOIN models mo ON mo.id = v.model_id \
         LEFT JOIN deployments d ON d.id = j.deployment_id {RELEASE_JOIN} \
         WHERE j.{} AND j.status = 'starting' AND j.claimed = 0 AND j.waiting_noted = 0 \
         ORDER BY j.seq LIMIT $1",
        unfinished!()
    )
}

#[async_trait]
impl JobStore for SqlStore {
    async fn create_job(&self, j: NewJob) -> Result<Job> {
        let id = ids::object_id();
        let at = now();
        let input = j.input.to_string();
        let filter =
            serde_json::to_string(&j.webhook_events_filter).unwrap_or_else(|_| "[]".into());
        // Every prediction passes here: on SQLite it is one transaction on the direct writer
        // (`direct.rs`), with no hand-over to another thread per statement.
        let mut tx = self.begin_job_write().await?;
        // Locks are taken model first, then version, as a deletion takes them; the other order
        // deadlocks against a concurrent deletion on PostgreSQL.
        let mut ran = None;
        if j.kind == JobKind::Prediction {
            ran = tx
                .rows(
                    "UPDATE models SET run_count = run_count + 1 \
                     WHERE id = (SELECT model_id FROM versions WHERE id = $1) RETURNING id",
                    &[Arg::Text(&j.version_id)],
                    |r| r.int("id"),
                )
                .await?
                .into_iter()
                .next()
                .flatten();
        }
        // The version row is referenced by a foreign key: a version deleted a moment ago makes
        // this INSERT fail, and on PostgreSQL a deletion in progress makes it wait first.
        let seq = tx
            .rows(
            "INSERT INTO jobs (id, kind, account_id, version_id, deployment_id, \
             destination_model_id, input, status, source, webhook, webhook_events_filter, \
             deadline, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, 'starting', $8, $9, $10, $11, $12) \
             RETURNING seq",
            &[
                Arg::Text(&id),
                Arg::Text(j.kind.as_str()),
                Arg::Int(j.account_id),
                Arg::Text(&j.version_id),
                Arg::OptInt(j.deployment_id),
                Arg::OptInt(j.destination_model_id),
                Arg::Text(&input),
                Arg::Text(&j.source),
                Arg::OptText(j.webhook.as_deref()),
                Arg::Text(&filter),
                Arg::OptInt(j.deadline.map(micros)),
                Arg::Int(at),
            ],
            |r| rows::get::<i64, _>(r, "seq"),
        )
        .await
        .map_err(|e| match e {
            // Job ids are random, so a conflict here is only ever the version's foreign key.
            StoreError::Conflict(_) | StoreError::ForeignKey => StoreError::NotFound("version"),
            e => e,
        })?
        .into_iter()
        .next()
        .ok_or(StoreError::NotFound("version"))?;
        if j.kind == JobKind::Prediction {
            tx.exec(
                "INSERT INTO version_runs (version_id, account_id, count) VALUES ($1, $2, 1) \
                 ON CONFLICT (version_id, account_id) DO UPDATE SET count = version_runs.count + 1",
                &[Arg::Text(&j.version_id), Arg::Int(j.account_id)],
            )
            .await?;
        }
        if let Some(d) = j.deployment_id {
            tx.exec(
                "UPDATE deployments SET last_used_at = $1 WHERE id = $2",
                &[Arg::Int(at), Arg::Int(d)],
            )
            .await?;
        }
        // Whether its version is live (one in the trash is as gone as a deleted one: nothing
        // written above stands then), and the names the record is answered with, as
        // `JOB_SELECT` joins them. Read after the insert, whose foreign key waits for a trashing
        // in progress (PostgreSQL), so it sees its outcome.
        let (account, model, deployment, destination) = tx
            .rows(
                "SELECT acc.username AS account, ma.username || '/' || mo.name AS model, \
                 (SELECT da.username || '/' || d.name FROM deployments d \
                  JOIN accounts da ON da.id = d.owner_id WHERE d.id = $2) AS deployment, \
                 (SELECT dma.username || '/' || dm.name FROM models dm \
                  JOIN accounts dma ON dma.id = dm.owner_id WHERE dm.id = $3) AS destination \
                 FROM versions v JOIN models mo ON mo.id = v.model_id \
                 JOIN accounts ma ON ma.id = mo.owner_id JOIN accounts acc ON acc.id = $4 \
                 WHERE v.id = $1 AND v.trashed_at IS NULL",
                &[
                    Arg::Text(&j.version_id),
                    Arg::OptInt(j.deployment_id),
                    Arg::OptInt(j.destination_model_id),
                    Arg::Int(j.account_id),
                ],
                |r| {
                    Ok((
                        rows::get::<String, _>(r, "account")?,
                        rows::get::<String, _>(r, "model")?,
                        rows::get::<Option<String>, _>(r, "deployment")?,
                        rows::get::<Option<String>, _>(r, "destination")?,
                    ))
                },
            )
            .await?
            .into_iter()
            .next()
            .ok_or(StoreError::NotFound("version"))?;
        // As `rows::job` would read it back.
        let job = Job {
            cursor: seq,
            id,
            kind: j.kind,
            account_id: j.account_id,
            account,
            version_id: j.version_id,
            model,
            deployment,
            destination,
            input: j.input,
            output: None,
            logs: String::new(),
            error: None,
            status: Status::Starting,
            source: j.source,
            webhook: j.webhook,
            webhook_events_filter: j.webhook_events_filter,
            data_removed: false,
            metrics: serde_json::json!({}),
            deadline: j.deadline.map(|d| rows::time(micros(d))),
            created_at: rows::time(at),
            started_at: None,
            completed_at: None,
        };
        tx.commit_ran(ran).await?;
        Ok(job)
    }

    async fn job(&self, kind: JobKind, id: &str) -> Result<Option<Job>> {
        self.read_row_kept(
            "job",
            || format!("{JOB_SELECT} WHERE j.id = $1 AND j.kind = $2"),
            &[Arg::Text(id), Arg::Text(kind.as_str())],
            |r| rows::job(r),
        )
        .await
    }

    async fn list_jobs(&self, kind: JobKind, account_id: i64, page: PageReq) -> Result<Vec<Job>> {
        sqlx::query(&format!(
            "{JOB_SELECT} WHERE j.account_id = $1 AND j.kind = $2 AND j.seq < $3 \
             ORDER BY j.seq DESC LIMIT $4"
        ))
        .bind(account_id)
        .bind(kind.as_str())
        .bind(page.after.unwrap_or(i64::MAX))
        .bind(page.limit)
        .fetch_all(&mut *self.reader().await?)
        .await?
        .iter()
        .map(rows::job)
        .collect()
    }

    async fn model_jobs(&self, model_id: i64, account_id: i64, limit: i64) -> Result<Vec<Job>> {
        sqlx::query(&format!(
            "{JOB_SELECT} WHERE v.model_id = $1 AND j.account_id = $2 AND j.kind = 'prediction' \
             ORDER BY j.seq DESC LIMIT $3"
        ))
        .bind(model_id)
        .bind(account_id)
        .bind(limit)
        .fetch_all(&mut *self.reader().await?)
        .await?
        .iter()
        .map(rows::job)
        .collect()
    }

    async fn cancel_job(&self, kind: JobKind, id: &str) -> Result<Job> {
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
        self.job(kind, id)
            .await?
            .ok_or(StoreError::NotFound("prediction"))
    }

    async fn queued_jobs(&self, offer: &Offer, limit: i64) -> Result<Vec<Job>> {
        let sql = queued_sql(offer);
        // Read each time a job ends: on SQLite's direct connections (`direct.rs`).
        let mut args = vec![Arg::Int(limit)];
        args.extend(offer.hardware.iter().map(|h| Arg::Text(h)));
        self.read_rows(&sql, &args, |r| rows::job(r)).await
    }

    async fn claim_job(&self, id: &str, offer: &Offer, lease: &JobLease) -> Result<bool> {
        self.claim(id, offer, lease, None).await
    }

    async fn claim_and_start_job(
        &self,
        id: &str,
        offer: &Offer,
        lease: &JobLease,
        at: DateTime<Utc>,
    ) -> Result<bool> {
        self.claim(id, offer, lease, Some(at)).await
    }

    async fn release_job(&self, id: &str, worker_id: &str) -> Result<()> {
        sqlx::query(
            "UPDATE jobs SET claimed = 0, worker_id = NULL, lease_until = NULL \
             WHERE id = $1 AND worker_id = $2 AND status = 'starting'",
        )
        .bind(id)
        .bind(worker_id)
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    async fn renew_leases(&self, worker_id: &str, until: DateTime<Utc>) -> Result<u64> {
        Ok(sqlx::query(RENEW)
            .bind(micros(until))
            .bind(worker_id)
            .execute(&self.writer)
            .await?
            .rows_affected())
    }

    async fn expire_leases(&self, now: DateTime<Utc>, error: &str) -> Result<RecoveredJobs> {
        let now = micros(now);
        let failed = sqlx::query(EXPIRE_STARTED)
            .bind(error)
            .bind(now)
            .execute(&self.writer)
            .await?
            .rows_affected();
        let requeued = sqlx::query(EXPIRE_QUEUED)
            .bind(now)
            .execute(&self.writer)
            .await?
            .rows_affected();
        Ok(RecoveredJobs { failed, requeued })
    }

    async fn unnoted_needs(&self, limit: i64) -> Result<Vec<Need>> {
        let rows = sqlx::query(&unnoted_sql())
            .bind(limit)
            .fetch_all(&mut *self.reader().await?)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(Need {
                    job_id: r.try_get("id")?,
                    hardware: r.try_get("hardware")?,
                    gpu: r.try_get::<i64, _>("gpu")? != 0,
                })
            })
            .collect()
    }

    async fn note_waiting(&self, id: &str, line: &str) -> Result<bool> {
        let r = sqlx::query(
            "UPDATE jobs SET logs = logs || $1, waiting_noted = 1 \
             WHERE id = $2 AND status = 'starting' AND claimed = 0 AND waiting_noted = 0",
        )
        .bind(line)
        .bind(id)
        .execute(&self.writer)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    async fn job_started(&self, id: &str, worker_id: &str, at: DateTime<Utc>) -> Result<bool> {
        let n = self
            .write_job(
                "UPDATE jobs SET status = 'processing', started_at = $1 \
                 WHERE id = $2 AND worker_id = $3 AND status = 'starting'",
                &[Arg::Int(micros(at)), Arg::Text(id), Arg::Text(worker_id)],
            )
            .await?;
        Ok(n == 1)
    }

    async fn job_progress(
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

    async fn finish_job(&self, id: &str, end: JobEnd) -> Result<bool> {
        let output = end.output.map(|o| o.to_string());
        let metrics = end.metrics.to_string();
        let n = self
            .write_job(
                "UPDATE jobs SET status = $1, output = $2, error = $3, logs = $4, metrics = $5, \
                 result_version_id = $6, completed_at = $7 \
                 WHERE id = $8 AND status IN ('starting', 'processing')",
                &[
                    Arg::Text(end.status.as_str()),
                    Arg::OptText(output.as_deref()),
                    Arg::OptText(end.error.as_deref()),
                    Arg::Text(&end.logs),
                    Arg::Text(&metrics),
                    Arg::OptText(end.result_version_id.as_deref()),
                    Arg::Int(micros(end.completed_at)),
                    Arg::Text(id),
                ],
            )
            .await?;
        Ok(n == 1)
    }

    async fn recover_jobs(&self, error: &str) -> Result<RecoveredJobs> {
        let failed = sqlx::query(RECOVER_STARTED)
            .bind(error)
            .bind(now())
            .execute(&self.writer)
            .await?
            .rows_affected();
        let requeued = sqlx::query(RECOVER_QUEUED)
            .execute(&self.writer)
            .await?
            .rows_affected();
        Ok(RecoveredJobs { failed, requeued })
    }

    async fn cancel_queued_for_deployment(&self, deployment_id: i64) -> Result<u64> {
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

    async fn remove_job_data(&self, source: &str, before: DateTime<Utc>) -> Result<Vec<String>> {
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

impl SqlStore {
    /// Takes a job for a worker in one write transaction: the job row (skipped on PostgreSQL
    /// when another worker holds it), then, for a deployment's job, the deployment row, under
    /// whose lock its jobs across the cluster are counted against `max_instances`.
    async fn claim(
        &self,
        id: &str,
        offer: &Offer,
        lease: &JobLease,
        start: Option<DateTime<Utc>>,
    ) -> Result<bool> {
        if self.dialect.claims_in_one_statement()
            && self.claim_plain(id, offer, lease, start).await?
        {
            return Ok(true);
        }
        let mut tx = self.begin_write().await?;
        // The offer is checked here too, not only when the queue was read: a job handed to
        // this node's dispatcher directly may be for another worker's hardware.
        let sql = format!(
            "SELECT j.deployment_id FROM jobs j \
             WHERE j.id = $1 AND j.status = 'starting' AND j.claimed = 0 AND EXISTS (\
             SELECT 1 FROM versions v JOIN models mo ON mo.id = v.model_id \
             LEFT JOIN deployments d ON d.id = j.deployment_id {RELEASE_JOIN} \
             WHERE v.id = j.version_id{}){}",
            offer_filter(offer, 2),
            self.dialect.skip_locked()
        );
        let mut q = sqlx::query_scalar(&sql).bind(id);
        for h in &offer.hardware {
            q = q.bind(h);
        }
        let deployment: Option<Option<i64>> = q.fetch_optional(&mut *tx).await?;
        let Some(deployment) = deployment else {
            return Ok(false);
        };
        if let Some(d) = deployment {
            let max: Option<i64> = sqlx::query_scalar(&format!(
                "SELECT r.max_instances FROM deployments d JOIN deployment_releases r \
                 ON r.deployment_id = d.id AND r.number = d.release_number WHERE d.id = $1{}",
                self.lock()
            ))
            .bind(d)
            .fetch_optional(&mut *tx)
            .await?;
            let running: i64 = sqlx::query_scalar(DEPLOYMENT_RUNNING)
                .bind(d)
                .fetch_one(&mut *tx)
                .await?;
            if max.is_some_and(|m| running >= m.max(1)) {
                return Ok(false);
            }
        }
        let started = if start.is_some() {
            ", status = 'processing', started_at = $4"
        } else {
            ""
        };
        let sql = format!(
            "UPDATE jobs SET claimed = 1, worker_id = $1, lease_until = $2{started} \
             WHERE id = $3 AND status = 'starting' AND claimed = 0"
        );
        let mut q = sqlx::query(&sql)
            .bind(&lease.worker_id)
            .bind(micros(lease.until))
            .bind(id);
        if let Some(at) = start {
            q = q.bind(micros(at));
        }
        let r = q.execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(r.rows_affected() == 1)
    }

    /// The claim of a job outside any deployment as one conditional `UPDATE` (see
    /// `Dialect::claims_in_one_statement`); false when it took nothing (a deployment's job, one
    /// taken meanwhile, one the offer does not take), which the transaction then decides.
    async fn claim_plain(
        &self,
        id: &str,
        offer: &Offer,
        lease: &JobLease,
        start: Option<DateTime<Utc>>,
    ) -> Result<bool> {
        let (started, first) = match start {
            Some(_) => (", status = 'processing', started_at = $4", 5),
            None => ("", 4),
        };
        let filter = offer_filter(offer, first);
        // A node that takes everything needs no look at the version or the model.
        let offered = if filter.is_empty() {
            String::new()
        } else {
            format!(
                " AND EXISTS (SELECT 1 FROM versions v JOIN models mo ON mo.id = v.model_id \
                 LEFT JOIN deployments d ON d.id = jobs.deployment_id {RELEASE_JOIN} \
                 WHERE v.id = jobs.version_id{filter})"
            )
        };
        let sql = format!(
            "UPDATE jobs SET claimed = 1, worker_id = $1, lease_until = $2{started} \
             WHERE id = $3 AND status = 'starting' AND claimed = 0 \
             AND deployment_id IS NULL{offered}"
        );
        let mut args = vec![
            Arg::Text(&lease.worker_id),
            Arg::Int(micros(lease.until)),
            Arg::Text(id),
        ];
        if let Some(at) = start {
            args.push(Arg::Int(micros(at)));
        }
        args.extend(offer.hardware.iter().map(|h| Arg::Text(h)));
        Ok(self.write_job(&sql, &args).await? == 1)
    }
}

#[cfg(test)]
mod plans {
    use super::*;

    /// Every statement that looks for unfinished jobs reads them through an index, never by
    /// a scan of every job ever run: on SQLite that holds only while each says the partial
    /// index's condition word for word. So does a deployment's deletion, through the partial
    /// `jobs_deployment`.
    #[tokio::test]
    async fn unfinished_jobs_are_found_through_an_index() {
        let db = crate::sql::scratch::db("plans");
        let url = &db.url;
        let store = SqlStore::connect(url).await.unwrap();
        let every = Offer::everything();
        let some = Offer::new(vec!["cpu".into()], 0);
        let statements = [
            (queued_sql(&every), "jobs_unfinished"),
            (queued_sql(&some), "jobs_unfinished"),
            (unnoted_sql(), "jobs_unfinished"),
            (RENEW.into(), "jobs_unfinished"),
            (EXPIRE_STARTED.into(), "jobs_unfinished"),
            (EXPIRE_QUEUED.into(), "jobs_unfinished"),
            (RECOVER_STARTED.into(), "jobs_unfinished"),
            (RECOVER_QUEUED.into(), "jobs_unfinished"),
            (DEPLOYMENT_RUNNING.into(), "jobs_"),
            // The foreign key's ON DELETE SET NULL finds a deployment's jobs.
            (
                "DELETE FROM deployments WHERE id = $1".into(),
                "jobs_deployment",
            ),
        ];
        for (sql, index) in statements {
            let plan: Vec<String> = sqlx::query(&format!("EXPLAIN QUERY PLAN {sql}"))
                .fetch_all(&store.pool)
                .await
                .unwrap()
                .iter()
                .map(|r| r.get::<String, _>("detail"))
                .collect();
            // "SEARCH j USING INDEX ..." or "SCAN jobs": the steps that read the jobs table.
            let jobs: Vec<&String> = plan
                .iter()
                .filter(|d| matches!(d.split(' ').nth(1), Some("j" | "jobs")))
                .collect();
            assert!(
                !jobs.is_empty() && jobs.iter().all(|d| d.contains(index)),
                "{sql}\nis planned as {plan:#?}"
            );
        }
        drop(store);
    }
}
