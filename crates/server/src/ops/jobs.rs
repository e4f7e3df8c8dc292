//! Predictions and trainings: one path that checks, records and queues both, and the
//! lookups and cancel every entry point shares.
use chrono::{DateTime, Utc};
use modelyard_domain::rules::{can_manage, can_view};
use modelyard_domain::*;
use modelyard_storage::StoreError;
use serde_json::{Map, Value};

use super::error::{OpError, OpResult};
use super::files::resolve_inputs;
use super::validate;
use crate::state::AppState;

/// The events a webhook can be sent on.
const EVENTS: &[&str] = &["start", "output", "logs", "completed"];

/// What is run.
pub enum JobTarget {
    /// A prediction, through a deployment or not.
    Prediction { deployment_id: Option<i64> },
    /// A training, whose result becomes a version of `destination` (`owner/name`, which the
    /// caller must own).
    Training { destination: Option<String> },
}

/// Where a job was asked for: the record says so (`source`).
#[derive(Clone, Copy)]
pub enum JobSource {
    Api,
    Web,
}

impl JobSource {
    fn as_str(self) -> &'static str {
        match self {
            JobSource::Api => "api",
            JobSource::Web => "web",
        }
    }
}

/// A prediction or training to start, as the API's body (and headers) or the web's form give it.
pub struct JobRequest {
    pub target: JobTarget,
    pub input: Map<String, Value>,
    pub webhook: Option<String>,
    pub webhook_events_filter: Option<Vec<String>>,
    /// When it is canceled if it has not ended (`Cancel-After`).
    pub deadline: Option<DateTime<Utc>>,
    pub source: JobSource,
}

impl JobRequest {
    /// A prediction with this input and nothing else: what the web playground submits.
    pub fn prediction(input: Map<String, Value>, source: JobSource) -> Self {
        JobRequest {
            target: JobTarget::Prediction {
                deployment_id: None,
            },
            input,
            webhook: None,
            webhook_events_filter: None,
            deadline: None,
            source,
        }
    }
}

fn webhook_filter(r: &JobRequest) -> OpResult<Vec<String>> {
    let filter = r.webhook_events_filter.clone().unwrap_or_default();
    if let Some(bad) = filter.iter().find(|e| !EVENTS.contains(&e.as_str())) {
        return Err(OpError::invalid(
            "webhook_events_filter",
            format!("{bad:?} is not one of start, output, logs, completed"),
        ));
    }
    if let Some(w) = &r.webhook {
        let ok = url::Url::parse(w).is_ok_and(|u| matches!(u.scheme(), "http" | "https"));
        if !ok {
            return Err(OpError::invalid("webhook", "must be an http(s) URL"));
        }
    }
    Ok(filter)
}

/// The model a training's result goes to: one the caller owns.
async fn destination(s: &AppState, caller: &Caller, dest: Option<&str>) -> OpResult<Model> {
    let dest = dest
        .ok_or_else(|| OpError::invalid("destination", "is required (owner/name of your model)"))?;
    let (d_owner, d_name) = dest
        .split_once('/')
        .ok_or_else(|| OpError::invalid("destination", "must be owner/name"))?;
    match s.store.model(d_owner, d_name).await? {
        Some(m) if can_manage(caller, m.owner_id) => Ok(m),
        Some(m) if can_view(Some(caller), m.owner_id, m.visibility) => Err(OpError::Forbidden(
            format!("The destination {dest} is not yours: train into a model you own."),
        )),
        _ => Err(OpError::invalid(
            "destination",
            format!("the model {dest} does not exist; create it first"),
        )),
    }
}

/// Checks, records and queues a prediction or a training of `mv`: the one path for the API and
/// the web alike. Nothing is recorded when anything is refused.
pub async fn create_job(
    s: &AppState,
    caller: &Caller,
    mv: &ModelVersion,
    r: JobRequest,
) -> OpResult<Job> {
    let (kind, schema, deployment_id, destination_model_id) = match &r.target {
        JobTarget::Prediction { deployment_id } => (
            JobKind::Prediction,
            validate::Schema::Predict,
            *deployment_id,
            None,
        ),
        JobTarget::Training { destination: d } => {
            let dest = destination(s, caller, d.as_deref()).await?;
            (
                JobKind::Training,
                validate::Schema::Train,
                None,
                Some(dest.id),
            )
        }
    };
    let filter = webhook_filter(&r)?;
    if let Some(w) = &r.webhook {
        crate::webhooks::check_target(s.config.allow_private_webhooks, w)
            .await
            .map_err(|why| OpError::invalid("webhook", why.0))?;
    }
    let mut raw = r.input;
    resolve_inputs(s, caller, &mut raw).await?;
    let input = validate::input(s, &mv.version, schema, Value::Object(raw))?;
    let job = s
        .store
        .create_job(NewJob {
            kind,
            account_id: caller.account.id,
            version_id: mv.version.id.clone(),
            deployment_id,
            destination_model_id,
            input,
            source: r.source.as_str().into(),
            webhook: r.webhook,
            webhook_events_filter: filter,
            deadline: r.deadline,
        })
        .await
        .map_err(|e| match e {
            // The version went while this was checked (its deletion won the race).
            StoreError::NotFound(_) => OpError::NotFound(format!(
                "The version {} of {} was deleted.",
                mv.version.id,
                mv.model.full_name()
            )),
            e => e.into(),
        })?;
    match &s.runner {
        Some(runner) => runner.submit(job.clone()),
        None => s.live.wake_runners(),
    }
    Ok(job)
}

/// The caller's predictions or trainings, newest first.
pub async fn list_jobs(
    s: &AppState,
    caller: &Caller,
    kind: JobKind,
    page: PageReq,
) -> OpResult<Vec<Job>> {
    Ok(s.store.list_jobs(kind, caller.account.id, page).await?)
}

/// A prediction or training of the caller's: anyone else's is the same 404 as none.
pub async fn own_job(s: &AppState, caller: &Caller, kind: JobKind, id: &str) -> OpResult<Job> {
    match s.store.job(kind, id).await? {
        Some(j) if j.account_id == caller.account.id => Ok(j),
        _ => Err(OpError::NotFound(format!(
            "The {} {id} does not exist.",
            kind.as_str()
        ))),
    }
}

/// A job of the caller's of either kind (the web's `/p/{id}` shows both).
pub async fn own_job_of_any_kind(s: &AppState, caller: &Caller, id: &str) -> OpResult<Job> {
    for kind in [JobKind::Prediction, JobKind::Training] {
        if let Some(j) = s.store.job(kind, id).await? {
            if j.account_id == caller.account.id {
                return Ok(j);
            }
        }
    }
    Err(OpError::NotFound(format!(
        "The prediction {id} does not exist."
    )))
}

/// Cancels a prediction or training of the caller's: the record first, then the model server
/// running it, on whichever node runs it.
pub async fn cancel_job(s: &AppState, caller: &Caller, kind: JobKind, id: &str) -> OpResult<Job> {
    let j = own_job(s, caller, kind, id).await?;
    let j = s.store.cancel_job(kind, &j.id).await?;
    s.live.cancel(&j.id);
    Ok(j)
}
