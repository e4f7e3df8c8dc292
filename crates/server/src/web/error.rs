//! Errors of the web UI, answered as HTML pages (or a redirect to the sign-in page).
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use serde_json::json;

use super::templates;
use crate::ops::OpError;

#[derive(Debug)]
pub enum WebError {
    /// Not signed in: to the sign-in page, and back to `next` afterwards.
    SignIn(String),
    Page(StatusCode, String),
}

pub type WebResult<T = Response> = Result<T, WebError>;

impl WebError {
    pub fn not_found() -> Self {
        WebError::Page(
            StatusCode::NOT_FOUND,
            "There is nothing at this address, or you cannot see it.".into(),
        )
    }
    pub fn forbidden(msg: impl Into<String>) -> Self {
        WebError::Page(StatusCode::FORBIDDEN, msg.into())
    }
    pub fn internal(msg: impl std::fmt::Display) -> Self {
        WebError::from(OpError::Internal(msg.to_string()))
    }
}

/// An operation's refusal as a page. (Not signed in never gets here: the pages ask for a
/// session before they call an operation.)
impl From<OpError> for WebError {
    fn from(e: OpError) -> Self {
        let (status, msg) = match e {
            OpError::NotFound(m) => (StatusCode::NOT_FOUND, m),
            OpError::Forbidden(m) => (StatusCode::FORBIDDEN, m),
            OpError::Conflict(m) => (StatusCode::CONFLICT, m),
            OpError::Blocked { detail, .. } => (StatusCode::CONFLICT, detail),
            OpError::Invalid { detail, .. } => (StatusCode::UNPROCESSABLE_ENTITY, detail),
            OpError::Internal(m) => {
                tracing::error!(error = %m, "internal error in the web UI");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Something went wrong on the server. It has been logged.".into(),
                )
            }
        };
        WebError::Page(status, msg)
    }
}

impl From<modelyard_storage::StoreError> for WebError {
    fn from(e: modelyard_storage::StoreError) -> Self {
        OpError::from(e).into()
    }
}

impl IntoResponse for WebError {
    fn into_response(self) -> Response {
        match self {
            WebError::SignIn(next) => {
                let next: String = url::form_urlencoded::byte_serialize(next.as_bytes()).collect();
                Redirect::to(&format!("/login?next={next}")).into_response()
            }
            WebError::Page(status, message) => {
                let title = status.canonical_reason().unwrap_or("Error");
                let ctx = json!({
                    "title": title,
                    "status": status.as_u16(),
                    "message": message,
                    "error_page": true,
                });
                let mut resp = templates::html("error.html", ctx);
                *resp.status_mut() = status;
                resp
            }
        }
    }
}
