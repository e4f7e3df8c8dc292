//! Predictions and trainings run for real on Cog servers (`pip install cog`), through the API.
mod common;

use std::time::{Duration, Instant};

use common::{start_with, Backend, Server};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

async fn runner_server(b: Backend, max_servers: usize) -> Server {
    start_with(b, |c| {
        c.run_jobs = true;
        c.max_servers = max_servers;
        c.setup_timeout = Duration::from_secs(120);
    })
    .await
}

async fn model_with(s: &Server, name: &str, fixture: &str) -> String {
    s.create_model("alice", "alice", name, "private").await;
    s.push("alice", &format!("alice/{name}"), fixture).await
}

async fn predict_wait(s: &Server, version: &str, input: Value) -> (common::Reply, Value) {
    let resp = s
        .http
        .post(format!("{}/v1/predictions", s.url))
        .bearer_auth(&s.tokens["alice"])
        .header("prefer", "wait=60")
        .json(&json!({"version": version, "input": input}))
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let body: Value = resp.json().await.unwrap();
    (
        common::Reply {
            status,
            headers,
            body: body.clone(),
        },
        body,
    )
}

async fn prefer_wait_returns_the_finished_prediction(b: Backend) {
    let s = runner_server(b, 2).await;
    let v = model_with(&s, "echo", "echo").await;
    let (r, p) = predict_wait(&s, &v, json!({"prompt": "world", "repeat": 2})).await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!(r.headers["preference-applied"], "wait=60");
    assert_eq!(r.headers["location"], p["urls"]["get"].as_str().unwrap());
    assert_eq!(p["status"], "succeeded", "{p}");
    assert_eq!(p["output"], "hello world hello world");
    assert!(p["metrics"]["predict_time"].as_f64().unwrap() >= 0.0);
    assert!(
        p["metrics"]["total_time"].as_f64().unwrap()
            >= p["metrics"]["predict_time"].as_f64().unwrap()
    );
    for field in ["created_at", "started_at", "completed_at"] {
        assert!(p[field].is_string(), "{field}: {p}");
    }
    // The second one reuses the warm server.
    let (_, p2) = predict_wait(&s, &format!("alice/echo:{v}"), json!({"prompt": "again"})).await;
    assert_eq!(p2["output"], "hello again");
    assert_eq!(s.state.runner.as_ref().unwrap().servers(), 1);
    let m = s.get("alice", "/v1/models/alice/echo").await;
    assert_eq!(m.body["run_count"], 2);
}

async fn failing_models_fail_with_their_error_and_logs(b: Backend) {
    let s = runner_server(b, 2).await;
    let v = model_with(&s, "failing", "failing").await;
    let (_, p) = predict_wait(&s, &v, json!({"reason": "loudly"})).await;
    assert_eq!(p["status"], "failed", "{p}");
    assert!(
        p["error"]
            .as_str()
            .unwrap()
            .contains("this model fails loudly"),
        "{p}"
    );
    assert!(p["logs"].as_str().unwrap().contains("about to fail"), "{p}");
}

/// A prediction's server-sent events, read until its end (`text/event-stream`, no token).
async fn stream_text(url: &str) -> String {
    let mut resp = reqwest::get(url).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let mut text = String::new();
    let until = Instant::now() + Duration::from_secs(60);
    while !text.contains("event: done") {
        assert!(Instant::now() < until, "no done event: {text}");
        match tokio::time::timeout(Duration::from_secs(30), resp.chunk())
            .await
            .unwrap()
            .unwrap()
        {
            Some(c) => text.push_str(&String::from_utf8_lossy(&c)),
            None => break,
        }
    }
    text
}

/// The output items of a stream's events.
fn outputs_of(text: &str) -> Vec<&str> {
    text.split("\n\n")
        .filter(|e| e.contains("event: output"))
        .map(|e| e.lines().find_map(|l| l.strip_prefix("data: ")).unwrap())
        .collect()
}

/// A follower that comes after some items were sent, but before the record caught up with
/// them (it is written at most every half second), still gets every item once.
async fn a_late_follower_misses_no_output(b: Backend) {
    let s = runner_server(b, 1).await;
    let v = model_with(&s, "iter", "iterator").await;
    let input = json!({"text": "alpha beta gamma delta epsilon", "delay": 0.2});
    let warm = predict_wait(&s, &v, input.clone()).await.1;
    assert_eq!(warm["status"], "succeeded", "{warm}");
    for late_ms in [300, 500, 700] {
        let r = s
            .call(
                "alice",
                Method::POST,
                "/v1/predictions",
                Some(json!({"version": v, "input": input})),
            )
            .await;
        let url = r.body["urls"]["stream"].as_str().unwrap().to_string();
        tokio::time::sleep(Duration::from_millis(late_ms)).await;
        assert_eq!(
            outputs_of(&stream_text(&url).await),
            ["alpha", "beta", "gamma", "delta", "epsilon"],
            "joined after {late_ms} ms"
        );
    }
}

async fn iterator_output_streams_as_server_sent_events(b: Backend) {
    let s = runner_server(b, 2).await;
    let v = model_with(&s, "iter", "iterator").await;
    let r = s
        .call(
            "alice",
            Method::POST,
            "/v1/predictions",
            Some(json!({"version": v, "input": {"text": "one two three", "delay": 0.3}})),
        )
        .await;
    let stream = r.body["urls"]["stream"].as_str().unwrap().to_string();
    // No token: JavaScript fetches the stream URL without one, so the URL is the capability.
    let text = stream_text(&stream).await;
    assert_eq!(outputs_of(&text), ["one", "two", "three"], "{text}");
    assert!(
        text.split("\n\n")
            .filter(|e| e.contains("event:"))
            .all(|e| e.contains("id: ")),
        "{text}"
    );
    assert!(
        text.contains("event: done\ndata: {}")
            || text.contains("data: {}\nevent: done")
            || text.contains("event: done"),
        "{text}"
    );
    let wrong = reqwest::get(stream.replace("key=", "key=0")).await.unwrap();
    assert_eq!(wrong.status(), StatusCode::NOT_FOUND);
    let p = s
        .until_done(
            "alice",
            &format!("/v1/predictions/{}", r.body["id"].as_str().unwrap()),
            Duration::from_secs(30),
        )
        .await;
    assert_eq!(p["output"], json!(["one", "two", "three"]));
}

async fn file_outputs_are_served_at_capability_urls(b: Backend) {
    let s = runner_server(b, 2).await;
    let v = model_with(&s, "fileout", "fileout").await;
    let (_, p) = predict_wait(&s, &v, json!({"text": "the file's words"})).await;
    assert_eq!(p["status"], "succeeded", "{p}");
    let url = p["output"].as_str().unwrap();
    assert!(url.starts_with(&format!("{}/files/", s.url)), "{url}");
    let body = reqwest::get(url).await.unwrap().text().await.unwrap();
    assert_eq!(body, "the file's words");
    let guessed = reqwest::get(format!(
        "{}/files/{}/00/x.txt",
        s.url,
        p["id"].as_str().unwrap()
    ))
    .await
    .unwrap();
    assert_eq!(guessed.status(), StatusCode::NOT_FOUND);
}

async fn cancel_and_deadlines_stop_running_work(b: Backend) {
    let s = runner_server(b, 2).await;
    let v = model_with(&s, "slow", "slow").await;
    let r = s
        .call(
            "alice",
            Method::POST,
            "/v1/predictions",
            Some(json!({"version": v, "input": {"seconds": 60}})),
        )
        .await;
    let id = r.body["id"].as_str().unwrap().to_string();
    let path = format!("/v1/predictions/{id}");
    s.until_status(
        "alice",
        &path,
        "processing",
        Duration::from_secs(60),
        "never started",
    )
    .await;
    let t0 = Instant::now();
    let c = s
        .call("alice", Method::POST, &format!("{path}/cancel"), None)
        .await;
    assert_eq!(c.body["status"], "canceled");
    let p = s.until_done("alice", &path, Duration::from_secs(20)).await;
    assert_eq!(p["status"], "canceled");
    assert!(t0.elapsed() < Duration::from_secs(15));

    // Cancel-After: the deadline cancels it, without anyone asking.
    let resp = s
        .http
        .post(format!("{}/v1/predictions", s.url))
        .bearer_auth(&s.tokens["alice"])
        .header("cancel-after", "5s")
        .json(&json!({"version": v, "input": {"seconds": 60}}))
        .send()
        .await
        .unwrap();
    let p: Value = resp.json().await.unwrap();
    assert!(p["deadline"].is_string(), "{p}");
    let t0 = Instant::now();
    let p = s
        .until_done(
            "alice",
            &format!("/v1/predictions/{}", p["id"].as_str().unwrap()),
            Duration::from_secs(40),
        )
        .await;
    assert_eq!(p["status"], "canceled", "{p}");
    assert!(
        t0.elapsed() >= Duration::from_secs(4),
        "canceled before its deadline"
    );
    let bad = s
        .http
        .post(format!("{}/v1/predictions", s.url))
        .bearer_auth(&s.tokens["alice"])
        .header("cancel-after", "2s")
        .json(&json!({"version": v, "input": {}}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), StatusCode::UNPROCESSABLE_ENTITY);
}

async fn environments_are_built_from_python_packages(b: Backend) {
    let s = runner_server(b, 2).await;
    let good = model_with(&s, "withdeps", "withdeps").await;
    let (_, p) = predict_wait(&s, &good, json!({"x": "ok"})).await;
    assert_eq!(p["status"], "succeeded", "{p}");
    // Only the version's own environment has termcolor.
    assert_eq!(p["output"], "ok termcolor 2.4.0");
    // The first prediction's logs tell of the build, with pip's own words, then the model's.
    let logs = p["logs"].as_str().unwrap();
    assert!(
        logs.starts_with("Building this version's Python environment (1 package)"),
        "{logs}"
    );
    assert!(logs.contains("termcolor"), "{logs}");
    assert!(logs.contains("The environment is ready."), "{logs}");
    let (_, again) = predict_wait(&s, &good, json!({"x": "again"})).await;
    assert_eq!(again["status"], "succeeded", "{again}");
    assert!(
        !again["logs"]
            .as_str()
            .unwrap_or_default()
            .contains("Building"),
        "{again}"
    );
    let log = s
        .get(
            "alice",
            &format!("/v1/models/alice/withdeps/versions/{good}/build-log"),
        )
        .await;
    assert_eq!(log.status, StatusCode::OK);
    assert!(
        log.body.as_str().unwrap().contains("termcolor"),
        "{:?}",
        log.body
    );
    let bad = model_with(&s, "baddeps", "baddeps").await;
    let (_, p) = predict_wait(&s, &bad, json!({})).await;
    assert_eq!(p["status"], "failed", "{p}");
    let err = p["error"].as_str().unwrap();
    assert!(
        err.contains("building the Python environment failed"),
        "{err}"
    );
    assert!(err.contains("modelyard-no-such-package-anywhere"), "{err}");
    // What pip said is in the failed prediction's logs too.
    assert!(
        p["logs"]
            .as_str()
            .unwrap()
            .contains("modelyard-no-such-package-anywhere"),
        "{p}"
    );
}

async fn trainings_make_runnable_fine_tunes(b: Backend) {
    let s = runner_server(b, 2).await;
    let base = model_with(&s, "base", "trainable").await;
    s.create_model("alice", "alice", "tuned", "private").await;
    let r = s
        .call(
            "alice",
            Method::POST,
            &format!("/v1/models/alice/base/versions/{base}/trainings"),
            Some(json!({"destination": "alice/tuned", "input": {"word": "bonjour"}})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let t = s
        .until_done(
            "alice",
            &format!("/v1/trainings/{}", r.body["id"].as_str().unwrap()),
            Duration::from_secs(90),
        )
        .await;
    assert_eq!(t["status"], "succeeded", "{t}");
    let version = t["output"]["version"].as_str().unwrap();
    assert!(version.starts_with("alice/tuned:"), "{t}");
    let weights = reqwest::get(t["output"]["weights"].as_str().unwrap())
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(weights, "bonjour");
    let (_, p) = predict_wait(&s, version, json!({"prompt": "salut"})).await;
    assert_eq!(p["output"], "bonjour: salut", "{p}");
    let (_, p) = predict_wait(&s, &base, json!({"prompt": "salut"})).await;
    assert_eq!(p["output"], "base: salut", "{p}");

    // The base cannot go while the fine-tune exists.
    let del = s
        .call(
            "alice",
            Method::DELETE,
            &format!("/v1/models/alice/base/versions/{base}"),
            None,
        )
        .await;
    assert_eq!(del.status, StatusCode::CONFLICT);
    assert_eq!(del.kinds(), ["fine_tune_base"]);
    assert_eq!(del.body["blockers"][0]["version"], version);

    // Deleting the fine-tune frees its weights, and then the base can go.
    let weights_dir = s.state.config.data_dir.join("weights");
    assert_eq!(std::fs::read_dir(&weights_dir).unwrap().count(), 1);
    let (_, tuned_id) = version.split_once(':').unwrap();
    let path = format!("/v1/models/alice/tuned/versions/{tuned_id}");
    assert_eq!(
        s.call("alice", Method::DELETE, &path, None).await.status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        std::fs::read_dir(&weights_dir).unwrap().count(),
        0,
        "unused weights stay"
    );
    let path = format!("/v1/models/alice/base/versions/{base}");
    let del = s.call("alice", Method::DELETE, &path, None).await;
    assert_eq!(del.status, StatusCode::NO_CONTENT, "{:?}", del.body);
}

async fn deployments_run_their_release_and_keep_servers_warm(b: Backend) {
    let s = runner_server(b, 2).await;
    let v = model_with(&s, "dep", "echo").await;
    let body = json!({"name": "prod", "model": "alice/dep", "version": v, "hardware": "cpu",
        "min_instances": 1, "max_instances": 1});
    assert_eq!(
        s.call("alice", Method::POST, "/v1/deployments", Some(body))
            .await
            .status,
        StatusCode::OK
    );
    let until = Instant::now() + Duration::from_secs(60);
    while s.state.runner.as_ref().unwrap().servers() < 1 {
        assert!(
            Instant::now() < until,
            "min_instances 1 kept no server warm"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let resp = s
        .http
        .post(format!("{}/v1/deployments/alice/prod/predictions", s.url))
        .bearer_auth(&s.tokens["alice"])
        .header("prefer", "wait")
        .json(&json!({"input": {"prompt": "deployed"}}))
        .send()
        .await
        .unwrap();
    let p: Value = resp.json().await.unwrap();
    assert_eq!(p["output"], "hello deployed", "{p}");
    assert_eq!(p["deployment"], "alice/prod");
}

async fn a_deployment_uses_at_most_max_instances_servers(b: Backend) {
    let s = runner_server(b, 2).await;
    let v = model_with(&s, "slowdep", "slow").await;
    let body = json!({"name": "one", "model": "alice/slowdep", "version": v, "hardware": "cpu",
        "min_instances": 0, "max_instances": 1});
    assert_eq!(
        s.call("alice", Method::POST, "/v1/deployments", Some(body))
            .await
            .status,
        StatusCode::OK
    );
    let mut ids = vec![];
    for _ in 0..2 {
        let r = s
            .call(
                "alice",
                Method::POST,
                "/v1/deployments/alice/one/predictions",
                Some(json!({"input": {"seconds": 1}})),
            )
            .await;
        ids.push(r.body["id"].as_str().unwrap().to_string());
    }
    let mut done = vec![];
    for id in &ids {
        done.push(
            s.until_done(
                "alice",
                &format!("/v1/predictions/{id}"),
                Duration::from_secs(60),
            )
            .await,
        );
    }
    let time =
        |p: &Value, f: &str| chrono::DateTime::parse_from_rfc3339(p[f].as_str().unwrap()).unwrap();
    let (first, second) = if time(&done[0], "started_at") <= time(&done[1], "started_at") {
        (&done[0], &done[1])
    } else {
        (&done[1], &done[0])
    };
    assert!(
        time(second, "started_at") >= time(first, "completed_at"),
        "max_instances 1, yet they ran side by side: {first} {second}"
    );
    assert_eq!(s.state.runner.as_ref().unwrap().servers(), 1);

    // Disabled: new predictions are refused.
    let off = json!({"min_instances": 0, "max_instances": 0});
    assert_eq!(
        s.call(
            "alice",
            Method::PATCH,
            "/v1/deployments/alice/one",
            Some(off)
        )
        .await
        .status,
        StatusCode::OK
    );
    let r = s
        .call(
            "alice",
            Method::POST,
            "/v1/deployments/alice/one/predictions",
            Some(json!({"input": {"seconds": 1}})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{:?}", r.body);
}

async fn api_predictions_lose_their_data_after_the_retention_time(b: Backend) {
    let s = start_with(b, |c| {
        c.run_jobs = true;
        c.api_retention = Duration::from_secs(1);
    })
    .await;
    let v = model_with(&s, "files", "fileout").await;
    let (_, p) = predict_wait(&s, &v, json!({"text": "short-lived"})).await;
    assert_eq!(p["status"], "succeeded", "{p}");
    let url = p["output"].as_str().unwrap().to_string();
    assert_eq!(reqwest::get(&url).await.unwrap().status(), StatusCode::OK);
    let path = format!("/v1/predictions/{}", p["id"].as_str().unwrap());
    let until = Instant::now() + Duration::from_secs(30);
    let gone = loop {
        let r = s.get("alice", &path).await.body;
        if r["data_removed"] == true {
            break r;
        }
        assert!(Instant::now() < until, "{r}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert!(
        gone["output"].is_null() && gone["input"].is_null(),
        "{gone}"
    );
    assert_eq!(gone["status"], "succeeded", "the record itself stays");
    assert_eq!(
        reqwest::get(&url).await.unwrap().status(),
        StatusCode::NOT_FOUND
    );
}

async fn a_restart_loses_nothing(b: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // The two servers share one database, this test's own (dropped at its end).
    let own = match b {
        Backend::Sqlite => None,
        Backend::Postgres => Some(common::OwnPgDatabase::new().await),
    };
    let db = own.as_ref().map(|d| d.url.clone());
    let cfg = |run: bool| {
        let (data, db) = (data.clone(), db.clone());
        move |c: &mut modelyard_server::Config| {
            c.data_dir = data;
            c.database_url = db;
            c.run_jobs = run;
            c.max_servers = 1;
        }
    };
    let first = start_with(Backend::Sqlite, cfg(true)).await;
    let slow = model_with(&first, "slow", "slow").await;
    let echo = model_with(&first, "echo", "echo").await;
    let running = first
        .call(
            "alice",
            Method::POST,
            "/v1/predictions",
            Some(json!({"version": slow, "input": {"seconds": 60}})),
        )
        .await
        .body["id"]
        .as_str()
        .unwrap()
        .to_string();
    let until = Instant::now() + Duration::from_secs(60);
    while first
        .get("alice", &format!("/v1/predictions/{running}"))
        .await
        .body["status"]
        != "processing"
    {
        assert!(Instant::now() < until);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut queued = vec![];
    for i in 0..3 {
        let r = first
            .call(
                "alice",
                Method::POST,
                "/v1/predictions",
                Some(json!({"version": echo, "input": {"prompt": format!("q{i}")}})),
            )
            .await;
        queued.push(r.body["id"].as_str().unwrap().to_string());
    }
    let tokens = first.tokens.clone();
    let runner = first.state.runner.clone().unwrap();
    // Stop the first server as a shutdown does: the runner stops every Cog server it started.
    runner.shutdown().await;
    drop(first);
    assert_eq!(
        cog_servers_of(runner.label()),
        0,
        "a Cog server outlived its runner"
    );

    let second = start_with(Backend::Sqlite, cfg(true)).await;
    let get = |id: &str| {
        let (s, t, id) = (&second, tokens["alice"].clone(), id.to_string());
        async move {
            let r = s
                .http
                .get(format!("{}/v1/predictions/{id}", s.url))
                .bearer_auth(t)
                .send()
                .await
                .unwrap();
            r.json::<Value>().await.unwrap()
        }
    };
    let lost = get(&running).await;
    assert_eq!(lost["status"], "failed", "{lost}");
    assert!(
        lost["error"]
            .as_str()
            .unwrap()
            .contains("shut down while this ran"),
        "{lost}"
    );
    for (i, id) in queued.iter().enumerate() {
        let until = Instant::now() + Duration::from_secs(60);
        loop {
            let p = get(id).await;
            if p["status"] == "succeeded" {
                assert_eq!(p["output"], format!("hello q{i}"));
                break;
            }
            assert!(Instant::now() < until, "{p}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Cog servers started by the runner with this label.
fn cog_servers_of(label: &str) -> usize {
    // The label in the upload URL is this runner's own: ports are reused by other tests.
    let needle = format!("/uploads/{label}-");
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| std::fs::read(e.ok()?.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .filter(|c| c.contains("cog.server.http") && c.contains(&needle))
        .count()
}

mod sqlite {
    use super::*;
    macro_rules! on_sqlite {
        ($($name:ident),*) => {$(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name(Backend::Sqlite).await }
        )*};
    }
    on_sqlite!(
        prefer_wait_returns_the_finished_prediction,
        failing_models_fail_with_their_error_and_logs,
        iterator_output_streams_as_server_sent_events,
        a_late_follower_misses_no_output,
        file_outputs_are_served_at_capability_urls,
        cancel_and_deadlines_stop_running_work,
        environments_are_built_from_python_packages,
        trainings_make_runnable_fine_tunes,
        deployments_run_their_release_and_keep_servers_warm,
        api_predictions_lose_their_data_after_the_retention_time,
        a_deployment_uses_at_most_max_instances_servers,
        a_restart_loses_nothing
    );
}

mod postgres {
    use super::*;
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_late_follower_misses_no_output() {
        super::a_late_follower_misses_no_output(Backend::Postgres).await
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn prefer_wait_returns_the_finished_prediction() {
        super::prefer_wait_returns_the_finished_prediction(Backend::Postgres).await
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_restart_loses_nothing() {
        super::a_restart_loses_nothing(Backend::Postgres).await
    }
}
