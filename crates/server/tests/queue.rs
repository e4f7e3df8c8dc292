//! Nodes of a cluster on one PostgreSQL database and one data directory, with real Cog servers:
//! a prediction runs on the node that offers its model's hardware; a version that needs a GPU
//! waits, saying why, until a node with one joins; a worker node answers `/health` only; a
//! worker's lease outlives a long prediction while it lives and fails it once it died.
mod common;
#[path = "../../blobs/tests/moto/mod.rs"]
mod moto;

use std::time::{Duration, Instant};

use common::{start_with, Backend, Server};
use modelyard_domain::ModelPatch;
use reqwest::Method;
use serde_json::json;
use sqlx::Connection;

/// Two nodes: `cpu` offers cpu, `t4` offers gpu-t4 (without a GPU on this machine). Only the
/// first serves the API in this test; both take jobs.
async fn cluster() -> (Server, Server) {
    let cpu = start_with(Backend::Postgres, |c| {
        c.run_jobs = true;
        c.max_servers = 1;
        c.hardware = vec!["cpu".into()];
        c.setup_timeout = Duration::from_secs(120);
    })
    .await;
    let (db, data) = (
        cpu.state.config.database_url.clone(),
        cpu.state.config.data_dir.clone(),
    );
    // Its own database is the first node's (which drops it at the end).
    let t4 = start_with(Backend::Sqlite, move |c| {
        c.run_jobs = true;
        c.max_servers = 1;
        c.hardware = vec!["gpu-t4".into()];
        c.setup_timeout = Duration::from_secs(120);
        c.database_url = db;
        c.data_dir = data;
    })
    .await;
    (cpu, t4)
}

/// The worker that took a job, as the queue recorded it.
async fn worker_of(s: &Server, id: &str) -> Option<String> {
    let url = s.state.config.database_url.clone().unwrap();
    let mut conn = sqlx::AnyConnection::connect(&url).await.unwrap();
    let w: Option<String> = sqlx::query_scalar("SELECT worker_id FROM jobs WHERE id = $1")
        .bind(id)
        .fetch_one(&mut conn)
        .await
        .unwrap();
    let _ = conn.close().await;
    w
}

async fn predict(s: &Server, version: &str, prompt: &str) -> String {
    let r = s
        .call(
            "alice",
            Method::POST,
            "/v1/predictions",
            Some(json!({"version": version, "input": {"prompt": prompt}})),
        )
        .await;
    r.body["id"].as_str().unwrap().to_string()
}

/// The echo fixture with `build.gpu: true`, pushed as a version of `model`.
async fn push_gpu_echo(s: &Server, model: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let src = common::fixture("echo");
    for f in ["predict.py", "cog.yaml"] {
        std::fs::copy(src.join(f), dir.path().join(f)).unwrap();
    }
    let yaml = std::fs::read_to_string(src.join("cog.yaml")).unwrap();
    let yaml = yaml.replacen("build:\n", "build:\n  gpu: true\n", 1);
    std::fs::write(dir.path().join("cog.yaml"), yaml).unwrap();
    s.push_dir("alice", model, dir.path()).await
}

async fn stop(nodes: &[&Server]) {
    for n in nodes {
        if let Some(r) = &n.state.runner {
            r.shutdown().await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn predictions_go_to_the_node_that_offers_their_hardware() {
    let (cpu, t4) = cluster().await;
    let cpu_worker = cpu.state.runner.as_ref().unwrap().worker_id().to_string();
    let t4_worker = t4.state.runner.as_ref().unwrap().worker_id().to_string();
    assert_ne!(cpu_worker, t4_worker);

    cpu.create_model("alice", "alice", "small", "private").await;
    cpu.create_model("alice", "alice", "large", "private").await;
    let small = cpu.push("alice", "alice/small", "echo").await;
    let large = cpu.push("alice", "alice/large", "echo").await;
    // The API offers only cpu today; the model's hardware is set in the database.
    let m = cpu
        .state
        .store
        .model("alice", "large")
        .await
        .unwrap()
        .unwrap();
    cpu.state
        .store
        .update_model(
            m.id,
            ModelPatch {
                hardware: Some("gpu-t4".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();

    // Both created through the first node's API, which hands them to its own runner first.
    let on_t4 = predict(&cpu, &large, "big").await;
    let on_cpu = predict(&cpu, &small, "little").await;
    for (id, output, worker) in [
        (&on_t4, "hello big", &t4_worker),
        (&on_cpu, "hello little", &cpu_worker),
    ] {
        let p = cpu
            .until_done(
                "alice",
                &format!("/v1/predictions/{id}"),
                Duration::from_secs(120),
            )
            .await;
        assert_eq!(p["status"], "succeeded", "{p}");
        assert_eq!(p["output"], output);
        assert_eq!(worker_of(&cpu, id).await.as_ref(), Some(worker));
    }
    assert_eq!(t4.state.runner.as_ref().unwrap().servers(), 1);
    assert_eq!(cpu.state.runner.as_ref().unwrap().servers(), 1);
    stop(&[&t4, &cpu]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gpu_version_waits_and_says_why_until_a_node_offers_a_gpu() {
    let (cpu, t4) = cluster().await;
    cpu.create_model("alice", "alice", "gpu", "private").await;
    let v = push_gpu_echo(&cpu, "alice/gpu").await;
    let version = cpu
        .state
        .store
        .version_by_id(&v)
        .await
        .unwrap()
        .unwrap()
        .version;
    assert!(version.gpu, "build.gpu is recorded with the version");

    let id = predict(&cpu, &v, "anyone?").await;
    let path = format!("/v1/predictions/{id}");
    let until = Instant::now() + Duration::from_secs(30);
    let p = loop {
        let p = cpu.get("alice", &path).await.body;
        if p["logs"].as_str().is_some_and(|l| !l.is_empty()) {
            break p;
        }
        assert!(Instant::now() < until, "no word on why it waits: {p}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(
        p["logs"],
        "Waiting for a worker that offers cpu with a GPU: none is connected.\n"
    );
    assert_eq!(p["status"], "starting");
    // Said once, and still nobody took it.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let p = cpu.get("alice", &path).await.body;
    assert_eq!(p["status"], "starting");
    assert_eq!(p["logs"].as_str().unwrap().matches("Waiting").count(), 1);
    assert_eq!(worker_of(&cpu, &id).await, None);

    // A node with a GPU (stand-in device nodes: this machine has none) joins and runs it.
    let devs = tempfile::tempdir().unwrap();
    for name in ["nvidia0", "nvidiactl", "nvidia-uvm"] {
        let ok = std::process::Command::new("mknod")
            .arg(devs.path().join(name))
            .args(["c", "1", "3"])
            .status()
            .unwrap();
        assert!(ok.success(), "mknod needs root");
    }
    let (db, data, root) = (
        cpu.state.config.database_url.clone(),
        cpu.state.config.data_dir.clone(),
        devs.path().to_path_buf(),
    );
    let gpu = start_with(Backend::Sqlite, move |c| {
        c.run_jobs = true;
        c.hardware = vec!["cpu".into(), "gpu-t4".into()];
        c.sandbox.gpus = modelyard_server::Gpus::All;
        c.sandbox.device_root = root;
        c.setup_timeout = Duration::from_secs(120);
        c.database_url = db;
        c.data_dir = data;
    })
    .await;
    assert_eq!(gpu.state.config.sandbox.gpu_count(), 1);
    let p = cpu
        .until_done("alice", &path, Duration::from_secs(120))
        .await;
    assert_eq!(p["status"], "succeeded", "{p}");
    assert_eq!(p["output"], "hello anyone?");
    let gpu_worker = gpu.state.runner.as_ref().unwrap().worker_id().to_string();
    assert_eq!(worker_of(&cpu, &id).await, Some(gpu_worker));
    stop(&[&gpu, &t4, &cpu]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_node_answers_health_only() {
    let api = start_with(Backend::Postgres, |c| c.blob_store = Some(bucket())).await;
    // Each node its own data directory: the bytes are in the bucket.
    let (db, public) = (api.state.config.database_url.clone(), api.url.clone());
    let worker = start_with(Backend::Sqlite, move |c| {
        c.role = modelyard_server::Role::Worker;
        c.run_jobs = true;
        c.database_url = db;
        c.blob_store = Some(bucket());
        c.public_url = Some(public);
    })
    .await;
    let id = worker
        .state
        .runner
        .as_ref()
        .unwrap()
        .worker_id()
        .to_string();
    let health = worker.get("", "/health").await;
    assert_eq!(health.status, reqwest::StatusCode::OK);
    assert_eq!(health.body["worker_id"], id.as_str());
    assert_eq!(health.body["servers"], 0);
    // No API, no web pages.
    for path in ["/v1/models", "/v1/hardware", "/", "/login"] {
        assert_eq!(
            worker.get("alice", path).await.status,
            reqwest::StatusCode::NOT_FOUND,
            "{path}"
        );
    }
    // It is a live worker of the cluster the API node sees.
    let since = chrono::Utc::now() - chrono::Duration::seconds(30);
    let live = api.state.store.live_workers(since).await.unwrap();
    assert!(live.iter().any(|w| w.id == id), "{live:?}");
    stop(&[&worker, &api]).await;
    let live = api.state.store.live_workers(since).await.unwrap();
    assert!(
        live.iter().all(|w| w.id != id),
        "a stopped worker unregisters"
    );
}

/// Cog servers whose upload URL names this runner.
fn cog_servers_of(label: &str) -> usize {
    let needle = format!("/uploads/{label}-");
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| std::fs::read(e.ok()?.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .filter(|c| c.contains("cog.server.http") && c.contains(&needle))
        .count()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// The bucket the cluster nodes of these tests share: moto's server, one per test binary.
fn bucket() -> String {
    static BUCKET: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    BUCKET
        .get_or_init(|| moto::Moto::shared().bucket("queue", "nodes"))
        .clone()
}

const LEASE: Duration = Duration::from_secs(2);

/// A worker that runs a long prediction keeps it past many leases (its heartbeat renews
/// them), a worker that joins meanwhile leaves it alone, and once the worker dies without a
/// word (its runtime dropped mid-flight) another node's reaper fails the prediction.
#[test]
fn a_dead_workers_prediction_fails_once_its_lease_passes() {
    let main = runtime();
    let api = main.block_on(async {
        let api = start_with(Backend::Postgres, |c| {
            c.run_jobs = true;
            c.hardware = vec!["cpu".into()];
            c.lease = LEASE;
            c.blob_store = Some(bucket());
        })
        .await;
        api.create_model("alice", "alice", "slow", "private").await;
        api
    });
    // Each node its own data directory: the bytes are in the bucket.
    let (db, public) = (api.state.config.database_url.clone(), api.url.clone());
    let doomed_rt = runtime();
    let (doomed, label) = doomed_rt.block_on(async {
        let (db, public) = (db.clone(), public.clone());
        let s = start_with(Backend::Sqlite, move |c| {
            c.role = modelyard_server::Role::Worker;
            c.blob_store = Some(bucket());
            c.public_url = Some(public);
            c.run_jobs = true;
            c.hardware = vec!["gpu-t4".into()];
            c.lease = LEASE;
            c.setup_timeout = Duration::from_secs(120);
            c.database_url = db;
        })
        .await;
        let label = s.state.runner.as_ref().unwrap().label().to_string();
        (s, label)
    });
    let (id, joined) = main.block_on(async {
        let v = api.push("alice", "alice/slow", "slow").await;
        let m = api
            .state
            .store
            .model("alice", "slow")
            .await
            .unwrap()
            .unwrap();
        let gpu = ModelPatch {
            hardware: Some("gpu-t4".into()),
            ..Default::default()
        };
        api.state.store.update_model(m.id, gpu).await.unwrap();
        let r = api
            .call(
                "alice",
                Method::POST,
                "/v1/predictions",
                Some(json!({"version": v, "input": {"seconds": 120}})),
            )
            .await;
        let id = r.body["id"].as_str().unwrap().to_string();
        let path = format!("/v1/predictions/{id}");
        let limit = Duration::from_secs(120);
        let never = "the gpu-t4 worker never started it";
        api.until_status("alice", &path, "processing", limit, never)
            .await;
        // A worker joins the cluster: it does not touch the jobs of the others.
        let joined = start_with(Backend::Sqlite, move |c| {
            c.role = modelyard_server::Role::Worker;
            c.blob_store = Some(bucket());
            c.public_url = Some(public);
            c.run_jobs = true;
            c.hardware = vec!["gpu-t4".into()];
            c.lease = LEASE;
            c.database_url = db;
        })
        .await;
        // Three leases later it still runs: its worker renewed the lease.
        tokio::time::sleep(LEASE * 3).await;
        let p = api.get("alice", &path).await.body;
        assert_eq!(p["status"], "processing", "{p}");
        (id, joined)
    });
    assert!(
        cog_servers_of(&label) > 0,
        "the gpu-t4 worker runs no Cog server"
    );

    // The worker dies: no shutdown, no last word.
    drop(doomed_rt);
    drop(doomed);
    let deadline = Instant::now() + Duration::from_secs(20);
    while cog_servers_of(&label) > 0 {
        assert!(
            Instant::now() < deadline,
            "a Cog server outlived its worker"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    main.block_on(async {
        let p = api
            .until_done("alice", &format!("/v1/predictions/{id}"), LEASE * 10)
            .await;
        assert_eq!(p["status"], "failed", "{p}");
        assert!(
            p["error"].as_str().unwrap().contains("stopped answering"),
            "{p}"
        );
        stop(&[&joined, &api]).await;
    });
}

/// An API node reaps leases too: a job held by a worker that vanished ends failed even while
/// no worker is left in the cluster.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_node_alone_ends_a_vanished_workers_job() {
    let api = start_with(Backend::Postgres, |c| {
        c.role = modelyard_server::Role::Api;
        c.blob_store = Some(bucket());
        c.public_url = Some("http://127.0.0.1:9".into());
        c.lease = LEASE;
    })
    .await;
    assert!(api.state.runner.is_none());
    api.create_model("alice", "alice", "held", "private").await;
    let v = api.version("alice/held", "held").await;
    let r = api.predict("alice", "alice/held", &v).await;
    let id = r.body["id"].as_str().unwrap().to_string();
    // A worker that took and started it, then vanished: its lease has already passed.
    let gone = modelyard_storage::JobLease {
        worker_id: "vanished-worker".into(),
        until: chrono::Utc::now() - chrono::Duration::seconds(1),
    };
    let offer = modelyard_domain::worker::Offer::everything();
    let now = chrono::Utc::now();
    assert!(api
        .state
        .store
        .claim_and_start_job(&id, &offer, &gone, now)
        .await
        .unwrap());
    let path = format!("/v1/predictions/{id}");
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        let p = api.get("alice", &path).await.body;
        if p["status"] == "failed" {
            assert!(
                p["error"].as_str().unwrap().contains("stopped answering"),
                "{p}"
            );
            break;
        }
        assert_eq!(p["status"], "processing", "{p}");
        assert!(Instant::now() < until, "the API node never reaped it: {p}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
