//! Errors of the web UI, answered as HTML pages (or a redirect to the sign-in page).
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use serde_json::json;

use crate::error::ApiError;

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
        WebError::from(ApiError::Internal(msg.to_string()))
    }
}

impl From<ApiError> for WebError {
    fn from(e: ApiError) -> Self {
        let (status, msg) = match e {
            ApiError::NotFound(m) => (StatusCode::NOT_FOUND, m),
            ApiError::Forbidden(m) => (StatusCode::FORBIDDEN, m),
            ApiError::Unauthenticated => return WebError::SignIn("/".into()),
            ApiError::Conflict(m) => (StatusCode::CONFLICT, m),
            ApiError::Blocked { detail, .. } => (StatusCode::CONFLICT, detail),
            ApiError::Invalid { detail, .. } => (StatusCode::UNPROCESSABLE_ENTITY, detail),
            ApiError::BadRequest(m)
            | ApiError::PayloadTooLarge(m)
            | ApiError::UnsupportedMediaType(m) => (StatusCode::BAD_REQUEST, m),
            ApiError::MethodNotAllowed => (
                StatusCode::METHOD_NOT_ALLOWED,
                "This page does not take that request.".into(),
            ),
            ApiError::Internal(m) => {
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
        ApiError::from(e).into()
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
                let mut resp = super::render::html("error.html", ctx);
                *resp.status_mut() = status;
                resp
            }
        }
    }
}
