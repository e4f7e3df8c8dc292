//! The workers of a cluster and the deployments' warm slots they hold.
use std::collections::HashSet;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use modelyard_domain::worker::{Offer, Worker};
use sqlx::any::AnyRow;
use sqlx::Row;

use super::SqlStore;
use crate::rows::{json, micros, placeholders, time};
use crate::store::{WarmSlot, WorkerStore};
use crate::Result;

const WORKER_SELECT: &str =
    "SELECT id, hardware, gpus, max_servers, servers, started_at, heartbeat_at FROM workers";

fn worker(r: &AnyRow) -> Result<Worker> {
    let gpus: i64 = r.try_get("gpus")?;
    let hardware: Vec<String> = json(&r.try_get::<String, _>("hardware")?)?;
    Ok(Worker {
        id: r.try_get("id")?,
        offer: Offer::new(hardware, gpus.max(0) as usize),
        gpus,
        max_servers: r.try_get("max_servers")?,
        servers: r.try_get("servers")?,
        started_at: time(r.try_get("started_at")?),
        heartbeat_at: time(r.try_get("heartbeat_at")?),
    })
}

#[async_trait]
impl WorkerStore for SqlStore {
    async fn register_worker(&self, w: &Worker) -> Result<()> {
        let hardware = serde_json::to_string(&w.offer.hardware).unwrap_or_else(|_| "[]".into());
        sqlx::query(
            "INSERT INTO workers (id, hardware, gpus, max_servers, servers, started_at, heartbeat_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (id) DO UPDATE SET \
             hardware = excluded.hardware, gpus = excluded.gpus, \
             max_servers = excluded.max_servers, heartbeat_at = excluded.heartbeat_at",
        )
        .bind(&w.id)
        .bind(hardware)
        .bind(w.gpus)
        .bind(w.max_servers)
        .bind(w.servers)
        .bind(micros(w.started_at))
        .bind(micros(w.heartbeat_at))
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    async fn heartbeat(
        &self,
        id: &str,
        servers: i64,
        at: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<bool> {
        let known = sqlx::query("UPDATE workers SET servers = $1, heartbeat_at = $2 WHERE id = $3")
            .bind(servers)
            .bind(micros(at))
            .bind(id)
            .execute(&self.writer)
            .await?
            .rows_affected()
            == 1;
        sqlx::query("UPDATE warm_slots SET lease_until = $1 WHERE worker_id = $2")
            .bind(micros(until))
            .bind(id)
            .execute(&self.writer)
            .await?;
        Ok(known)
    }

    async fn forget_worker(&self, id: &str) -> Result<()> {
        let mut tx = self.begin_write().await?;
        for sql in [
            "DELETE FROM warm_slots WHERE worker_id = $1",
            "DELETE FROM workers WHERE id = $1",
        ] {
            sqlx::query(sql).bind(id).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn live_workers(&self, since: DateTime<Utc>) -> Result<Vec<Worker>> {
        sqlx::query(&format!(
            "{WORKER_SELECT} WHERE heartbeat_at >= $1 ORDER BY id"
        ))
        .bind(micros(since))
        .fetch_all(&mut *self.reader().await?)
        .await?
        .iter()
        .map(worker)
        .collect()
    }

    async fn forget_stale_workers(&self, before: DateTime<Utc>) -> Result<u64> {
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "DELETE FROM warm_slots WHERE worker_id IN \
             (SELECT id FROM workers WHERE heartbeat_at < $1)",
        )
        .bind(micros(before))
        .execute(&mut *tx)
        .await?;
        let gone = sqlx::query("DELETE FROM workers WHERE heartbeat_at < $1")
            .bind(micros(before))
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        Ok(gone)
    }

    async fn hold_warm_slots(
        &self,
        worker_id: &str,
        offer: &Offer,
        room: i64,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<Vec<WarmSlot>> {
        let mut tx = self.begin_write().await?;
        // Deployments that want warm servers, with what their release needs.
        let wanted = sqlx::query(
            "SELECT d.id, r.min_instances, r.hardware, v.gpu FROM deployments d \
             JOIN deployment_releases r ON r.deployment_id = d.id AND r.number = d.release_number \
             JOIN versions v ON v.id = r.version_id AND v.trashed_at IS NULL \
             WHERE r.min_instances > 0 ORDER BY d.id",
        )
        .fetch_all(&mut *tx)
        .await?;
        let mut mine: Vec<(i64, i64)> = Vec::new();
        for r in &wanted {
            let hardware: String = r.try_get("hardware")?;
            if offer.takes(&hardware, r.try_get::<i64, _>("gpu")? != 0) {
                mine.push((r.try_get("id")?, r.try_get("min_instances")?));
            }
        }
        // Let go of what this worker may no longer serve, and of slots past a lowered minimum.
        let ids: Vec<i64> = mine.iter().map(|(d, _)| *d).collect();
        let keep = if ids.is_empty() {
            String::new()
        } else {
            format!(" AND deployment_id NOT IN ({})", placeholders(2, ids.len()))
        };
        let sql = format!("DELETE FROM warm_slots WHERE worker_id = $1{keep}");
        let mut q = sqlx::query(&sql).bind(worker_id);
        for d in &ids {
            q = q.bind(d);
        }
        q.execute(&mut *tx).await?;
        for (d, min) in &mine {
            sqlx::query("DELETE FROM warm_slots WHERE deployment_id = $1 AND slot >= $2")
                .bind(d)
                .bind(min)
                .execute(&mut *tx)
                .await?;
        }
        let mut held: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM warm_slots WHERE worker_id = $1")
                .bind(worker_id)
                .fetch_one(&mut *tx)
                .await?;
        for (d, min) in &mine {
            if held >= room {
                break;
            }
            let taken: HashSet<i64> = sqlx::query_scalar(
                "SELECT slot FROM warm_slots WHERE deployment_id = $1 AND lease_until >= $2",
            )
            .bind(d)
            .bind(micros(now))
            .fetch_all(&mut *tx)
            .await?
            .into_iter()
            .collect();
            let Some(free) = (0..*min).find(|s| !taken.contains(s)) else {
                continue;
            };
            // Another worker may take the same slot at this moment (PostgreSQL): the conflict
            // clause lets exactly one of them have it.
            let took = sqlx::query(
                "INSERT INTO warm_slots (deployment_id, slot, worker_id, lease_until) \
                 VALUES ($1, $2, $3, $4) ON CONFLICT (deployment_id, slot) DO UPDATE SET \
                 worker_id = excluded.worker_id, lease_until = excluded.lease_until \
                 WHERE warm_slots.lease_until < $5",
            )
            .bind(d)
            .bind(free)
            .bind(worker_id)
            .bind(micros(until))
            .bind(micros(now))
            .execute(&mut *tx)
            .await?
            .rows_affected();
            held += took as i64;
        }
        let slots = sqlx::query(
            "SELECT w.deployment_id, w.slot, r.version_id FROM warm_slots w \
             JOIN deployments d ON d.id = w.deployment_id \
             JOIN deployment_releases r ON r.deployment_id = d.id AND r.number = d.release_number \
             WHERE w.worker_id = $1 ORDER BY w.deployment_id, w.slot",
        )
        .bind(worker_id)
        .fetch_all(&mut *tx)
        .await?
        .iter()
        .map(|r| {
            Ok(WarmSlot {
                deployment_id: r.try_get("deployment_id")?,
                slot: r.try_get("slot")?,
                version_id: r.try_get("version_id")?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
        tx.commit().await?;
        Ok(slots)
    }
}
