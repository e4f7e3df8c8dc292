//! Signing in and out.
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use modelyard_domain::AccountKind;
use modelyard_storage::PasswordRecord;
use serde::Deserialize;
use serde_json::json;

use super::error::{WebError, WebResult};
use super::form::Form;
use super::password::{dummy_hash, verify_password};
use super::render;
use super::session::{self, cookie, ClientAddr, Posted, Viewer, LOGIN_COOKIE, SESSION_COOKIE};
use crate::state::AppState;
use crate::throttle;

#[derive(Deserialize)]
pub struct Next {
    next: Option<String>,
}

/// The longest `next` kept.
const MAX_NEXT: usize = 2048;

/// Where to go after signing in: a path on this site of a plain, allow-listed shape, or the
/// dashboard. Browsers drop tabs and newlines from URLs and read `\` as `/`, so `/\t/host`
/// would become `//host`, another origin: only printable ASCII from a short list of characters
/// passes, and never two slashes (or a slash and a backslash) at the start.
fn safe_next(next: Option<&str>) -> String {
    let ok = |n: &str| {
        n.len() <= MAX_NEXT
            && n.starts_with('/')
            && !n.starts_with("//")
            && n.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"/-._~?=&%+,:@!".contains(&b))
    };
    match next {
        Some(n) if ok(n) => n.to_string(),
        _ => "/".into(),
    }
}

fn login_form(
    s: &AppState,
    viewer: &Viewer,
    status: StatusCode,
    next: &str,
    username: &str,
    error: Option<&str>,
) -> Response {
    // Signing in is a form that changes something too: a cookie and a hidden field must agree.
    let token = session::random_token();
    let ctx = json!({"next": next, "username": username, "error": error, "login_token": token});
    let mut resp = render::page_status(s, viewer, status, "login.html", "Sign in", ctx);
    session::set_cookie(s, &mut resp, LOGIN_COOKIE, &token, 3600);
    resp
}

pub async fn login_page(
    State(s): State<AppState>,
    viewer: Viewer,
    Query(q): Query<Next>,
) -> Response {
    let next = safe_next(q.next.as_deref());
    if viewer.session.is_some() {
        return Redirect::to(&next).into_response();
    }
    login_form(&s, &viewer, StatusCode::OK, &next, "", None)
}

pub async fn login(
    State(s): State<AppState>,
    viewer: Viewer,
    ClientAddr(addr): ClientAddr,
    headers: HeaderMap,
    body: Bytes,
) -> WebResult {
    let form = Form::parse(&body);
    let next = safe_next(form.get("next"));
    let expected = cookie(&headers, LOGIN_COOKIE).unwrap_or_default();
    if expected.is_empty()
        || !form
            .get("login_token")
            .is_some_and(|t| session::same(t, &expected))
    {
        return Err(WebError::forbidden(
            "The sign-in form had expired or did not come from this site. Reload it and try again.",
        ));
    }
    let username = form.text("username").unwrap_or_default();
    let password = form.get("password").unwrap_or_default().to_string();
    if let Some(wait) = s.sign_in.wait(&username, addr) {
        let secs = throttle::seconds(wait);
        let mut resp = login_form(
            &s,
            &viewer,
            StatusCode::TOO_MANY_REQUESTS,
            &next,
            &username,
            Some(&format!(
                "Too many failed sign-ins for this account or from this address. Try again in \
                 {secs} s."
            )),
        );
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        return Ok(resp);
    }
    let found = s.store.password_hash(&username).await?;
    let (account, hash) = match found {
        Some(PasswordRecord {
            account: a,
            hash: Some(h),
        }) if a.kind == AccountKind::User => (Some(a), h),
        _ => (None, dummy_hash().to_string()),
    };
    let ok = tokio::task::spawn_blocking(move || verify_password(&password, &hash))
        .await
        .map_err(WebError::internal)?;
    let Some(account) = account.filter(|_| ok) else {
        s.sign_in.failed(&username, addr);
        tracing::info!(username = %username, "a sign-in was refused");
        return Ok(login_form(
            &s,
            &viewer,
            StatusCode::UNAUTHORIZED,
            &next,
            &username,
            Some("That username and password do not match an account with a password."),
        ));
    };
    s.sign_in.succeeded(&username);
    // A new session on every sign-in: an old cookie planted beforehand is worth nothing.
    if let Some(old) = &viewer.session {
        s.store.delete_session(&old.hash).await?;
    }
    let token = session::start(&s, account.id).await?;
    let mut resp = Redirect::to(&next).into_response();
    session::set_cookie(
        &s,
        &mut resp,
        SESSION_COOKIE,
        &token,
        session::SESSION_DAYS * 86400,
    );
    session::set_cookie(&s, &mut resp, LOGIN_COOKIE, "", 0);
    Ok(session::flash(
        &s,
        resp,
        &format!("Signed in as {}.", account.username),
    ))
}

pub async fn logout(State(s): State<AppState>, posted: Posted) -> WebResult {
    if let Some(sess) = &posted.viewer.session {
        s.store.delete_session(&sess.hash).await?;
    }
    let mut resp = Redirect::to("/").into_response();
    session::set_cookie(&s, &mut resp, SESSION_COOKIE, "", 0);
    Ok(session::flash(&s, resp, "Signed out."))
}

#[cfg(test)]
mod tests {
    use super::safe_next;

    #[test]
    fn next_is_a_plain_path_on_this_site_or_the_dashboard() {
        for good in ["/", "/alice/hello", "/p/abc?x=1&y=%20", "/deployments/a/b"] {
            assert_eq!(safe_next(Some(good)), good);
        }
        for bad in [
            "//evil.example/x",
            "/\t/evil.example/x",
            "/\\evil.example",
            "\\/evil.example",
            "/\n/evil.example",
            "/\r\nSet-Cookie: x=1",
            "https://evil.example/",
            "javascript:alert(1)",
            "evil.example",
            "/ /evil.example",
            "/\u{0b}/evil.example",
            "/ünï",
            "",
        ] {
            assert_eq!(safe_next(Some(bad)), "/", "{bad:?}");
        }
        assert_eq!(safe_next(Some(&format!("/{}", "a".repeat(3000)))), "/");
        assert_eq!(safe_next(None), "/");
    }
}
