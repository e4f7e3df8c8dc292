//! An account's own things: API tokens, organizations' members, the webhook signing secret.
use modelyard_domain::ids::{new_token, token_hash};
use modelyard_domain::*;
use modelyard_storage::MemberRemoval;

use super::error::{InvalidField, OpError, OpResult};
use crate::state::AppState;

/// The longest name a token may have, in characters.
const TOKEN_NAME_MAX: usize = 100;

/// A value refused with a whole sentence, which the page shows as it is.
fn refused(field: &str, sentence: String) -> OpError {
    OpError::Invalid {
        detail: sentence.clone(),
        fields: vec![InvalidField {
            kind: "invalid".into(),
            field: field.into(),
            description: sentence,
        }],
    }
}

/// Makes an API token for the caller; the token itself is returned once and kept nowhere.
pub async fn create_token(s: &AppState, caller: &Caller, name: &str) -> OpResult<String> {
    if name.chars().count() > TOKEN_NAME_MAX {
        return Err(refused(
            "name",
            format!("A token's name has at most {TOKEN_NAME_MAX} characters."),
        ));
    }
    let token = new_token();
    s.store
        .add_named_token(caller.account.id, &token_hash(&token), name)
        .await?;
    Ok(token)
}

/// Revokes one of the caller's tokens, by its hash.
pub async fn revoke_token(s: &AppState, caller: &Caller, hash: &str) -> OpResult<()> {
    let revoked = s.store.revoke_token(caller.account.id, hash).await?;
    // After the revocation, so no request can remember the token again.
    s.forget_callers().await;
    if !revoked {
        return Err(OpError::NotFound("There is no such token.".into()));
    }
    Ok(())
}

/// An organization the caller belongs to (anyone else's is a 404).
pub async fn my_org(s: &AppState, caller: &Caller, org: &str) -> OpResult<Account> {
    match s.store.account(org).await? {
        Some(a) if a.kind == AccountKind::Organization && caller.org_ids.contains(&a.id) => Ok(a),
        _ => Err(OpError::NotFound(format!(
            "There is no organization {org} of yours."
        ))),
    }
}

/// Adds the user `username` to an organization of the caller's; returns the user.
pub async fn add_member(s: &AppState, org: &Account, username: &str) -> OpResult<Account> {
    let user = match s.store.account(username).await? {
        Some(u) if u.kind == AccountKind::User => u,
        _ => {
            return Err(refused(
                "username",
                format!("There is no user named {username:?}."),
            ))
        }
    };
    s.store.add_member(org.id, user.id).await?;
    s.forget_callers().await;
    Ok(user)
}

/// Removes a member from an organization of the caller's, by the rule that an organization
/// keeps a member (checked in the transaction that removes, so two removals at once cannot
/// both pass it). Returns the user removed.
pub async fn remove_member(s: &AppState, org: &Account, username: &str) -> OpResult<Account> {
    let not_found =
        || OpError::NotFound(format!("{username} is not a member of {}.", org.username));
    let user = s.store.account(username).await?.ok_or_else(not_found)?;
    match s.store.remove_member(org.id, user.id).await? {
        MemberRemoval::Removed => {}
        MemberRemoval::NotAMember => return Err(not_found()),
        MemberRemoval::Refused(blockers) => {
            let detail = blockers
                .iter()
                .map(|b| b.detail.as_str())
                .collect::<Vec<_>>()
                .join(" ");
            return Err(OpError::Invalid {
                detail,
                fields: vec![],
            });
        }
    }
    s.forget_callers().await;
    Ok(user)
}

/// The caller's webhook signing secret, made on first use.
pub async fn webhook_secret(s: &AppState, caller: &Caller) -> OpResult<String> {
    Ok(s.store
        .webhook_secret(caller.account.id, &crate::webhooks::new_secret())
        .await?)
}
