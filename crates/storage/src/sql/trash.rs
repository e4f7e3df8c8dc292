//! The trash: deleting to it, restoring from it, purging it and listing it (pruning a model's
//! versions is in `prune.rs`). Each change is one write transaction with its audit event; locks are taken model
//! first, then versions, as every deletion takes them, so a purge and a restore of the same
//! item are serialized and exactly one of them finds it in the trash.
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use modelyard_domain::rules::{
    can_manage, purge_blockers, restore_blockers, PurgeFacts, RestoreFacts,
};
use modelyard_domain::*;
use sqlx::any::AnyRow;
use sqlx::Row;

use super::{ids_or_none, models, now, sizes, versions, SqlStore, Tx};
use crate::rows::{self, micros, placeholders, VERSION_SELECT};
use crate::store::{Deletion, Prune, Purge, PurgeBy, Restore, TrashItem, TrashKind, TrashStore};
use crate::Result;

/// The audit actor of the expiry sweep.
const SWEEP: &str = "trash sweep";

/// Trashed models as trash items; `frees` adds what purging each frees (a query per row).
fn model_items(frees: bool, cond: &str) -> String {
    let f = if frees {
        sizes::model_item_frees()
    } else {
        "CAST(0 AS BIGINT)".into()
    };
    format!(
        "SELECT 'model' AS kind, m.id AS model_id, m.owner_id, a.username AS owner, m.name, \
         CAST(NULL AS TEXT) AS version_id, m.trashed_at, m.purge_at, tb.username AS trashed_by, \
         {f} AS frees_bytes FROM models m JOIN accounts a ON a.id = m.owner_id \
         LEFT JOIN accounts tb ON tb.id = m.trashed_by WHERE m.trashed_at IS NOT NULL{cond}"
    )
}

/// Trashed versions as trash items (whether or not their model is in the trash too).
fn version_items(frees: bool, cond: &str) -> String {
    let f = if frees {
        sizes::version_item_frees()
    } else {
        "CAST(0 AS BIGINT)".into()
    };
    format!(
        "SELECT 'version' AS kind, v.model_id, m.owner_id, a.username AS owner, m.name, \
         v.id AS version_id, v.trashed_at, v.purge_at, tb.username AS trashed_by, \
         {f} AS frees_bytes FROM versions v JOIN models m ON m.id = v.model_id \
         JOIN accounts a ON a.id = m.owner_id LEFT JOIN accounts tb ON tb.id = v.trashed_by \
         WHERE v.trashed_at IS NOT NULL{cond}"
    )
}

fn item(r: &AnyRow) -> Result<TrashItem> {
    let kind: String = r.try_get("kind")?;
    Ok(TrashItem {
        kind: rows::known("trash kind", &kind, |k| match k {
            "model" => Some(TrashKind::Model),
            "version" => Some(TrashKind::Version),
            _ => None,
        })?,
        model_id: r.try_get("model_id")?,
        owner_id: r.try_get("owner_id")?,
        owner: r.try_get("owner")?,
        name: r.try_get("name")?,
        version_id: r.try_get("version_id")?,
        trashed_at: rows::time(r.try_get("trashed_at")?),
        purge_at: rows::time(r.try_get("purge_at")?),
        trashed_by: r.try_get("trashed_by")?,
        frees_bytes: r.try_get("frees_bytes")?,
    })
}

/// Writes a trash event (restore, purge) in the transaction that acts.
async fn audit(
    tx: &mut Tx,
    by: Option<&Caller>,
    owner_id: i64,
    action: &str,
    target: String,
    outcome: &str,
    blockers: &[Blocker],
) -> Result<()> {
    let e = NewAuditEvent {
        actor_id: by.map(|c| c.account.id),
        actor: by.map_or(SWEEP.to_string(), |c| c.account.username.clone()),
        owner_id,
        action: action.into(),
        target,
        outcome: outcome.into(),
        blockers: blockers.to_vec(),
    };
    super::audit::insert(tx, &e).await
}

/// Whether `by` may purge an item of `owner_id` that expires at `purge_at`.
fn may_purge(by: PurgeBy<'_>, owner_id: i64, purge_at: i64) -> bool {
    match by {
        PurgeBy::Owner(c) => can_manage(c, owner_id),
        PurgeBy::Sweep { now } => purge_at <= micros(now),
    }
}

fn caller_of(by: PurgeBy<'_>) -> Option<&Caller> {
    match by {
        PurgeBy::Owner(c) => Some(c),
        PurgeBy::Sweep { .. } => None,
    }
}

/// "owner/name" of a model, inside a transaction.
async fn full_name(tx: &mut Tx, owner_id: i64, name: &str) -> Result<String> {
    Ok(format!("{}/{name}", super::username(tx, owner_id).await?))
}

#[async_trait]
impl TrashStore for SqlStore {
    async fn trash_model(
        &self,
        model_id: i64,
        caller: &Caller,
        dry_run: bool,
        purge_at: DateTime<Utc>,
    ) -> Result<Deletion> {
        let (mut tx, lock) = self.begin_deletion(dry_run).await?;
        let d = models::decide(&mut tx, lock, model_id).await?;
        if dry_run {
            return Ok(d.preview());
        }
        let ok = d.blockers.is_empty();
        if ok {
            sqlx::query(
                "UPDATE models SET trashed_at = $1, purge_at = $2, trashed_by = $3 WHERE id = $4",
            )
            .bind(now())
            .bind(micros(purge_at))
            .bind(caller.account.id)
            .bind(model_id)
            .execute(&mut *tx)
            .await?;
        }
        let done = Deletion {
            purge_at: ok.then_some(purge_at),
            frees_bytes: d.frees_bytes,
            ..Default::default()
        };
        super::conclude(
            tx,
            caller,
            d.owner_id,
            "delete_model",
            d.target,
            d.blockers,
            "trashed",
            done,
        )
        .await
    }

    async fn trash_version(
        &self,
        model_id: i64,
        version_id: &str,
        caller: &Caller,
        dry_run: bool,
        purge_at: DateTime<Utc>,
    ) -> Result<Deletion> {
        let (mut tx, lock) = self.begin_deletion(dry_run).await?;
        let d = versions::decide(&mut tx, lock, model_id, version_id, caller, true).await?;
        if dry_run {
            return Ok(d.preview());
        }
        let ok = d.blockers.is_empty();
        if ok {
            let at = now();
            // Only the caller's own predictions can be unfinished here (the rules saw to the
            // rest): a version in the trash runs nothing, and one restored does not resume.
            sqlx::query(
                "UPDATE jobs SET status = 'canceled', completed_at = $1 \
                 WHERE version_id = $2 AND status IN ('starting', 'processing')",
            )
            .bind(at)
            .bind(version_id)
            .execute(&mut *tx)
            .await?;
            shift_run_count(&mut tx, model_id, version_id, -1).await?;
            sqlx::query(
                "UPDATE versions SET trashed_at = $1, purge_at = $2, trashed_by = $3 WHERE id = $4",
            )
            .bind(at)
            .bind(micros(purge_at))
            .bind(caller.account.id)
            .bind(version_id)
            .execute(&mut *tx)
            .await?;
        }
        let done = Deletion {
            purge_at: ok.then_some(purge_at),
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
            "trashed",
            done,
        )
        .await
    }

    async fn trashed_model(&self, owner: &str, name: &str) -> Result<Option<TrashItem>> {
        sqlx::query(&model_items(true, " AND a.username = $1 AND m.name = $2"))
            .bind(owner)
            .bind(name)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(item)
            .transpose()
    }

    async fn trashed_version(
        &self,
        owner: &str,
        name: &str,
        version_id: &str,
    ) -> Result<Option<TrashItem>> {
        sqlx::query(&version_items(
            true,
            " AND a.username = $1 AND m.name = $2 AND v.id = $3",
        ))
        .bind(owner)
        .bind(name)
        .bind(version_id)
        .fetch_optional(&self.pool)
        .await?
        .as_ref()
        .map(item)
        .transpose()
    }

    async fn restore_model(&self, model_id: i64, caller: &Caller) -> Result<Restore<Model>> {
        let mut tx = self.begin_write().await?;
        let Some(m) = sqlx::query(&format!(
            "SELECT owner_id, name FROM models WHERE id = $1 AND trashed_at IS NOT NULL{}",
            self.lock()
        ))
        .bind(model_id)
        .fetch_optional(&mut *tx)
        .await?
        else {
            return Ok(Restore::NotInTrash);
        };
        let owner_id: i64 = m.try_get("owner_id")?;
        if !can_manage(caller, owner_id) {
            return Ok(Restore::NotInTrash);
        }
        let target = full_name(&mut tx, owner_id, &m.try_get::<String, _>("name")?).await?;
        let blockers = restore_blockers(&RestoreFacts {
            item: target.clone(),
            model_in_trash: false,
        });
        if !blockers.is_empty() {
            audit(
                &mut tx,
                Some(caller),
                owner_id,
                "restore_model",
                target,
                "refused",
                &blockers,
            )
            .await?;
            tx.commit().await?;
            return Ok(Restore::Refused(blockers));
        }
        sqlx::query(
            "UPDATE models SET trashed_at = NULL, purge_at = NULL, trashed_by = NULL WHERE id = $1",
        )
        .bind(model_id)
        .execute(&mut *tx)
        .await?;
        audit(
            &mut tx,
            Some(caller),
            owner_id,
            "restore_model",
            target,
            "restored",
            &[],
        )
        .await?;
        tx.commit().await?;
        Ok(Restore::Restored(self.model_by_id(model_id).await?))
    }

    async fn restore_version(
        &self,
        model_id: i64,
        version_id: &str,
        caller: &Caller,
    ) -> Result<Restore<Version>> {
        let mut tx = self.begin_write().await?;
        let lock = self.lock();
        let Some(m) = sqlx::query(&format!(
            "SELECT owner_id, name, trashed_at FROM models WHERE id = $1{lock}"
        ))
        .bind(model_id)
        .fetch_optional(&mut *tx)
        .await?
        else {
            return Ok(Restore::NotInTrash);
        };
        let owner_id: i64 = m.try_get("owner_id")?;
        let in_trash: Option<i64> = sqlx::query_scalar(&format!(
            "SELECT seq FROM versions WHERE model_id = $1 AND id = $2 \
             AND trashed_at IS NOT NULL{lock}"
        ))
        .bind(model_id)
        .bind(version_id)
        .fetch_optional(&mut *tx)
        .await?;
        if in_trash.is_none() || !can_manage(caller, owner_id) {
            return Ok(Restore::NotInTrash);
        }
        let model = full_name(&mut tx, owner_id, &m.try_get::<String, _>("name")?).await?;
        let target = format!("{model}:{version_id}");
        let blockers = restore_blockers(&RestoreFacts {
            item: target.clone(),
            model_in_trash: m.try_get::<Option<i64>, _>("trashed_at")?.is_some(),
        });
        if !blockers.is_empty() {
            audit(
                &mut tx,
                Some(caller),
                owner_id,
                "restore_version",
                target,
                "refused",
                &blockers,
            )
            .await?;
            tx.commit().await?;
            return Ok(Restore::Refused(blockers));
        }
        sqlx::query(
            "UPDATE versions SET trashed_at = NULL, purge_at = NULL, trashed_by = NULL WHERE id = $1",
        )
        .bind(version_id)
        .execute(&mut *tx)
        .await?;
        shift_run_count(&mut tx, model_id, version_id, 1).await?;
        audit(
            &mut tx,
            Some(caller),
            owner_id,
            "restore_version",
            target,
            "restored",
            &[],
        )
        .await?;
        let row = sqlx::query(&format!("{VERSION_SELECT} WHERE v.id = $1"))
            .bind(version_id)
            .fetch_one(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Restore::Restored(rows::version(&row)?))
    }

    async fn purge_model(&self, model_id: i64, by: PurgeBy<'_>) -> Result<Purge> {
        let mut tx = self.begin_write().await?;
        let lock = self.lock();
        let Some(m) = sqlx::query(&format!(
            "SELECT owner_id, name, purge_at FROM models WHERE id = $1 \
             AND trashed_at IS NOT NULL{lock}"
        ))
        .bind(model_id)
        .fetch_optional(&mut *tx)
        .await?
        else {
            return Ok(Purge::NotInTrash);
        };
        let owner_id: i64 = m.try_get("owner_id")?;
        if !may_purge(by, owner_id, m.try_get("purge_at")?) {
            return Ok(Purge::NotInTrash);
        }
        let target = full_name(&mut tx, owner_id, &m.try_get::<String, _>("name")?).await?;
        let derived = derived_elsewhere(
            &mut tx,
            "SELECT b.id FROM versions b WHERE b.model_id = $1",
            model_id,
        )
        .await?;
        let blockers = purge_blockers(&PurgeFacts {
            item: target.clone(),
            derived_versions: derived,
        });
        if !blockers.is_empty() {
            audit(
                &mut tx,
                caller_of(by),
                owner_id,
                "purge_model",
                target,
                "refused",
                &blockers,
            )
            .await?;
            tx.commit().await?;
            return Ok(Purge::Refused(blockers));
        }
        let unreferenced = models::remove_trashed_versions(&mut tx, lock, model_id).await?;
        sqlx::query("DELETE FROM models WHERE id = $1")
            .bind(model_id)
            .execute(&mut *tx)
            .await?;
        audit(
            &mut tx,
            caller_of(by),
            owner_id,
            "purge_model",
            target,
            "purged",
            &[],
        )
        .await?;
        tx.commit().await?;
        Ok(Purge::Purged(unreferenced))
    }

    async fn purge_version(
        &self,
        model_id: i64,
        version_id: &str,
        by: PurgeBy<'_>,
    ) -> Result<Purge> {
        let mut tx = self.begin_write().await?;
        let lock = self.lock();
        let Some(m) = sqlx::query(&format!(
            "SELECT owner_id, name FROM models WHERE id = $1{lock}"
        ))
        .bind(model_id)
        .fetch_optional(&mut *tx)
        .await?
        else {
            return Ok(Purge::NotInTrash);
        };
        let Some(v) = sqlx::query(&format!(
            "SELECT artifact, weights, purge_at, trashed_by FROM versions \
             WHERE model_id = $1 AND id = $2 AND trashed_at IS NOT NULL{lock}"
        ))
        .bind(model_id)
        .bind(version_id)
        .fetch_optional(&mut *tx)
        .await?
        else {
            return Ok(Purge::NotInTrash);
        };
        let owner_id: i64 = m.try_get("owner_id")?;
        if !may_purge(by, owner_id, v.try_get("purge_at")?) {
            return Ok(Purge::NotInTrash);
        }
        let model = full_name(&mut tx, owner_id, &m.try_get::<String, _>("name")?).await?;
        let target = format!("{model}:{version_id}");
        let derived = derived_elsewhere(
            &mut tx,
            "SELECT b.id FROM versions b WHERE b.id = $1",
            version_id.to_string(),
        )
        .await?;
        let blockers = purge_blockers(&PurgeFacts {
            item: target.clone(),
            derived_versions: derived,
        });
        if !blockers.is_empty() {
            audit(
                &mut tx,
                caller_of(by),
                owner_id,
                "purge_version",
                target,
                "refused",
                &blockers,
            )
            .await?;
            tx.commit().await?;
            return Ok(Purge::Refused(blockers));
        }
        let by_account: Option<i64> = v.try_get("trashed_by")?;
        versions::remove_rows(&mut tx, version_id, by_account.unwrap_or(-1)).await?;
        let unreferenced = super::unreferenced(
            &mut tx,
            &[v.try_get::<String, _>("artifact")?],
            &v.try_get::<Option<String>, _>("weights")?
                .into_iter()
                .collect::<Vec<_>>(),
        )
        .await?;
        audit(
            &mut tx,
            caller_of(by),
            owner_id,
            "purge_version",
            target,
            "purged",
            &[],
        )
        .await?;
        tx.commit().await?;
        Ok(Purge::Purged(unreferenced))
    }

    async fn trash(&self, owner_ids: &[i64], page: PageReq) -> Result<Vec<TrashItem>> {
        let ids = ids_or_none(owner_ids);
        let owners = placeholders(3, ids.len());
        let sql = format!(
            "SELECT * FROM ({} UNION ALL {}) t ORDER BY trashed_at DESC, kind LIMIT $2",
            model_items(
                true,
                &format!(" AND m.owner_id IN ({owners}) AND m.trashed_at < $1")
            ),
            version_items(
                true,
                &format!(" AND m.owner_id IN ({owners}) AND v.trashed_at < $1")
            ),
        );
        let mut q = sqlx::query(&sql)
            .bind(page.after.unwrap_or(i64::MAX))
            .bind(page.limit);
        for id in ids {
            q = q.bind(id);
        }
        q.fetch_all(&self.pool).await?.iter().map(item).collect()
    }

    async fn expired_trash(&self, now: DateTime<Utc>, limit: i64) -> Result<Vec<TrashItem>> {
        let sql = format!(
            "SELECT * FROM ({} UNION ALL {}) t ORDER BY purge_at, kind LIMIT $2",
            model_items(false, " AND m.purge_at <= $1"),
            version_items(false, " AND v.purge_at <= $1"),
        );
        sqlx::query(&sql)
            .bind(micros(now))
            .bind(limit)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(item)
            .collect()
    }

    async fn prune_versions(
        &self,
        model_id: i64,
        keep: usize,
        caller: &Caller,
        dry_run: bool,
        purge_at: Option<DateTime<Utc>>,
    ) -> Result<Prune> {
        super::prune::prune(self, model_id, keep, caller, dry_run, purge_at).await
    }
}

/// Adds (`sign` 1) or takes away (-1) the version's predictions from its model's run count,
/// from the counters kept beside them.
async fn shift_run_count(tx: &mut Tx, model_id: i64, version_id: &str, sign: i64) -> Result<()> {
    sqlx::query(
        "UPDATE models SET run_count = run_count + $1 * \
         (SELECT COALESCE(SUM(count), 0) FROM version_runs WHERE version_id = $2) WHERE id = $3",
    )
    .bind(sign)
    .bind(version_id)
    .bind(model_id)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Fine-tuned versions ("owner/name:id") whose base is one of `bases` (a subquery on `$1`) and
/// that are not among them: what a purge of `bases` would leave without its base.
async fn derived_elsewhere<T>(tx: &mut Tx, bases: &str, key: T) -> Result<Vec<String>>
where
    T: for<'q> sqlx::Encode<'q, sqlx::Any> + sqlx::Type<sqlx::Any> + Send,
{
    sqlx::query(&format!(
        "SELECT a.username, m.name, v.id FROM versions v JOIN models m ON m.id = v.model_id \
         JOIN accounts a ON a.id = m.owner_id WHERE v.base_version_id IN ({bases}) \
         AND v.id NOT IN ({bases}) ORDER BY v.seq"
    ))
    .bind(key)
    .fetch_all(&mut **tx)
    .await?
    .iter()
    .map(|r| {
        Ok(format!(
            "{}/{}:{}",
            r.try_get::<String, _>("username")?,
            r.try_get::<String, _>("name")?,
            r.try_get::<String, _>("id")?
        ))
    })
    .collect()
}
