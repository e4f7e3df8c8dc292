//! Hostile models against the sandbox: `fixtures/cog/hostile` tries every escape at import (the
//! push's schema reading), in `setup`, in `predict` and in `train`, and reports what it reached.
//! Each escape must be blocked; the same fixture under `--unsafe-no-sandbox` reaches what an
//! unconfined process can, so these tests would fail if the sandbox did nothing.
mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{pack_dir, start_with, Backend, Server};
use modelyard_server::{Gpus, SandboxConfig};
use reqwest::StatusCode;
use serde_json::{json, Value};

struct Hostile {
    server: Server,
    version: String,
    /// Probe results of the import during the push, from the schema.
    at_import: Value,
    marker: String,
    _project: tempfile::TempDir,
    _host_service: std::net::TcpListener,
    host_tmp_marker: PathBuf,
}

impl Drop for Hostile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.host_tmp_marker);
    }
}

/// This host's address on its default route (no packet is sent).
fn host_ip() -> String {
    let s = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
    match s.connect("203.0.113.1:9") {
        Ok(()) => s.local_addr().unwrap().ip().to_string(),
        Err(_) => "127.0.0.1".into(),
    }
}

fn random() -> String {
    format!("{:016x}", rand_u64())
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(Instant::now().elapsed().as_nanos());
    h.finish()
}

async fn hostile(confine: bool, tweak: impl FnOnce(&mut SandboxConfig)) -> Hostile {
    let mut sandbox = SandboxConfig {
        confine,
        ..SandboxConfig::default()
    };
    tweak(&mut sandbox);
    let gpu = sandbox.gpus != Gpus::None;
    let server = start_with(Backend::Sqlite, |c| {
        c.run_jobs = true;
        c.max_servers = 2;
        c.setup_timeout = Duration::from_secs(120);
        c.sandbox = sandbox;
    })
    .await;
    // Another tenant's model, whose files the hostile one must not read.
    server.create_model("bob", "bob", "secret", "private").await;
    server.push("bob", "bob/secret", "echo").await;
    let data = server.state.config.data_dir.clone();
    let other_artifact = std::fs::read_dir(data.join("artifacts"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path()
        .join("predict.py");
    let host_service = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let host_tmp_marker = std::env::temp_dir().join(format!("modelyard-marker-{}", random()));
    std::fs::write(&host_tmp_marker, "host").unwrap();
    let marker = format!("modelyard-escape-{}", random());
    let project = tempfile::tempdir().unwrap();
    copy_dir(&common::fixture("hostile"), project.path());
    if gpu {
        // Only a version that asks for a GPU is given one.
        let yaml = project.path().join("cog.yaml");
        let text = std::fs::read_to_string(&yaml).unwrap();
        std::fs::write(&yaml, text.replacen("build:\n", "build:\n  gpu: true\n", 1)).unwrap();
    }
    let api_port: u16 = server.url.rsplit(':').next().unwrap().parse().unwrap();
    let targets = json!({
        "database": data.join("modelyard.db"),
        "data_dir": data,
        "other_artifact": other_artifact,
        "host_tmp_marker": host_tmp_marker,
        "server_pid": std::process::id(),
        "api_port": api_port,
        "host_ip": host_ip(),
        "host_port": host_service.local_addr().unwrap().port(),
        "escape_marker": marker,
    });
    std::fs::write(project.path().join("targets.json"), targets.to_string()).unwrap();
    server
        .create_model("alice", "alice", "hostile", "private")
        .await;
    let resp = server
        .http
        .post(format!("{}/v1/models/alice/hostile/versions", server.url))
        .bearer_auth(&server.tokens["alice"])
        .header("content-type", "application/gzip")
        .body(pack_dir(project.path()))
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let v: Value = resp.json().await.unwrap();
    assert!(status.is_success(), "push: {status} {v}");
    let description = v["openapi_schema"]["components"]["schemas"]["Input"]["properties"]["mode"]
        ["description"]
        .as_str()
        .unwrap_or_else(|| panic!("no probe results in the schema: {v}"))
        .to_string();
    Hostile {
        version: v["id"].as_str().unwrap().to_string(),
        at_import: serde_json::from_str(&description).unwrap(),
        server,
        marker,
        _project: project,
        _host_service: host_service,
        host_tmp_marker,
    }
}

fn copy_dir(from: &Path, to: &Path) {
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_file() {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

impl Hostile {
    async fn predict(&self, input: Value) -> Value {
        let resp = self
            .server
            .http
            .post(format!("{}/v1/predictions", self.server.url))
            .bearer_auth(&self.server.tokens["alice"])
            .header("prefer", "wait=60")
            .json(&json!({"version": self.version, "input": input}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::CREATED);
        let p: Value = resp.json().await.unwrap();
        let id = p["id"].as_str().unwrap();
        self.server
            .until_done(
                "alice",
                &format!("/v1/predictions/{id}"),
                Duration::from_secs(120),
            )
            .await
    }

    /// Probe results of import, setup and predict, and the callback forgery against `victim`.
    async fn probe(&self, victim: &str) -> Value {
        let p = self.predict(json!({"victim": victim})).await;
        assert_eq!(p["status"], "succeeded", "{p}");
        serde_json::from_str(p["output"].as_str().unwrap()).unwrap()
    }
}

fn reached(results: &Value) -> Vec<String> {
    results
        .as_object()
        .unwrap()
        .iter()
        .filter(|(_, v)| v.as_str().is_some_and(|s| s.starts_with("reached")))
        .map(|(k, v)| format!("{k}: {v}"))
        .collect()
}

/// Processes whose command line names this marker.
fn processes_named(marker: &str) -> usize {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| std::fs::read(e.ok()?.path().join("cmdline")).ok())
        .filter(|c| String::from_utf8_lossy(c).contains(marker))
        .count()
}

fn wait_until(limit: Duration, mut ok: impl FnMut() -> bool) -> bool {
    let until = Instant::now() + limit;
    while Instant::now() < until {
        if ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_code_reaches_nothing_in_the_sandbox() {
    let h = hostile(true, |_| {}).await;
    let data = h.server.state.config.data_dir.clone();
    assert!(h.server.state.sandbox.confined());

    // At push (the schema reader), nothing.
    assert_eq!(
        reached(&h.at_import),
        Vec::<String>::new(),
        "{}",
        h.at_import
    );

    // Another running prediction, whose record the hostile model tries to forge.
    let victim_version = h.server.push("alice", "alice/hostile", "slow").await;
    let victim = h
        .server
        .call(
            "alice",
            reqwest::Method::POST,
            "/v1/predictions",
            Some(json!({"version": victim_version, "input": {"seconds": 3}})),
        )
        .await
        .body;
    let victim_id = victim["id"].as_str().unwrap().to_string();

    let r = h.probe(&victim_id).await;
    assert!(processes_named(&h.marker) > 0, "the escape child never ran");
    for phase in ["import", "setup", "predict"] {
        assert_eq!(
            reached(&r[phase]),
            Vec::<String>::new(),
            "{phase}: {}",
            r[phase]
        );
    }
    assert!(
        r["forge"].as_str().unwrap().starts_with("blocked"),
        "{}",
        r["forge"]
    );
    let v = h
        .server
        .until_done(
            "alice",
            &format!("/v1/predictions/{victim_id}"),
            Duration::from_secs(120),
        )
        .await;
    assert_ne!(v["output"], "forged", "{v}");

    // Nothing was written outside: not in the data directory, not in the stored project.
    for phase in ["import", "setup", "predict"] {
        assert!(!data.join(format!("pwned-{phase}")).exists());
    }
    let artifact = std::fs::read_dir(data.join("artifacts"))
        .unwrap()
        .map(|e| e.unwrap().path().join("predict.py"))
        .find(|p| std::fs::read_to_string(p).is_ok_and(|s| s.contains("probes")))
        .unwrap();
    assert!(!std::fs::read_to_string(artifact).unwrap().contains("pwned"));

    // The egress proxy works for the internet, so its refusals above mean something.
    let p = h.predict(json!({"mode": "egress"})).await;
    assert!(
        p["output"]
            .as_str()
            .unwrap_or_default()
            .starts_with("reached"),
        "the egress proxy reaches no public host: {p}"
    );

    // Trainings run in the same sandbox.
    let t = h
        .server
        .call(
            "alice",
            reqwest::Method::POST,
            &format!("/v1/models/alice/hostile/versions/{}/trainings", h.version),
            Some(json!({"destination": "alice/hostile", "input": {"n": 1}})),
        )
        .await;
    assert_eq!(t.status, StatusCode::CREATED, "{:?}", t.body);
    let t = h
        .server
        .until_done(
            "alice",
            &format!("/v1/trainings/{}", t.body["id"].as_str().unwrap()),
            Duration::from_secs(120),
        )
        .await;
    assert_eq!(t["status"], "succeeded", "{t}");
    let weights = h
        .server
        .http
        .get(t["output"]["weights"].as_str().unwrap())
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let trained: Value = serde_json::from_str(&weights).unwrap();
    assert_eq!(reached(&trained), Vec::<String>::new(), "{trained}");

    // A child that left its process group still dies with its server.
    let marker = h.marker.clone();
    drop(h);
    assert!(
        wait_until(Duration::from_secs(20), || processes_named(&marker) == 0),
        "a child of a stopped model server lives on"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_model_unconfined_reaches_the_host() {
    let h = hostile(false, |_| {}).await;
    let r = h.probe("").await;
    for phase in ["import", "setup", "predict"] {
        let results = if phase == "import" {
            &h.at_import
        } else {
            &r[phase]
        };
        let got = reached(results);
        for expected in [
            "read_database",
            "list_data_dir",
            "read_other_artifact",
            "see_host_tmp",
            "see_server_process",
            "signal_server",
            "postgres",
            "platform_api",
            "host_service",
        ] {
            assert!(
                got.iter().any(|g| g.starts_with(expected)),
                "{phase}: unconfined code did not reach {expected}: {results}"
            );
        }
    }
    let data = h.server.state.config.data_dir.clone();
    assert!(data.join("pwned-setup").exists());
    // Unconfined, a child that left its process group survives its server: the reason the
    // sandbox exists. Killed here, so the test leaves nothing behind.
    let marker = h.marker.clone();
    drop(h);
    std::thread::sleep(Duration::from_secs(2));
    let survived = processes_named(&marker);
    let _ = std::process::Command::new("pkill")
        .args(["-KILL", "-f", &marker])
        .status();
    assert!(survived > 0, "expected the unconfined escape to survive");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_egress_model_code_reaches_no_network() {
    let h = hostile(true, |c| c.egress = false).await;
    let p = h.predict(json!({"mode": "egress"})).await;
    assert_eq!(p["output"], "blocked", "{p}");
    let r = h.probe("").await;
    assert_eq!(
        reached(&r["predict"]),
        Vec::<String>::new(),
        "{}",
        r["predict"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_processes_and_scratch_are_capped() {
    let h = hostile(true, |c| {
        c.memory_limit = Some(300 * 1024 * 1024);
        c.max_processes = 64;
        c.scratch_limit = 40 * 1024 * 1024;
    })
    .await;
    assert!(
        h.server.state.sandbox.has_cgroups(),
        "this host gives no cgroup: memory caps cannot be tested"
    );
    let p = h.predict(json!({"mode": "memory", "size_mb": 1000})).await;
    assert_eq!(p["status"], "failed", "{p}");
    assert!(
        p["error"].as_str().unwrap().contains("out of memory"),
        "{}",
        p["error"]
    );
    let p = h
        .predict(json!({"mode": "processes", "size_mb": 500}))
        .await;
    assert_eq!(p["status"], "succeeded", "{p}");
    let out = p["output"].as_str().unwrap();
    assert!(out.starts_with("stopped after"), "{out}");
    let n: usize = out
        .split_whitespace()
        .nth(2)
        .unwrap()
        .trim_end_matches(':')
        .parse()
        .unwrap();
    assert!(n < 64, "{out}");
    let p = h.predict(json!({"mode": "disk", "size_mb": 100})).await;
    assert_eq!(p["status"], "succeeded", "{p}");
    let out = p["output"].as_str().unwrap();
    assert!(out.starts_with("stopped after"), "{out}");
    // Connections to its endpoint cost the server at most a bounded number of descriptors.
    let before = std::fs::read_dir("/proc/self/fd").unwrap().count();
    let (p, peak) = tokio::join!(
        h.predict(json!({"mode": "connections", "size_mb": 800})),
        async {
            let mut peak = 0;
            for _ in 0..30 {
                tokio::time::sleep(Duration::from_millis(100)).await;
                peak = peak.max(std::fs::read_dir("/proc/self/fd").unwrap().count());
            }
            peak
        }
    );
    assert_eq!(p["status"], "succeeded", "{p}");
    assert!(p["output"].as_str().unwrap().starts_with("held"), "{p}");
    assert!(
        peak.saturating_sub(before) < 256 + 64,
        "the server took {} descriptors for one model's connections",
        peak - before
    );
    // The platform lives on, and so does the model.
    let r = h.probe("").await;
    assert_eq!(reached(&r["predict"]), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn assigned_gpus_reach_the_model_with_their_devices() {
    // Stand-in device nodes (these machines have no GPU): copies of /dev/null.
    let devs = tempfile::tempdir().unwrap();
    for name in ["nvidia0", "nvidia1", "nvidiactl", "nvidia-uvm"] {
        let ok = std::process::Command::new("mknod")
            .arg(devs.path().join(name))
            .args(["c", "1", "3"])
            .status()
            .unwrap();
        assert!(ok.success(), "mknod needs root");
    }
    std::fs::create_dir(devs.path().join("dri")).unwrap();
    let root = devs.path().to_path_buf();
    let h = hostile(true, |c| {
        c.gpus = Gpus::Some(vec![0]);
        c.device_root = root;
    })
    .await;
    let p = h.predict(json!({"mode": "devices"})).await;
    assert_eq!(p["status"], "succeeded", "{p}");
    let d: Value = serde_json::from_str(p["output"].as_str().unwrap()).unwrap();
    let dev: Vec<&str> = d["dev"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    for want in ["nvidia0", "nvidiactl", "nvidia-uvm", "dri"] {
        assert!(dev.contains(&want), "{want} missing: {dev:?}");
    }
    assert!(
        !dev.contains(&"nvidia1"),
        "an unassigned GPU was passed: {dev:?}"
    );
    assert_eq!(d["nvidia0_opens"], true);
    assert_eq!(d["ld_cache"], true);
    assert_eq!(d["usr_lib"], true);

    // Without GPUs, no device file.
    let plain = hostile(true, |_| {}).await;
    let p = plain.predict(json!({"mode": "devices"})).await;
    let d: Value = serde_json::from_str(p["output"].as_str().unwrap()).unwrap();
    assert!(!d["dev"].to_string().contains("nvidia"), "{d}");
}

/// Cog servers whose upload URL names this runner.
fn servers_of(label: &str) -> usize {
    processes_named(&format!("/uploads/{label}-"))
}

/// However the runner's handles go (here: its runtime dropped mid-flight, then the state), every
/// process of every model server goes with them, confined or not.
#[test]
fn model_servers_end_when_their_handles_are_dropped_without_a_stop() {
    for confine in [true, false] {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let (server, label) = rt.block_on(async {
            let s = start_with(Backend::Sqlite, |c| {
                c.run_jobs = true;
                c.sandbox.confine = confine;
            })
            .await;
            s.create_model("alice", "alice", "echo", "private").await;
            let v = s.push("alice", "alice/echo", "echo").await;
            let p = s
                .call(
                    "alice",
                    reqwest::Method::POST,
                    "/v1/predictions",
                    Some(json!({"version": v, "input": {"prompt": "x"}})),
                )
                .await;
            let id = p.body["id"].as_str().unwrap().to_string();
            let done = s
                .until_done(
                    "alice",
                    &format!("/v1/predictions/{id}"),
                    Duration::from_secs(120),
                )
                .await;
            assert_eq!(done["status"], "succeeded", "{done}");
            let label = s.state.runner.as_ref().unwrap().label().to_string();
            (s, label)
        });
        assert!(servers_of(&label) > 0, "no model server ran");
        drop(rt);
        drop(server);
        assert!(
            wait_until(Duration::from_secs(20), || servers_of(&label) == 0),
            "confine={confine}: model servers outlived their dropped handles"
        );
    }
}

/// Pushes a project made of these files; returns the status and body.
async fn push_files(s: &Server, model: &str, files: &[(&str, &str)]) -> (StatusCode, Value) {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    let resp = s
        .http
        .post(format!("{}/v1/models/{model}/versions", s.url))
        .bearer_auth(&s.tokens["alice"])
        .header("content-type", "application/gzip")
        .body(pack_dir(dir.path()))
        .send()
        .await
        .unwrap();
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// The schema comes back on a channel the predictor's prints cannot reach, and a predictor that
/// scribbles over it anyway is the pusher's 422, with what it printed, never a 500.
#[tokio::test]
async fn a_predictor_that_prints_or_scribbles_at_import_is_the_pushers_problem() {
    let s = start_with(Backend::Sqlite, |_| {}).await;
    s.create_model("alice", "alice", "loud", "private").await;
    let yaml = "build:\n  python_version: \"3.11\"\npredict: \"predict.py:Predictor\"\n";
    let predictor = |top: &str| {
        format!(
            "import os, sys\n{top}\nfrom cog import BasePredictor\n\n\
             class Predictor(BasePredictor):\n    def predict(self, x: str) -> str:\n        return x\n"
        )
    };
    let loud = predictor(
        "print('hello from import')\nos.write(1, b'raw bytes on fd 1\\n')\nsys.stdout.flush()",
    );
    let (status, v) = push_files(
        &s,
        "alice/loud",
        &[("cog.yaml", yaml), ("predict.py", &loud)],
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    assert!(v["openapi_schema"]["components"]["schemas"]["Input"]["properties"]["x"].is_object());

    // Writing to every descriptor it can find reaches the answer's channel too.
    let scribbler = predictor(
        "print('about to scribble')\nfor fd in range(1, 64):\n    try:\n        os.write(fd, b'{not json')\n    except OSError:\n        pass",
    );
    let (status, v) = push_files(
        &s,
        "alice/loud",
        &[("cog.yaml", yaml), ("predict.py", &scribbler)],
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    let detail = v.to_string();
    assert!(detail.contains("about to scribble"), "{detail}");
    // Nothing was stored.
    let versions = s.get("alice", "/v1/models/alice/loud/versions").await;
    assert_eq!(
        versions.body["results"].as_array().unwrap().len(),
        1,
        "{:?}",
        versions.body
    );
}
