//! A large `/v1/files` upload and its download cost the server (run in this process) a few
//! buffers, not the file's size. Alone in its test binary: the peak resident memory of the
//! process (`VmHWM`) is what is measured, and nothing else may run beside it.
mod common;

use common::*;
use futures_util::StreamExt;
use rand::{RngCore, SeedableRng};
use reqwest::StatusCode;
use serde_json::Value;
use sha2::{Digest, Sha256};

const MIB: usize = 1024 * 1024;

/// The peak resident memory of this process so far, in bytes.
fn vm_hwm() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib * 1024
}

/// MiB number `i` of a file of random-looking bytes (the same each time it is asked for).
fn mib(i: usize) -> Vec<u8> {
    let mut chunk = vec![0u8; MIB];
    rand::rngs::StdRng::seed_from_u64(i as u64).fill_bytes(&mut chunk);
    chunk
}

/// A `multipart/form-data` body with `mibs` MiB in its `content` part, made while it is sent
/// (the test must not hold the file either: it runs in the measured process).
fn streamed_upload(mibs: usize) -> reqwest::Body {
    let head = "--flatmemboundary\r\ncontent-disposition: form-data; name=\"content\"; \
                filename=\"big.bin\"\r\ncontent-type: application/octet-stream\r\n\r\n";
    let parts = (0..mibs + 2).map(move |i| {
        Ok::<_, std::io::Error>(match i {
            0 => head.as_bytes().to_vec(),
            i if i == mibs + 1 => b"\r\n--flatmemboundary--\r\n".to_vec(),
            i => mib(i - 1),
        })
    });
    reqwest::Body::wrap_stream(futures_util::stream::iter(parts))
}

async fn upload(s: &Server, mibs: usize) -> reqwest::Result<reqwest::Response> {
    s.http
        .post(format!("{}/v1/files", s.url))
        .bearer_auth(&s.tokens["alice"])
        .header(
            "content-type",
            "multipart/form-data; boundary=flatmemboundary",
        )
        .body(streamed_upload(mibs))
        .send()
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_90_mib_file_goes_up_and_down_in_flat_memory() {
    let s = start(Backend::Sqlite).await;
    let mibs = 90;
    let mut expected = Sha256::new();
    for i in 0..mibs {
        expected.update(mib(i));
    }
    let expected = hex::encode(expected.finalize());
    // A small round trip first, so what any first request sets up is not counted.
    let r = upload(&s, 1).await.unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let before = vm_hwm();

    let r = upload(&s, mibs).await.unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let f: Value = r.json().await.unwrap();
    assert_eq!(f["size"], (mibs * MIB) as u64, "{f}");
    assert_eq!(f["checksums"]["sha256"], expected.as_str(), "{f}");

    let resp = reqwest::get(f["urls"]["get"].as_str().unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.content_length(), Some((mibs * MIB) as u64));
    assert_eq!(resp.headers()["x-content-type-options"], "nosniff");
    let mut got = Sha256::new();
    let mut body = resp.bytes_stream();
    while let Some(chunk) = body.next().await {
        got.update(chunk.unwrap());
    }
    assert_eq!(hex::encode(got.finalize()), expected, "not byte for byte");

    // Past the 100 MiB cap: refused while it streams, and no partial file stays. The server may
    // answer before the client has sent it all, which the client may see as a broken connection.
    if let Ok(r) = upload(&s, 101).await {
        assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    }
    let files = s.state.config.data_dir.join("files");
    let until = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let names: Vec<_> = std::fs::read_dir(&files)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        if names.len() == 2 && names.iter().all(|n| !n.ends_with(".part")) {
            break;
        }
        assert!(std::time::Instant::now() < until, "left behind: {names:?}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }

    let grew = vm_hwm().saturating_sub(before);
    eprintln!("peak resident memory grew by {} KiB", grew / 1024);
    assert!(
        grew < 40 * MIB as u64,
        "the server's peak memory grew by {} MiB for a {mibs} MiB file",
        grew / MIB as u64
    );

    // A partial upload that a crash left is removed when a server starts on the data directory;
    // stored files stay.
    let stale = files.join(".crashed.part");
    let f = std::fs::File::create(&stale).unwrap();
    f.set_modified(std::time::SystemTime::now() - std::time::Duration::from_secs(3600))
        .unwrap();
    drop(f);
    let data = s.state.config.data_dir.clone();
    let _again = start_with(Backend::Sqlite, |c| {
        c.data_dir = data;
        c.run_jobs = true;
    })
    .await;
    while stale.exists() {
        assert!(std::time::Instant::now() < until, "{stale:?} stays");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(std::fs::read_dir(&files).unwrap().count(), 2);
}
