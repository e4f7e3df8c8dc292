//! The trash: restoring a model or version its owner deleted, purging it at once, the listing
//! with what each item frees, an account's storage, and the sweep
//! that purges what the trash kept past its time. The store applies the rules and audits each
//! change in its own transaction; files are released here, after it committed.
use std::time::Duration;

use chrono::Utc;
use modelyard_domain::rules::can_manage;
use modelyard_domain::*;
use modelyard_storage::{AccountStorage, Purge, PurgeBy, Restore, Storage, TrashItem, TrashKind};

use super::deletion::{blocked, release, DeleteOutcome};
use super::error::{OpError, OpResult};
use crate::state::AppState;

/// The sweep purges at most this many items per transaction batch, so a large backlog never
/// holds the database for long.
const SWEEP_BATCH: i64 = 200;

fn not_in_trash(target: &str) -> OpError {
    OpError::NotFound(format!("{target} is not in your trash."))
}

/// The model in a trash the caller acts for; anyone else's is the same 404 as none.
async fn owned_trashed_model(
    s: &AppState,
    caller: &Caller,
    owner: &str,
    name: &str,
) -> OpResult<TrashItem> {
    s.store
        .trashed_model(owner, name)
        .await?
        .filter(|i| can_manage(caller, i.owner_id))
        .ok_or_else(|| not_in_trash(&format!("The model {owner}/{name}")))
}

async fn owned_trashed_version(
    s: &AppState,
    caller: &Caller,
    owner: &str,
    name: &str,
    id: &str,
) -> OpResult<TrashItem> {
    s.store
        .trashed_version(owner, name, id)
        .await?
        .filter(|i| can_manage(caller, i.owner_id))
        .ok_or_else(|| not_in_trash(&format!("The version {id} of {owner}/{name}")))
}

/// `POST /v1/models/{owner}/{name}/restore`: the model back, with its name; its versions in
/// the trash stay there.
pub async fn restore_model(
    s: &AppState,
    caller: &Caller,
    owner: &str,
    name: &str,
) -> OpResult<Model> {
    let item = owned_trashed_model(s, caller, owner, name).await?;
    match s.store.restore_model(item.model_id, caller).await? {
        Restore::Restored(m) => Ok(m),
        Restore::NotInTrash => Err(not_in_trash(&format!("The model {}", item.target()))),
        Restore::Refused(b) => Err(blocked(
            format!("The model {} cannot be restored", item.target()),
            b,
        )),
    }
}

/// A version back with everything it had (its owner's predictions too), under the same id.
pub async fn restore_version(
    s: &AppState,
    caller: &Caller,
    owner: &str,
    name: &str,
    id: &str,
) -> OpResult<Version> {
    let item = owned_trashed_version(s, caller, owner, name, id).await?;
    match s.store.restore_version(item.model_id, id, caller).await? {
        Restore::Restored(v) => Ok(v),
        Restore::NotInTrash => Err(not_in_trash(&format!("The version {}", item.target()))),
        Restore::Refused(b) => Err(blocked(
            format!("The version {} cannot be restored", item.target()),
            b,
        )),
    }
}

/// Purges a model already in the trash (`DELETE ...?purge=true`, the Trash page).
pub async fn purge_model(
    s: &AppState,
    caller: &Caller,
    owner: &str,
    name: &str,
    dry_run: bool,
) -> OpResult<DeleteOutcome> {
    let item = owned_trashed_model(s, caller, owner, name).await?;
    let purged = purge(s, &item, PurgeBy::Owner(caller), dry_run).await?;
    purged.ok_or_else(|| not_in_trash(&format!("The model {owner}/{name}")))
}

/// Purges a version already in the trash (`DELETE ...?purge=true`, the Trash page).
pub async fn purge_version(
    s: &AppState,
    caller: &Caller,
    owner: &str,
    name: &str,
    id: &str,
    dry_run: bool,
) -> OpResult<DeleteOutcome> {
    let item = owned_trashed_version(s, caller, owner, name, id).await?;
    let purged = purge(s, &item, PurgeBy::Owner(caller), dry_run).await?;
    purged.ok_or_else(|| not_in_trash(&format!("The version {id} of {owner}/{name}")))
}

/// Purges one item and releases its files; `None` when it left the trash meanwhile (restored,
/// purged by someone else, or, for the sweep, not expired any more).
async fn purge(
    s: &AppState,
    item: &TrashItem,
    by: PurgeBy<'_>,
    dry_run: bool,
) -> OpResult<Option<DeleteOutcome>> {
    if dry_run {
        return Ok(Some(DeleteOutcome::Preview {
            blockers: vec![],
            frees_bytes: Some(item.frees_bytes),
        }));
    }
    let purged = match (item.kind, &item.version_id) {
        (TrashKind::Version, Some(id)) => s.store.purge_version(item.model_id, id, by).await?,
        _ => s.store.purge_model(item.model_id, by).await?,
    };
    match purged {
        Purge::Purged(u) => {
            release(s, &u).await;
            Ok(Some(DeleteOutcome::Deleted))
        }
        Purge::NotInTrash => Ok(None),
        Purge::Refused(b) => Err(blocked(format!("{} cannot be purged", item.target()), b)),
    }
}

/// The trashes of the accounts the caller acts for (or only `owner`'s), most recently deleted
/// first.
pub async fn trash(
    s: &AppState,
    caller: &Caller,
    owner: Option<&str>,
    page: PageReq,
) -> OpResult<Vec<TrashItem>> {
    let owners = match owner {
        None => acting_for(caller),
        Some(o) => vec![account_managed(s, caller, o).await?],
    };
    Ok(s.store.trash(&owners, page).await?)
}

fn acting_for(caller: &Caller) -> Vec<i64> {
    let mut owners = caller.org_ids.clone();
    owners.push(caller.account.id);
    owners
}

/// An account the caller acts for, by name: its id.
async fn account_managed(s: &AppState, caller: &Caller, name: &str) -> OpResult<i64> {
    let a =
        s.store.account(name).await?.ok_or_else(|| {
            OpError::invalid("owner", format!("there is no account named {name:?}"))
        })?;
    if !can_manage(caller, a.id) {
        return Err(OpError::Forbidden(format!(
            "Only {name} (or a member of that organization) can see its trash and storage."
        )));
    }
    Ok(a.id)
}

/// The caller's stored bytes (or an organization's it belongs to), and its trash's.
pub async fn account_storage(
    s: &AppState,
    caller: &Caller,
    owner: Option<&str>,
) -> OpResult<AccountStorage> {
    let id = match owner {
        Some(o) => account_managed(s, caller, o).await?,
        None => caller.account.id,
    };
    Ok(s.store.account_storage(id).await?)
}

/// A model's stored bytes, for its owners (others see none).
pub async fn model_storage(
    s: &AppState,
    caller: Option<&Caller>,
    m: &Model,
) -> OpResult<Option<Storage>> {
    match caller {
        Some(c) if can_manage(c, m.owner_id) => Ok(Some(s.store.model_storage(m.id).await?)),
        _ => Ok(None),
    }
}

/// A version's stored bytes, for its model's owners.
pub async fn version_storage(
    s: &AppState,
    caller: Option<&Caller>,
    m: &Model,
    v: &Version,
) -> OpResult<Option<Storage>> {
    match caller {
        Some(c) if can_manage(c, m.owner_id) => Ok(Some(s.store.version_storage(&v.id).await?)),
        _ => Ok(None),
    }
}

/// Purges, every `every`, what the trash kept past its time, in batches; each item's files are
/// released after its own transaction committed.
pub fn start_sweep(s: AppState, every: Duration) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if let Err(e) = sweep(&s).await {
                tracing::warn!(error = ?e, "the trash sweep failed; it runs again shortly");
            }
        }
    });
}

/// Purges everything expired now; returns how many items it purged.
pub async fn sweep(s: &AppState) -> OpResult<usize> {
    let mut purged = 0;
    loop {
        let now = Utc::now();
        let items = s.store.expired_trash(now, SWEEP_BATCH).await?;
        let mut progressed = false;
        for item in &items {
            match purge(s, item, PurgeBy::Sweep { now }, false).await {
                Ok(Some(_)) => {
                    purged += 1;
                    progressed = true;
                }
                // Restored, or gone with its model, meanwhile.
                Ok(None) => progressed = true,
                // A fine-tune in the trash still needs it: it waits for that one.
                Err(OpError::Blocked { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        if (items.len() as i64) < SWEEP_BATCH || !progressed {
            return Ok(purged);
        }
    }
}

/// Records, in the background, the sizes of artifacts stored before sizes were recorded, so
/// what a deletion frees counts them too.
pub fn backfill_sizes(s: AppState) {
    tokio::spawn(async move {
        loop {
            let missing = match s.store.artifacts_without_sizes(100).await {
                Ok(m) => m,
                Err(e) => {
                    return tracing::warn!(error = %e, "could not list artifacts without sizes")
                }
            };
            if missing.is_empty() {
                return;
            }
            let mut recorded = 0;
            for a in &missing {
                // Under the lock, like a push: a release cannot forget them in between.
                let held = match s.blobs.lock().await {
                    Ok(held) => held,
                    Err(e) => {
                        tracing::warn!(error = %e, "could not take the content lock to record sizes");
                        continue;
                    }
                };
                let sizes = match s.blobs.scan_tree_blobs(a).await {
                    Ok(sizes) if !sizes.is_empty() => sizes,
                    Ok(_) => continue,
                    Err(e) => {
                        tracing::warn!(error = %e, artifact = %a, "could not measure a stored project");
                        continue;
                    }
                };
                match s.store.record_artifact(a, &sizes).await {
                    Ok(()) => recorded += 1,
                    Err(e) => {
                        tracing::warn!(error = %e, artifact = %a, "could not record a stored project's size")
                    }
                }
                drop(held);
            }
            if recorded == 0 {
                return;
            }
        }
    });
}
