//! One job's life on a Cog server, and what the Cog server tells us about it.
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use modelyard_blobs::{Opened, Stored};
use modelyard_domain::*;
use modelyard_storage::JobEnd;
use rand::RngCore;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::pool::{CogClient, Key, Spec};
use crate::{Event, Inner, JobChannel};

const ALL_EVENTS: [&str; 4] = ["start", "output", "logs", "completed"];
const PROGRESS_EVERY: Duration = Duration::from_millis(500);

fn failed(error: impl Into<String>) -> JobEnd {
    JobEnd {
        status: Status::Failed,
        output: None,
        error: Some(error.into()),
        logs: String::new(),
        metrics: json!({}),
        result_version_id: None,
        completed_at: Utc::now(),
    }
}

/// How to start a server for a version in a mode, remembered after the first time.
pub async fn spec_for(
    inner: &Inner,
    version_id: &str,
    kind: JobKind,
    say: &crate::env::Say<'_>,
) -> Result<Spec, String> {
    let key = Key {
        version_id: version_id.to_string(),
        train: kind == JobKind::Training,
    };
    let cached = inner.specs.lock().ok().and_then(|m| m.get(&key).cloned());
    if let Some((spec, artifact, weights)) = cached {
        inner.envs.touch(&spec.env);
        // Opened again each time: the cache may have dropped an unpinned copy meanwhile, and
        // the server about to start must pin it.
        let (project, weights) = open_content(inner, &artifact, weights.as_deref()).await?;
        return Ok(Spec {
            pins: pins(&project, weights.as_ref()),
            ..spec
        });
    }
    let (spec, artifact, weights) = make_spec(inner, version_id, kind, say).await?;
    inner.envs.touch(&spec.env);
    if let Ok(mut m) = inner.specs.lock() {
        let unpinned = Spec {
            pins: vec![],
            ..spec.clone()
        };
        m.insert(key, (unpinned, artifact, weights));
    }
    Ok(spec)
}

/// A version's project and weights as local paths.
async fn open_content(
    inner: &Inner,
    artifact: &str,
    weights: Option<&str>,
) -> Result<(Opened, Option<Opened>), String> {
    let blobs = &inner.cfg.blobs;
    let project = blobs
        .tree(artifact)
        .await
        .map_err(|e| format!("the version's project cannot be opened: {e}"))?;
    let weights = match weights {
        Some(w) => Some(
            blobs
                .weights(w)
                .await
                .map_err(|e| format!("the version's weights cannot be opened: {e}"))?,
        ),
        None => None,
    };
    Ok((project, weights))
}

fn pins(project: &Opened, weights: Option<&Opened>) -> Vec<modelyard_blobs::Pin> {
    project
        .pin()
        .into_iter()
        .chain(weights.and_then(Opened::pin))
        .collect()
}

/// A spec, with the artifact and weights it opened.
async fn make_spec(
    inner: &Inner,
    version_id: &str,
    kind: JobKind,
    say: &crate::env::Say<'_>,
) -> Result<(Spec, String, Option<String>), String> {
    let ModelVersion { version, .. } = inner
        .store
        .version_by_id(version_id)
        .await
        .map_err(|e| e.to_string())?
        .ok_or("the version was deleted")?;
    let (project, weights) =
        open_content(inner, &version.artifact, version.weights.as_deref()).await?;
    let yaml = tokio::fs::read_to_string(project.path().join("cog.yaml"))
        .await
        .map_err(|e| format!("the version's project cannot be read: {e}"))?;
    let cog = cog_yaml::parse(&yaml).map_err(|e| format!("cog.yaml {e}"))?;
    let train = kind == JobKind::Training;
    let stub = if train {
        cog.train
            .clone()
            .ok_or("the version cannot be trained: its cog.yaml has no train entry")?
    } else {
        cog.predict.clone()
    };
    let env = inner.envs.ensure(&cog.python_packages, say).await?;
    let spec = Spec {
        key: Key {
            version_id: version.id.clone(),
            train,
        },
        env,
        project: project.path().to_path_buf(),
        stub,
        weights: weights.as_ref().map(|w| w.path().to_path_buf()),
        pins: pins(&project, weights.as_ref()),
        streams: !train
            && version.openapi_schema["components"]["schemas"]["Output"]["x-cog-array-type"]
                == "iterator",
        gpu: version.gpu,
    };
    Ok((spec, version.artifact, version.weights))
}

const SHUT_DOWN: &str = "The server shut down while this ran; run it again.";

/// `started_at` is set when the dispatcher already marked the job `processing` (a warm server
/// was free), saving the separate write.
pub async fn run(
    inner: &Arc<Inner>,
    mut job: Job,
    started_at: Option<DateTime<Utc>>,
    mut slot: crate::dispatch::Slot,
) {
    let ch = inner.channel(&job.id);
    ch.webhook
        .store(job.webhook.is_some(), std::sync::atomic::Ordering::Relaxed);
    if let Some(at) = started_at {
        job.status = Status::Processing;
        job.started_at = Some(at);
    }
    let end = execute(inner, &mut job, &ch, &mut slot).await;
    // The job ended when its server was done with it: taken before the place is given back, so
    // a job that starts on the freed place never starts before this one completed.
    let completed_at = Utc::now();
    slot.give_back();
    if *inner.shutdown.borrow() {
        // Work that had not started goes back to the queue for the next start; work that had
        // started says plainly what happened to it, not that the model crashed.
        match inner.store.job(job.kind, &job.id).await {
            Ok(Some(j)) if j.status == Status::Starting => {
                let _ = inner.store.release_job(&job.id, &inner.cfg.worker_id).await;
            }
            Ok(Some(j)) if j.status == Status::Processing => {
                if let Err(e) = inner.store.finish_job(&job.id, failed(SHUT_DOWN)).await {
                    tracing::error!(job = %job.id, error = %e, "could not record a job cut short");
                }
            }
            _ => {}
        }
        inner.forget(&job.id);
        return;
    }
    let (id, kind) = (job.id.clone(), job.kind);
    let mut status = None;
    if let Some(mut end) = end {
        end.completed_at = end.completed_at.min(completed_at);
        let s = end.status;
        let done = ended(job, &end);
        match inner.store.finish_job(&id, end).await {
            Ok(true) => {
                status = Some(s);
                // The answer to a waiting request, as the record now reads.
                *ch.final_job.lock().unwrap_or_else(|p| p.into_inner()) = Some(done);
            }
            Ok(false) => {}
            Err(e) => {
                tracing::error!(job = %id, error = %e, "could not record how a job ended")
            }
        }
    }
    // Only when the end was decided elsewhere (a cancel) is the record read back.
    let status = match status {
        Some(s) => s,
        None => match inner.store.job(kind, &id).await {
            Ok(Some(j)) => j.status,
            _ => Status::Failed,
        },
    };
    inner.emit(&ch, &id, Event::Done(status));
    ch.done.send_replace(true);
    inner.forget(&id);
}

/// The job as its record reads after `end` is written.
fn ended(job: Job, end: &JobEnd) -> Job {
    let mut j = job;
    j.status = end.status;
    j.output = end.output.clone();
    j.error = end.error.clone();
    j.logs = end.logs.clone();
    j.metrics = end.metrics.clone();
    j.completed_at = Some(end.completed_at);
    j
}

async fn execute(
    inner: &Arc<Inner>,
    job: &mut Job,
    ch: &JobChannel,
    slot: &mut crate::dispatch::Slot,
) -> Option<JobEnd> {
    let mut cancel = ch.cancel.subscribe();
    if *cancel.borrow() {
        return None;
    }
    let id = job.id.clone();
    let say = |text: &str| job_log(inner, ch, &id, text);
    let spec = match spec_for(inner, &job.version_id, job.kind, &say).await {
        Ok(s) => s,
        Err(e) => {
            // The build's output, which the job's followers saw, stays in its record.
            let mut end = failed(e);
            end.logs = ch
                .seen
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .prefix
                .clone();
            return Some(end);
        }
    };
    let lease = tokio::select! {
        l = inner.pool.acquire(&spec, deployment_cap(inner, job).await, &job.id) => match l {
            Ok(l) => l,
            Err(e) => return Some(failed(e.0)),
        },
        _ = cancel.changed() => return None,
    };
    if job.status != Status::Processing {
        let at = Utc::now();
        match inner
            .store
            .job_started(&job.id, &inner.cfg.worker_id, at)
            .await
        {
            Ok(true) => {
                job.status = Status::Processing;
                job.started_at = Some(at);
            }
            _ => {
                inner.pool.release(lease, true).await;
                return None;
            }
        }
    }
    inner.emit(ch, &job.id, Event::Started);
    let started = Instant::now();
    let (tx, mut rx) = tokio::sync::oneshot::channel();
    *ch.result.lock().unwrap_or_else(|p| p.into_inner()) = Some(tx);
    let route = if job.kind == JobKind::Training {
        "trainings"
    } else {
        "predictions"
    };
    let cog = &lease.cog;
    let base = format!("{}/{route}/{}", cog.base, job.id);
    // The model server cannot reach this platform: its files come through its own endpoint.
    let mut input = job.input.clone();
    lease.current.route_inputs(
        &inner.callback_key,
        &inner.cfg.public_url,
        &lease.callback_base,
        &mut input,
    );
    if spec.streams {
        let body = json!({
            "id": job.id,
            "input": input,
            "webhook": format!(
                "{}/jobs/{}/{}",
                lease.callback_base,
                job.id,
                crate::callbacks::job_token(&inner.callback_key, &job.id)
            ),
            "webhook_events_filter": ALL_EVENTS,
        });
        if let Err(e) = submit(cog, &base, &body).await {
            let healthy = inner.pool.alive(&lease);
            inner.pool.release(lease, healthy).await;
            return Some(failed(e));
        }
    }
    // Without streaming, one request that answers when the job ends; its answer goes the way a
    // webhook would (events for followers, then the result to the loop below). No webhook:
    // asking Cog for one costs ~4 ms a prediction. A failed answer comes with empty logs; they
    // are read back from the server's own log below. Polled by this task, not spawned: a task
    // of its own costs a spawn and a wake-up more per prediction.
    let sync_body = (!spec.streams).then(|| json!({"id": job.id, "input": input}));
    let deadline = job
        .deadline
        .map(|d| (d - Utc::now()).to_std().unwrap_or_default());
    let deadline_sleep = tokio::time::sleep(deadline.unwrap_or(Duration::from_secs(365 * 86400)));
    tokio::pin!(deadline_sleep);
    let mut canceled = false;
    let mut gave_up_at: Option<Instant> = None;
    let result: Result<Value, String> = {
        let sync = async {
            let Some(body) = &sync_body else {
                return std::future::pending().await;
            };
            match run_sync(cog, &format!("{}/{route}", cog.base), body).await {
                Ok(p) => p,
                Err(e) => json!({"status": "failed", "error": e}),
            }
        };
        tokio::pin!(sync);
        let mut answered = false;
        loop {
            tokio::select! {
                r = &mut rx => break r.map_err(|_| "the model server did not report back".to_string()),
                payload = &mut sync, if !answered => {
                    answered = true;
                    cog_update(inner, &job.id, payload).await;
                }
                _ = cancel.changed(), if !canceled => {
                    canceled = true;
                    let _ = cog.post(&format!("{base}/cancel"), None).await;
                    gave_up_at = Some(Instant::now());
                }
                _ = &mut deadline_sleep, if !canceled && deadline.is_some() => {
                    canceled = true;
                    let _ = inner.store.cancel_job(job.kind, &job.id).await;
                    let _ = cog.post(&format!("{base}/cancel"), None).await;
                    gave_up_at = Some(Instant::now());
                }
                _ = tokio::time::sleep(Duration::from_millis(500)) => {
                    if !inner.pool.alive(&lease) {
                        break Err("the model server exited while it ran this".into());
                    }
                    if gave_up_at.is_some_and(|t| t.elapsed() > Duration::from_secs(10)) {
                        break Err("the model server did not stop after it was canceled".into());
                    }
                }
            }
        }
    };
    let result = result.map(|mut payload| {
        if payload["status"] == "failed" && payload["logs"].as_str().is_none_or(str::is_empty) {
            if let Some(log) = inner.pool.log_path(&lease) {
                payload["logs"] = json!(logs_from_server_log(&log, &job.id));
            }
        }
        payload
    });
    let succeeded = result
        .as_ref()
        .is_ok_and(|p| p["status"].as_str() == Some("succeeded"));
    // Only a job that did not succeed may have run out of memory: the cgroup is not read for
    // the others.
    let oom = !succeeded && inner.pool.out_of_memory(&lease);
    let result = match result {
        // Cog reports a worker the kernel killed in its own words; say what happened.
        _ if oom => Err(format!(
            "The model ran out of memory (its limit is {}) and was stopped.",
            crate::pool::limit_text(inner.cfg.sandbox.config().memory_limit)
        )),
        r => r,
    };
    let healthy = inner.pool.alive(&lease) && result.is_ok() && !oom;
    // The job ended when its server was done with it: before the server and the place go back,
    // so a job that starts on them never starts before this one completed.
    let done_at = Utc::now();
    inner.pool.release(lease, healthy).await;
    slot.give_back();
    let total = (done_at - job.created_at).num_milliseconds() as f64 / 1000.0;
    let mut end = match result {
        Ok(payload) => end_from(&payload, started.elapsed().as_secs_f64()),
        Err(e) => failed(e),
    };
    end.completed_at = done_at;
    end.metrics["total_time"] = json!(total);
    if canceled {
        end.status = Status::Canceled;
        end.error = None;
    }
    if job.kind == JobKind::Training && end.status == Status::Succeeded {
        if let Err(e) = finish_training(inner, job, &mut end).await {
            end.status = Status::Failed;
            end.error = Some(e);
        }
    }
    Some(end)
}

/// A deployment's `max_instances` caps the servers its predictions may use.
async fn deployment_cap(inner: &Inner, job: &Job) -> Option<usize> {
    let (owner, name) = job.deployment.as_deref()?.split_once('/')?;
    let d = inner.store.deployment(owner, name).await.ok()??;
    Some(d.release.max_instances.max(1) as usize)
}

/// Sends the job to the Cog server, which answers at once and reports by webhooks. Cog answers
/// 409 while its one slot is busy, also briefly after a response, and 503 for a moment after
/// it reports ready: both mean "try again".
async fn submit(cog: &CogClient, url: &str, body: &Value) -> Result<(), String> {
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        let resp = cog
            .send(
                hyper::Method::PUT,
                url,
                Some(body),
                Some("respond-async"),
                None,
            )
            .await
            .map_err(|e| format!("the model server did not answer: {e}"))?;
        let status = resp.status;
        if status.is_success() {
            return Ok(());
        }
        if matches!(status.as_u16(), 409 | 503) && Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(5)).await;
            continue;
        }
        let text = resp.text();
        let detail = serde_json::from_str::<Value>(&text)
            .ok()
            .map(|v| v["detail"].to_string())
            .unwrap_or(text);
        return Err(format!(
            "the model server refused the input ({status}): {detail}"
        ));
    }
}

/// What the predictor printed during one job, from the Cog server's own structured log.
fn logs_from_server_log(path: &std::path::Path, id: &str) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut out = String::new();
    for line in text.lines().filter(|l| l.contains(id)) {
        let Ok(v) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        let f = &v["fields"];
        if f["prediction_id"] == id && matches!(f["source"].as_str(), Some("Stdout" | "Stderr")) {
            out.push_str(f["message"].as_str().unwrap_or_default());
            out.push('\n');
        }
    }
    out
}

/// A synchronous run: `POST /predictions` (or `/trainings`) answers with the finished job.
async fn run_sync(cog: &CogClient, url: &str, body: &Value) -> Result<Value, String> {
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        let resp = cog
            .post(url, Some(body))
            .await
            .map_err(|e| format!("the model server did not answer: {e}"))?;
        let status = resp.status;
        if status.is_success() {
            return resp
                .json()
                .map_err(|e| format!("the model server answered oddly: {e}"));
        }
        if matches!(status.as_u16(), 409 | 503) && Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(5)).await;
            continue;
        }
        let text = resp.text();
        let detail = serde_json::from_str::<Value>(&text)
            .ok()
            .map(|v| v["detail"].to_string())
            .unwrap_or(text);
        return Err(format!(
            "the model server refused the input ({status}): {detail}"
        ));
    }
}

fn end_from(payload: &Value, elapsed: f64) -> JobEnd {
    let status = payload["status"]
        .as_str()
        .and_then(Status::parse)
        .unwrap_or(Status::Failed);
    let predict_time = payload["metrics"]["predict_time"]
        .as_f64()
        .unwrap_or(elapsed);
    JobEnd {
        status,
        output: Some(payload["output"].clone()).filter(|o| !o.is_null()),
        error: payload["error"]
            .as_str()
            .map(|e| {
                // Cog 0.23 says "Prediction failed: " twice.
                let doubled = "Prediction failed: Prediction failed: ";
                e.strip_prefix(doubled)
                    .map(|r| format!("Prediction failed: {r}"))
                    .unwrap_or(e.to_string())
            })
            .or_else(|| {
                (status == Status::Failed)
                    .then(|| "the model failed without saying why".to_string())
            }),
        logs: payload["logs"].as_str().unwrap_or_default().to_string(),
        metrics: json!({"predict_time": predict_time}),
        result_version_id: None,
        completed_at: Utc::now(),
    }
}

/// A succeeded training becomes a new version of the destination model: the base version's
/// code, set up with the weights the training wrote.
async fn finish_training(inner: &Inner, job: &Job, end: &mut JobEnd) -> Result<(), String> {
    let mut url = end
        .output
        .as_ref()
        .and_then(|o| o["weights"].as_str())
        .ok_or("the training output has no weights")?
        .to_string();
    // Cog's train mode answers with a data URL: keep the weights as a file of the training.
    if let Some((meta, data)) = url.strip_prefix("data:").and_then(|r| r.split_once(',')) {
        use base64::Engine;
        let bytes = if meta.ends_with(";base64") {
            base64::engine::general_purpose::STANDARD
                .decode(data)
                .map_err(|e| e.to_string())?
        } else {
            data.as_bytes().to_vec()
        };
        url = store_output(inner, &job.id, "weights", &bytes).await?;
    }
    let url = url.as_str();
    let copy = local_file(inner, url)
        .await
        .ok_or("the training's weights were not uploaded")?;
    let file = copy.path().to_path_buf();
    // Weights can be gigabytes: hashed over chunks (and, with an object store, uploaded)
    // before the lock is taken, then linked (or copied by the kernel) under it, never read
    // into memory.
    let sha = modelyard_blobs::digest_file(&file)
        .await
        .map_err(|e| format!("could not read the weights: {e}"))?;
    let name = file
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("weights")
        .to_string();
    let ModelVersion { version: base, .. } = inner
        .store
        .version_by_id(&job.version_id)
        .await
        .map_err(|e| e.to_string())?
        .ok_or("the base version was deleted")?;
    let destination = job
        .destination
        .clone()
        .ok_or("the destination model was deleted")?;
    let (owner, name_) = destination.split_once('/').unwrap_or_default();
    let model = inner
        .store
        .model(owner, name_)
        .await
        .map_err(|e| e.to_string())?
        .ok_or("the destination model was deleted")?;
    // Stored and recorded under the data directory's lock, as a push does: a deletion freeing
    // the same weights at this moment cannot remove them from under the new version.
    let blobs = &inner.cfg.blobs;
    let uploaded = blobs
        .prepare_weights(&file, &sha, &name)
        .await
        .map_err(|e| format!("could not store the weights: {e}"))?;
    let held = blobs
        .lock()
        .await
        .map_err(|e| format!("could not store the weights: {e}"))?;
    let placed = blobs
        .put_weights(&held, &file, &sha, &name)
        .await
        .map_err(|e| format!("could not store the weights: {e}"))?;
    let created = inner
        .store
        .create_version(NewVersion {
            model_id: model.id,
            content_digest: hex::encode(Sha256::digest(format!(
                "{}:{}",
                base.artifact, placed.key
            ))),
            cog_version: base.cog_version.clone(),
            openapi_schema: (*base.openapi_schema).clone(),
            artifact: base.artifact.clone(),
            base_version_id: Some(base.id.clone()),
            training_id: Some(job.id.clone()),
            weights: Some(placed.key.clone()),
            gpu: base.gpu,
        })
        .await;
    let v = match created {
        Ok(stored) => stored.version,
        Err(e) => {
            if placed.new || uploaded {
                let released = blobs
                    .release_held(&held, Stored::Weights(&placed.key))
                    .await;
                if let Err(e) = released {
                    tracing::warn!(job = %job.id, error = %e, "could not remove weights no version uses");
                }
            }
            return Err(format!("could not create the fine-tuned version: {e}"));
        }
    };
    // Its size, for what deleting the version frees; recorded under the lock like the version.
    let size = tokio::fs::metadata(&file)
        .await
        .map(|m| m.len() as i64)
        .ok();
    if let Some(bytes) = size {
        if let Err(e) = inner.store.record_weights(&placed.key, bytes).await {
            tracing::warn!(job = %job.id, error = %e, "could not record the weights' size");
        }
    }
    drop(held);
    end.output = Some(json!({"version": format!("{destination}:{}", v.id), "weights": url}));
    end.result_version_id = Some(v.id);
    Ok(())
}

/// Adds text to a job's logs before the model's own (the environment build), for followers
/// at once and in the record at most every half second.
fn job_log(inner: &Inner, ch: &JobChannel, id: &str, text: &str) {
    let (logs, write) = {
        let mut seen = ch.seen.lock().unwrap_or_else(|p| p.into_inner());
        if seen.ended {
            return;
        }
        inner.emit(
            ch,
            id,
            Event::Logs {
                offset: seen.logs,
                text: text.to_string(),
            },
        );
        seen.prefix.push_str(text);
        seen.logs += text.len();
        seen.logs_text = seen.prefix.clone();
        let write = seen.written.is_none_or(|t| t.elapsed() >= PROGRESS_EVERY);
        if write {
            seen.written = Some(Instant::now());
        }
        (seen.prefix.clone(), write)
    };
    if write {
        let (store, id) = (inner.store.clone(), id.to_string());
        tokio::spawn(async move {
            if let Err(e) = store.job_progress(&id, &logs, None).await {
                tracing::warn!(job = %id, error = %e, "could not record build progress");
            }
        });
    }
}

pub async fn cog_update(inner: &Inner, id: &str, payload: Value) {
    let Some(ch) = inner.cfg.live.existing(id) else {
        return;
    };
    let status = payload["status"].as_str().and_then(Status::parse);
    let terminal = status.is_some_and(Status::is_terminal);
    let (logs, write) = {
        let mut seen = ch.seen.lock().unwrap_or_else(|p| p.into_inner());
        // Cog's webhooks can arrive out of order: nothing counts after the end.
        if seen.ended {
            return;
        }
        let mut logs = format!(
            "{}{}",
            seen.prefix,
            payload["logs"].as_str().unwrap_or_default()
        );
        if logs.len() < seen.logs_text.len() {
            logs = seen.logs_text.clone();
        } else {
            seen.logs_text = logs.clone();
        }
        if logs.len() > seen.logs && logs.is_char_boundary(seen.logs) {
            let text = logs[seen.logs..].to_string();
            inner.emit(
                &ch,
                id,
                Event::Logs {
                    offset: seen.logs,
                    text,
                },
            );
            seen.logs = logs.len();
        }
        match &payload["output"] {
            Value::Array(items) if items.len() > seen.outputs => {
                for (i, item) in items.iter().enumerate().skip(seen.outputs) {
                    seen.items.push(item.clone());
                    inner.emit(
                        &ch,
                        id,
                        Event::Output {
                            index: Some(i),
                            value: item.clone(),
                        },
                    );
                }
                seen.outputs = items.len();
            }
            Value::Array(_) | Value::Null => {}
            whole if terminal => {
                inner.emit(
                    &ch,
                    id,
                    Event::Output {
                        index: None,
                        value: whole.clone(),
                    },
                );
            }
            _ => {}
        }
        if terminal {
            seen.ended = true;
        }
        let write = !terminal && seen.written.is_none_or(|t| t.elapsed() >= PROGRESS_EVERY);
        if write {
            seen.written = Some(Instant::now());
        }
        (logs, write)
    };
    if terminal {
        let mut payload = payload;
        payload["logs"] = json!(logs);
        if let Some(tx) = ch.result.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = tx.send(payload);
        }
    } else if write {
        let output = Some(&payload["output"]).filter(|o| !o.is_null());
        if let Err(e) = inner.store.job_progress(id, &logs, output).await {
            tracing::warn!(job = %id, error = %e, "could not record progress");
        }
    }
}

fn safe_part(s: &str) -> bool {
    !s.is_empty() && s != "." && s != ".." && !s.contains(['/', '\\', '\0'])
}

/// Stores `body` (weights a training returned as a data URL, already in memory) as an output
/// file of the job; returns its URL.
pub async fn store_output(
    inner: &Inner,
    job_id: &str,
    name: &str,
    body: &[u8],
) -> Result<String, String> {
    store_output_from(inner, job_id, name, body, u64::MAX)
        .await
        .map_err(|e| e.to_string())
}

/// The stored file behind one of our output URLs, as a local path.
async fn local_file(inner: &Inner, url: &str) -> Option<modelyard_blobs::LocalCopy> {
    let rest = url.strip_prefix(&format!("{}/files/", inner.cfg.public_url))?;
    let mut parts = rest.splitn(3, '/');
    let (j, t, n) = (parts.next()?, parts.next()?, parts.next()?);
    inner.cfg.blobs.output_copy(j, t, n).await.ok().flatten()
}

/// A queued job whose deadline passed before it started.
pub async fn expire_queued(inner: &Inner, job: &Job) {
    if let Err(e) = inner.store.cancel_job(job.kind, &job.id).await {
        tracing::warn!(job = %job.id, error = %e, "could not cancel a job past its deadline");
    }
    let ch = inner.channel(&job.id);
    ch.webhook
        .store(job.webhook.is_some(), std::sync::atomic::Ordering::Relaxed);
    inner.emit(&ch, &job.id, Event::Done(Status::Canceled));
    ch.done.send_replace(true);
    inner.forget(&job.id);
}

pub async fn remove_expired(inner: &Inner) {
    let before =
        Utc::now() - chrono::Duration::from_std(inner.cfg.api_retention).unwrap_or_default();
    match inner.store.remove_job_data("api", before).await {
        Ok(ids) => {
            for id in ids {
                if let Err(e) = inner.cfg.blobs.remove_outputs(&id).await {
                    tracing::warn!(job = %id, error = %e, "could not remove expired output files");
                }
            }
        }
        Err(e) => tracing::warn!(error = %e, "could not remove expired prediction data"),
    }
}

/// Why an output file was not stored.
#[derive(Debug)]
pub enum StoreError {
    /// The body ran past the cap (in bytes); nothing was kept.
    TooLarge(u64),
    /// A bad job id, a body that broke off, or the disk.
    Failed(String),
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreError::TooLarge(cap) => write!(f, "the file is larger than {cap} bytes"),
            StoreError::Failed(e) => f.write_str(e),
        }
    }
}

/// Stores an output file of a job as it is read from `body` (a model's upload, however large,
/// costs a copy buffer, not its size), at `outputs/<job>/<random token>/<name>`: the random
/// token makes the URL a capability. More than `cap` bytes, or a body that fails, leaves
/// nothing behind. Returns the file's URL.
pub async fn store_output_from(
    inner: &Inner,
    job_id: &str,
    name: &str,
    body: impl tokio::io::AsyncRead + Unpin,
    cap: u64,
) -> Result<String, StoreError> {
    if !safe_part(job_id) || !job_id.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(StoreError::Failed("bad job id".into()));
    }
    let name = name.rsplit('/').next().unwrap_or("output");
    let name = if safe_part(name) { name } else { "output" };
    let mut t = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut t);
    let token = hex::encode(t);
    let dir = inner
        .cfg
        .blobs
        .layout()
        .job_outputs(job_id)
        .map_err(|e| StoreError::Failed(e.to_string()))?
        .join(&token);
    tokio::fs::create_dir_all(&dir)
        .await
        .map_err(|e| StoreError::Failed(e.to_string()))?;
    // Removes the token's folder unless the file was stored whole, also when this future is
    // dropped half-way (the upload's connection closed, the server stopping).
    let mut partial = RemoveOnDrop(Some(dir.clone()));
    write_capped(body, &dir.join(name), cap).await?;
    partial.0 = None;
    // With an object store it moves there, so whichever node a client asks serves it.
    inner
        .cfg
        .blobs
        .publish_output(job_id, &token, name)
        .await
        .map_err(|e| StoreError::Failed(e.to_string()))?;
    Ok(format!(
        "{}/files/{job_id}/{token}/{name}",
        inner.cfg.public_url
    ))
}

/// Removes a folder when dropped while still holding it.
struct RemoveOnDrop(Option<PathBuf>);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if let Some(dir) = self.0.take() {
            // Synchronous: a drop cannot wait. The folder holds one partial file.
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// Copies `body` into a new file at `path` in chunks, refusing (as soon as it is crossed) more
/// than `cap` bytes. Returns the size. On an error the caller removes what was written.
async fn write_capped(
    body: impl tokio::io::AsyncRead + Unpin,
    path: &std::path::Path,
    cap: u64,
) -> Result<u64, StoreError> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let failed = |e: std::io::Error| StoreError::Failed(e.to_string());
    let mut out = tokio::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .await
        .map_err(failed)?;
    // One byte past the cap is enough to know it was crossed.
    let mut body = body.take(cap.saturating_add(1));
    let n = tokio::io::copy(&mut body, &mut out).await.map_err(failed)?;
    if n > cap {
        return Err(StoreError::TooLarge(cap));
    }
    out.flush().await.map_err(failed)?;
    Ok(n)
}

#[cfg(test)]
mod flat_tests {
    use super::*;

    #[tokio::test]
    async fn a_capped_write_refuses_past_the_cap_and_keeps_exactly_up_to_it() {
        let dir = tempfile::tempdir().unwrap();
        let data = vec![7u8; 100_000];
        let exact = dir.path().join("exact");
        assert_eq!(
            write_capped(&data[..], &exact, 100_000).await.unwrap(),
            100_000
        );
        assert_eq!(std::fs::read(&exact).unwrap(), data);
        let over = dir.path().join("over");
        assert!(matches!(
            write_capped(&data[..], &over, 99_999).await,
            Err(StoreError::TooLarge(99_999))
        ));
        // Never through an existing name (or a link planted there).
        assert!(matches!(
            write_capped(&data[..], &exact, 100_000).await,
            Err(StoreError::Failed(_))
        ));
    }
}
