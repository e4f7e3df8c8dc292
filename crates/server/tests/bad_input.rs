//! Bad input gets a clear problem+json answer and changes nothing.
mod common;

use common::{start, Backend, Server};
use reqwest::{Method, StatusCode};
use serde_json::json;

async fn raw(s: &Server, who: &str, method: Method, path: &str, body: &str) -> common::Reply {
    let mut req = s
        .http
        .request(method, format!("{}{path}", s.url))
        .header("content-type", "application/json")
        .body(body.to_string());
    if !who.is_empty() {
        req = req.bearer_auth(&s.tokens[who]);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp.json().await.unwrap_or(serde_json::Value::Null);
    common::Reply {
        status,
        headers,
        body,
    }
}

async fn oversized_request(s: &Server) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = s.url.trim_start_matches("http://").to_string();
    let sock = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let (mut rd, mut wr) = sock.into_split();
    let size = 2 * 1024 * 1024;
    let head = format!(
        "PATCH /v1/models/alice/keep HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer {}\r\n\
         content-type: application/json\r\ncontent-length: {size}\r\n\r\n",
        s.tokens["alice"]
    );
    // The server may answer and close before all of it is written: writing errors are expected.
    let writer = tokio::spawn(async move {
        let _ = wr.write_all(head.as_bytes()).await;
        let _ = wr.write_all(&vec![b' '; size]).await;
        wr
    });
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(std::time::Duration::from_secs(30), rd.read(&mut buf))
        .await
        .expect("the server answers an oversized body")
        .unwrap();
    drop(writer);
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

async fn model_count(s: &Server) -> usize {
    s.get("alice", "/v1/models").await.body["results"]
        .as_array()
        .unwrap()
        .len()
}

fn problem(r: &common::Reply, status: StatusCode, what: &str) {
    assert_eq!(r.status, status, "{what}: {:?}", r.body);
    assert_eq!(
        r.headers["content-type"], "application/problem+json",
        "{what}"
    );
    assert!(
        r.body["title"].is_string() && r.body["detail"].is_string(),
        "{what}: {:?}",
        r.body
    );
}

async fn bad_json_is_refused_and_changes_nothing(b: Backend) {
    let s = start(b).await;
    s.create_model("alice", "alice", "keep", "public").await;
    let before = model_count(&s).await;
    let cases: &[(&str, &str, StatusCode, Option<&str>)] = &[
        (
            "malformed",
            "{\"owner\": \"alice\",",
            StatusCode::BAD_REQUEST,
            None,
        ),
        (
            "not an object",
            "[1, 2]",
            StatusCode::UNPROCESSABLE_ENTITY,
            None,
        ),
        (
            "wrong type",
            r#"{"owner":"alice","name":"x","visibility":5,"hardware":"cpu"}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("visibility"),
        ),
        (
            "bad visibility",
            r#"{"owner":"alice","name":"x","visibility":"secret","hardware":"cpu"}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("visibility"),
        ),
        (
            "missing field",
            r#"{"owner":"alice","name":"x","hardware":"cpu"}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
            None,
        ),
        (
            "unknown field",
            r#"{"owner":"alice","name":"x","visibility":"public","hardware":"cpu","colour":1}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
            None,
        ),
        (
            "upper-case name",
            r#"{"owner":"alice","name":"Hello","visibility":"public","hardware":"cpu"}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("name"),
        ),
        (
            "slash in name",
            r#"{"owner":"alice","name":"a/b","visibility":"public","hardware":"cpu"}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("name"),
        ),
        (
            "unknown hardware",
            r#"{"owner":"alice","name":"x","visibility":"public","hardware":"tpu-v5"}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("hardware"),
        ),
        (
            "javascript link",
            r#"{"owner":"alice","name":"x","visibility":"public","hardware":"cpu","github_url":"javascript:alert(1)"}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("github_url"),
        ),
        (
            "unknown owner",
            r#"{"owner":"nobody","name":"x","visibility":"public","hardware":"cpu"}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("owner"),
        ),
        (
            "someone else's name",
            r#"{"owner":"bob","name":"x","visibility":"public","hardware":"cpu"}"#,
            StatusCode::FORBIDDEN,
            None,
        ),
        (
            "duplicate",
            r#"{"owner":"alice","name":"keep","visibility":"public","hardware":"cpu"}"#,
            StatusCode::CONFLICT,
            None,
        ),
    ];
    for (what, body, status, field) in cases {
        let r = raw(&s, "alice", Method::POST, "/v1/models", body).await;
        problem(&r, *status, what);
        if let Some(field) = field {
            assert_eq!(
                r.body["invalid_fields"][0]["field"], *field,
                "{what}: {:?}",
                r.body
            );
        }
    }
    // Over a raw socket, so the answer is read even when the server stops reading the body.
    let answer = oversized_request(&s).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("application/problem+json"), "{answer}");
    let r = raw(
        &s,
        "alice",
        Method::PATCH,
        "/v1/models/alice/keep",
        r#"{"visibility":"everyone"}"#,
    )
    .await;
    problem(&r, StatusCode::UNPROCESSABLE_ENTITY, "bad patch");
    let r = raw(
        &s,
        "alice",
        Method::PATCH,
        "/v1/models/alice/keep",
        r#"{"owner":"bob"}"#,
    )
    .await;
    problem(&r, StatusCode::UNPROCESSABLE_ENTITY, "unchangeable field");
    assert_eq!(model_count(&s).await, before);
    let m = s.get("alice", "/v1/models/alice/keep").await;
    assert_eq!(m.body["visibility"], "public");
    assert!(m.body["description"].is_null());

    let r = raw(
        &s,
        "alice",
        Method::DELETE,
        "/v1/models/alice/keep?dry_run=perhaps",
        "",
    )
    .await;
    problem(&r, StatusCode::UNPROCESSABLE_ENTITY, "bad dry_run");
    let r = raw(&s, "alice", Method::GET, "/v1/models?cursor=abc", "").await;
    problem(&r, StatusCode::UNPROCESSABLE_ENTITY, "bad cursor");
}

async fn auth_and_routing_errors(b: Backend) {
    let s = start(b).await;
    s.create_model("alice", "alice", "pub", "public").await;
    // Anonymous callers may read public models; a wrong token is refused even there.
    assert_eq!(
        s.get("", "/v1/models/alice/pub").await.status,
        StatusCode::OK
    );
    let resp = s
        .http
        .get(format!("{}/v1/models/alice/pub", s.url))
        .header("authorization", "Bearer r8_wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(
        body["detail"],
        "You did not pass a valid authentication token"
    );
    // Both spellings of the scheme work.
    let resp = s
        .http
        .get(format!("{}/v1/account", s.url))
        .header("authorization", format!("Token {}", s.tokens["bob"]))
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.json::<serde_json::Value>().await.unwrap()["username"],
        "bob"
    );
    problem(
        &s.get("", "/v1/account").await,
        StatusCode::UNAUTHORIZED,
        "anonymous account",
    );
    problem(
        &s.get("alice", "/v1/nothing-here").await,
        StatusCode::NOT_FOUND,
        "unknown route",
    );
    problem(
        &s.call("alice", Method::PUT, "/v1/models", None).await,
        StatusCode::METHOD_NOT_ALLOWED,
        "bad method",
    );
    let r = s
        .call(
            "bob",
            Method::POST,
            "/v1/predictions",
            Some(json!({"version": "nope", "input": {}})),
        )
        .await;
    problem(&r, StatusCode::UNPROCESSABLE_ENTITY, "bad version");
    let r = s
        .call(
            "bob",
            Method::POST,
            "/v1/predictions",
            Some(json!({"version": "a".repeat(64), "input": {}})),
        )
        .await;
    problem(&r, StatusCode::NOT_FOUND, "missing version");
    assert_eq!(
        s.get("bob", "/v1/predictions").await.body["results"],
        json!([])
    );
}

async fn pages_link_absolutely_and_hide_private_models(b: Backend) {
    let s = start(b).await;
    for i in 0..105 {
        s.create_model("alice", "alice", &format!("m{i:03}"), "private")
            .await;
    }
    s.create_model("bob", "bob", "bobs-public", "public").await;
    s.create_model("bob", "bob", "bobs-private", "private")
        .await;
    let first = s.get("alice", "/v1/models").await;
    let next = first.body["next"].as_str().unwrap().to_string();
    assert!(next.starts_with(&s.url), "{next}");
    let second = s
        .http
        .get(&next)
        .bearer_auth(&s.tokens["alice"])
        .send()
        .await
        .unwrap();
    let second: serde_json::Value = second.json().await.unwrap();
    let mut names: Vec<String> = first.body["results"]
        .as_array()
        .unwrap()
        .iter()
        .chain(second["results"].as_array().unwrap())
        .map(|m| {
            format!(
                "{}/{}",
                m["owner"].as_str().unwrap(),
                m["name"].as_str().unwrap()
            )
        })
        .collect();
    assert!(second["next"].is_null());
    names.sort();
    assert_eq!(names.len(), 106, "105 of alice's and bob's public one");
    assert!(names.contains(&"bob/bobs-public".to_string()));
    assert!(!names.contains(&"bob/bobs-private".to_string()));
    assert_eq!(
        s.get("bob", "/v1/models").await.body["results"]
            .as_array()
            .unwrap()
            .len(),
        2
    );

    // Search, as the official clients send it (QUERY with a text body, JS JSON-quotes it).
    for body in ["bobs", "\"bobs\""] {
        let r = s
            .http
            .request(
                Method::from_bytes(b"QUERY").unwrap(),
                format!("{}/v1/models", s.url),
            )
            .bearer_auth(&s.tokens["alice"])
            .header("content-type", "text/plain")
            .body(body)
            .send()
            .await
            .unwrap();
        let r: serde_json::Value = r.json().await.unwrap();
        let found: Vec<&str> = r["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["name"].as_str().unwrap())
            .collect();
        assert_eq!(found, ["bobs-public"], "{body}");
    }
}

/// `/v1/hardware` lists every kind a model may ask for, GPUs included; a model asking for one
/// is accepted (it waits for a worker that offers it) and says so.
async fn hardware_is_the_catalogue(b: Backend) {
    let s = start(b).await;
    let r = s.get("alice", "/v1/hardware").await;
    assert_eq!(r.status, StatusCode::OK);
    let skus: Vec<&str> = r
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["sku"].as_str().unwrap())
        .collect();
    assert_eq!(skus[0], "cpu", "{}", r.body);
    assert!(
        skus.contains(&"gpu-a100-large") && skus.contains(&"gpu-t4"),
        "{}",
        r.body
    );
    assert!(r
        .body
        .as_array()
        .unwrap()
        .iter()
        .all(|h| h["name"].as_str().is_some_and(|n| !n.is_empty())));
    let body = json!({"owner": "alice", "name": "big", "visibility": "private", "hardware": "gpu-a100-large"});
    let r = s
        .call("alice", Method::POST, "/v1/models", Some(body))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let r = s.get("alice", "/v1/models/alice/big").await;
    assert_eq!(r.status, StatusCode::OK);
    let r = s
        .call(
            "alice",
            Method::PATCH,
            "/v1/models/alice/big",
            Some(json!({"hardware": "gpu-x"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.body);
}

both_backends!(
    hardware_is_the_catalogue,
    bad_json_is_refused_and_changes_nothing,
    auth_and_routing_errors,
    pages_link_absolutely_and_hide_private_models,
);
