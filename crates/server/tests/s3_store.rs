//! One node with its bytes in a real S3-compatible store (moto's server): a pushed Cog project,
//! a prediction's output file and a `/v1/files` upload live in the bucket and are served from
//! it, and deleting the version removes its tree and blobs from the bucket.
mod common;
#[path = "../../blobs/tests/moto/mod.rs"]
mod moto;

use std::time::Duration;

use common::*;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

async fn keys(s: &Server) -> Vec<String> {
    s.state.blobs.stored_keys().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn projects_outputs_and_files_live_in_the_bucket() {
    let m = moto::Moto::start();
    let url = m.bucket("modelyard", "node");
    // Read when the server builds its store; this binary runs this one test.
    m.with_env(|| ());
    let s = start_with(Backend::Sqlite, |c| {
        c.run_jobs = true;
        c.setup_timeout = Duration::from_secs(120);
        c.blob_store = Some(url);
    })
    .await;
    s.create_model("alice", "alice", "fileout", "private").await;
    let v = s.push("alice", "alice/fileout", "fileout").await;
    let stored = keys(&s).await;
    assert!(
        stored.iter().any(|k| k.starts_with("trees/"))
            && stored.iter().any(|k| k.starts_with("blobs/")),
        "{stored:?}"
    );
    assert!(
        !s.state.artifacts_dir().exists(),
        "the data directory holds no trees"
    );

    // A prediction whose output is a file: stored in the bucket, served through the API.
    let r = s
        .call(
            "alice",
            Method::POST,
            "/v1/predictions",
            Some(json!({"version": v, "input": {"text": "from the bucket"}})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let id = r.body["id"].as_str().unwrap().to_string();
    let p = s
        .until_done(
            "alice",
            &format!("/v1/predictions/{id}"),
            Duration::from_secs(300),
        )
        .await;
    assert_eq!(p["status"], "succeeded", "{p}");
    let out = p["output"].as_str().unwrap();
    assert!(out.starts_with(&format!("{}/files/{id}/", s.url)), "{out}");
    let got = reqwest::get(out).await.unwrap();
    assert_eq!(got.status(), StatusCode::OK);
    assert_eq!(got.text().await.unwrap(), "from the bucket");
    assert!(keys(&s)
        .await
        .iter()
        .any(|k| k.starts_with(&format!("outputs/{id}/"))));
    let wrong = reqwest::get(format!("{out}x")).await.unwrap();
    assert_eq!(wrong.status(), StatusCode::NOT_FOUND);

    // An upload: kept in the bucket, read back through its signed URL, gone when deleted.
    let form = "--b\r\ncontent-disposition: form-data; name=\"content\"; filename=\"a.txt\"\r\n\
                content-type: text/plain\r\n\r\nuploaded bytes\r\n--b--\r\n";
    let r = s
        .http
        .post(format!("{}/v1/files", s.url))
        .bearer_auth(&s.tokens["alice"])
        .header("content-type", "multipart/form-data; boundary=b")
        .body(form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let f: Value = r.json().await.unwrap();
    let fid = f["id"].as_str().unwrap().to_string();
    assert!(keys(&s).await.contains(&format!("files/{fid}")));
    let got = reqwest::get(f["urls"]["get"].as_str().unwrap())
        .await
        .unwrap();
    assert_eq!(got.status(), StatusCode::OK);
    assert_eq!(got.text().await.unwrap(), "uploaded bytes");
    let r = s
        .call("alice", Method::DELETE, &format!("/v1/files/{fid}"), None)
        .await;
    assert!(r.status.is_success(), "{:?}", r.body);
    assert!(!keys(&s).await.contains(&format!("files/{fid}")));

    // A training: its weights go to the bucket, and the fine-tune runs from this node's copy.
    s.create_model("alice", "alice", "base", "private").await;
    s.create_model("alice", "alice", "tuned", "private").await;
    let base = s.push("alice", "alice/base", "trainable").await;
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
            Duration::from_secs(300),
        )
        .await;
    assert_eq!(t["status"], "succeeded", "{t}");
    assert!(keys(&s).await.iter().any(|k| k.starts_with("weights/")));
    let tuned = t["output"]["version"].as_str().unwrap().to_string();
    let r = s
        .call(
            "alice",
            Method::POST,
            "/v1/predictions",
            Some(
                json!({"version": tuned.split_once(':').unwrap().1, "input": {"prompt": "salut"}}),
            ),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let p = s
        .until_done(
            "alice",
            &format!("/v1/predictions/{}", r.body["id"].as_str().unwrap()),
            Duration::from_secs(300),
        )
        .await;
    assert_eq!(p["output"], "bonjour: salut", "{p}");

    // Deleting the versions (final: these tests keep no trash) removes their trees, blobs and
    // weights from the bucket.
    let (_, tuned_id) = tuned.split_once(':').unwrap();
    for path in [
        format!("/v1/models/alice/tuned/versions/{tuned_id}"),
        format!("/v1/models/alice/base/versions/{base}"),
        format!("/v1/models/alice/fileout/versions/{v}"),
    ] {
        let r = s.call("alice", Method::DELETE, &path, None).await;
        assert_eq!(r.status, StatusCode::NO_CONTENT, "{path}: {:?}", r.body);
    }
    let left = keys(&s).await;
    assert!(
        !left.iter().any(|k| k.starts_with("trees/")
            || k.starts_with("blobs/")
            || k.starts_with("weights/")),
        "{left:?}"
    );
    s.state.runner.as_ref().unwrap().shutdown().await;
}
