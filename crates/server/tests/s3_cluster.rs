//! Two nodes on one PostgreSQL database and one bucket (moto's server): a project pushed to the
//! node without a runner runs on the other, which lays it out from the bucket; its output is
//! served by the node that did not write it; deleting the version on one node empties the
//! bucket and, at its next check, the other node's cache.
mod common;
#[path = "../../blobs/tests/moto/mod.rs"]
mod moto;

use std::time::{Duration, Instant};

use common::*;
use reqwest::{Method, StatusCode};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_on_one_node_runs_on_another_and_any_node_serves_its_output() {
    let m = moto::Moto::start();
    let bucket = m.bucket("cluster", "bytes");
    // Read when each server builds its store; this binary runs this one test.
    m.with_env(|| ());
    let worker = {
        let bucket = bucket.clone();
        start_with(Backend::Postgres, move |c| {
            c.run_jobs = true;
            c.setup_timeout = Duration::from_secs(120);
            c.server_idle = Duration::from_secs(1);
            c.cache_check = Duration::from_millis(200);
            c.blob_store = Some(bucket);
        })
        .await
    };
    let db = worker.state.config.database_url.clone();
    let api = start_with(Backend::Postgres, move |c| {
        c.database_url = db;
        c.blob_store = Some(bucket);
    })
    .await;
    assert!(api.state.runner.is_none());

    api.create_model("alice", "alice", "fileout", "private")
        .await;
    let v = api.push("alice", "alice/fileout", "fileout").await;
    let artifact = api
        .state
        .store
        .version_by_id(&v)
        .await
        .unwrap()
        .unwrap()
        .version
        .artifact;
    let copy = worker
        .state
        .config
        .data_dir
        .join("cache/trees")
        .join(&artifact);
    assert!(!copy.exists(), "the worker has no copy before it needs one");

    let r = api
        .call(
            "alice",
            Method::POST,
            "/v1/predictions",
            Some(json!({"version": v, "input": {"text": "made on the worker"}})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let id = r.body["id"].as_str().unwrap().to_string();
    let p = api
        .until_done(
            "alice",
            &format!("/v1/predictions/{id}"),
            Duration::from_secs(300),
        )
        .await;
    assert_eq!(p["status"], "succeeded", "{p}");
    assert!(
        copy.is_dir(),
        "the worker laid the project out from the bucket"
    );
    let out = p["output"].as_str().unwrap();
    let path = out
        .strip_prefix(&worker.url)
        .unwrap_or_else(|| panic!("{out}"));
    let got = reqwest::get(format!("{}{path}", api.url)).await.unwrap();
    assert_eq!(got.status(), StatusCode::OK);
    assert_eq!(got.text().await.unwrap(), "made on the worker");

    let r = api
        .call(
            "alice",
            Method::DELETE,
            &format!("/v1/models/alice/fileout/versions/{v}"),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{:?}", r.body);
    let left = api.state.blobs.stored_keys().await.unwrap();
    assert!(
        !left
            .iter()
            .any(|k| k.starts_with("trees/") || k.starts_with("blobs/")),
        "{left:?}"
    );
    // Once its idle server stops, nothing holds the worker's copy: its next check drops it.
    let until = Instant::now() + Duration::from_secs(30);
    while copy.exists() {
        assert!(
            Instant::now() < until,
            "the worker kept a tree no version uses"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
