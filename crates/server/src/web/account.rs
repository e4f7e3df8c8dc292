//! The account page: API tokens (create, revoke) and organizations with their members.
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect};
use serde_json::json;

use super::error::{WebError, WebResult};
use super::render;
use super::session::{self, Posted, Viewer};
use crate::ops::accounts::{self as op, my_org};
use crate::ops::OpError;
use crate::state::AppState;
use crate::views::time;

async fn account_page(
    s: &AppState,
    viewer: &Viewer,
    status: StatusCode,
    new_token: Option<String>,
    error: Option<String>,
) -> WebResult {
    let caller = viewer.required()?;
    let tokens = s.store.tokens(caller.account.id).await?;
    let orgs = s.store.accounts_by_ids(&caller.org_ids).await?;
    let mut org_views = Vec::new();
    for o in &orgs {
        let members = s.store.members(o.id).await?;
        org_views.push(json!({
            "username": o.username,
            "name": o.name,
            "members": members.iter().map(|m| json!({"username": m.username, "name": m.name})).collect::<Vec<_>>(),
        }));
    }
    let storage = crate::ops::trash::account_storage(s, caller, None).await?;
    let trashed = crate::ops::trash::trash(
        s,
        caller,
        None,
        modelyard_domain::PageReq {
            after: None,
            limit: 200,
        },
    )
    .await?;
    let ctx = json!({
        "storage": {
            "bytes": render::bytes(storage.bytes),
            "unique": render::bytes(storage.unique_bytes),
            "trash": render::bytes(storage.trash_bytes),
            "trash_items": trashed.len(),
        },
        "account": {"username": caller.account.username, "name": caller.account.name, "kind": caller.account.kind.as_str()},
        "tokens": tokens.iter().map(|t| json!({
            "hash": t.hash,
            "fingerprint": &t.hash[..8.min(t.hash.len())],
            "name": t.name,
            "created_at": time(t.created_at),
        })).collect::<Vec<_>>(),
        "orgs": org_views,
        "new_token": new_token,
        "error": error,
    });
    Ok(render::page_status(
        s,
        viewer,
        status,
        "account.html",
        "Account",
        ctx,
    ))
}

pub async fn page(State(s): State<AppState>, viewer: Viewer) -> WebResult {
    account_page(&s, &viewer, StatusCode::OK, None, None).await
}

/// A refusal the account page explains (422); a missing thing is the page's 404.
async fn refused(s: &AppState, viewer: &Viewer, e: OpError) -> WebResult {
    match e {
        OpError::Invalid { detail, .. } => {
            account_page(
                s,
                viewer,
                StatusCode::UNPROCESSABLE_ENTITY,
                None,
                Some(detail),
            )
            .await
        }
        OpError::NotFound(_) => Err(WebError::not_found()),
        e => Err(e.into()),
    }
}

pub async fn create_token(State(s): State<AppState>, posted: Posted) -> WebResult {
    let name = posted.form.text("name").unwrap_or_else(|| "web".into());
    match op::create_token(&s, posted.caller(), &name).await {
        // Shown once, on this very response: it is not kept anywhere.
        Ok(token) => account_page(&s, &posted.viewer, StatusCode::OK, Some(token), None).await,
        Err(e) => refused(&s, &posted.viewer, e).await,
    }
}

pub async fn revoke_token(State(s): State<AppState>, posted: Posted) -> WebResult {
    let hash = posted.form.text("hash").unwrap_or_default();
    if let Err(e) = op::revoke_token(&s, posted.caller(), &hash).await {
        return refused(&s, &posted.viewer, e).await;
    }
    Ok(session::flash(
        &s,
        Redirect::to("/account").into_response(),
        "Revoked the token: it no longer works.",
    ))
}

pub async fn add_member(
    State(s): State<AppState>,
    Path(org): Path<String>,
    posted: Posted,
) -> WebResult {
    let added = match my_org(&s, posted.caller(), &org).await {
        Ok(org) => op::add_member(&s, &org, &posted.form.text("username").unwrap_or_default())
            .await
            .map(|user| (org, user)),
        Err(e) => Err(e),
    };
    let (org, user) = match added {
        Ok(done) => done,
        Err(e) => return refused(&s, &posted.viewer, e).await,
    };
    let msg = format!("{} is a member of {}.", user.username, org.username);
    Ok(session::flash(
        &s,
        Redirect::to("/account").into_response(),
        &msg,
    ))
}

pub async fn remove_member(
    State(s): State<AppState>,
    Path(org): Path<String>,
    posted: Posted,
) -> WebResult {
    let removed = match my_org(&s, posted.caller(), &org).await {
        Ok(org) => op::remove_member(&s, &org, &posted.form.text("username").unwrap_or_default())
            .await
            .map(|user| (org, user)),
        Err(e) => Err(e),
    };
    let (org, user) = match removed {
        Ok(done) => done,
        Err(e) => return refused(&s, &posted.viewer, e).await,
    };
    let msg = format!("Removed {} from {}.", user.username, org.username);
    Ok(session::flash(
        &s,
        Redirect::to("/account").into_response(),
        &msg,
    ))
}
