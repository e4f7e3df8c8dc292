//! Domain records as Replicate's wire JSON.
use chrono::{DateTime, SecondsFormat, Utc};
use modelyard_domain::*;
use serde::Serialize;
use serde_json::{json, Value};

use crate::state::AppState;

pub fn time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

pub fn account(a: &Account) -> Value {
    json!({
        "type": a.kind.as_str(),
        "username": a.username,
        "name": a.name,
        "github_url": null,
        "avatar_url": null,
    })
}

/// A version as the API answers it. Written straight from the record: the schema, the bulk
/// of it, is serialized from the shared parsed copy instead of being copied into a `Value`
/// first. (Fields in the order `json!` would give them, so answers read as before.)
#[derive(Serialize)]
pub struct VersionJson<'a> {
    cog_version: &'a str,
    created_at: String,
    id: &'a str,
    openapi_schema: &'a Value,
    /// What it stores, for its model's owners when asked (an extension).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub storage: Option<Value>,
}

pub fn version_json(v: &Version) -> VersionJson<'_> {
    VersionJson {
        cog_version: &v.cog_version,
        created_at: time(v.created_at),
        id: &v.id,
        openapi_schema: &v.openapi_schema,
        storage: None,
    }
}

pub fn version(v: &Version) -> Value {
    serde_json::to_value(version_json(v)).unwrap_or_default()
}

/// A model as the API answers it (as `VersionJson`).
#[derive(Serialize)]
pub struct ModelJson<'a> {
    cover_image_url: Option<&'a str>,
    created_at: String,
    default_example: Option<()>,
    description: Option<&'a str>,
    github_url: Option<&'a str>,
    hardware: &'a str,
    is_official: bool,
    latest_version: Option<VersionJson<'a>>,
    license_url: Option<&'a str>,
    name: &'a str,
    owner: &'a str,
    paper_url: Option<&'a str>,
    run_count: i64,
    /// What it stores, for its owners when asked (an extension).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub storage: Option<Value>,
    url: String,
    visibility: &'static str,
}

pub fn model_json<'a>(s: &AppState, m: &'a Model) -> ModelJson<'a> {
    ModelJson {
        cover_image_url: m.cover_image_url.as_deref(),
        created_at: time(m.created_at),
        default_example: None,
        description: m.description.as_deref(),
        github_url: m.github_url.as_deref(),
        hardware: &m.hardware,
        is_official: false,
        latest_version: m.latest_version.as_ref().map(version_json),
        license_url: m.license_url.as_deref(),
        name: &m.name,
        owner: &m.owner,
        paper_url: m.paper_url.as_deref(),
        run_count: m.run_count,
        storage: None,
        url: s.url(&format!("/{}/{}", m.owner, m.name)),
        visibility: m.visibility.as_str(),
    }
}

pub fn model(s: &AppState, m: &Model) -> Value {
    serde_json::to_value(model_json(s, m)).unwrap_or_default()
}

/// A prediction or training as the API answers it (as `VersionJson`: written straight from
/// the record, fields in the order `json!` gives them).
#[derive(Serialize)]
pub struct JobJson<'a> {
    completed_at: Option<String>,
    created_at: String,
    data_removed: bool,
    deadline: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    deployment: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    destination: Option<&'a str>,
    error: Option<&'a str>,
    pub id: &'a str,
    input: Option<&'a Value>,
    logs: &'a str,
    metrics: &'a Value,
    model: &'a str,
    output: Option<&'a Value>,
    source: &'a str,
    started_at: Option<String>,
    status: &'static str,
    pub urls: JobUrls,
    version: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    webhook: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    webhook_events_filter: Option<&'a [String]>,
}

#[derive(Serialize)]
pub struct JobUrls {
    pub cancel: String,
    pub get: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream: Option<String>,
    pub web: String,
}

pub fn job_json<'a>(s: &AppState, j: &'a Job) -> JobJson<'a> {
    let base = match j.kind {
        JobKind::Prediction => "predictions",
        JobKind::Training => "trainings",
    };
    let kept = !j.data_removed;
    JobJson {
        completed_at: j.completed_at.map(time),
        created_at: time(j.created_at),
        data_removed: j.data_removed,
        deadline: j.deadline.map(time),
        deployment: j.deployment.as_deref(),
        destination: j.destination.as_deref(),
        error: j.error.as_deref(),
        id: &j.id,
        input: kept.then_some(&j.input),
        logs: if kept { &j.logs } else { "" },
        metrics: &j.metrics,
        model: &j.model,
        output: j.output.as_ref().filter(|_| kept),
        source: &j.source,
        started_at: j.started_at.map(time),
        status: j.status.as_str(),
        urls: JobUrls {
            cancel: s.url(&format!("/v1/{base}/{}/cancel", j.id)),
            get: s.url(&format!("/v1/{base}/{}", j.id)),
            stream: (j.kind == JobKind::Prediction).then(|| {
                let key = s.capability("stream", &j.id);
                s.url(&format!("/v1/predictions/{}/stream?key={key}", j.id))
            }),
            web: s.url(&format!("/p/{}", j.id)),
        },
        version: &j.version_id,
        webhook: j.webhook.as_deref(),
        webhook_events_filter: j.webhook.as_ref().map(|_| &j.webhook_events_filter[..]),
    }
}

pub fn job(s: &AppState, j: &Job) -> Value {
    serde_json::to_value(job_json(s, j)).unwrap_or_default()
}

/// `visible`: whether the caller may still see the release's version; when not, its id is
/// not shown (`null`), as if it did not exist.
pub fn deployment(d: &Deployment, created_by: Option<&Account>, visible: bool) -> Value {
    let r = &d.release;
    let by = match created_by {
        Some(a) => account(a),
        None => json!({"type": "user", "username": r.created_by, "name": r.created_by}),
    };
    json!({
        "owner": d.owner,
        "name": d.name,
        "current_release": {
            "number": r.number,
            "model": r.model,
            "version": visible.then_some(&r.version_id),
            "created_at": time(r.created_at),
            "created_by": by,
            "configuration": {
                "hardware": r.hardware,
                "min_instances": r.min_instances,
                "max_instances": r.max_instances,
            },
        },
    })
}

pub fn audit_event(e: &AuditEvent) -> Value {
    json!({
        "id": e.id,
        "at": time(e.at),
        "actor": e.actor,
        "action": e.action,
        "target": e.target,
        "outcome": e.outcome,
        "blockers": e.blockers,
    })
}

/// A page with an absolute `next` link: the clients GET it exactly as given.
pub fn page(s: &AppState, path: &str, results: Vec<Value>, next_cursor: Option<i64>) -> Value {
    let next = next_cursor.map(|c| {
        let sep = if path.contains('?') { '&' } else { '?' };
        s.url(&format!("{path}{sep}cursor={c}"))
    });
    json!({"previous": null, "next": next, "results": results})
}

pub fn trash_item(i: &modelyard_storage::TrashItem) -> Value {
    json!({
        "kind": i.kind.as_str(),
        "owner": i.owner,
        "name": i.name,
        "version_id": i.version_id,
        "trashed_at": time(i.trashed_at),
        "purge_at": time(i.purge_at),
        "frees_bytes": i.frees_bytes,
    })
}

pub fn prune(p: &modelyard_storage::Prune) -> Value {
    use modelyard_storage::KeptReason;
    let kept: Vec<Value> = p
        .kept
        .iter()
        .map(|(id, why)| match why {
            KeptReason::Newest => json!({"id": id, "reason": "newest", "blockers": []}),
            KeptReason::Blocked(b) => json!({"id": id, "reason": "blocked", "blockers": b}),
        })
        .collect();
    json!({"deleted": p.deleted, "kept": kept, "frees_bytes": p.frees_bytes})
}

pub fn storage(s: &modelyard_storage::Storage) -> Value {
    json!({"bytes": s.bytes, "unique_bytes": s.unique_bytes})
}
