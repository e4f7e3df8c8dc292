//! Deployments: looking one up (only its owners see it), the version it runs as the caller may
//! see it now, creating one, new releases, and deleting one by the rules.
use chrono::Utc;
use modelyard_domain::names::validate_name;
use modelyard_domain::rules::can_manage;
use modelyard_domain::*;

use super::deletion::{finish, DeleteOutcome};
use super::error::{OpError, OpResult};
use super::models::known_hardware;
use super::versions::{version_by_id, visible_version};
use crate::state::AppState;

/// Upper bound on instances: this server runs everything on one machine.
pub const MAX_INSTANCES: i64 = 64;

/// A new deployment: its name, the model (`owner/name`) and version it runs, and how.
pub struct DeploymentRequest {
    pub name: String,
    pub model: String,
    pub version: String,
    pub hardware: String,
    pub min_instances: i64,
    pub max_instances: i64,
}

/// A new release of a deployment: what changes, the rest stays as it is.
pub struct ReleaseChange {
    pub version: Option<String>,
    pub hardware: Option<String>,
    pub min_instances: Option<i64>,
    pub max_instances: Option<i64>,
}

impl ReleaseChange {
    /// 0 and 0: the way to disable a deployment, and so to delete it.
    pub fn disable() -> Self {
        ReleaseChange {
            version: None,
            hardware: None,
            min_instances: Some(0),
            max_instances: Some(0),
        }
    }
}

/// The deployments of the caller and of the organizations they belong to.
pub async fn list_deployments(
    s: &AppState,
    caller: &Caller,
    page: PageReq,
) -> OpResult<Vec<Deployment>> {
    let mut owners = caller.org_ids.clone();
    owners.push(caller.account.id);
    Ok(s.store.list_deployments(&owners, page).await?)
}

/// A deployment the caller may see: only its owners see it at all.
pub async fn owned_deployment(
    s: &AppState,
    caller: &Caller,
    owner: &str,
    name: &str,
) -> OpResult<Deployment> {
    match s.store.deployment(owner, name).await? {
        Some(d) if can_manage(caller, d.owner_id) => Ok(d),
        _ => Err(OpError::NotFound(format!(
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
) -> OpResult<ModelVersion> {
    version_by_id(s, caller, &d.release.version_id)
        .await?
        .ok_or_else(|| {
            OpError::NotFound(format!(
                "The version the deployment {} runs does not exist (it was deleted, or its \
                 model is no longer visible to you).",
                d.full_name()
            ))
        })
}

/// Whether the caller may still see the version a deployment runs.
pub async fn release_visible(s: &AppState, caller: &Caller, d: &Deployment) -> OpResult<bool> {
    match deployment_version(s, caller, d).await {
        Ok(_) => Ok(true),
        Err(OpError::NotFound(_)) => Ok(false),
        Err(e) => Err(e),
    }
}

/// The version to run a prediction of the deployment on: refused while it is disabled.
pub async fn version_to_run(
    s: &AppState,
    caller: &Caller,
    d: &Deployment,
) -> OpResult<ModelVersion> {
    if d.release.max_instances == 0 {
        return Err(OpError::Conflict(format!(
            "The deployment {} is disabled (max_instances is 0); raise max_instances to run it.",
            d.full_name()
        )));
    }
    deployment_version(s, caller, d).await
}

fn check_release(r: &NewRelease) -> OpResult<()> {
    if !known_hardware(&r.hardware) {
        return Err(OpError::invalid(
            "hardware",
            "is not available here; GET /v1/hardware lists what is",
        ));
    }
    if !(0..=MAX_INSTANCES).contains(&r.min_instances) {
        return Err(OpError::invalid(
            "min_instances",
            format!("must be between 0 and {MAX_INSTANCES}"),
        ));
    }
    if !(0..=MAX_INSTANCES).contains(&r.max_instances) {
        return Err(OpError::invalid(
            "max_instances",
            format!("must be between 0 and {MAX_INSTANCES}"),
        ));
    }
    if r.min_instances > r.max_instances {
        return Err(OpError::invalid(
            "min_instances",
            "must not exceed max_instances",
        ));
    }
    Ok(())
}

pub async fn create_deployment(
    s: &AppState,
    caller: &Caller,
    r: DeploymentRequest,
) -> OpResult<Deployment> {
    validate_name("deployment", &r.name).map_err(|e| OpError::invalid("name", e))?;
    let (owner, name) = r
        .model
        .split_once('/')
        .ok_or_else(|| OpError::invalid("model", "must be owner/name"))?;
    let mv = visible_version(s, Some(caller), owner, name, &r.version).await?;
    let release = NewRelease {
        version_id: mv.version.id,
        hardware: r.hardware,
        min_instances: r.min_instances,
        max_instances: r.max_instances,
    };
    check_release(&release)?;
    Ok(s.store
        .create_deployment(
            caller.account.id,
            &r.name,
            release,
            &caller.account.username,
        )
        .await?)
}

/// Makes a new release of a deployment.
pub async fn update_deployment(
    s: &AppState,
    caller: &Caller,
    d: &Deployment,
    c: ReleaseChange,
) -> OpResult<Deployment> {
    if c.version.is_none()
        && c.hardware.is_none()
        && c.min_instances.is_none()
        && c.max_instances.is_none()
    {
        return Err(OpError::invalid(
            "body",
            "nothing to change: give version, hardware, min_instances or max_instances",
        ));
    }
    // Disabling is always allowed (it is the way to delete a deployment); any other release
    // uses the version, so the caller must still be able to see it.
    let disabling = c.version.is_none() && c.min_instances == Some(0) && c.max_instances == Some(0);
    if !disabling {
        deployment_version(s, caller, d).await?;
    }
    let version_id = match c.version {
        Some(v) => {
            let (m_owner, m_name) = d.release.model.split_once('/').unwrap_or_default();
            visible_version(s, Some(caller), m_owner, m_name, &v)
                .await?
                .version
                .id
        }
        None => d.release.version_id.clone(),
    };
    let release = NewRelease {
        version_id,
        hardware: c.hardware.unwrap_or(d.release.hardware.clone()),
        min_instances: c.min_instances.unwrap_or(d.release.min_instances),
        max_instances: c.max_instances.unwrap_or(d.release.max_instances),
    };
    check_release(&release)?;
    let disabled = release.min_instances == 0 && release.max_instances == 0;
    let d = s
        .store
        .update_deployment(d.id, release, &caller.account.username)
        .await?;
    if disabled {
        // A disabled deployment runs nothing: its queued work is canceled, not left waiting.
        let n = s.store.cancel_queued_for_deployment(d.id).await?;
        if n > 0 {
            tracing::info!(deployment = %d.full_name(), canceled = n, "disabled; queued predictions canceled");
        }
    }
    Ok(d)
}

pub async fn delete_deployment(
    s: &AppState,
    caller: &Caller,
    owner: &str,
    name: &str,
    dry_run: bool,
) -> OpResult<DeleteOutcome> {
    let d = owned_deployment(s, caller, owner, name).await?;
    let idle = chrono::Duration::from_std(s.config.deployment_idle).map_err(OpError::internal)?;
    let del = s
        .store
        .delete_deployment(d.id, caller, dry_run, Utc::now(), idle)
        .await?;
    finish(del, dry_run, &format!("The deployment {}", d.full_name()))
}
