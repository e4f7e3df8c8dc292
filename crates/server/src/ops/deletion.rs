//! What every deletion shares. Each one gathers its facts (the target, as the caller may see
//! it, and whether the caller owns it), applies the rules in the store's one transaction
//! (which also records the outcome in the audit log), and ends here: the answer, and the audit
//! of a refusal for lack of ownership, which never reaches the store's transaction.
use modelyard_domain::*;
use modelyard_storage::Deletion;

use super::error::{OpError, OpResult};
use crate::state::AppState;

/// What a deletion answered: done, or (with `dry_run`) the preview.
pub enum DeleteOutcome {
    Deleted,
    Preview(Vec<Blocker>),
}

/// The outcome of an applied deletion: done, previewed, or blocked with every blocker.
pub(super) fn finish(d: Deletion, dry_run: bool, what: &str) -> OpResult<DeleteOutcome> {
    if dry_run {
        Ok(DeleteOutcome::Preview(d.blockers))
    } else if d.deleted {
        Ok(DeleteOutcome::Deleted)
    } else {
        let n = d.blockers.len();
        Err(OpError::Blocked {
            detail: format!(
                "{what} cannot be deleted: {n} thing{} block{} it. {}",
                if n == 1 { "" } else { "s" },
                if n == 1 { "s" } else { "" },
                d.blockers
                    .iter()
                    .map(|b| b.detail.as_str())
                    .collect::<Vec<_>>()
                    .join(" ")
            ),
            blockers: d.blockers,
        })
    }
}

/// Records a refusal for lack of ownership: the owner learns who tried.
pub(super) async fn audit_forbidden(
    s: &AppState,
    caller: &Caller,
    owner_id: i64,
    action: &str,
    target: String,
) {
    let e = NewAuditEvent {
        actor_id: Some(caller.account.id),
        actor: caller.account.username.clone(),
        owner_id,
        action: action.into(),
        target,
        outcome: "forbidden".into(),
        blockers: vec![],
    };
    if let Err(err) = s.store.record_audit(e).await {
        tracing::error!(error = %err, "could not record a refused deletion in the audit log");
    }
}
