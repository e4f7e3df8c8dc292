//! Pushing a version: a Cog project uploaded as a gzip'd tar (an extension, as `cog push` has
//! no HTTP form), unpacked safely, introspected with Cog's own Python package, and stored
//! content-addressed under the data dir.
mod cogyaml;
mod stream;
mod unpack;

use std::path::Path;
use std::time::Duration;

use axum::extract::{Request, State};

use crate::extract::Path as UrlPath;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use modelyard_blobs::{BlobError, Released, Stored, TreeFile};
use modelyard_domain::NewVersion;
use modelyard_runner::sandbox;
use modelyard_storage::StoredVersion;
use serde::Deserialize;

use crate::error::{ApiError, ApiResult};
use crate::extract::Auth;
use crate::ops;
use crate::state::AppState;
use crate::views;

use unpack::UnpackError;

const INTROSPECT: &str = include_str!("introspect.py");
const INTROSPECT_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Deserialize)]
struct Introspection {
    cog_version: String,
    schema: serde_json::Value,
}

pub async fn push(
    State(s): State<AppState>,
    auth: Auth,
    UrlPath((owner, name)): UrlPath<(String, String)>,
    req: Request,
) -> ApiResult<Response> {
    let caller = auth.required()?;
    let model = ops::managed_model(&s, &caller, &owner, &name).await?;
    let ctype = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim();
    if !matches!(
        ctype,
        "application/gzip" | "application/x-gzip" | "application/x-tar+gzip"
    ) {
        return Err(ApiError::UnsupportedMediaType(
            "Upload the Cog project as a gzip-compressed tar with Content-Type: application/gzip \
             (`modelyard push OWNER/NAME DIR` does this)."
                .into(),
        ));
    }
    let limit = s.config.max_upload_bytes;
    // Dropped on every path out of here, so a refused upload leaves nothing behind.
    let tmp = s.blobs.stage()?;
    let tree = tmp.path().join("tree");
    // Unpacked while it arrives: the upload is never held whole, in memory or on disk.
    let mut body = stream::reader(req.into_body(), limit as u64);
    let digest = {
        let tree = tree.clone();
        tokio::task::spawn_blocking(move || {
            std::fs::create_dir(&tree).map_err(|e| UnpackError::Invalid(e.to_string()))?;
            let unpacked = unpack::unpack_files(&mut body, &tree, limit as u64);
            match (unpacked, body.stopped.take()) {
                (Err(_), Some(stream::Stop::TooLarge)) => Err(UnpackError::TooLarge(format!(
                    "upload is larger than this server's limit of {limit} bytes"
                ))),
                (Err(_), Some(stream::Stop::Broken(e))) => {
                    Err(UnpackError::Invalid(format!("the upload broke off: {e}")))
                }
                (r, _) => r,
            }
        })
        .await
        .map_err(internal)?
        .map_err(unpack_error)?
    };
    let unpack::Unpacked { digest, files } = digest;
    let cog = cogyaml::read(&tree).map_err(|m| ApiError::invalid("cog.yaml", m))?;
    let found = introspect(&s, &tree, &cog).await?;
    // The predictor's code ran in the tree: what it left there is checked like the upload.
    {
        let tree = tree.clone();
        tokio::task::spawn_blocking(move || unpack::check_links_on_disk(&tree))
            .await
            .map_err(internal)?
            .map_err(unpack_error)?;
    }

    // Place the tree and record the version under the data directory's lock, so a deletion
    // freeing the same content at this moment cannot remove the files from under the new
    // version. Files are stored once by content: a new version that changes only its code adds
    // only its code, however large its weights.
    let files = files
        .into_iter()
        .map(|(path, sha256, executable)| TreeFile {
            path,
            sha256,
            executable,
        })
        .collect::<Vec<_>>();
    // With an object store, the bytes go up before the lock: a large project does not hold up
    // every other push and deletion of the cluster meanwhile.
    s.blobs.prepare_tree(&tree, &files).await?;
    let held = s.blobs.lock().await?;
    let placed = s
        .blobs
        .put_tree(&held, &digest, &tree, files.clone())
        .await?;
    let created = s
        .store
        .create_version(NewVersion {
            model_id: model.id,
            content_digest: digest.clone(),
            cog_version: found.cog_version,
            openapi_schema: found.schema,
            artifact: digest.clone(),
            base_version_id: None,
            training_id: None,
            weights: None,
            gpu: cog.gpu,
        })
        .await;
    let StoredVersion {
        version,
        created: new,
    } = match created {
        Ok(v) => v,
        Err(e) => {
            if placed {
                logged(s.blobs.release_held(&held, Stored::Artifact(&digest)).await);
            }
            return Err(e.into());
        }
    };
    if placed {
        // Under the lock still: a deletion cannot forget the sizes between these two steps.
        let sizes = s.blobs.tree_blobs(&digest, &files).await?;
        s.store
            .record_artifact(&digest, &sizes)
            .await
            .map_err(internal)?;
    }
    drop(held);
    let status = if new {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, axum::Json(views::version(&version))).into_response())
}

fn unpack_error(e: UnpackError) -> ApiError {
    match e {
        UnpackError::Invalid(m) => ApiError::invalid("upload", m),
        UnpackError::TooLarge(m) => ApiError::PayloadTooLarge(format!("The {m}.")),
    }
}

/// Checks the stored projects once, in the background, at start: a version stored before links
/// were resolved against the tree may keep one that leads outside it. Each is logged for the
/// operator, naming the artifact; nothing is changed.
pub fn audit_artifacts(artifacts: std::path::PathBuf) {
    tokio::task::spawn_blocking(move || {
        let Ok(dir) = std::fs::read_dir(&artifacts) else {
            return;
        };
        for e in dir.flatten() {
            if let Err(UnpackError::Invalid(m) | UnpackError::TooLarge(m)) =
                unpack::check_links_on_disk(&e.path())
            {
                tracing::error!(
                    artifact = %e.file_name().to_string_lossy(),
                    problem = %m,
                    "a stored project fails the checks pushes now pass; delete the versions that use it"
                );
            }
        }
    });
}

fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError::Internal(format!("push: {e}"))
}

/// Runs Cog's inspector on the predictor in the sandbox (no network: it needs none): importing
/// it runs the pusher's code.
/// The schema comes back on the inspector's own standard output, which it takes for itself
/// before the predictor is imported (whatever the predictor prints goes to standard error).
async fn introspect(s: &AppState, tree: &Path, cog: &cogyaml::CogYaml) -> ApiResult<Introspection> {
    let sb = &s.sandbox;
    let scratch_host = tree.with_file_name("scratch");
    let mut jail = sb.jail(&scratch_host);
    let src = jail.ro(tree, sandbox::SRC);
    let home = jail.scratch(sandbox::SCRATCH);
    jail.env("HOME", home).cwd(src).limits(&format!(
        "push-{}",
        tree.parent()
            .and_then(|p| p.file_name())
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default()
    ));
    let started = jail
        .command(
            sb.python(),
            [
                "-W",
                "ignore",
                "-c",
                INTROSPECT,
                &cog.predict,
                cog.train.as_deref().unwrap_or(""),
            ],
        )
        .map_err(|e| ApiError::Internal(format!("push: cannot sandbox the schema reader: {e}")))?;
    let mut cmd = started.cmd;
    cmd.stdin(std::process::Stdio::null()).kill_on_drop(true);
    let out = tokio::time::timeout(INTROSPECT_TIMEOUT, cmd.output())
        .await
        .map_err(|_| ApiError::invalid("predict", "the predictor did not load within 120 seconds"))?
        .map_err(|e| ApiError::Internal(format!("push: could not run the schema reader: {e}")))?;
    let oom = started.cgroup.as_ref().is_some_and(|c| c.oom_kills() > 0);
    drop(started.cgroup);
    let printed = String::from_utf8_lossy(&out.stderr);
    let tail = |n: usize| modelyard_runner::tail(&printed, n);
    if oom {
        return Err(ApiError::invalid(
            "predict",
            "the predictor ran out of memory while it was imported",
        ));
    }
    if !out.status.success() {
        return Err(ApiError::invalid(
            "predict",
            format!("the predictor {} does not load: {}", cog.predict, tail(5)),
        ));
    }
    // The predictor could still write to the inspector's channel: anything but a schema is its
    // own doing, so the pusher hears of it, with what it printed.
    serde_json::from_slice(&out.stdout).map_err(|e| {
        ApiError::invalid(
            "predict",
            format!(
                "the predictor {} wrote over its schema while it loaded ({e}); what it printed:\n{}",
                cog.predict,
                tail(10)
            ),
        )
    })
}

/// A release after a failed push: a failure leaves files behind, which the operator hears of,
/// not the client.
fn logged(r: Result<Released, BlobError>) {
    if let Err(e) = r {
        tracing::warn!(error = %e, "could not remove stored content no version uses");
    }
}
