//! The Files API: what the official clients upload when a local file is passed as an input.
//!
//! `POST /v1/files` takes `multipart/form-data` with the bytes in the part `content` (its
//! filename and content type are the file's), and optionally `filename`, `type` (content type)
//! and `metadata` (a JSON object) parts. The bytes are stored as `data_dir/files/<id>`.
//! A file's `urls.get` is a signed download URL (`?owner=&expiry=&signature=`) that works
//! without a token until the file expires, so a Cog server can fetch it as an input.
use std::time::Duration;

use axum::extract::{Request, State};

use crate::extract::{Path, Query};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use modelyard_domain::Caller;
use modelyard_storage::{FileRecord, NewFile};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use crate::error::{ApiError, ApiResult};
use crate::extract::{Auth, PageQuery, PAGE_SIZE};
use crate::state::AppState;
use crate::views;

/// The largest file `/v1/files` takes (Replicate's limit is 100 MiB too).
const FILE_LIMIT: u64 = 100 * 1024 * 1024;

/// How long an uploaded file lives (and its download URL works).
pub const LIFETIME: Duration = Duration::from_secs(24 * 3600);

fn not_found(id: &str) -> ApiError {
    ApiError::NotFound(format!("The file {id} does not exist."))
}

fn safe_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric())
}

fn path_of(s: &AppState, id: &str) -> std::path::PathBuf {
    s.blobs.layout().files().join(id)
}

fn signature(s: &AppState, id: &str, owner: &str, expiry: i64) -> String {
    s.capability("file", &format!("{id}\0{owner}\0{expiry}"))
}

/// The file's signed download URL.
pub fn download_url(s: &AppState, f: &FileRecord, owner: &str) -> String {
    let expiry = f.expires_at.map_or(i64::MAX, |t| t.timestamp());
    let sig = signature(s, &f.id, owner, expiry);
    s.url(&format!(
        "/v1/files/{}/download?owner={owner}&expiry={expiry}&signature={sig}",
        f.id
    ))
}

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

async fn own_file(s: &AppState, caller: &Caller, id: &str) -> ApiResult<FileRecord> {
    match s.store.file(id).await? {
        Some(f) if f.account_id == caller.account.id => Ok(f),
        _ => Err(not_found(id)),
    }
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

    let id = modelyard_domain::ids::object_id();
    let dir = s.blobs.layout().files();
    tokio::fs::create_dir_all(&dir)
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let tmp = dir.join(format!(".{id}.part"));
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
    tokio::fs::rename(&tmp, path_of(&s, &id))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    partial.0 = None;
    let expires_at = chrono::Utc::now() + chrono::Duration::from_std(LIFETIME).unwrap_or_default();
    let f = s
        .store
        .create_file(NewFile {
            id: id.clone(),
            account_id: caller.account.id,
            name,
            content_type,
            size,
            sha256,
            metadata,
            expires_at: Some(expires_at),
        })
        .await;
    let f = match f {
        Ok(f) => f,
        Err(e) => {
            let _ = tokio::fs::remove_file(path_of(&s, &id)).await;
            return Err(e.into());
        }
    };
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
    let next = (files.len() as i64 == PAGE_SIZE)
        .then(|| files.last().map(|f| f.cursor))
        .flatten();
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
    let f = own_file(&s, &caller, &id).await?;
    Ok(Json(view(&s, &f, &caller.account.username)))
}

pub async fn delete_file(
    State(s): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let caller = auth.required()?;
    if !safe_id(&id) || !s.store.delete_file(caller.account.id, &id).await? {
        return Err(not_found(&id));
    }
    let _ = tokio::fs::remove_file(path_of(&s, &id)).await;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
pub struct Signed {
    owner: Option<String>,
    expiry: Option<String>,
    signature: Option<String>,
}

/// Whether a signed download URL's query is valid now for file `id`.
fn signed_ok(s: &AppState, id: &str, q: &Signed) -> bool {
    let (Some(owner), Some(expiry), Some(sig)) = (&q.owner, &q.expiry, &q.signature) else {
        return false;
    };
    let Ok(expiry) = expiry.parse::<i64>() else {
        return false;
    };
    expiry > chrono::Utc::now().timestamp() && *sig == signature(s, id, owner, expiry)
}

/// `urls.get`: the bytes, to whoever holds the signed URL (no token needed).
pub async fn download(
    State(s): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<Signed>,
) -> ApiResult<Response> {
    if !safe_id(&id) || !signed_ok(&s, &id, &q) {
        return Err(not_found(&id));
    }
    let f = s.store.file(&id).await?.ok_or_else(|| not_found(&id))?;
    let mut resp =
        crate::user_content::stored_file_response(&path_of(&s, &id), &f.content_type, &f.name)
            .await
            .map_err(|_| not_found(&id))?;
    if let Ok(etag) =
        header::HeaderValue::from_str(&format!("\"{}\"", &f.sha256[..32.min(f.sha256.len())]))
    {
        resp.headers_mut().insert(header::ETAG, etag);
    }
    Ok(resp)
}

/// Input values that are URLs of this server's Files API become the file's signed download
/// URL, which the Cog server fetches without a token. The caller must own the file, or hold a
/// valid signed URL of it. Done before the input is validated and recorded, so the record
/// shows exactly what the model was given.
pub(crate) async fn resolve_inputs(
    s: &AppState,
    caller: &Caller,
    input: &mut Map<String, Value>,
) -> ApiResult<()> {
    for (field, value) in input.iter_mut() {
        resolve_value(s, caller, field, value).await?;
    }
    Ok(())
}

async fn resolve_value(s: &AppState, caller: &Caller, field: &str, v: &mut Value) -> ApiResult<()> {
    match v {
        Value::String(text) => {
            if let Some(url) = resolve_url(s, caller, field, text).await? {
                *text = url;
            }
        }
        Value::Array(items) => {
            for item in items {
                Box::pin(resolve_value(s, caller, field, item)).await?;
            }
        }
        _ => {}
    }
    Ok(())
}

async fn resolve_url(
    s: &AppState,
    caller: &Caller,
    field: &str,
    text: &str,
) -> ApiResult<Option<String>> {
    let prefix = s.url("/v1/files/");
    let Some(rest) = text.strip_prefix(&prefix) else {
        return Ok(None);
    };
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    let id = path
        .strip_suffix("/download")
        .unwrap_or(path)
        .trim_end_matches('/');
    let bad = || {
        ApiError::invalid(
            field,
            format!("{text} is not a file of yours (it may have expired or been deleted)"),
        )
    };
    if !safe_id(id) {
        return Err(bad());
    }
    let f = s.store.file(id).await?.ok_or_else(bad)?;
    let mine = f.account_id == caller.account.id;
    let mut signed = Signed {
        owner: None,
        expiry: None,
        signature: None,
    };
    for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
        match k.as_ref() {
            "owner" => signed.owner = Some(v.into_owned()),
            "expiry" => signed.expiry = Some(v.into_owned()),
            "signature" => signed.signature = Some(v.into_owned()),
            _ => {}
        }
    }
    let capability = signed_ok(s, id, &signed);
    if !(mine || capability) {
        return Err(bad());
    }
    if f.expires_at.is_some_and(|t| t < chrono::Utc::now()) {
        return Err(bad());
    }
    if capability {
        // Already a working capability URL: keep it as given.
        return Ok(None);
    }
    Ok(Some(download_url(s, &f, &caller.account.username)))
}

/// Removes expired uploads, their records and bytes, every few minutes.
pub fn sweep_expired(s: AppState) {
    let started = std::time::SystemTime::now();
    tokio::spawn(async move {
        remove_stale_parts(&s.blobs.layout().files(), started).await;
        let mut tick = tokio::time::interval(Duration::from_secs(300));
        loop {
            tick.tick().await;
            match s.store.remove_expired_files(chrono::Utc::now()).await {
                Ok(ids) => {
                    for id in ids.iter().filter(|id| safe_id(id)) {
                        let _ = tokio::fs::remove_file(path_of(&s, id)).await;
                    }
                }
                Err(e) => tracing::warn!(error = %e, "could not remove expired files"),
            }
        }
    });
}

/// Removes partial uploads (`.<id>.part`) that a crash or `kill -9` left, untouched since
/// before this server started (an upload in progress writes to its own all the time).
async fn remove_stale_parts(dir: &std::path::Path, started: std::time::SystemTime) {
    let Ok(mut entries) = tokio::fs::read_dir(dir).await else {
        return;
    };
    while let Ok(Some(e)) = entries.next_entry().await {
        let name = e.file_name();
        let name = name.to_string_lossy();
        if !(name.starts_with('.') && name.ends_with(".part")) {
            continue;
        }
        let stale = e
            .metadata()
            .await
            .and_then(|m| m.modified())
            .is_ok_and(|t| t < started);
        if stale {
            let _ = tokio::fs::remove_file(e.path()).await;
        }
    }
}
