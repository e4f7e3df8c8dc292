//! What every deletion shares. Each one gathers its facts (the target, as the caller may see
//! it, and whether the caller owns it), applies the rules in the store's one transaction
//! (which also records the outcome in the audit log), and ends here: the answer, and the audit
//! of a refusal for lack of ownership, which never reaches the store's transaction.
use chrono::{DateTime, Utc};
use modelyard_blobs::Stored;
use modelyard_domain::*;
use modelyard_storage::{Deletion, Unreferenced};

use super::error::{OpError, OpResult};
use crate::state::AppState;

/// What a deletion answered: done, or (with `dry_run`) the preview.
pub enum DeleteOutcome {
    Deleted,
    /// The blockers, and for models and versions what the deletion frees once purged.
    Preview {
        blockers: Vec<Blocker>,
        frees_bytes: Option<i64>,
    },
}

/// How a model or version is deleted: `dry_run` previews; `purge` deletes for good at once
/// (also what is in the trash already), as does a server keeping no trash.
#[derive(Clone, Copy, Debug, Default)]
pub struct DeleteMode {
    pub dry_run: bool,
    pub purge: bool,
}

impl DeleteMode {
    pub fn preview() -> DeleteMode {
        DeleteMode {
            dry_run: true,
            purge: false,
        }
    }

    pub fn apply() -> DeleteMode {
        DeleteMode::default()
    }
}

/// When what is deleted now leaves the trash for good; `None`: it is deleted at once.
pub(super) fn purge_time(s: &AppState, mode: DeleteMode) -> Option<DateTime<Utc>> {
    if mode.purge || s.config.trash.is_zero() {
        return None;
    }
    let window = chrono::Duration::from_std(s.config.trash).unwrap_or(chrono::Duration::MAX);
    Some(
        Utc::now()
            .checked_add_signed(window)
            .unwrap_or(DateTime::<Utc>::MAX_UTC),
    )
}

/// The outcome of an applied deletion: done, previewed, or blocked with every blocker.
pub(super) fn finish(d: Deletion, dry_run: bool, what: &str) -> OpResult<DeleteOutcome> {
    if dry_run {
        Ok(DeleteOutcome::Preview {
            blockers: d.blockers,
            frees_bytes: Some(d.frees_bytes),
        })
    } else if d.deleted {
        Ok(DeleteOutcome::Deleted)
    } else {
        Err(blocked(format!("{what} cannot be deleted"), d.blockers))
    }
}

/// A refusal with every blocker, in one sentence each.
pub(super) fn blocked(what: String, blockers: Vec<Blocker>) -> OpError {
    let n = blockers.len();
    OpError::Blocked {
        detail: format!(
            "{what}: {n} thing{} block{} it. {}",
            if n == 1 { "" } else { "s" },
            if n == 1 { "s" } else { "" },
            blockers
                .iter()
                .map(|b| b.detail.as_str())
                .collect::<Vec<_>>()
                .join(" ")
        ),
        blockers,
    }
}

/// Removes stored content no version refers to any more. It runs after the deletion committed:
/// a failure leaves files behind, which the operator hears of, not the client.
pub(crate) async fn release(s: &AppState, u: &Unreferenced) {
    let artifacts = u.artifacts.iter().map(|a| Stored::Artifact(a));
    let weights = u.weights.iter().map(|w| Stored::Weights(w));
    for what in artifacts.chain(weights) {
        if let Err(e) = s.blobs.release(what).await {
            tracing::warn!(error = %e, "could not remove stored content no version uses");
        }
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
