//! The one error type of the HTTP layer. Every error leaves as `application/problem+json`;
//! internal errors are logged with their context and reach the client only as a generic 500.
//! The operations' own errors (`ops::OpError`) map onto it one to one; the rest are HTTP's.
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use modelyard_blobs::BlobError;
use modelyard_domain::Blocker;
use modelyard_storage::StoreError;
use serde_json::json;

use crate::ops::InvalidField;
use crate::ops::OpError;

#[derive(Debug)]
pub enum ApiError {
    Unauthenticated,
    BadRequest(String),
    Forbidden(String),
    NotFound(String),
    MethodNotAllowed,
    Conflict(String),
    /// A deletion refused by the rules, with every blocker.
    Blocked {
        detail: String,
        blockers: Vec<Blocker>,
    },
    PayloadTooLarge(String),
    UnsupportedMediaType(String),
    Invalid {
        detail: String,
        fields: Vec<InvalidField>,
    },
    Internal(String),
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn invalid(field: &str, description: impl Into<String>) -> Self {
        let description = description.into();
        ApiError::Invalid {
            detail: format!("{field}: {description}"),
            fields: vec![InvalidField {
                kind: "invalid".into(),
                field: field.into(),
                description,
            }],
        }
    }

    fn parts(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::Unauthenticated => (StatusCode::UNAUTHORIZED, "Unauthenticated"),
            ApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, "Bad request"),
            ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, "Forbidden"),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "Not found"),
            ApiError::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "Method not allowed"),
            ApiError::Conflict(_) => (StatusCode::CONFLICT, "Conflict"),
            ApiError::Blocked { .. } => (StatusCode::CONFLICT, "Deletion blocked"),
            ApiError::PayloadTooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "Payload too large"),
            ApiError::UnsupportedMediaType(_) => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "Unsupported media type")
            }
            ApiError::Invalid { .. } => {
                (StatusCode::UNPROCESSABLE_ENTITY, "Input validation failed")
            }
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "Internal server error"),
        }
    }
}

impl From<OpError> for ApiError {
    fn from(e: OpError) -> Self {
        match e {
            OpError::NotFound(m) => ApiError::NotFound(m),
            OpError::Forbidden(m) => ApiError::Forbidden(m),
            OpError::Conflict(m) => ApiError::Conflict(m),
            OpError::Blocked { detail, blockers } => ApiError::Blocked { detail, blockers },
            OpError::Invalid { detail, fields } => ApiError::Invalid { detail, fields },
            OpError::Internal(m) => ApiError::Internal(m),
        }
    }
}

impl From<BlobError> for ApiError {
    fn from(e: BlobError) -> Self {
        OpError::from(e).into()
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        OpError::from(e).into()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, title) = self.parts();
        let mut body = json!({"title": title, "status": status.as_u16()});
        match self {
            ApiError::Unauthenticated => {
                body["detail"] = "You did not pass a valid authentication token".into();
            }
            ApiError::MethodNotAllowed => {
                body["detail"] = "This endpoint does not accept that HTTP method.".into();
            }
            ApiError::Internal(m) => {
                tracing::error!(error = %m, "internal error");
                body["detail"] = "Something went wrong on the server. It has been logged.".into();
            }
            ApiError::Blocked { detail, blockers } => {
                body["detail"] = detail.into();
                body["blockers"] = json!(blockers);
            }
            ApiError::Invalid { detail, fields } => {
                body["detail"] = detail.into();
                body["invalid_fields"] = json!(fields);
            }
            ApiError::BadRequest(d)
            | ApiError::Forbidden(d)
            | ApiError::NotFound(d)
            | ApiError::Conflict(d)
            | ApiError::PayloadTooLarge(d)
            | ApiError::UnsupportedMediaType(d) => body["detail"] = d.into(),
        }
        let deterministic_conflict = status == StatusCode::CONFLICT;
        let mut resp = (status, body.to_string()).into_response();
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if deterministic_conflict {
            // The beta client retries 409 unless told not to: the answer will not change.
            h.insert("x-should-retry", HeaderValue::from_static("false"));
        }
        resp
    }
}
