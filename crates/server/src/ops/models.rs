//! Models: looking one up as the caller may see it, creating, changing and deleting one.
use modelyard_domain::names::{validate_link, validate_name};
use modelyard_domain::rules::{can_manage, can_view};
use modelyard_domain::*;

use super::deletion::{audit_forbidden, finish, purge_time, release, DeleteMode, DeleteOutcome};
use super::error::{OpError, OpResult};
use crate::state::AppState;

/// Whether a model or deployment may ask for this hardware (`GET /v1/hardware` lists them).
pub fn known_hardware(sku: &str) -> bool {
    modelyard_domain::hardware::find(sku).is_some()
}

/// A model as the caller may see it: a private model of someone else is the same 404 as a
/// model that does not exist.
pub async fn visible_model(
    s: &AppState,
    caller: Option<&Caller>,
    owner: &str,
    name: &str,
) -> OpResult<Model> {
    match s.store.model(owner, name).await? {
        Some(m) if can_view(caller, m.owner_id, m.visibility) => Ok(m),
        _ => Err(OpError::NotFound(format!(
            "The model {owner}/{name} does not exist."
        ))),
    }
}

/// The models of the caller and of the organizations they belong to, newest first.
pub async fn owned_models(s: &AppState, caller: &Caller, limit: i64) -> OpResult<Vec<Model>> {
    let mut owners = caller.org_ids.clone();
    owners.push(caller.account.id);
    Ok(s.store.models_owned_by(&owners, limit).await?)
}

/// A model the caller may change: visible (else 404) and owned (else 403).
pub async fn managed_model(
    s: &AppState,
    caller: &Caller,
    owner: &str,
    name: &str,
) -> OpResult<Model> {
    let m = visible_model(s, Some(caller), owner, name).await?;
    if !can_manage(caller, m.owner_id) {
        return Err(forbidden_model(&m));
    }
    Ok(m)
}

pub(super) fn forbidden_model(m: &Model) -> OpError {
    OpError::Forbidden(format!(
        "Only {} (or a member of that organization) can change {}.",
        m.owner,
        m.full_name()
    ))
}

/// A new model, as the API's `POST /v1/models` asks for it.
pub struct ModelRequest {
    pub owner: String,
    pub name: String,
    pub visibility: Visibility,
    pub hardware: String,
    pub description: Option<String>,
    pub github_url: Option<String>,
    pub paper_url: Option<String>,
    pub license_url: Option<String>,
    pub cover_image_url: Option<String>,
}

/// A link field: absent, or an http(s) address.
pub fn check_link(field: &str, link: &Option<String>) -> OpResult<()> {
    match link {
        Some(l) => validate_link(field, l).map_err(|e| OpError::invalid(field, e)),
        None => Ok(()),
    }
}

pub async fn create_model(s: &AppState, caller: &Caller, r: ModelRequest) -> OpResult<Model> {
    validate_name("model", &r.name).map_err(|e| OpError::invalid("name", e))?;
    check_link("github_url", &r.github_url)?;
    check_link("paper_url", &r.paper_url)?;
    check_link("license_url", &r.license_url)?;
    check_link("cover_image_url", &r.cover_image_url)?;
    if !known_hardware(&r.hardware) {
        return Err(OpError::invalid(
            "hardware",
            format!(
                "{:?} is not available here; GET /v1/hardware lists what is",
                r.hardware
            ),
        ));
    }
    let owner = s.store.account(&r.owner).await?.ok_or_else(|| {
        OpError::invalid("owner", format!("there is no account named {:?}", r.owner))
    })?;
    if !can_manage(caller, owner.id) {
        return Err(OpError::Forbidden(format!(
            "You can create models only for yourself or an organization you belong to, not for {}.",
            owner.username
        )));
    }
    let created = s
        .store
        .create_model_checked(NewModel {
            owner_id: owner.id,
            name: r.name,
            description: r.description,
            visibility: Some(r.visibility),
            hardware: r.hardware,
            github_url: r.github_url,
            paper_url: r.paper_url,
            license_url: r.license_url,
            cover_image_url: r.cover_image_url,
        })
        .await?;
    created.map_err(|t| {
        OpError::Conflict(format!(
            "The model {o}/{n} is in the trash until {at}. Restore it (POST /v1/models/{o}/{n}/restore, \
             or `modelyard trash restore {o}/{n}`), or purge it (DELETE /v1/models/{o}/{n}?purge=true, \
             or `modelyard trash purge {o}/{n}`) to use its name for a new model.",
            o = t.owner,
            n = t.name,
            at = t.purge_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        ))
    })
}

/// Changes a model the caller manages (the API's PATCH, the web's Settings).
pub async fn update_model(
    s: &AppState,
    caller: &Caller,
    m: &Model,
    patch: ModelPatch,
) -> OpResult<Model> {
    if !can_manage(caller, m.owner_id) {
        return Err(forbidden_model(m));
    }
    Ok(s.store.update_model(m.id, patch).await?)
}

/// Deletes a model: to its owner's trash, or for good (`purge`, or a server keeping no trash);
/// `purge` also takes one already in the trash.
pub async fn delete_model(
    s: &AppState,
    caller: &Caller,
    owner: &str,
    name: &str,
    mode: DeleteMode,
) -> OpResult<DeleteOutcome> {
    let dry_run = mode.dry_run;
    let m = match visible_model(s, Some(caller), owner, name).await {
        Err(OpError::NotFound(_)) if mode.purge => {
            return super::trash::purge_model(s, caller, owner, name, dry_run).await
        }
        m => m?,
    };
    if !can_manage(caller, m.owner_id) {
        if !dry_run {
            audit_forbidden(s, caller, m.owner_id, "delete_model", m.full_name()).await;
        }
        return Err(forbidden_model(&m));
    }
    let d = match purge_time(s, mode) {
        Some(at) => s.store.trash_model(m.id, caller, dry_run, at).await?,
        None => s.store.delete_model(m.id, caller, dry_run).await?,
    };
    release(s, &d.unreferenced).await;
    finish(d, dry_run, &format!("The model {}", m.full_name()))
}
