//! The Files API: what the official clients upload when a local file is passed as an input.
//!
//! `POST /v1/files` takes `multipart/form-data` with the bytes in the part `content` (its
//! filename and content type are the file's), and optionally `filename`, `type` (content type)
//! and `metadata` (a JSON object) parts. The bytes are stored as `data_dir/files/<id>`.
//! A file's `urls.get` is a signed download URL (`?owner=&expiry=&signature=`) that works
//! without a token until the file expires, so a Cog server can fetch it as an input.
use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use modelyard_storage::FileRecord;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use crate::error::{ApiError, ApiResult};
use crate::extract::{next_cursor, Auth, PageQuery, Path, Query};
use crate::ops::files::{self as op, download_url, Signed, Upload};
use crate::state::AppState;
use crate::views;

/// The largest file `/v1/files` takes (Replicate's limit is 100 MiB too).
const FILE_LIMIT: u64 = 100 * 1024 * 1024;

fn view(s: &AppState, f: &FileRecord, owner: &str) -> Value {
    json!({
        "id": f.id,
        "name": f.name,
        "content_type": f.content_type,
        "size": f.size,
        "etag": format!("\"{}\"", &f.sha256[..32.min(f.sha256.len())]),
        "checksums": {"sha256": f.sha256},
        "metadata": f.metadata,
        "created_at": views::time(f.created_at),
        "expires_at": f.expires_at.map(views::time),
        "urls": {"get": download_url(s, f, owner)},
    })
}

pub async fn create(State(s): State<AppState>, auth: Auth, req: Request) -> ApiResult<Response> {
    let caller = auth.required()?;
    let ctype = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let boundary = multer::parse_boundary(&ctype).map_err(|_| {
        ApiError::UnsupportedMediaType(
            "Upload a file as multipart/form-data with the bytes in the part `content`.".into(),
        )
    })?;
    // The content streams to disk as it arrives (below), checked against the cap while it
    // does; the cap is Replicate's own, whatever the (much larger) cap on pushed projects.
    let limit = (s.config.max_upload_bytes as u64).min(FILE_LIMIT);
    let constraints =
        multer::Constraints::new().size_limit(multer::SizeLimit::new().whole_stream(limit));
    let mut form = multer::Multipart::with_constraints(
        req.into_body().into_data_stream(),
        boundary,
        constraints,
    );
    let too_large = || {
        ApiError::PayloadTooLarge(format!(
            "The file is larger than this server's limit of {limit} bytes."
        ))
    };
    let bad = |e: multer::Error| match e {
        multer::Error::StreamSizeExceeded { .. } | multer::Error::FieldSizeExceeded { .. } => {
            too_large()
        }
        e => ApiError::BadRequest(format!("The multipart body cannot be read: {e}")),
    };

    let part_id = modelyard_domain::ids::object_id();
    let dir = op::dir(&s);
    tokio::fs::create_dir_all(&dir)
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let tmp = dir.join(format!(".{part_id}.part"));
    // The partial file goes whatever ends the upload: an error below, or this future dropped
    // half-way (the client went away, the server stopping).
    let mut partial = RemoveOnDrop(Some(tmp.clone()));
    let result = async {
        let mut content: Option<(String, Option<String>, i64, String)> = None;
        let (mut filename, mut ctype_field, mut metadata) = (None, None, None);
        while let Some(mut field) = form.next_field().await.map_err(bad)? {
            match field.name().unwrap_or("") {
                "content" if content.is_none() => {
                    let name = field
                        .file_name()
                        .map(str::to_string)
                        .unwrap_or_else(|| "file".into());
                    let part_type = field.content_type().map(|m| m.to_string());
                    let mut out = tokio::fs::File::create(&tmp)
                        .await
                        .map_err(|e| ApiError::Internal(e.to_string()))?;
                    let mut hash = Sha256::new();
                    let mut size = 0i64;
                    while let Some(chunk) = field.chunk().await.map_err(bad)? {
                        hash.update(&chunk);
                        size += chunk.len() as i64;
                        out.write_all(&chunk)
                            .await
                            .map_err(|e| ApiError::Internal(e.to_string()))?;
                    }
                    out.flush()
                        .await
                        .map_err(|e| ApiError::Internal(e.to_string()))?;
                    content = Some((name, part_type, size, hex::encode(hash.finalize())));
                }
                "filename" => filename = Some(field.text().await.map_err(bad)?),
                "type" | "content_type" => ctype_field = Some(field.text().await.map_err(bad)?),
                "metadata" => metadata = Some(field.text().await.map_err(bad)?),
                _ => {
                    // Read and ignore.
                    while field.chunk().await.map_err(bad)?.is_some() {}
                }
            }
        }
        let (part_name, part_type, size, sha256) = content.ok_or_else(|| {
            ApiError::invalid(
                "content",
                "is required: the file's bytes as a multipart part",
            )
        })?;
        let name = filename
            .filter(|n| !n.trim().is_empty())
            .unwrap_or(part_name);
        let name: String = name
            .rsplit(['/', '\\'])
            .next()
            .unwrap_or("file")
            .chars()
            .take(255)
            .collect();
        let content_type = ctype_field
            .filter(|t| !t.trim().is_empty())
            .or(part_type.filter(|t| t != "application/octet-stream"))
            .unwrap_or_else(|| crate::user_content::type_of_name(&name).to_string());
        let metadata = match metadata.as_deref().map(str::trim) {
            None | Some("") => json!({}),
            Some(text) => match serde_json::from_str::<Value>(text) {
                Ok(v @ Value::Object(_)) => v,
                _ => return Err(ApiError::invalid("metadata", "must be a JSON object")),
            },
        };
        Ok((name, content_type, size, sha256, metadata))
    }
    .await;
    let (name, content_type, size, sha256, metadata) = result?;
    let upload = Upload {
        part: tmp,
        name,
        content_type,
        size,
        sha256,
        metadata,
    };
    let f = op::store_upload(&s, &caller, upload).await?;
    partial.0 = None;
    Ok((
        StatusCode::CREATED,
        Json(view(&s, &f, &caller.account.username)),
    )
        .into_response())
}

/// Removes a file when dropped while still holding it.
struct RemoveOnDrop(Option<std::path::PathBuf>);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            // Synchronous: a drop cannot wait, and unlinking one file is quick.
            let _ = std::fs::remove_file(path);
        }
    }
}

pub async fn list(
    State(s): State<AppState>,
    auth: Auth,
    Query(q): Query<PageQuery>,
) -> ApiResult<Json<Value>> {
    let caller = auth.required()?;
    let files = s.store.list_files(caller.account.id, q.page()?).await?;
    let next = next_cursor(&files, |f| f.cursor);
    let results = files
        .iter()
        .map(|f| view(&s, f, &caller.account.username))
        .collect();
    Ok(Json(views::page(&s, "/v1/files", results, next)))
}

pub async fn get_file(
    State(s): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let caller = auth.required()?;
    let f = op::own_file(&s, &caller, &id).await?;
    Ok(Json(view(&s, &f, &caller.account.username)))
}

pub async fn delete_file(
    State(s): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let caller = auth.required()?;
    op::delete_file(&s, &caller, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `urls.get`: the bytes, to whoever holds the signed URL (no token needed).
pub async fn download(
    State(s): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<Signed>,
) -> ApiResult<Response> {
    let op::Download { file: f, content } = op::signed_download(&s, &id, &q).await?;
    let mut resp = crate::user_content::content_response(content, &f.content_type, &f.name)
        .await
        .map_err(|_| op::missing(&id))?;
    if let Ok(etag) =
        header::HeaderValue::from_str(&format!("\"{}\"", &f.sha256[..32.min(f.sha256.len())]))
    {
        resp.headers_mut().insert(header::ETAG, etag);
    }
    Ok(resp)
}
