//! What an attacker tried against the server's own HTTP surface (issue "Hardening"): each
//! class of defect held to its fix over real HTTP, with more than the payload first reported.
mod common;

use common::*;
use reqwest::{header, Method, StatusCode};
use serde_json::json;

fn is_problem(r: &Reply) -> bool {
    r.headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v == "application/problem+json")
}

async fn raw_get(s: &Server, who: &str, path_and_query: &str) -> Reply {
    // reqwest would re-encode some bytes: send the path exactly as an attacker would.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = s.url.trim_start_matches("http://").to_string();
    let mut sock = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let auth = if who.is_empty() {
        String::new()
    } else {
        format!("authorization: Bearer {}\r\n", s.tokens[who])
    };
    let head =
        format!("GET {path_and_query} HTTP/1.1\r\nhost: {addr}\r\n{auth}connection: close\r\n\r\n");
    sock.write_all(head.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    sock.read_to_end(&mut raw).await.unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let code: u16 = head.split(' ').nth(1).unwrap().parse().unwrap();
    let mut headers = header::HeaderMap::new();
    for line in head.lines().skip(1) {
        if let Some((k, v)) = line.split_once(':') {
            headers.insert(
                header::HeaderName::from_bytes(k.trim().as_bytes()).unwrap(),
                v.trim().parse().unwrap(),
            );
        }
    }
    Reply {
        status: StatusCode::from_u16(code).unwrap(),
        headers,
        body: serde_json::from_str(body).unwrap_or(serde_json::Value::Null),
    }
}

#[tokio::test]
async fn every_rejection_under_v1_is_problem_json() {
    let s = start(Backend::Sqlite).await;
    s.create_model("alice", "alice", "m", "private").await;
    // Path segments that are not UTF-8 once decoded, in every kind of path parameter.
    for path in [
        "/v1/models/%FF/m",
        "/v1/models/alice/%C0%AF",
        "/v1/models/alice/m/versions/%FE%FF",
        "/v1/predictions/%FF",
        "/v1/deployments/%80/x",
        "/v1/files/%FF",
        "/v1/files/%FF/download",
        "/files/%FF/a/b",
    ] {
        let r = raw_get(&s, "alice", path).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{path}");
        assert!(is_problem(&r), "{path}: {:?}", r.headers);
    }
    // A query parameter given twice, or of the wrong shape, names the parameter.
    for (method, path, field) in [
        (Method::GET, "/v1/models?cursor=1&cursor=2", "cursor"),
        (Method::GET, "/v1/predictions?cursor=1&cursor=1", "cursor"),
        (Method::GET, "/v1/files?cursor=x", "cursor"),
        (Method::GET, "/v1/deployments?cursor=-1", "cursor"),
        (
            Method::GET,
            "/v1/audit-log?cursor=99999999999999999999",
            "cursor",
        ),
        (
            Method::DELETE,
            "/v1/models/alice/m?dry_run=true&dry_run=false",
            "dry_run",
        ),
        (
            Method::DELETE,
            "/v1/models/alice/m?dry_run=maybe",
            "dry_run",
        ),
    ] {
        let r = s.call("alice", method.clone(), path, None).await;
        assert_eq!(
            r.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{method} {path}"
        );
        assert!(is_problem(&r), "{path}");
        assert_eq!(r.body["invalid_fields"][0]["field"], field, "{path}");
    }
    // The model survived the refused deletions.
    assert_eq!(
        s.get("alice", "/v1/models/alice/m").await.status,
        StatusCode::OK
    );
    let query = Method::from_bytes(b"QUERY").unwrap();
    let r = s
        .call("alice", query.clone(), "/v1/models?cursor=1&cursor=2", None)
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(is_problem(&r));
    // 405 on the search path names QUERY among the methods it takes.
    let r = s.call("alice", Method::PUT, "/v1/models", None).await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    assert!(is_problem(&r));
    let allow = r.headers[header::ALLOW].to_str().unwrap();
    for m in ["GET", "POST", "QUERY"] {
        assert!(allow.split(',').any(|a| a.trim() == m), "{allow}");
    }
}

#[tokio::test]
async fn cancel_after_is_checked_and_capped() {
    let s = start(Backend::Sqlite).await;
    s.create_model("alice", "alice", "m", "private").await;
    let v = s.version("alice/m", "c1").await;
    let body = json!({"version": format!("alice/m:{v}"), "input": {"prompt": "hi"}});
    let send = |value: &'static str| {
        s.http
            .post(format!("{}/v1/predictions", s.url))
            .bearer_auth(&s.tokens["alice"])
            .header("cancel-after", value)
            .json(&body)
            .send()
    };
    // Values that overflowed, wrapped around, or were silently changed: all are answered.
    for too_big in [
        "18446744073709551615",
        "18446744073709551615h",
        "5124095576030432h",
        "9223372036854775807s",
        "99999999999999999999999999m",
        "24h1s",
        "2562047788015216h",
    ] {
        let r = send(too_big).await.expect("the server answers");
        assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY, "{too_big}");
        let p: serde_json::Value = r.json().await.unwrap();
        assert!(p["detail"].as_str().unwrap().contains("at most 24h"), "{p}");
    }
    for bad in ["4s", "0", "soon", "1.5h", "-5s"] {
        let r = send(bad).await.unwrap();
        assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY, "{bad}");
    }
    let r = send("24h").await.unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let p: serde_json::Value = r.json().await.unwrap();
    let created = chrono::DateTime::parse_from_rfc3339(p["created_at"].as_str().unwrap()).unwrap();
    let deadline = chrono::DateTime::parse_from_rfc3339(p["deadline"].as_str().unwrap()).unwrap();
    let secs = (deadline - created).num_seconds();
    assert!((86_390..=86_410).contains(&secs), "{secs}");
}

fn multipart(name: &str, ctype: &str, data: &[u8]) -> (String, Vec<u8>) {
    let boundary = "x-boundary-1234";
    let mut body = format!(
        "--{boundary}\r\ncontent-disposition: form-data; name=\"content\"; filename=\"{name}\"\r\n\
         content-type: {ctype}\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(data);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

#[tokio::test]
async fn uploaded_files_cannot_run_as_this_origin() {
    let s = start(Backend::Sqlite).await;
    let cases = [
        (
            "x.html",
            "text/html",
            "application/octet-stream",
            "attachment",
        ),
        (
            "x.svg",
            "image/svg+xml",
            "application/octet-stream",
            "attachment",
        ),
        (
            "x.xml",
            "application/xhtml+xml",
            "application/octet-stream",
            "attachment",
        ),
        (
            "x.js",
            "text/javascript",
            "application/octet-stream",
            "attachment",
        ),
        (
            "x.txt",
            "text/plain; charset=utf-7",
            "text/plain; charset=utf-8",
            "inline",
        ),
        ("x.png", "image/png", "image/png", "inline"),
        ("x.json", "application/json", "application/json", "inline"),
    ];
    for (name, declared, served, disposition) in cases {
        let (ctype, body) = multipart(name, declared, b"<script>alert(document.cookie)</script>");
        let r = s
            .http
            .post(format!("{}/v1/files", s.url))
            .bearer_auth(&s.tokens["alice"])
            .header(header::CONTENT_TYPE, ctype)
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::CREATED, "{name}");
        let f: serde_json::Value = r.json().await.unwrap();
        let url = f["urls"]["get"].as_str().unwrap();
        let d = s.http.get(url).send().await.unwrap();
        assert_eq!(d.status(), StatusCode::OK, "{name}");
        let h = d.headers();
        assert_eq!(h[header::CONTENT_TYPE], served, "{name}");
        assert!(
            h[header::CONTENT_DISPOSITION]
                .to_str()
                .unwrap()
                .starts_with(disposition),
            "{name}: {:?}",
            h[header::CONTENT_DISPOSITION]
        );
        assert_eq!(h[header::X_CONTENT_TYPE_OPTIONS], "nosniff", "{name}");
        assert_eq!(
            h[header::CONTENT_SECURITY_POLICY],
            "sandbox; frame-ancestors 'none'",
            "{name}"
        );
    }
}

async fn deployment_visibility(b: Backend) {
    let s = start(b).await;
    s.create_model("alice", "alice", "m", "public").await;
    let v = s.version("alice/m", "c1").await;
    let create = json!({"name": "d", "model": "alice/m", "version": v, "hardware": "cpu",
                        "min_instances": 0, "max_instances": 1});
    let r = s
        .call("bob", Method::POST, "/v1/deployments", Some(create))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let run = || {
        s.call(
            "bob",
            Method::POST,
            "/v1/deployments/bob/d/predictions",
            Some(json!({"input": {"prompt": "hi"}})),
        )
    };
    assert_eq!(run().await.status, StatusCode::CREATED);

    s.set_visibility("alice", "alice/m", "private").await;
    // Every use through the deployment is now as if the version did not exist.
    let r = run().await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{:?}", r.body);
    let r = s
        .call(
            "bob",
            Method::PATCH,
            "/v1/deployments/bob/d",
            Some(json!({"min_instances": 1, "max_instances": 2})),
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{:?}", r.body);
    let r = s.get("bob", "/v1/deployments/bob/d").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["current_release"]["version"], json!(null));
    assert_eq!(
        r.body["current_release"]["number"], 1,
        "no release was made"
    );
    let list = s.get("bob", "/v1/deployments").await;
    assert_eq!(
        list.body["results"][0]["current_release"]["version"],
        json!(null)
    );
    assert!(!list.body.to_string().contains(&v));
    // Disabling stays possible: it is how a deployment is deleted.
    let r = s
        .call(
            "bob",
            Method::PATCH,
            "/v1/deployments/bob/d",
            Some(json!({"min_instances": 0, "max_instances": 0})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["current_release"]["version"], json!(null));
    // The owner of the model still sees it all; public again, bob can use it again.
    s.set_visibility("alice", "alice/m", "public").await;
    let r = s
        .call(
            "bob",
            Method::PATCH,
            "/v1/deployments/bob/d",
            Some(json!({"max_instances": 1})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["current_release"]["version"], json!(v));
    assert_eq!(run().await.status, StatusCode::CREATED);
}

#[tokio::test]
async fn stream_links_expire_with_the_retention_time() {
    for (retention, expected) in [
        (std::time::Duration::from_secs(3600), StatusCode::OK),
        (std::time::Duration::ZERO, StatusCode::NOT_FOUND),
    ] {
        let s = start_with(Backend::Sqlite, |c| c.api_retention = retention).await;
        s.create_model("alice", "alice", "m", "private").await;
        let v = s.version("alice/m", "c1").await;
        let p = s.predict("alice", "alice/m", &v).await;
        let id = p.body["id"].as_str().unwrap();
        let stream = p.body["urls"]["stream"].as_str().unwrap().to_string();
        let r = s
            .call(
                "alice",
                Method::POST,
                &format!("/v1/predictions/{id}/cancel"),
                None,
            )
            .await;
        assert_eq!(r.body["status"], "canceled");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        let r = s.http.get(&stream).send().await.unwrap();
        assert_eq!(r.status(), expected, "retention {retention:?}");
    }
}

#[tokio::test]
async fn the_data_dir_is_created_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let s = start(Backend::Sqlite).await;
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let data = &s.state.config.data_dir;
    assert_eq!(mode(data), 0o700);
    assert_eq!(mode(&data.join("modelyard.db")), 0o600);
    assert_eq!(mode(&data.join("server.key")), 0o600);
}

#[tokio::test]
async fn staging_left_by_a_crashed_push_is_removed_at_start() {
    let mut stale = None;
    let _s = start_with(Backend::Sqlite, |c| {
        let tmp = c.data_dir.join("tmp");
        std::fs::create_dir_all(tmp.join("push-crashed/tree/sub")).unwrap();
        std::fs::write(tmp.join("push-crashed/tree/sub/f"), b"x").unwrap();
        std::os::unix::fs::symlink("/", tmp.join("push-crashed/tree/root")).unwrap();
        std::fs::create_dir_all(tmp.join("not-a-push")).unwrap();
        stale = Some(tmp);
    })
    .await;
    let tmp = stale.unwrap();
    assert!(!tmp.join("push-crashed").exists());
    assert!(tmp.join("not-a-push").exists());
}

both_backends!(deployment_visibility);
