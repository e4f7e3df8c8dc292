//! The live side of jobs: server-sent events, output files at capability URLs, and the
//! loopback endpoints the Cog servers we start report to.
use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;

use crate::extract::{Path, Query};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::Response;
use futures_util::stream::{self, Stream, StreamExt};
use modelyard_domain::{JobKind, Status};
use modelyard_runner::Event;
use serde::Deserialize;
use serde_json::Value;

use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

#[derive(Deserialize)]
pub struct Key {
    key: Option<String>,
}

fn output_event(id: &mut u64, v: &Value) -> SseEvent {
    *id += 1;
    let data = match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    SseEvent::default()
        .id(id.to_string())
        .event("output")
        .data(data)
}

fn done_event(id: &mut u64, status: Status, error: Option<&str>) -> Vec<SseEvent> {
    let mut out = Vec::new();
    if status == Status::Failed {
        *id += 1;
        let e = error.unwrap_or("the prediction failed");
        out.push(
            SseEvent::default()
                .id(id.to_string())
                .event("error")
                .data(e),
        );
    }
    *id += 1;
    let data = match status {
        Status::Canceled => r#"{"reason":"canceled"}"#,
        Status::Failed => r#"{"reason":"error"}"#,
        _ => "{}",
    };
    out.push(
        SseEvent::default()
            .id(id.to_string())
            .event("done")
            .data(data),
    );
    out
}

/// `urls.stream`: a capability URL, since the JavaScript client fetches it without a token.
pub async fn stream(
    State(s): State<AppState>,
    Path(id): Path<String>,
    Query(k): Query<Key>,
) -> ApiResult<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>> {
    if k.key.as_deref() != Some(s.capability("stream", &id).as_str())
        || crate::retention::expired(&s, &id).await?
    {
        return Err(ApiError::NotFound(format!(
            "The prediction {id} does not exist (or its stream has expired)."
        )));
    }
    // Subscribe before reading the record, so nothing that happens in between is missed; what
    // was sent before and is not yet in the record comes from the live hub.
    let (rx, sent_before) = s.live.follow(&id);
    let job = s
        .store
        .job(JobKind::Prediction, &id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("The prediction {id} does not exist.")))?;
    let mut n = 0u64;
    let mut first = Vec::new();
    let mut items_sent = 0usize;
    match &job.output {
        Some(Value::Array(items))
            if items.len() < sent_before.len() && !job.status.is_terminal() =>
        {
            for item in &sent_before {
                first.push(output_event(&mut n, item));
            }
            items_sent = sent_before.len();
        }
        None if !sent_before.is_empty() && !job.status.is_terminal() => {
            for item in &sent_before {
                first.push(output_event(&mut n, item));
            }
            items_sent = sent_before.len();
        }
        Some(Value::Array(items)) => {
            for item in items {
                first.push(output_event(&mut n, item));
            }
            items_sent = items.len();
        }
        Some(v) if job.status.is_terminal() => first.push(output_event(&mut n, v)),
        _ => {}
    }
    let finished = job.status.is_terminal() || !s.follows_jobs();
    if finished {
        first.extend(done_event(&mut n, job.status, job.error.as_deref()));
    }
    let live = (!finished).then_some(rx);
    let store = s.store.clone();
    let tail = stream::unfold((live, n, items_sent, id), move |(rx, mut n, sent, id)| {
        let store = store.clone();
        async move {
            let mut rx = rx?;
            loop {
                match rx.recv().await {
                    Ok(Event::Started) => continue,
                    Ok(Event::Output { index: Some(i), .. }) if i < sent => continue,
                    Ok(Event::Output { index, value }) => {
                        let sent = index.map(|i| i + 1).unwrap_or(sent);
                        let ev = vec![output_event(&mut n, &value)];
                        return Some((ev, (Some(rx), n, sent, id)));
                    }
                    Ok(Event::Logs { text, .. }) => {
                        n += 1;
                        let ev = vec![SseEvent::default()
                            .id(n.to_string())
                            .event("logs")
                            .data(text)];
                        return Some((ev, (Some(rx), n, sent, id)));
                    }
                    Ok(Event::Done(_)) | Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                        // The record has the final word, with the error text.
                        let (status, error) = match store.job(JobKind::Prediction, &id).await {
                            Ok(Some(j)) => (j.status, j.error),
                            _ => (Status::Failed, None),
                        };
                        return Some((
                            done_event(&mut n, status, error.as_deref()),
                            (None, n, sent, id),
                        ));
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                }
            }
        }
    });
    let all = stream::iter(vec![first])
        .chain(tail)
        .flat_map(|evs| stream::iter(evs.into_iter().map(Ok)));
    Ok(Sse::new(all).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

/// An output file: the path is the capability, until the prediction's retention time.
pub async fn file(
    State(s): State<AppState>,
    Path((job, token, name)): Path<(String, String, String)>,
) -> ApiResult<Response> {
    let not_found = || ApiError::NotFound("There is no such file (it may have expired).".into());
    // Any node serves it: the bytes are the data directory's or the object store's.
    let content = match s.blobs.output(&job, &token, &name).await {
        Ok(Some(c)) => c,
        Ok(None) | Err(modelyard_blobs::BlobError::BadName { .. }) => return Err(not_found()),
        // The store could not be read: that is not the file missing.
        Err(e) => return Err(e.into()),
    };
    if crate::retention::expired(&s, &job).await? {
        return Err(not_found());
    }
    crate::user_content::content_response(content, crate::user_content::type_of_name(&name), &name)
        .await
        .map_err(|_| not_found())
}
