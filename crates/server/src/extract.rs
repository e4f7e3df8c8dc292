//! Request extractors that answer in problem+json when the request is wrong.
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::{header, request::Parts, StatusCode};
use modelyard_domain::{ids, Caller};
use serde::de::DeserializeOwned;
use serde::Deserialize;

use crate::error::ApiError;
use crate::state::AppState;

/// The caller, if a token was sent. A token that was sent but is not valid is refused here,
/// so a typo never silently turns into an anonymous request.
pub struct Auth(pub Option<Caller>);

impl Auth {
    pub fn required(self) -> Result<Caller, ApiError> {
        self.0.ok_or(ApiError::Unauthenticated)
    }
}

impl FromRequestParts<AppState> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let Some(value) = parts.headers.get(header::AUTHORIZATION) else {
            return Ok(Auth(None));
        };
        let value = value.to_str().map_err(|_| ApiError::Unauthenticated)?;
        let (scheme, token) = value.split_once(' ').ok_or(ApiError::Unauthenticated)?;
        if !scheme.eq_ignore_ascii_case("bearer") && !scheme.eq_ignore_ascii_case("token") {
            return Err(ApiError::Unauthenticated);
        }
        let token = token.trim();
        let caller = state.caller(&ids::token_hash(token)).await?;
        caller
            .map(|c| Auth(Some(c)))
            .ok_or(ApiError::Unauthenticated)
    }
}

/// A JSON body. Malformed JSON is a 400, JSON of the wrong shape a 422, both in problem+json.
pub struct Json<T>(pub T);

pub fn body_rejection(e: BytesRejection) -> ApiError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::PayloadTooLarge("The request body is larger than this endpoint accepts.".into())
    } else {
        ApiError::BadRequest(format!("The request body could not be read: {e}"))
    }
}

impl<T: DeserializeOwned> FromRequest<AppState> for Json<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        let _ = state;
        let bytes = read_body(req.into_body(), crate::JSON_LIMIT, "This endpoint accepts").await?;
        // Syntax first, so malformed JSON is told apart from JSON of the wrong shape.
        let value: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| {
            ApiError::BadRequest(format!("The request body is not valid JSON: {e}"))
        })?;
        serde_path_to_error::deserialize(value)
            .map(Json)
            .map_err(|e| {
                let path = e.path().to_string();
                let field = if path == "." {
                    "body".to_string()
                } else {
                    path
                };
                ApiError::invalid(&field, e.into_inner().to_string())
            })
    }
}

/// Past this much, an oversized body is no longer read through: the connection is cut instead.
const DRAIN_LIMIT: usize = 64 * 1024 * 1024;

/// Reads a body of at most `limit` bytes. A larger one is still read (and thrown away) up to a
/// bound, so the client, which is still sending, gets the 413 answer rather than a reset
/// connection.
pub async fn read_body(
    body: axum::body::Body,
    limit: usize,
    what: &str,
) -> Result<Bytes, ApiError> {
    use futures_util::StreamExt;
    let mut stream = body.into_data_stream();
    let mut buf = Vec::new();
    let mut total = 0usize;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            ApiError::BadRequest(format!("The request body could not be read: {e}"))
        })?;
        total = total.saturating_add(chunk.len());
        if total <= limit {
            buf.extend_from_slice(&chunk);
        } else if total > limit.max(DRAIN_LIMIT) {
            break;
        }
    }
    if total > limit {
        return Err(ApiError::PayloadTooLarge(format!(
            "The request body is larger than the {limit} bytes {} at most.",
            what.to_lowercase()
        )));
    }
    Ok(Bytes::from(buf))
}

/// `?cursor=` on list endpoints: the position after which the next page starts.
#[derive(Deserialize, Default)]
pub struct PageQuery {
    pub cursor: Option<String>,
}

pub const PAGE_SIZE: i64 = 100;

/// The cursor of the page after `rows`: the last row's position when the page is full, none
/// when this is the last page.
pub fn next_cursor<T>(rows: &[T], cursor: impl Fn(&T) -> i64) -> Option<i64> {
    (rows.len() as i64 == PAGE_SIZE)
        .then(|| rows.last().map(cursor))
        .flatten()
}

impl PageQuery {
    pub fn page(&self) -> Result<modelyard_domain::PageReq, ApiError> {
        let after =
            match self.cursor.as_deref() {
                None | Some("") => None,
                // Cursors are positions this server gave: non-negative integers.
                Some(c) => Some(c.parse::<i64>().ok().filter(|n| *n >= 0).ok_or_else(|| {
                    ApiError::invalid("cursor", "is not a cursor this server gave")
                })?),
            };
        Ok(modelyard_domain::PageReq {
            after,
            limit: PAGE_SIZE,
        })
    }
}

#[derive(Deserialize, Default)]
pub struct DryRun {
    #[serde(default)]
    pub dry_run: Option<String>,
}

/// A boolean query parameter: absent, `false` or `0` is false; `true`, `1` or bare is true;
/// anything else is a 422 naming the parameter.
pub fn query_flag(name: &str, value: Option<&str>) -> Result<bool, ApiError> {
    match value {
        None | Some("false") | Some("0") => Ok(false),
        Some("true") | Some("1") | Some("") => Ok(true),
        Some(_) => Err(ApiError::invalid(name, "must be true or false")),
    }
}

impl DryRun {
    pub fn get(&self) -> Result<bool, ApiError> {
        query_flag("dry_run", self.dry_run.as_deref())
    }
}

/// `?storage=true` on a model's or version's GET: its owners asked for what it stores (an
/// extension, off by default so Replicate's clients never pay the extra query).
#[derive(Deserialize, Default)]
pub struct WithStorage {
    #[serde(default)]
    pub storage: Option<String>,
}

impl WithStorage {
    pub fn get(&self) -> Result<bool, ApiError> {
        query_flag("storage", self.storage.as_deref())
    }
}

/// Path parameters. A segment that cannot be one (invalid UTF-8 after percent-decoding, a
/// number that is not one) names nothing here: a problem+json 404, not axum's plain text.
pub struct Path<T>(pub T);

impl<T, S> FromRequestParts<S> for Path<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        use axum::extract::rejection::PathRejection;
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(v)) => Ok(Path(v)),
            Err(PathRejection::FailedToDeserializePathParams(_)) => Err(ApiError::NotFound(
                "There is nothing at this address.".into(),
            )),
            Err(e) => Err(ApiError::Internal(format!("path parameters: {e}"))),
        }
    }
}

/// A query string. One that does not fit (a parameter given twice, a value of the wrong type)
/// is a problem+json 422 naming the parameter, not axum's plain-text 400.
pub struct Query<T>(pub T);

impl<T, S> FromRequestParts<S> for Query<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        axum::extract::Query::<T>::try_from_uri(&parts.uri)
            .map(|axum::extract::Query(v)| Query(v))
            .map_err(|e| {
                let msg = e.body_text();
                // serde names the parameter in backticks ("duplicate field `cursor`").
                let field = msg
                    .split('`')
                    .nth(1)
                    .map(str::to_string)
                    .unwrap_or_else(|| "query".into());
                ApiError::invalid(&field, format!("the query string is not accepted: {msg}"))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_next_cursor_only_after_a_full_page() {
        let full: Vec<i64> = (10..10 + PAGE_SIZE).collect();
        assert_eq!(next_cursor(&full, |n| *n), Some(9 + PAGE_SIZE));
        assert_eq!(next_cursor(&full[1..], |n| *n), None);
        assert_eq!(next_cursor(&[] as &[i64], |n| *n), None);
    }
}
