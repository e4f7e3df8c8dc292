//! Uploaded files: stored as `files/<id>` (in the data directory or the object store), each with a signed download URL that works
//! without a token until the file expires (so a Cog server can fetch it as an input), and
//! file inputs turned into those URLs before a job is recorded.
use std::path::{Path, PathBuf};

use modelyard_blobs::Content;
use std::time::Duration;

use modelyard_domain::Caller;
use modelyard_storage::{FileRecord, NewFile};
use serde_json::{Map, Value};

use super::error::{OpError, OpResult};
use crate::state::AppState;

/// How long an uploaded file lives (and its download URL works).
pub const LIFETIME: Duration = Duration::from_secs(24 * 3600);

fn not_found(id: &str) -> OpError {
    OpError::NotFound(format!("The file {id} does not exist."))
}

fn safe_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// Where uploads are kept, and written to while they arrive.
pub fn dir(s: &AppState) -> PathBuf {
    s.blobs.uploads_dir()
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

/// What a signed download URL carries besides the file's id.
#[derive(Default, serde::Deserialize)]
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

pub async fn own_file(s: &AppState, caller: &Caller, id: &str) -> OpResult<FileRecord> {
    match s.store.file(id).await? {
        Some(f) if f.account_id == caller.account.id => Ok(f),
        _ => Err(not_found(id)),
    }
}

/// A file someone sent, its bytes already on disk at `part` (under [`dir`]).
pub struct Upload {
    pub part: PathBuf,
    pub name: String,
    pub content_type: String,
    pub size: i64,
    pub sha256: String,
    pub metadata: Value,
}

/// Keeps an upload under a new id for [`LIFETIME`].
pub async fn store_upload(s: &AppState, caller: &Caller, u: Upload) -> OpResult<FileRecord> {
    let id = modelyard_domain::ids::object_id();
    s.blobs
        .put_file(&id, &u.part)
        .await
        .map_err(OpError::internal)?;
    let expires_at = chrono::Utc::now() + chrono::Duration::from_std(LIFETIME).unwrap_or_default();
    let f = s
        .store
        .create_file(NewFile {
            id: id.clone(),
            account_id: caller.account.id,
            name: u.name,
            content_type: u.content_type,
            size: u.size,
            sha256: u.sha256,
            metadata: u.metadata,
            expires_at: Some(expires_at),
        })
        .await;
    match f {
        Ok(f) => Ok(f),
        Err(e) => {
            let _ = s.blobs.remove_file(&id).await;
            Err(e.into())
        }
    }
}

pub async fn delete_file(s: &AppState, caller: &Caller, id: &str) -> OpResult<()> {
    if !safe_id(id) || !s.store.delete_file(caller.account.id, id).await? {
        return Err(not_found(id));
    }
    if let Err(e) = s.blobs.remove_file(id).await {
        tracing::warn!(error = %e, file = %id, "could not remove a deleted file's bytes");
    }
    Ok(())
}

/// A file to send, and its bytes.
pub struct Download {
    pub file: FileRecord,
    pub content: Content,
}

/// `urls.get`: the file, to whoever holds the signed URL (no token needed).
pub async fn signed_download(s: &AppState, id: &str, q: &Signed) -> OpResult<Download> {
    if !safe_id(id) || !signed_ok(s, id, q) {
        return Err(not_found(id));
    }
    let file = s.store.file(id).await?.ok_or_else(|| not_found(id))?;
    let content = s
        .blobs
        .file(id)
        .await
        .map_err(OpError::internal)?
        .ok_or_else(|| not_found(id))?;
    Ok(Download { file, content })
}

/// The same 404 as a file that does not exist (for bytes that went missing on disk).
pub fn missing(id: &str) -> OpError {
    not_found(id)
}

/// Input values that are URLs of this server's Files API become the file's signed download
/// URL, which the Cog server fetches without a token. The caller must own the file, or hold a
/// valid signed URL of it. Done before the input is validated and recorded, so the record
/// shows exactly what the model was given.
pub async fn resolve_inputs(
    s: &AppState,
    caller: &Caller,
    input: &mut Map<String, Value>,
) -> OpResult<()> {
    for (field, value) in input.iter_mut() {
        resolve_value(s, caller, field, value).await?;
    }
    Ok(())
}

async fn resolve_value(s: &AppState, caller: &Caller, field: &str, v: &mut Value) -> OpResult<()> {
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
) -> OpResult<Option<String>> {
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
        OpError::invalid(
            field,
            format!("{text} is not a file of yours (it may have expired or been deleted)"),
        )
    };
    if !safe_id(id) {
        return Err(bad());
    }
    let f = s.store.file(id).await?.ok_or_else(bad)?;
    let mine = f.account_id == caller.account.id;
    let mut signed = Signed::default();
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
        remove_stale_parts(&dir(&s), started).await;
        let mut tick = tokio::time::interval(Duration::from_secs(300));
        loop {
            tick.tick().await;
            match s.store.remove_expired_files(chrono::Utc::now()).await {
                Ok(ids) => {
                    for id in ids.iter().filter(|id| safe_id(id)) {
                        if let Err(e) = s.blobs.remove_file(id).await {
                            tracing::warn!(error = %e, file = %id, "could not remove an expired file's bytes");
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "could not remove expired files"),
            }
        }
    });
}

/// Removes partial uploads (`.<id>.part`) that a crash or `kill -9` left, untouched since
/// before this server started (an upload in progress writes to its own all the time).
async fn remove_stale_parts(dir: &Path, started: std::time::SystemTime) {
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
