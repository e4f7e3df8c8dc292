//! The audit log: deletions (and refusals) write theirs inside their own transaction.
use async_trait::async_trait;
use modelyard_domain::*;

use super::{ids_or_none, now, SqlStore, Tx};
use crate::rows::{self, placeholders};
use crate::store::AuditStore;
use crate::Result;

/// Written inside the deleting transaction, so a deletion and its record commit together.
pub(super) async fn insert(tx: &mut Tx, e: &NewAuditEvent) -> Result<()> {
    sqlx::query(
        "INSERT INTO audit_events (at, actor_id, actor, owner_id, action, target, outcome, blockers) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(now())
    .bind(e.actor_id)
    .bind(&e.actor)
    .bind(e.owner_id)
    .bind(&e.action)
    .bind(&e.target)
    .bind(&e.outcome)
    .bind(serde_json::to_string(&e.blockers).unwrap_or_else(|_| "[]".into()))
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// The audit record of a deletion decided inside a transaction.
pub(super) fn event(
    caller: &Caller,
    owner_id: i64,
    action: &str,
    target: String,
    blockers: &[Blocker],
) -> NewAuditEvent {
    NewAuditEvent {
        actor_id: Some(caller.account.id),
        actor: caller.account.username.clone(),
        owner_id,
        action: action.into(),
        target,
        outcome: if blockers.is_empty() {
            "deleted"
        } else {
            "refused"
        }
        .into(),
        blockers: blockers.to_vec(),
    }
}

#[async_trait]
impl AuditStore for SqlStore {
    async fn record_audit(&self, e: NewAuditEvent) -> Result<()> {
        let mut tx = self.begin_write().await?;
        insert(&mut tx, &e).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn audit_events(&self, owner_ids: &[i64], page: PageReq) -> Result<Vec<AuditEvent>> {
        let ids = ids_or_none(owner_ids);
        let sql = format!(
            "SELECT id, at, actor, action, target, outcome, blockers FROM audit_events \
             WHERE owner_id IN ({}) AND id < $1 ORDER BY id DESC LIMIT $2",
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
            .map(rows::audit_event)
            .collect()
    }
}
