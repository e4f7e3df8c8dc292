//! Operations shared by every entry point (the API now, the web UI too): looking things up as
//! a caller may see them, and deleting by the rules. Handlers stay thin around these.
use chrono::Utc;
use modelyard_domain::rules::{can_manage, can_view};
use modelyard_domain::*;
use modelyard_storage::Deletion;

use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// A model as the caller may see it: a private model of someone else is the same 404 as a
/// model that does not exist.
pub async fn visible_model(
    s: &AppState,
    caller: Option<&Caller>,
    owner: &str,
    name: &str,
) -> ApiResult<Model> {
    match s.store.model(owner, name).await? {
        Some(m) if can_view(caller, m.owner_id, m.visibility) => Ok(m),
        _ => Err(ApiError::NotFound(format!(
            "The model {owner}/{name} does not exist."
        ))),
    }
}

pub async fn visible_version(
    s: &AppState,
    caller: Option<&Caller>,
    owner: &str,
    name: &str,
    id: &str,
) -> ApiResult<(Model, Version)> {
    // One statement for both: the model's visibility and the version's existence as of now.
    match s.store.model_and_version(owner, name, id).await? {
        Some((m, Some(v))) if can_view(caller, m.owner_id, m.visibility) => Ok((m, v)),
        Some((m, None)) if can_view(caller, m.owner_id, m.visibility) => Err(ApiError::NotFound(
            format!("The version {id} of {owner}/{name} does not exist."),
        )),
        _ => Err(ApiError::NotFound(format!(
            "The model {owner}/{name} does not exist."
        ))),
    }
}

/// A model the caller may change: visible (else 404) and owned (else 403).
pub async fn managed_model(
    s: &AppState,
    caller: &Caller,
    owner: &str,
    name: &str,
) -> ApiResult<Model> {
    let m = visible_model(s, Some(caller), owner, name).await?;
    if !can_manage(caller, m.owner_id) {
        return Err(forbidden_model(&m));
    }
    Ok(m)
}

fn forbidden_model(m: &Model) -> ApiError {
    ApiError::Forbidden(format!(
        "Only {} (or a member of that organization) can change {}.",
        m.owner,
        m.full_name()
    ))
}

/// What a DELETE answered: the deletion, or (with `dry_run`) the preview.
pub enum DeleteOutcome {
    Deleted,
    Preview(Vec<Blocker>),
}

fn outcome(d: Deletion, dry_run: bool, what: &str) -> ApiResult<DeleteOutcome> {
    if dry_run {
        Ok(DeleteOutcome::Preview(d.blockers))
    } else if d.deleted {
        Ok(DeleteOutcome::Deleted)
    } else {
        let n = d.blockers.len();
        Err(ApiError::Blocked {
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
async fn audit_forbidden(
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

pub async fn delete_model(
    s: &AppState,
    caller: &Caller,
    owner: &str,
    name: &str,
    dry_run: bool,
) -> ApiResult<DeleteOutcome> {
    let m = visible_model(s, Some(caller), owner, name).await?;
    if !can_manage(caller, m.owner_id) {
        if !dry_run {
            audit_forbidden(s, caller, m.owner_id, "delete_model", m.full_name()).await;
        }
        return Err(forbidden_model(&m));
    }
    let d = s.store.delete_model(m.id, caller, dry_run).await?;
    outcome(d, dry_run, &format!("The model {}", m.full_name()))
}

pub async fn delete_version(
    s: &AppState,
    caller: &Caller,
    owner: &str,
    name: &str,
    id: &str,
    dry_run: bool,
) -> ApiResult<DeleteOutcome> {
    let (m, v) = visible_version(s, Some(caller), owner, name, id).await?;
    if !can_manage(caller, m.owner_id) {
        if !dry_run {
            let target = format!("{}:{}", m.full_name(), v.id);
            audit_forbidden(s, caller, m.owner_id, "delete_version", target).await;
        }
        return Err(forbidden_model(&m));
    }
    let d = s.store.delete_version(m.id, &v.id, caller, dry_run).await?;
    if let Some(artifact) = &d.unreferenced_artifact {
        crate::push::release_artifact(s, artifact).await;
    }
    if let (true, Some(w)) = (d.deleted, &v.weights) {
        crate::push::release_weights(s, w).await;
    }
    outcome(
        d,
        dry_run,
        &format!("The version {} of {}", v.id, m.full_name()),
    )
}

/// Cancels a prediction or training: the record first, then the model server running it. The
/// API and the web both cancel through here.
pub async fn cancel_job(s: &AppState, kind: JobKind, id: &str) -> ApiResult<Job> {
    let j = s.store.cancel_job(kind, id).await?;
    if let Some(r) = &s.runner {
        r.cancel(&j.id);
    }
    Ok(j)
}

/// A deployment the caller may see: only its owners see it at all.
pub async fn owned_deployment(
    s: &AppState,
    caller: &Caller,
    owner: &str,
    name: &str,
) -> ApiResult<Deployment> {
    match s.store.deployment(owner, name).await? {
        Some(d) if can_manage(caller, d.owner_id) => Ok(d),
        _ => Err(ApiError::NotFound(format!(
            "The deployment {owner}/{name} does not exist."
        ))),
    }
}

/// The model and version a deployment runs, as the caller may see them *now*: checked at every
/// use, with the same rule as a direct prediction, so a deployment never outlives its model's
/// visibility. An invisible one is the same 404 as a deleted one.
pub async fn deployment_version(
    s: &AppState,
    caller: &Caller,
    d: &Deployment,
) -> ApiResult<(Model, Version)> {
    match s.store.version_by_id(&d.release.version_id).await? {
        Some((m, v)) if can_view(Some(caller), m.owner_id, m.visibility) => Ok((m, v)),
        _ => Err(ApiError::NotFound(format!(
            "The version the deployment {} runs does not exist (it was deleted, or its model is \
             no longer visible to you).",
            d.full_name()
        ))),
    }
}

/// Whether the caller may still see the version a deployment runs.
pub async fn release_visible(s: &AppState, caller: &Caller, d: &Deployment) -> ApiResult<bool> {
    match deployment_version(s, caller, d).await {
        Ok(_) => Ok(true),
        Err(ApiError::NotFound(_)) => Ok(false),
        Err(e) => Err(e),
    }
}

pub async fn delete_deployment(
    s: &AppState,
    caller: &Caller,
    owner: &str,
    name: &str,
    dry_run: bool,
) -> ApiResult<DeleteOutcome> {
    let d = owned_deployment(s, caller, owner, name).await?;
    let idle = chrono::Duration::from_std(s.config.deployment_idle)
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let del = s
        .store
        .delete_deployment(d.id, caller, dry_run, Utc::now(), idle)
        .await?;
    outcome(del, dry_run, &format!("The deployment {}", d.full_name()))
}
