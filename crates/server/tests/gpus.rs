//! Each model server gets its own GPUs from the node's list (`--gpus`). These machines have no
//! GPU: the ids are stand-ins, and each server's `CUDA_VISIBLE_DEVICES`, which the predictor
//! (`fixtures/cog/gpu`) says first, tells what it was given.
mod common;

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use common::{start_with, Backend, Server};
use modelyard_server::Gpus;
use reqwest::Method;
use serde_json::{json, Value};

async fn gpu_server() -> Server {
    start_with(Backend::Sqlite, |c| {
        c.run_jobs = true;
        // Room for more servers than GPUs: only a GPU can hold a job back.
        c.max_servers = 4;
        c.setup_timeout = Duration::from_secs(120);
        c.sandbox.gpus = Gpus::Some(vec![0, 1]);
    })
    .await
}

/// Pushes the GPU fixture to a new model; with `gpu` false, the same project without
/// `build.gpu`.
async fn version(s: &Server, name: &str, gpu: bool) -> String {
    s.create_model("alice", "alice", name, "private").await;
    let project = tempfile::tempdir().unwrap();
    for f in ["predict.py", "cog.yaml"] {
        let text = std::fs::read_to_string(common::fixture("gpu").join(f)).unwrap();
        let text = if gpu {
            text
        } else {
            text.replace("  gpu: true\n", "")
        };
        std::fs::write(project.path().join(f), text).unwrap();
    }
    s.push_dir("alice", &format!("alice/{name}"), project.path())
        .await
}

async fn submit(s: &Server, version: &str, seconds: u32) -> String {
    let r = s
        .call(
            "alice",
            Method::POST,
            "/v1/predictions",
            Some(json!({"version": version, "input": {"seconds": seconds}})),
        )
        .await;
    format!("/v1/predictions/{}", r.body["id"].as_str().unwrap())
}

/// What the running prediction's server was given, read while it still runs.
async fn gpus_of_running(s: &Server, path: &str) -> String {
    let until = Instant::now() + Duration::from_secs(120);
    loop {
        let p = s.get("alice", path).await.body;
        if p["status"] == "processing" {
            if let Some(first) = p["output"][0].as_str() {
                return first.to_string();
            }
        }
        assert!(Instant::now() < until, "{path} never said its GPUs: {p}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn time(p: &Value, field: &str) -> DateTime<Utc> {
    p[field].as_str().unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_gpu_server_gets_its_own_gpu_and_waits_for_a_free_one() {
    let s = gpu_server().await;
    let (a, b, c) = (
        version(&s, "gpu-a", true).await,
        version(&s, "gpu-b", true).await,
        version(&s, "gpu-c", true).await,
    );
    let cpu = version(&s, "cpu", false).await;

    // Two GPU versions at once: one GPU each, never the same.
    let (pa, pb) = (submit(&s, &a, 120).await, submit(&s, &b, 120).await);
    let (ga, gb) = (
        gpus_of_running(&s, &pa).await,
        gpus_of_running(&s, &pb).await,
    );
    let mut given = [ga.clone(), gb.clone()];
    given.sort();
    assert_eq!(given, ["[0]", "[1]"]);

    // A CPU version needs none and runs meanwhile, seeing no GPU at all.
    let pcpu = submit(&s, &cpu, 0).await;
    let p = s.until_done("alice", &pcpu, Duration::from_secs(120)).await;
    assert_eq!(p["status"], "succeeded", "{p}");
    assert_eq!(p["output"], json!(["[]", "done"]));

    // A third GPU version waits while both GPUs are held, though there is room for a server.
    let pc = submit(&s, &c, 0).await;
    let held_until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < held_until {
        let p = s.get("alice", &pc).await.body;
        assert_eq!(p["status"], "starting", "it ran without a free GPU: {p}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Once the first one ends, its GPU goes to the waiting one (its idle server is stopped
    // for it).
    let r = s
        .call("alice", Method::POST, &format!("{pa}/cancel"), None)
        .await;
    assert_eq!(r.body["status"], "canceled");
    let done_a = s.until_done("alice", &pa, Duration::from_secs(30)).await;
    let done_c = s.until_done("alice", &pc, Duration::from_secs(120)).await;
    assert_eq!(done_c["status"], "succeeded", "{done_c}");
    assert_eq!(done_c["output"], json!([ga, "done"]));
    assert!(time(&done_c, "started_at") >= time(&done_a, "completed_at"));

    // The other one still holds its own GPU all along.
    let p = s.get("alice", &pb).await.body;
    assert_eq!(p["status"], "processing", "{p}");
    s.call("alice", Method::POST, &format!("{pb}/cancel"), None)
        .await;
    let p = s.until_done("alice", &pb, Duration::from_secs(30)).await;
    assert_eq!(p["status"], "canceled");
}
