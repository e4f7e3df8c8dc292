//! Two servers on one PostgreSQL database and one data directory: A runs jobs, B serves the API
//! only. A client talking to B alone still waits for its prediction (`Prefer: wait`), follows
//! it (server-sent events), cancels it, and its webhook comes once, from A, which ran it.
mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use common::{start_with, Backend, Server};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

/// A runs jobs (one Cog server at most); B, on A's database and data directory, does not.
async fn two_nodes() -> (Server, Server) {
    let a = start_with(Backend::Postgres, |c| {
        c.run_jobs = true;
        c.max_servers = 1;
        c.setup_timeout = Duration::from_secs(120);
        c.allow_private_webhooks = true;
    })
    .await;
    let (db, dir) = (
        a.state.config.database_url.clone(),
        a.state.config.data_dir.clone(),
    );
    // Not a database of its own: A's, which A's drop removes.
    let b = start_with(Backend::Sqlite, move |c| {
        c.database_url = db;
        c.data_dir = dir;
        c.run_jobs = false;
        c.allow_private_webhooks = true;
    })
    .await;
    assert!(b.state.runner.is_none());
    // Each hears the other say hello on the bus.
    let until = Instant::now() + Duration::from_secs(10);
    while !(a.state.live.has_peers() && b.state.live.has_peers()) {
        assert!(Instant::now() < until, "the servers never heard each other");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    (a, b)
}

async fn create(s: &Server, version: &str, input: Value, extra: Value, wait: bool) -> Value {
    let mut body = json!({"version": version, "input": input});
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        b.extend(e.clone());
    }
    let mut req = s
        .http
        .post(format!("{}/v1/predictions", s.url))
        .bearer_auth(&s.tokens["alice"])
        .json(&body);
    if wait {
        req = req.header("prefer", "wait=60");
    }
    let resp = req.send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    resp.json().await.unwrap()
}

/// A prediction's server-sent events, read until its end.
async fn stream_text(url: &str) -> String {
    let mut resp = reqwest::get(url).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let mut text = String::new();
    let until = Instant::now() + Duration::from_secs(60);
    while !text.contains("event: done") {
        assert!(Instant::now() < until, "no done event: {text}");
        match tokio::time::timeout(Duration::from_secs(30), resp.chunk())
            .await
            .expect("an event within 30 s")
            .unwrap()
        {
            Some(c) => text.push_str(&String::from_utf8_lossy(&c)),
            None => break,
        }
    }
    text
}

/// The data of each event of `kind` (its `data:` lines joined, as a browser does).
fn events_of(text: &str, kind: &str) -> Vec<String> {
    let tag = format!("event: {kind}");
    text.split("\n\n")
        .filter(|e| e.lines().any(|l| l == tag))
        .map(|e| {
            e.lines()
                .filter_map(|l| l.strip_prefix("data: "))
                .collect::<Vec<_>>()
                .join("\n")
        })
        .collect()
}

/// Receives webhooks on a port of its own; returns its URL and what it got (id, body).
async fn webhook_receiver() -> (String, Arc<Mutex<Vec<(String, Value)>>>) {
    let got: Arc<Mutex<Vec<(String, Value)>>> = Default::default();
    let kept = got.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |h: HeaderMap, body: String| {
            let kept = kept.clone();
            async move {
                let id = h
                    .get("webhook-id")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_string();
                kept.lock()
                    .unwrap()
                    .push((id, serde_json::from_str(&body).unwrap()));
                StatusCode::NO_CONTENT
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}/hook"), got)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_node_waits_streams_and_sends_webhooks_once() {
    let (a, b) = two_nodes().await;
    b.create_model("alice", "alice", "iter", "private").await;
    let v = b.push("alice", "alice/iter", "iterator").await;

    // Prefer: wait on B, for a job A runs.
    let t0 = Instant::now();
    let p = create(
        &b,
        &v,
        json!({"text": "a b c", "delay": 0.1}),
        json!({}),
        true,
    )
    .await;
    assert_eq!(p["status"], "succeeded", "{p}");
    assert_eq!(p["output"], json!(["a", "b", "c"]));
    assert!(
        t0.elapsed() < Duration::from_secs(50),
        "waited for the limit"
    );

    // Server-sent events on B: output, logs and the end, as A's runner sends them.
    let p = create(
        &b,
        &v,
        json!({"text": "one two three", "delay": 0.3}),
        json!({}),
        false,
    )
    .await;
    let text = stream_text(p["urls"]["stream"].as_str().unwrap()).await;
    assert_eq!(
        events_of(&text, "output"),
        ["one", "two", "three"],
        "{text}"
    );
    let logs = events_of(&text, "logs").concat();
    assert!(logs.contains("yielding two"), "{text}");
    assert_eq!(events_of(&text, "done"), ["{}"], "{text}");

    // An item (and a log line) too large for a notice reaches B through the record, in its place.
    let long = "x".repeat(9000);
    let p = create(
        &b,
        &v,
        json!({"text": format!("first {long} last"), "delay": 0.3}),
        json!({}),
        false,
    )
    .await;
    let text = stream_text(p["urls"]["stream"].as_str().unwrap()).await;
    assert_eq!(
        events_of(&text, "output"),
        ["first", long.as_str(), "last"],
        "{text}"
    );
    let logs = events_of(&text, "logs").concat();
    assert!(logs.contains(&format!("yielding {long}")), "{text}");
    assert!(logs.contains("yielding last"), "{text}");

    // A webhook asked for on B is sent by A, which runs the job: each event once.
    let (hook, got) = webhook_receiver().await;
    let p = create(
        &b,
        &v,
        json!({"text": "x y", "delay": 0.1}),
        json!({"webhook": hook, "webhook_events_filter": ["completed"]}),
        true,
    )
    .await;
    assert_eq!(p["status"], "succeeded", "{p}");
    let until = Instant::now() + Duration::from_secs(20);
    while got.lock().unwrap().is_empty() {
        assert!(Instant::now() < until, "no webhook came");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Time for a second delivery, were there one.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let got = got.lock().unwrap().clone();
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].1["id"], p["id"]);
    assert_eq!(got[0].1["status"], "succeeded");
    assert_eq!(got[0].1["output"], json!(["x", "y"]));
    drop(b);
    drop(a);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_on_the_api_node_stops_the_job_where_it_runs() {
    let (a, b) = two_nodes().await;
    b.create_model("alice", "alice", "slow", "private").await;
    let v = b.push("alice", "alice/slow", "slow").await;
    let p = create(&b, &v, json!({"seconds": 60}), json!({}), false).await;
    let id = p["id"].as_str().unwrap().to_string();
    let path = format!("/v1/predictions/{id}");
    b.until_status(
        "alice",
        &path,
        "processing",
        Duration::from_secs(90),
        "never started",
    )
    .await;
    let stream = tokio::spawn(stream_text_owned(
        p["urls"]["stream"].as_str().unwrap().to_string(),
    ));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let c = b
        .call("alice", Method::POST, &format!("{path}/cancel"), None)
        .await;
    assert_eq!(c.body["status"], "canceled");
    // Its follower on B hears the end.
    let text = stream.await.unwrap();
    assert_eq!(
        events_of(&text, "done"),
        [r#"{"reason":"canceled"}"#],
        "{text}"
    );
    // A's only model server is free again at once: the job stopped there, not just in its
    // record (it would work on for a minute otherwise).
    let t0 = Instant::now();
    let next = create(&b, &v, json!({"seconds": 0.2}), json!({}), true).await;
    assert_eq!(next["status"], "succeeded", "{next}");
    assert!(
        t0.elapsed() < Duration::from_secs(20),
        "the canceled job held the server for {:?}",
        t0.elapsed()
    );
    drop(b);
    drop(a);
}

async fn stream_text_owned(url: String) -> String {
    stream_text(&url).await
}

/// A token revoked through one node stops working on the other at once, not only when the
/// other's remembered lookup lapses (a second).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_token_revoked_on_one_node_fails_on_the_other_at_once() {
    let (a, b) = two_nodes().await;
    let token = b.tokens["alice"].clone();
    let hash = modelyard_domain::ids::token_hash(&token);
    let account = |s: &Server| {
        s.http
            .get(format!("{}/v1/account", s.url))
            .bearer_auth(token.clone())
            .send()
    };
    let alice_id = b.state.store.account("alice").await.unwrap().unwrap().id;
    // A remembers the token now; the revocation itself tells nobody (it is the store's).
    assert_eq!(account(&a).await.unwrap().status(), StatusCode::OK);
    assert!(b.state.store.revoke_token(alice_id, &hash).await.unwrap());
    let told = Instant::now();
    b.state.forget_callers().await;
    loop {
        let status = account(&a).await.unwrap().status();
        if status == StatusCode::UNAUTHORIZED {
            break;
        }
        assert_eq!(status, StatusCode::OK);
        assert!(
            told.elapsed() < Duration::from_millis(700),
            "A still took the revoked token {:?} after B said so",
            told.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
