//! Domain records as Replicate's wire JSON.
use chrono::{DateTime, SecondsFormat, Utc};
use modelyard_domain::*;
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

pub fn version(v: &Version) -> Value {
    json!({
        "id": v.id,
        "created_at": time(v.created_at),
        "cog_version": v.cog_version,
        "openapi_schema": v.openapi_schema,
    })
}

pub fn model(s: &AppState, m: &Model) -> Value {
    json!({
        "url": s.url(&format!("/{}/{}", m.owner, m.name)),
        "owner": m.owner,
        "name": m.name,
        "description": m.description,
        "visibility": m.visibility.as_str(),
        "hardware": m.hardware,
        "github_url": m.github_url,
        "paper_url": m.paper_url,
        "license_url": m.license_url,
        "cover_image_url": m.cover_image_url,
        "default_example": null,
        "latest_version": m.latest_version.as_ref().map(version),
        "run_count": m.run_count,
        "is_official": false,
        "created_at": time(m.created_at),
    })
}

pub fn job(s: &AppState, j: &Job) -> Value {
    let base = match j.kind {
        JobKind::Prediction => "predictions",
        JobKind::Training => "trainings",
    };
    let mut v = json!({
        "id": j.id,
        "model": j.model,
        "version": j.version_id,
        "input": if j.data_removed { Value::Null } else { j.input.clone() },
        "output": if j.data_removed { None } else { j.output.clone() },
        "logs": if j.data_removed { "" } else { j.logs.as_str() },
        "error": j.error,
        "status": j.status.as_str(),
        "source": j.source,
        "data_removed": j.data_removed,
        "created_at": time(j.created_at),
        "started_at": j.started_at.map(time),
        "completed_at": j.completed_at.map(time),
        "deadline": j.deadline.map(time),
        "metrics": j.metrics,
        "urls": {
            "get": s.url(&format!("/v1/{base}/{}", j.id)),
            "cancel": s.url(&format!("/v1/{base}/{}/cancel", j.id)),
            "web": s.url(&format!("/p/{}", j.id)),
        },
    });
    if j.kind == JobKind::Prediction {
        let key = s.capability("stream", &j.id);
        v["urls"]["stream"] = json!(s.url(&format!("/v1/predictions/{}/stream?key={key}", j.id)));
    }
    if let Some(d) = &j.deployment {
        v["deployment"] = json!(d);
    }
    if let Some(d) = &j.destination {
        v["destination"] = json!(d);
    }
    if let Some(w) = &j.webhook {
        v["webhook"] = json!(w);
        v["webhook_events_filter"] = json!(j.webhook_events_filter);
    }
    v
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
