//! Starts the real server on port 0, on SQLite or on a fresh PostgreSQL database, and gives
//! tests accounts and tokens to drive it over HTTP.
#![allow(dead_code)]

use std::sync::Arc;

use modelyard_domain::*;
use modelyard_server::{AppState, Config};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use sqlx::Connection;

#[derive(Clone, Copy, Debug)]
pub enum Backend {
    Sqlite,
    Postgres,
}

pub struct Server {
    pub url: String,
    pub state: AppState,
    pub http: reqwest::Client,
    pub tokens: std::collections::HashMap<&'static str, String>,
    pg_database: Option<String>,
    _dir: tempfile::TempDir,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl Drop for Server {
    /// Drops the test's PostgreSQL database, so runs leave nothing behind.
    fn drop(&mut self) {
        if let Some(name) = self.pg_database.take() {
            drop_pg_database(name);
        }
    }
}

/// A PostgreSQL database a test made for itself (to share between servers it starts and stops),
/// dropped with this value.
pub struct OwnPgDatabase {
    pub url: String,
}

impl OwnPgDatabase {
    pub async fn new() -> OwnPgDatabase {
        OwnPgDatabase {
            url: fresh_pg_database().await,
        }
    }
}

impl Drop for OwnPgDatabase {
    fn drop(&mut self) {
        if let Some((_, name)) = self.url.rsplit_once('/') {
            drop_pg_database(name.to_string());
        }
    }
}

fn drop_pg_database(name: String) {
    let _ = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            if let Ok(mut conn) = sqlx::AnyConnection::connect(&pg_base()).await {
                let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .execute(&mut conn)
                    .await;
            }
        });
    })
    .join();
}

fn pg_base() -> String {
    std::env::var("MODELYARD_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// A new, empty PostgreSQL database for one test.
pub async fn fresh_pg_database() -> String {
    sqlx::any::install_default_drivers();
    let base = pg_base();
    let name = format!("modelyard_test_{}", ids::object_id());
    let mut conn = sqlx::AnyConnection::connect(&base)
        .await
        .expect("PostgreSQL must be running on 127.0.0.1:5432 (CI starts it)");
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await
        .unwrap();
    let (prefix, _) = base.rsplit_once('/').unwrap();
    format!("{prefix}/{name}")
}

pub const ACCOUNTS: &[(&str, AccountKind)] = &[
    ("alice", AccountKind::User),
    ("bob", AccountKind::User),
    ("acme", AccountKind::Organization),
];

pub async fn start(backend: Backend) -> Server {
    start_with(backend, |_| {}).await
}

pub async fn start_with(backend: Backend, tweak: impl FnOnce(&mut Config)) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config {
        addr: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.path().join("data"),
        deployment_idle: std::time::Duration::ZERO,
        // The rules tests hold jobs in the states they set up; runner tests turn this on.
        run_jobs: false,
        // These tests hold deletions final, as `--trash-days 0` does; tests/trash.rs sets a window.
        trash: std::time::Duration::ZERO,
        ..Config::default()
    };
    let mut pg_database = None;
    if let Backend::Postgres = backend {
        let url = fresh_pg_database().await;
        pg_database = url.rsplit_once('/').map(|(_, name)| name.to_string());
        config.database_url = Some(url);
    }
    tweak(&mut config);
    let bound = modelyard_server::bind(config).await.expect("server binds");
    let url = format!("http://{}", bound.addr);
    let state = bound.state.clone();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(bound.serve(async move {
        let _ = stopped.await;
    }));
    let mut tokens = std::collections::HashMap::new();
    let mut ids_by_name = std::collections::HashMap::new();
    for (name, kind) in ACCOUNTS {
        // A restarted server on the same database finds its accounts there.
        let a = match state.store.account(name).await.unwrap() {
            Some(a) => a,
            None => state.store.create_account(*kind, name, name).await.unwrap(),
        };
        let token = ids::new_token();
        state
            .store
            .add_token(a.id, &ids::token_hash(&token))
            .await
            .unwrap();
        tokens.insert(*name, token);
        ids_by_name.insert(*name, a.id);
    }
    state
        .store
        .add_member(ids_by_name["acme"], ids_by_name["alice"])
        .await
        .unwrap();
    Server {
        url,
        state,
        http: reqwest::Client::new(),
        tokens,
        pg_database,
        _dir: dir,
        _stop: stop,
    }
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl Reply {
    pub fn kinds(&self) -> Vec<String> {
        let list = self.body["blockers"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        list.iter()
            .map(|b| b["kind"].as_str().unwrap_or("").to_string())
            .collect()
    }
}

impl Server {
    /// `who` is an account name, or "" for an anonymous request.
    pub async fn call(&self, who: &str, method: Method, path: &str, body: Option<Value>) -> Reply {
        let mut req = self.http.request(method, format!("{}{path}", self.url));
        if !who.is_empty() {
            req = req.bearer_auth(&self.tokens[who]);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let text = resp.text().await.unwrap();
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        Reply {
            status,
            headers,
            body,
        }
    }

    pub async fn get(&self, who: &str, path: &str) -> Reply {
        self.call(who, Method::GET, path, None).await
    }

    pub async fn create_model(
        &self,
        who: &str,
        owner: &str,
        name: &str,
        visibility: &str,
    ) -> Reply {
        let body =
            json!({"owner": owner, "name": name, "visibility": visibility, "hardware": "cpu"});
        let r = self.call(who, Method::POST, "/v1/models", Some(body)).await;
        assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
        r
    }

    pub async fn set_visibility(&self, who: &str, model: &str, visibility: &str) {
        let r = self
            .call(
                who,
                Method::PATCH,
                &format!("/v1/models/{model}"),
                Some(json!({"visibility": visibility})),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    }

    /// A version with a small real-looking schema, made directly in storage: the deletion tests
    /// need many, and pushing runs Python (the push tests cover that path).
    pub async fn version(&self, model: &str, content: &str) -> String {
        let (owner, name) = model.split_once('/').unwrap();
        let m = self.state.store.model(owner, name).await.unwrap().unwrap();
        let v = self
            .state
            .store
            .create_version(NewVersion {
                model_id: m.id,
                content_digest: content.into(),
                cog_version: "0.23.1".into(),
                openapi_schema: test_schema(),
                artifact: format!("test-{content}"),
                base_version_id: None,
                training_id: None,
                weights: None,
                gpu: false,
            })
            .await
            .unwrap();
        v.version.id
    }

    pub async fn predict(&self, who: &str, model: &str, version: &str) -> Reply {
        let body = json!({"version": format!("{model}:{version}"), "input": {"prompt": "hi"}});
        self.call(who, Method::POST, "/v1/predictions", Some(body))
            .await
    }
}

pub fn fixture(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures/cog")
        .join(name)
}

pub fn pack_dir(dir: &std::path::Path) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    b.append_dir_all(".", dir).unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, &b.into_inner().unwrap()).unwrap();
    gz.finish().unwrap()
}

impl Server {
    /// Pushes a fixture project through the API, as `modelyard push` does; returns the version id.
    pub async fn push(&self, who: &str, model: &str, fixture_name: &str) -> String {
        self.push_dir(who, model, &fixture(fixture_name)).await
    }

    /// Pushes the Cog project in `dir` (a fixture changed by the test); the version's id.
    pub async fn push_dir(&self, who: &str, model: &str, dir: &std::path::Path) -> String {
        let resp = self
            .http
            .post(format!("{}/v1/models/{model}/versions", self.url))
            .bearer_auth(&self.tokens[who])
            .header("content-type", "application/gzip")
            .body(pack_dir(dir))
            .send()
            .await
            .unwrap();
        assert!(
            resp.status().is_success(),
            "push {}: {}",
            dir.display(),
            resp.status()
        );
        let v: Value = resp.json().await.unwrap();
        v["id"].as_str().unwrap().to_string()
    }

    /// Polls a prediction or training until its status is `status`; fails, saying `what`,
    /// after `limit`.
    pub async fn until_status(
        &self,
        who: &str,
        path: &str,
        status: &str,
        limit: std::time::Duration,
        what: &str,
    ) -> Value {
        let end = std::time::Instant::now() + limit;
        loop {
            let body = self.get(who, path).await.body;
            if body["status"] == status {
                return body;
            }
            assert!(std::time::Instant::now() < end, "{what}: {body}");
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }

    /// Polls a prediction or training until it ends.
    pub async fn until_done(&self, who: &str, path: &str, limit: std::time::Duration) -> Value {
        let end = std::time::Instant::now() + limit;
        loop {
            let r = self.get(who, path).await;
            let status = r.body["status"].as_str().unwrap_or_default().to_string();
            if ["succeeded", "failed", "canceled"].contains(&status.as_str()) {
                return r.body;
            }
            assert!(
                std::time::Instant::now() < end,
                "{path} still {status}: {:?}",
                r.body
            );
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }
}

pub fn test_schema() -> Value {
    json!({
        "openapi": "3.0.2",
        "info": {"title": "Cog", "version": "0.1.0"},
        "paths": {},
        "components": {"schemas": {
            "Input": {"type": "object", "title": "Input", "required": ["prompt"], "properties": {
                "prompt": {"type": "string", "title": "Prompt", "x-order": 0},
                "repeat": {"type": "integer", "title": "Repeat", "default": 1, "minimum": 1, "maximum": 5, "x-order": 1}
            }},
            "Output": {"type": "string", "title": "Output"},
            "TrainingInput": {"type": "object", "title": "TrainingInput", "required": ["word"], "properties": {
                "word": {"type": "string", "title": "Word", "x-order": 0}
            }},
            "TrainingOutput": {"type": "object", "title": "TrainingOutput", "properties": {
                "weights": {"type": "string", "format": "uri", "title": "Weights"}
            }}
        }}
    })
}

/// One test body, run once on SQLite and once on PostgreSQL.
#[macro_export]
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name(super::common::Backend::Sqlite).await })*
        }
        mod postgres {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name(super::common::Backend::Postgres).await })*
        }
    };
}

pub type Shared = Arc<Server>;
