//! The account's Trash page (restore, purge, with the time each item has left) and pruning a
//! model's versions from its Versions tab. The same operations as the API (`ops::trash`).
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect};
use chrono::{DateTime, Utc};
use modelyard_domain::*;
use modelyard_storage::{KeptReason, Prune, TrashItem};
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::{WebError, WebResult};
use super::models::blocker_view;
use super::render::{self, bytes};
use super::session::{self, Posted, Viewer};
use crate::ops::trash as op;
use crate::ops::OpError;
use crate::state::AppState;
use crate::views::time;

/// "6 days 23 hours left", "12 minutes left": what the page shows beside each item.
pub fn time_left(until: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let secs = (until - now).num_seconds();
    let plural = |n: i64, unit: &str| format!("{n} {unit}{}", if n == 1 { "" } else { "s" });
    match secs {
        i64::MIN..=59 => "purged at the next sweep".into(),
        60..=3599 => format!("{} left", plural(secs / 60, "minute")),
        3600..=86399 => format!("{} left", plural(secs / 3600, "hour")),
        _ => {
            let (d, h) = (secs / 86400, secs % 86400 / 3600);
            if h == 0 {
                format!("{} left", plural(d, "day"))
            } else {
                format!("{} {} left", plural(d, "day"), plural(h, "hour"))
            }
        }
    }
}

fn item_view(i: &TrashItem, now: DateTime<Utc>) -> Value {
    json!({
        "kind": i.kind.as_str(),
        "owner": i.owner,
        "name": i.name,
        "version": i.version_id,
        "target": i.target(),
        "trashed_at": time(i.trashed_at),
        "trashed_by": i.trashed_by,
        "purge_at": time(i.purge_at),
        "left": time_left(i.purge_at, now),
        "frees": bytes(i.frees_bytes),
    })
}

async fn trash_page(
    s: &AppState,
    viewer: &Viewer,
    status: StatusCode,
    error: Option<String>,
) -> WebResult {
    let caller = viewer.required()?;
    let page = PageReq {
        after: None,
        limit: 200,
    };
    let items = op::trash(s, caller, None, page).await?;
    let storage = op::account_storage(s, caller, None).await?;
    let now = Utc::now();
    let ctx = json!({
        "items": items.iter().map(|i| item_view(i, now)).collect::<Vec<_>>(),
        "trash_bytes": bytes(storage.trash_bytes),
        "trash_days": s.config.trash.as_secs() / 86400,
        "error": error,
    });
    Ok(render::page_status(
        s,
        viewer,
        status,
        "trash.html",
        "Trash",
        ctx,
    ))
}

pub async fn page(State(s): State<AppState>, viewer: Viewer) -> WebResult {
    trash_page(&s, &viewer, StatusCode::OK, None).await
}

/// The item a Trash page form names.
struct Named {
    owner: String,
    name: String,
    version: Option<String>,
}

impl Named {
    fn of(posted: &Posted) -> Named {
        Named {
            owner: posted.form.text("owner").unwrap_or_default(),
            name: posted.form.text("name").unwrap_or_default(),
            version: posted.form.text("version"),
        }
    }
}

/// A refusal the Trash page explains in place; anything else is the error page.
async fn refused(s: &AppState, viewer: &Viewer, e: OpError) -> WebResult {
    match e {
        OpError::Blocked { detail, .. } => {
            trash_page(s, viewer, StatusCode::CONFLICT, Some(detail)).await
        }
        OpError::NotFound(m) => trash_page(s, viewer, StatusCode::NOT_FOUND, Some(m)).await,
        e => Err(e.into()),
    }
}

pub async fn restore(State(s): State<AppState>, posted: Posted) -> WebResult {
    let n = Named::of(&posted);
    let caller = posted.caller();
    let done = match &n.version {
        Some(id) => op::restore_version(&s, caller, &n.owner, &n.name, id)
            .await
            .map(|v| {
                let to = format!("/{}/{}/versions/{}", n.owner, n.name, v.id);
                let what = format!(
                    "the version {} of {}/{}",
                    &v.id[..12.min(v.id.len())],
                    n.owner,
                    n.name
                );
                (to, what)
            }),
        None => op::restore_model(&s, caller, &n.owner, &n.name)
            .await
            .map(|m| {
                (
                    format!("/{}", m.full_name()),
                    format!("the model {}", m.full_name()),
                )
            }),
    };
    match done {
        Ok((to, what)) => {
            let msg = format!("Restored {what}.");
            Ok(session::flash(&s, Redirect::to(&to).into_response(), &msg))
        }
        Err(e) => refused(&s, &posted.viewer, e).await,
    }
}

pub async fn purge(State(s): State<AppState>, posted: Posted) -> WebResult {
    let n = Named::of(&posted);
    let caller = posted.caller();
    let (done, what) = match &n.version {
        Some(id) => (
            op::purge_version(&s, caller, &n.owner, &n.name, id, false).await,
            format!("{}/{}:{}", n.owner, n.name, &id[..12.min(id.len())]),
        ),
        None => (
            op::purge_model(&s, caller, &n.owner, &n.name, false).await,
            format!("{}/{}", n.owner, n.name),
        ),
    };
    match done {
        Ok(_) => {
            let msg = format!("Purged {what}: it is gone for good.");
            Ok(session::flash(
                &s,
                Redirect::to("/account/trash").into_response(),
                &msg,
            ))
        }
        Err(e) => refused(&s, &posted.viewer, e).await,
    }
}

#[derive(Deserialize)]
pub struct KeepQuery {
    keep: Option<String>,
}

/// How many versions to keep, as the form gave it.
fn parse_keep(raw: Option<&str>) -> Result<usize, String> {
    match raw.map(str::trim) {
        Some(k) if !k.is_empty() => k
            .parse::<u32>()
            .map(|k| k as usize)
            .map_err(|_| format!("Keep must be a whole number of versions, not {k:?}.")),
        _ => Err("Say how many of the newest versions to keep.".into()),
    }
}

/// The Versions tab's prune preview for `?keep=N` (a dry run: nothing changes), for owners.
pub async fn preview(
    s: &AppState,
    viewer: &Viewer,
    m: &Model,
    q: &Query<KeepQuery>,
) -> WebResult<Value> {
    let Some(caller) = viewer.caller().filter(|c| rules::can_manage(c, m.owner_id)) else {
        return Ok(Value::Null);
    };
    let Some(raw) = q.keep.as_deref() else {
        return Ok(json!({"keep": 3}));
    };
    match parse_keep(Some(raw)) {
        Ok(keep) => {
            let p = crate::ops::versions::prune(s, caller, &m.owner, &m.name, keep, true).await?;
            Ok(prune_view(&p, m, keep))
        }
        Err(e) => Ok(json!({"keep": raw, "error": e})),
    }
}

fn prune_view(p: &Prune, m: &Model, keep: usize) -> Value {
    let mut rows: Vec<Value> = p
        .kept
        .iter()
        .map(|(id, why)| match why {
            KeptReason::Newest => {
                json!({"id": id, "decision": "kept", "reason": "one of the newest"})
            }
            KeptReason::Blocked(b) => json!({"id": id, "decision": "kept", "reason": "blocked",
                "blockers": b.iter().map(|b| blocker_view(b, m)).collect::<Vec<_>>()}),
        })
        .collect();
    rows.extend(
        p.deleted
            .iter()
            .map(|id| json!({"id": id, "decision": "deleted", "reason": "nothing blocks it"})),
    );
    json!({
        "keep": keep,
        "rows": rows,
        "deleted": p.deleted.len(),
        "frees": bytes(p.frees_bytes),
    })
}

pub async fn prune(
    State(s): State<AppState>,
    Path((owner, name)): Path<(String, String)>,
    posted: Posted,
) -> WebResult {
    let keep = parse_keep(posted.form.get("keep"))
        .map_err(|e| WebError::Page(StatusCode::UNPROCESSABLE_ENTITY, e))?;
    let p = crate::ops::versions::prune(&s, posted.caller(), &owner, &name, keep, false).await?;
    let to_trash = if s.config.trash.is_zero() {
        ""
    } else {
        " (to the trash)"
    };
    let msg = format!(
        "Deleted {} version{}{to_trash}, kept {}; {} freed once purged.",
        p.deleted.len(),
        if p.deleted.len() == 1 { "" } else { "s" },
        p.kept.len(),
        bytes(p.frees_bytes),
    );
    Ok(session::flash(
        &s,
        Redirect::to(&format!("/{owner}/{name}/versions")).into_response(),
        &msg,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_left_reads_naturally() {
        let now = Utc::now();
        let at = |s: i64| now + chrono::Duration::seconds(s);
        assert_eq!(time_left(at(7 * 86400), now), "7 days left");
        assert_eq!(
            time_left(at(6 * 86400 + 23 * 3600 + 5), now),
            "6 days 23 hours left"
        );
        assert_eq!(time_left(at(3600), now), "1 hour left");
        assert_eq!(time_left(at(150), now), "2 minutes left");
        assert_eq!(time_left(at(-5), now), "purged at the next sweep");
    }

    #[test]
    fn keep_must_be_a_count() {
        assert_eq!(parse_keep(Some(" 2 ")), Ok(2));
        assert!(parse_keep(Some("-1")).is_err());
        assert!(parse_keep(Some("two")).is_err());
        assert!(parse_keep(None).is_err());
    }
}
