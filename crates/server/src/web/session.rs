//! Sessions: a random cookie whose SHA-256 is stored, the CSRF token derived from it, flash
//! messages, and the extractors pages and forms use.
use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::{header, request::Parts, HeaderMap, HeaderValue};
use axum::response::Response;
use chrono::{Duration, Utc};
use modelyard_domain::Caller;
use rand::RngCore;
use sha2::{Digest, Sha256};

use super::error::WebError;
use super::form::Form;
use crate::state::AppState;

pub const SESSION_COOKIE: &str = "modelyard_session";
pub const FLASH_COOKIE: &str = "modelyard_flash";
pub const LOGIN_COOKIE: &str = "modelyard_login";
/// How long a sign-in lasts.
pub const SESSION_DAYS: i64 = 14;

pub fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// What the database keeps of a session cookie.
pub fn session_hash(token: &str) -> String {
    hex::encode(Sha256::digest(
        format!("modelyard-session\0{token}").as_bytes(),
    ))
}

/// The CSRF token of a session: derived from the cookie, which other sites cannot read, and
/// different from what the database keeps.
pub fn csrf_token(token: &str) -> String {
    hex::encode(Sha256::digest(
        format!("modelyard-csrf\0{token}").as_bytes(),
    ))
}

/// Compares without stopping at the first difference.
pub fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

fn secure(s: &AppState) -> &'static str {
    if s.public_url.starts_with("https://") {
        "; Secure"
    } else {
        ""
    }
}

/// `Set-Cookie` for an HttpOnly, SameSite=Lax cookie (Secure when the server is reached by https).
pub fn set_cookie(s: &AppState, resp: &mut Response, name: &str, value: &str, max_age: i64) {
    let c = format!(
        "{name}={value}; Path=/; HttpOnly; SameSite=Lax; Max-Age={max_age}{}",
        secure(s)
    );
    if let Ok(v) = HeaderValue::from_str(&c) {
        resp.headers_mut().append(header::SET_COOKIE, v);
    }
}

pub fn clear_flash(s: &AppState, resp: &mut Response) {
    set_cookie(s, resp, FLASH_COOKIE, "", 0);
}

/// A message for the next page, after a redirect.
pub fn flash(s: &AppState, mut resp: Response, message: &str) -> Response {
    let v: String = url::form_urlencoded::byte_serialize(message.as_bytes()).collect();
    set_cookie(s, &mut resp, FLASH_COOKIE, &v, 60);
    resp
}

pub async fn start(s: &AppState, account_id: i64) -> Result<String, WebError> {
    let token = random_token();
    let expires = Utc::now() + Duration::days(SESSION_DAYS);
    s.store
        .create_session(&session_hash(&token), account_id, expires)
        .await?;
    Ok(token)
}

pub struct Session {
    pub caller: Caller,
    pub csrf: String,
    pub hash: String,
}

/// Who is looking at a page (if anyone is signed in), and the flash message for them.
pub struct Viewer {
    pub session: Option<Session>,
    pub flash: Option<String>,
    /// The path and query of the request, to come back to after signing in.
    pub here: String,
}

impl Viewer {
    pub fn caller(&self) -> Option<&Caller> {
        self.session.as_ref().map(|s| &s.caller)
    }
    /// The signed-in caller, or off to the sign-in page.
    pub fn required(&self) -> Result<&Caller, WebError> {
        self.caller()
            .ok_or_else(|| WebError::SignIn(self.here.clone()))
    }
}

impl FromRequestParts<AppState> for Viewer {
    type Rejection = WebError;

    async fn from_request_parts(parts: &mut Parts, s: &AppState) -> Result<Self, WebError> {
        let here = parts
            .uri
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_else(|| "/".into());
        let flash = cookie(&parts.headers, FLASH_COOKIE)
            .filter(|f| !f.is_empty())
            .map(|f| {
                url::form_urlencoded::parse(format!("m={f}").as_bytes())
                    .map(|(_, v)| v.into_owned())
                    .collect()
            });
        let session = match cookie(&parts.headers, SESSION_COOKIE) {
            Some(token) if !token.is_empty() => {
                let hash = session_hash(&token);
                s.store
                    .session_caller(&hash, Utc::now())
                    .await?
                    .map(|caller| Session {
                        caller,
                        csrf: csrf_token(&token),
                        hash,
                    })
            }
            _ => None,
        };
        Ok(Viewer {
            session,
            flash,
            here,
        })
    }
}

/// A submitted form that changes something: from a signed-in person, carrying the session's
/// CSRF token (403 otherwise).
pub struct Posted {
    pub viewer: Viewer,
    pub form: Form,
}

impl Posted {
    pub fn caller(&self) -> &Caller {
        &self
            .viewer
            .session
            .as_ref()
            .expect("a Posted form always has a session")
            .caller
    }
}

impl FromRequest<AppState> for Posted {
    type Rejection = WebError;

    async fn from_request(req: Request, s: &AppState) -> Result<Self, WebError> {
        let (mut parts, body) = req.into_parts();
        let mut viewer = Viewer::from_request_parts(&mut parts, s).await?;
        let bytes = Bytes::from_request(Request::from_parts(parts, body), s)
            .await
            .map_err(|e| WebError::Page(e.status(), "The form could not be read.".into()))?;
        let form = Form::parse(&bytes);
        let Some(session) = &viewer.session else {
            // Back to the page the form was on, once signed in.
            let back = viewer
                .here
                .rsplit_once('/')
                .map(|(p, _)| p.to_string())
                .unwrap_or_default();
            viewer.here = if back.is_empty() { "/".into() } else { back };
            return Err(WebError::SignIn(viewer.here));
        };
        if !form.get("csrf").is_some_and(|t| same(t, &session.csrf)) {
            return Err(WebError::forbidden(
                "This form did not carry this session's security token, so nothing was changed. \
                 Go back, reload the page and try again.",
            ));
        }
        Ok(Posted { viewer, form })
    }
}

/// The client's address, as the connection shows it (behind a reverse proxy, the proxy's).
pub struct ClientAddr(pub Option<std::net::IpAddr>);

impl<S: Send + Sync> FromRequestParts<S> for ClientAddr {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(ClientAddr(
            parts
                .extensions
                .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
                .map(|c| c.0.ip()),
        ))
    }
}

/// Whether a form submission comes from this site, by its `Origin` (and `Sec-Fetch-Site`):
/// defence in depth beside the CSRF tokens. Browsers send `Origin` on every POST; a request
/// without one (not a browser, or a very old one) is left to the CSRF token. `null` (a sandboxed
/// document, such as a user-supplied file served here) is another site.
pub fn same_origin(s: &AppState, headers: &HeaderMap) -> bool {
    if headers
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("cross-site"))
    {
        return false;
    }
    let Some(origin) = headers.get(header::ORIGIN) else {
        return true;
    };
    let Ok(origin) = origin.to_str() else {
        return false;
    };
    let public = url::Url::parse(&s.public_url)
        .map(|u| u.origin().ascii_serialization())
        .ok();
    if public.as_deref() == Some(origin) {
        return true;
    }
    // Reached by another name than the public URL (localhost for 127.0.0.1): the browser's
    // Host is ours, and another site cannot make the browser send our Host with its Origin.
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    match (url::Url::parse(origin), host) {
        (Ok(o), Some(host)) if matches!(o.scheme(), "http" | "https") => {
            let o_host = match (o.host_str(), o.port()) {
                (Some(h), Some(p)) => format!("{h}:{p}"),
                (Some(h), None) => h.to_string(),
                _ => return false,
            };
            o_host.eq_ignore_ascii_case(host)
        }
        _ => false,
    }
}
