//! A large output file of a real model (`fixtures/cog/bigout`, in the sandbox) is stored and
//! served byte for byte, and costs the server (run in this process, runner included) a few
//! buffers, not the file's size. Alone in its test binary: the peak resident memory of the
//! process (`VmHWM`) is what is measured, and nothing else may run beside it.
mod common;

use std::time::Duration;

use common::*;
use futures_util::StreamExt;
use reqwest::{Method, StatusCode};
use serde_json::json;
use sha2::{Digest, Sha256};

const MIB: u64 = 1024 * 1024;

/// The peak resident memory of this process so far, in bytes.
fn vm_hwm() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib * 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_90_mib_output_file_is_served_byte_for_byte_in_flat_memory() {
    let s = start_with(Backend::Sqlite, |c| {
        c.run_jobs = true;
        c.setup_timeout = Duration::from_secs(120);
    })
    .await;
    s.create_model("alice", "alice", "bigout", "private").await;
    let v = s.push("alice", "alice/bigout", "bigout").await;
    let run = |mib: u64| {
        let s = &s;
        let v = v.clone();
        async move {
            let r = s
                .call(
                    "alice",
                    Method::POST,
                    "/v1/predictions",
                    Some(json!({"version": v, "input": {"mib": mib}})),
                )
                .await;
            assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
            let path = format!("/v1/predictions/{}", r.body["id"].as_str().unwrap());
            s.until_done("alice", &path, Duration::from_secs(300)).await
        }
    };
    // A small one first: the Cog server's start and what any first job sets up are not counted.
    let p = run(1).await;
    assert_eq!(p["status"], "succeeded", "{p}");
    let before = vm_hwm();

    let mibs = 90;
    let p = run(mibs).await;
    assert_eq!(p["status"], "succeeded", "{p}");
    let logs = p["logs"].as_str().unwrap();
    let expected = logs
        .lines()
        .find_map(|l| l.trim().strip_prefix("sha256="))
        .unwrap_or_else(|| panic!("no sha256 in the logs: {logs}"));
    let url = p["output"].as_str().unwrap();
    assert!(url.starts_with(&format!("{}/files/", s.url)), "{url}");
    let resp = reqwest::get(url).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.content_length(), Some(mibs * MIB));
    assert_eq!(resp.headers()["content-type"], "application/octet-stream");
    let mut got = Sha256::new();
    let mut body = resp.bytes_stream();
    while let Some(chunk) = body.next().await {
        got.update(chunk.unwrap());
    }
    assert_eq!(hex::encode(got.finalize()), expected, "not byte for byte");

    let grew = vm_hwm().saturating_sub(before);
    eprintln!("peak resident memory grew by {} KiB", grew / 1024);
    assert!(
        grew < 40 * MIB,
        "the server's peak memory grew by {} MiB for a {mibs} MiB output",
        grew / MIB
    );
}
