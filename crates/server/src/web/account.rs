//! The account page: API tokens (create, revoke) and organizations with their members.
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect};
use modelyard_domain::ids::{new_token, token_hash};
use modelyard_domain::*;
use modelyard_storage::MemberRemoval;
use serde_json::json;

use super::error::{WebError, WebResult};
use super::render;
use super::session::{self, Posted, Viewer};
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
    let ctx = json!({
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

pub async fn create_token(State(s): State<AppState>, posted: Posted) -> WebResult {
    let caller = posted.caller();
    let name = posted.form.text("name").unwrap_or_else(|| "web".into());
    if name.chars().count() > 100 {
        return account_page(
            &s,
            &posted.viewer,
            StatusCode::UNPROCESSABLE_ENTITY,
            None,
            Some("A token's name has at most 100 characters.".into()),
        )
        .await;
    }
    let token = new_token();
    s.store
        .add_named_token(caller.account.id, &token_hash(&token), &name)
        .await?;
    // Shown once, on this very response: it is not kept anywhere.
    account_page(&s, &posted.viewer, StatusCode::OK, Some(token), None).await
}

pub async fn revoke_token(State(s): State<AppState>, posted: Posted) -> WebResult {
    let caller = posted.caller();
    let hash = posted.form.text("hash").unwrap_or_default();
    let revoked = s.store.revoke_token(caller.account.id, &hash).await?;
    // After the revocation, so no request can remember the token again.
    s.forget_callers();
    if !revoked {
        return Err(WebError::not_found());
    }
    Ok(session::flash(
        &s,
        Redirect::to("/account").into_response(),
        "Revoked the token: it no longer works.",
    ))
}

/// An organization the signed-in user belongs to (anyone else's is a 404).
async fn my_org(s: &AppState, caller: &Caller, org: &str) -> WebResult<Account> {
    match s.store.account(org).await? {
        Some(a) if a.kind == AccountKind::Organization && caller.org_ids.contains(&a.id) => Ok(a),
        _ => Err(WebError::not_found()),
    }
}

pub async fn add_member(
    State(s): State<AppState>,
    Path(org): Path<String>,
    posted: Posted,
) -> WebResult {
    let org = my_org(&s, posted.caller(), &org).await?;
    let username = posted.form.text("username").unwrap_or_default();
    let user = match s.store.account(&username).await? {
        Some(u) if u.kind == AccountKind::User => u,
        _ => {
            let msg = format!("There is no user named {username:?}.");
            return account_page(
                &s,
                &posted.viewer,
                StatusCode::UNPROCESSABLE_ENTITY,
                None,
                Some(msg),
            )
            .await;
        }
    };
    s.store.add_member(org.id, user.id).await?;
    s.forget_callers();
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
    let org = my_org(&s, posted.caller(), &org).await?;
    let username = posted.form.text("username").unwrap_or_default();
    let Some(user) = s.store.account(&username).await? else {
        return Err(WebError::not_found());
    };
    // The rule (an organization keeps a member) is checked in the transaction that removes, so
    // two removals at once cannot both pass it.
    match s.store.remove_member(org.id, user.id).await? {
        MemberRemoval::Removed => {}
        MemberRemoval::NotAMember => return Err(WebError::not_found()),
        MemberRemoval::Refused(blockers) => {
            let msg = blockers
                .iter()
                .map(|b| b.detail.as_str())
                .collect::<Vec<_>>()
                .join(" ");
            return account_page(
                &s,
                &posted.viewer,
                StatusCode::UNPROCESSABLE_ENTITY,
                None,
                Some(msg),
            )
            .await;
        }
    }
    s.forget_callers();
    let msg = format!("Removed {} from {}.", user.username, org.username);
    Ok(session::flash(
        &s,
        Redirect::to("/account").into_response(),
        &msg,
    ))
}
