//! The client against a tiny scripted HTTP server: what goes on the wire, and how answers are read.
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

use modelyard_client::{Client, Error, NewPrediction, Wait};
use serde_json::json;

#[derive(Debug, Clone)]
struct Seen {
    method: String,
    target: String,
    headers: HashMap<String, String>,
    body: Vec<u8>,
}

type Handler = dyn Fn(&Seen, &str) -> (u16, &'static str, String) + Send + Sync;

/// Serves one request per connection; returns the base URL and what it saw.
fn server(handler: Box<Handler>) -> (String, Arc<Mutex<Vec<Seen>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let base2 = base.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                continue;
            }
            let mut parts = line.split_whitespace();
            let method = parts.next().unwrap_or("").to_string();
            let target = parts.next().unwrap_or("").to_string();
            let mut headers = HashMap::new();
            loop {
                let mut h = String::new();
                reader.read_line(&mut h).unwrap();
                let h = h.trim_end();
                if h.is_empty() {
                    break;
                }
                if let Some((k, v)) = h.split_once(':') {
                    headers.insert(k.trim().to_lowercase(), v.trim().to_string());
                }
            }
            let mut body = Vec::new();
            if headers.get("transfer-encoding").map(String::as_str) == Some("chunked") {
                // A streamed body (a push): chunks of "<hex size>\r\n<bytes>\r\n", then "0".
                loop {
                    let mut size = String::new();
                    reader.read_line(&mut size).unwrap();
                    let n = usize::from_str_radix(size.trim(), 16).unwrap();
                    let mut chunk = vec![0; n + 2];
                    reader.read_exact(&mut chunk).unwrap();
                    if n == 0 {
                        break;
                    }
                    body.extend_from_slice(&chunk[..n]);
                }
            } else {
                let len: usize = headers
                    .get("content-length")
                    .and_then(|l| l.parse().ok())
                    .unwrap_or(0);
                body = vec![0; len];
                reader.read_exact(&mut body).unwrap();
            }
            let s = Seen {
                method,
                target,
                headers,
                body,
            };
            let (status, ctype, text) = handler(&s, &base2);
            log.lock().unwrap().push(s);
            let resp = format!(
                "HTTP/1.1 {status} X\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
                text.len()
            );
            let _ = stream.write_all(resp.as_bytes());
        }
    });
    (base, seen)
}

fn model(name: &str) -> serde_json::Value {
    json!({"url": "u", "owner": "alice", "name": name, "visibility": "private", "run_count": 0,
           "latest_version": null})
}

#[tokio::test]
async fn auth_search_and_pages() {
    let (base, seen) = server(Box::new(|s, base| {
        let page = match (s.method.as_str(), s.target.as_str()) {
            ("GET", "/v1/models") => json!({"previous": null,
                "next": format!("{base}/v1/models?cursor=5"), "results": [model("a")]}),
            ("GET", "/v1/models?cursor=5") => {
                json!({"previous": null, "next": null, "results": [model("b")]})
            }
            ("QUERY", "/v1/models") => {
                json!({"previous": null, "next": null, "results": [model("c")]})
            }
            _ => {
                return (
                    404,
                    "application/problem+json",
                    r#"{"title":"Not found","status":404}"#.into(),
                )
            }
        };
        (200, "application/json", page.to_string())
    }));
    let c = Client::new(&format!("{base}/"), Some("r8_secret".into()));
    let all = c.models().list_all().await.unwrap();
    assert_eq!(
        all.iter().map(|m| m.name.as_str()).collect::<Vec<_>>(),
        ["a", "b"]
    );
    let found = c.models().search("hello world").await.unwrap();
    assert_eq!(found.results[0].name, "c");

    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 3);
    for s in seen.iter() {
        assert_eq!(s.headers["authorization"], "Bearer r8_secret");
    }
    assert_eq!(seen[2].method, "QUERY");
    assert_eq!(seen[2].headers["content-type"], "text/plain");
    assert_eq!(seen[2].body, b"hello world");
}

#[tokio::test]
async fn refusals_carry_every_blocker() {
    let (base, seen) = server(Box::new(|s, _| {
        if s.target.ends_with("dry_run=true") {
            return (200, "application/json", json!({"deletable": false, "blockers": [
                {"kind": "public", "detail": "alice/m is public.", "model": "alice/m"},
                {"kind": "has_versions", "detail": "2 versions.", "model": "alice/m", "version_count": 2, "versions": ["x", "y"]}
            ]}).to_string());
        }
        (409, "application/problem+json", json!({
            "title": "Deletion blocked", "status": 409, "detail": "The model alice/m cannot be deleted.",
            "blockers": [{"kind": "public", "detail": "alice/m is public.", "model": "alice/m"}]
        }).to_string())
    }));
    let c = Client::new(&base, None);
    let p = c.models().delete_preview("alice", "m").await.unwrap();
    assert!(!p.deletable);
    assert_eq!(p.blockers.len(), 2);
    assert_eq!(p.blockers[1].version_count, Some(2));

    let err = c.models().delete("alice", "m").await.unwrap_err();
    let Error::Api(e) = &err else {
        panic!("{err:?}")
    };
    assert_eq!(e.status, 409);
    assert_eq!(e.title, "Deletion blocked");
    assert_eq!(e.blockers[0].kind, "public");
    assert_eq!(
        err.to_string(),
        "Deletion blocked: The model alice/m cannot be deleted."
    );

    let seen = seen.lock().unwrap();
    assert_eq!(seen[0].method, "DELETE");
    assert_eq!(seen[0].target, "/v1/models/alice/m?dry_run=true");
    assert!(!seen[0].headers.contains_key("authorization"));
    assert_eq!(seen[1].target, "/v1/models/alice/m");
}

#[tokio::test]
async fn push_and_predict() {
    let pushes = std::sync::atomic::AtomicUsize::new(0);
    let (base, seen) = server(Box::new(move |s, _| {
        let v = json!({"id": "v1", "created_at": "t", "cog_version": "0.23", "openapi_schema": {}});
        match s.target.as_str() {
            "/v1/models/alice/m/versions" => {
                // The first push creates the version; the same content again finds it.
                let n = pushes.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                (if n == 0 { 201 } else { 200 }, "application/json", v.to_string())
            }
            "/v1/predictions" => (201, "application/json", json!({
                "id": "p1", "model": "alice/m", "version": "v1", "status": "succeeded",
                "input": {"x": 1}, "output": "hi", "urls": {"get": "g", "cancel": "c", "web": "w"}
            }).to_string()),
            _ => (500, "text/plain", "boom".into()),
        }
    }));
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("predict.py"), "x").unwrap();
    std::fs::create_dir(dir.path().join(".git")).unwrap();
    let c = Client::new(&base, Some("t".into()));
    let v = c.push("alice", "m", dir.path()).await.unwrap();
    assert_eq!(v.id, "v1");
    let packed = modelyard_client::pack_dir(dir.path()).unwrap();
    let (again, created) = c.push_archive("alice", "m", packed).await.unwrap();
    assert_eq!((again.id.as_str(), created), ("v1", false));

    let req = NewPrediction::new(json!({"x": 1})).wait(Wait::Seconds(5));
    let p = c.predictions().create("alice/m:v1", &req).await.unwrap();
    assert!(p.is_terminal());
    assert_eq!(p.output, json!("hi"));

    let err = c.predictions().get("nope").await.unwrap_err();
    assert_eq!(err.status(), Some(500));
    assert_eq!(err.to_string(), "Internal Server Error: boom");

    let seen = seen.lock().unwrap();
    assert_eq!(seen[0].method, "POST");
    assert_eq!(seen[0].headers["content-type"], "application/gzip");
    assert_eq!(&seen[0].body[..2], &[0x1f, 0x8b], "gzip magic");
    assert_eq!(
        seen[0].body, seen[1].body,
        "the same content packs the same way"
    );
    assert_eq!(seen[2].headers["prefer"], "wait=5");
    let body: serde_json::Value = serde_json::from_slice(&seen[2].body).unwrap();
    assert_eq!(body, json!({"version": "alice/m:v1", "input": {"x": 1}}));
}

#[tokio::test]
async fn an_unreachable_server_is_a_transport_error() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let c = Client::new(&format!("http://127.0.0.1:{port}"), None);
    let err = c.account().await.unwrap_err();
    assert!(matches!(err, Error::Http(_)), "{err:?}");
}

#[tokio::test]
async fn the_trash_on_the_wire() {
    let (base, seen) = server(Box::new(|s, _| {
        let body = match (s.method.as_str(), s.target.as_str()) {
            ("DELETE", "/v1/models/alice/m?purge=true")
            | ("DELETE", "/v1/models/alice/m/versions/v1?purge=true") => {
                return (204, "application/json", String::new())
            }
            ("DELETE", "/v1/models/alice/m/versions/v1?dry_run=true") => {
                json!({"deletable": true, "blockers": [], "frees_bytes": 4096})
            }
            ("POST", "/v1/models/alice/m/restore") => model("m"),
            ("POST", "/v1/models/alice/m/versions/v1/restore") => json!({"id": "v1"}),
            ("POST", "/v1/models/alice/m/versions/v2/restore") => {
                return (
                    409,
                    "application/problem+json",
                    json!({"title": "Conflict", "status": 409, "detail": "The model alice/m is in the trash.",
                           "blockers": [{"kind": "model_in_trash", "detail": "The model alice/m is in the trash.", "model": "alice/m"}]})
                    .to_string(),
                )
            }
            ("POST", "/v1/models/alice/m/versions/prune") => json!({
                "deleted": ["v0"], "kept": [{"id": "v1", "reason": "newest"}], "frees_bytes": 7}),
            ("GET", "/v1/trash?owner=acme") => json!({"next": null, "results": [
                {"kind": "model", "owner": "acme", "name": "x", "version_id": null,
                 "trashed_at": "t", "purge_at": "p", "frees_bytes": 1}]}),
            ("GET", "/v1/account/storage") => {
                json!({"bytes": 3, "unique_bytes": 2, "trash_bytes": 1})
            }
            _ => {
                return (
                    404,
                    "application/problem+json",
                    r#"{"title":"Not found","status":404}"#.into(),
                )
            }
        };
        (200, "application/json", body.to_string())
    }));
    let c = Client::new(&base, Some("r8_t".into()));
    c.models().purge("alice", "m").await.unwrap();
    c.versions().purge("alice", "m", "v1").await.unwrap();
    let p = c
        .versions()
        .delete_preview("alice", "m", "v1")
        .await
        .unwrap();
    assert_eq!(p.frees_bytes, Some(4096));
    assert_eq!(c.models().restore("alice", "m").await.unwrap().name, "m");
    assert_eq!(
        c.versions().restore("alice", "m", "v1").await.unwrap().id,
        "v1"
    );
    match c.versions().restore("alice", "m", "v2").await {
        Err(Error::Api(e)) => {
            assert_eq!(e.status, 409);
            assert_eq!(e.blockers[0].kind, "model_in_trash");
        }
        other => panic!("{other:?}"),
    }
    let req = modelyard_client::PruneRequest {
        keep: 1,
        dry_run: true,
    };
    let r = c.versions().prune("alice", "m", &req).await.unwrap();
    assert_eq!(
        (r.deleted.len(), r.kept[0].reason.as_str(), r.frees_bytes),
        (1, "newest", 7)
    );
    let t = c.trash(Some("acme")).await.unwrap();
    assert_eq!(t.results[0].target(), "acme/x");
    assert_eq!(c.storage().await.unwrap().trash_bytes, 1);
    let seen = seen.lock().unwrap();
    let prune = seen
        .iter()
        .find(|s| s.target.ends_with("/prune"))
        .expect("the prune request");
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&prune.body).unwrap(),
        json!({"keep": 1, "dry_run": true})
    );
    assert!(seen
        .iter()
        .all(|s| s.headers.get("authorization").map(String::as_str) == Some("Bearer r8_t")));
}
