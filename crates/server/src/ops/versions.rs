//! Versions: looking one up (by model and id, by the API's `version` spec, the latest), its
//! environment's build log, and deleting one.
use modelyard_domain::rules::{can_manage, can_view};
use modelyard_domain::*;
use modelyard_storage::Prune;

use super::deletion::{audit_forbidden, finish, purge_time, release, DeleteMode, DeleteOutcome};
use super::error::{OpError, OpResult};
use super::models::{forbidden_model, managed_model, visible_model};
use crate::state::AppState;

pub async fn visible_version(
    s: &AppState,
    caller: Option<&Caller>,
    owner: &str,
    name: &str,
    id: &str,
) -> OpResult<ModelVersion> {
    // One statement for both: the model's visibility and the version's existence as of now.
    match s.store.model_and_version(owner, name, id).await? {
        Some((model, Some(version))) if can_view(caller, model.owner_id, model.visibility) => {
            Ok(ModelVersion { model, version })
        }
        Some((m, None)) if can_view(caller, m.owner_id, m.visibility) => Err(OpError::NotFound(
            format!("The version {id} of {owner}/{name} does not exist."),
        )),
        _ => Err(OpError::NotFound(format!(
            "The model {owner}/{name} does not exist."
        ))),
    }
}

/// A model's versions, newest first, as the caller may see them.
pub async fn list_versions(
    s: &AppState,
    caller: Option<&Caller>,
    owner: &str,
    name: &str,
    page: PageReq,
) -> OpResult<Vec<Version>> {
    let model = visible_model(s, caller, owner, name).await?;
    Ok(s.store.versions(model.id, page).await?)
}

/// The model's latest version, to run when none is named.
pub async fn latest_version(
    s: &AppState,
    caller: &Caller,
    owner: &str,
    name: &str,
) -> OpResult<ModelVersion> {
    let model = visible_model(s, Some(caller), owner, name).await?;
    match model.latest_version.clone() {
        Some(version) => Ok(ModelVersion { model, version }),
        None => Err(OpError::NotFound(format!(
            "{owner}/{name} has no versions yet; push one first."
        ))),
    }
}

/// A version by any id visible to the caller, whatever its model.
pub async fn version_by_id(
    s: &AppState,
    caller: &Caller,
    id: &str,
) -> OpResult<Option<ModelVersion>> {
    Ok(match s.store.version_by_id(id).await? {
        Some(mv) if can_view(Some(caller), mv.model.owner_id, mv.model.visibility) => Some(mv),
        _ => None,
    })
}

/// `spec` is "owner/name:id", a bare id, or "owner/name" for the latest version.
pub async fn resolve_version(s: &AppState, caller: &Caller, spec: &str) -> OpResult<ModelVersion> {
    let not_found = || OpError::NotFound(format!("The version {spec} does not exist."));
    if let Some((model, id)) = spec.split_once(':') {
        let (owner, name) = model.split_once('/').ok_or_else(not_found)?;
        return visible_version(s, Some(caller), owner, name, id).await;
    }
    if let Some((owner, name)) = spec.split_once('/') {
        let model = visible_model(s, Some(caller), owner, name).await?;
        let version = model.latest_version.clone().ok_or_else(|| {
            OpError::invalid("version", format!("{owner}/{name} has no versions yet"))
        })?;
        return Ok(ModelVersion { model, version });
    }
    if !ids::is_version_id(spec) {
        return Err(OpError::invalid(
            "version",
            "must be owner/name:id, owner/name, or a 64-character version id",
        ));
    }
    version_by_id(s, caller, spec).await?.ok_or_else(not_found)
}

/// The log of building the version's Python environment, for its owners.
pub async fn build_log(
    s: &AppState,
    caller: &Caller,
    owner: &str,
    name: &str,
    id: &str,
) -> OpResult<String> {
    let m = managed_model(s, caller, owner, name).await?;
    let v = s.store.version(m.id, id).await?.ok_or_else(|| {
        OpError::NotFound(format!(
            "The version {id} of {owner}/{name} does not exist."
        ))
    })?;
    let tree = s.blobs.tree(&v.artifact).await?;
    let yaml = tokio::fs::read_to_string(tree.path().join("cog.yaml"))
        .await
        .map_err(|e| OpError::Internal(format!("cog.yaml of {id}: {e}")))?;
    let cog = cog_yaml::parse(&yaml).map_err(OpError::Internal)?;
    let none = || {
        OpError::NotFound(if cog.python_packages.is_empty() {
            "This version needs no environment of its own (its cog.yaml lists no python_packages)."
                .into()
        } else {
            "The environment has not been built yet: it is built when the version first runs."
                .into()
        })
    };
    if cog.python_packages.is_empty() {
        return Err(none());
    }
    s.runner
        .as_ref()
        .and_then(|r| r.build_log(&cog.python_packages))
        .ok_or_else(none)
}

pub async fn delete_version(
    s: &AppState,
    caller: &Caller,
    owner: &str,
    name: &str,
    id: &str,
    mode: DeleteMode,
) -> OpResult<DeleteOutcome> {
    let dry_run = mode.dry_run;
    let ModelVersion {
        model: m,
        version: v,
    } = match visible_version(s, Some(caller), owner, name, id).await {
        Err(OpError::NotFound(_)) if mode.purge => {
            return super::trash::purge_version(s, caller, owner, name, id, dry_run).await
        }
        mv => mv?,
    };
    if !can_manage(caller, m.owner_id) {
        if !dry_run {
            let target = format!("{}:{}", m.full_name(), v.id);
            audit_forbidden(s, caller, m.owner_id, "delete_version", target).await;
        }
        return Err(forbidden_model(&m));
    }
    // The caller's unfinished predictions of it are canceled with it (others' would block it):
    // the runner stops those it is running too, on whichever node.
    let unfinished: Vec<String> = match (s.follows_jobs(), dry_run) {
        (true, false) => s
            .store
            .model_jobs(m.id, caller.account.id, 1000)
            .await?
            .into_iter()
            .filter(|j| j.version_id == v.id && !j.status.is_terminal())
            .map(|j| j.id)
            .collect(),
        _ => vec![],
    };
    let d = match purge_time(s, mode) {
        Some(at) => {
            s.store
                .trash_version(m.id, &v.id, caller, dry_run, at)
                .await?
        }
        None => s.store.delete_version(m.id, &v.id, caller, dry_run).await?,
    };
    if d.deleted {
        for id in &unfinished {
            s.live.cancel(id);
        }
    }
    release(s, &d.unreferenced).await;
    finish(
        d,
        dry_run,
        &format!("The version {} of {}", v.id, m.full_name()),
    )
}

/// Deletes every version of the model the rules let go except the `keep` newest, one
/// decision per version (to the trash, or for good without one); a dry run changes nothing.
pub async fn prune(
    s: &AppState,
    caller: &Caller,
    owner: &str,
    name: &str,
    keep: usize,
    dry_run: bool,
) -> OpResult<Prune> {
    let m = managed_model(s, caller, owner, name).await?;
    let at = purge_time(s, DeleteMode::default());
    let p = s
        .store
        .prune_versions(m.id, keep, caller, dry_run, at)
        .await?;
    release(s, &p.unreferenced).await;
    Ok(p)
}
