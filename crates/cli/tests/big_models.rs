//! Real model sizes through the real binary: a generated 1 GiB project pushed with
//! `modelyard push` costs neither side memory in proportion to its size, round-trips byte for
//! byte (a prediction hashes its own weights file), is stored once by content (a version that
//! changes only its code adds almost nothing), and a push killed half-way leaves nothing behind.
use std::collections::HashSet;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

mod common;

use common::{free_port, BIN};
const GIB: u64 = 1024 * 1024 * 1024;
const MIB: u64 = 1024 * 1024;

struct Served {
    child: Child,
    port: u16,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(data: &Path) -> Served {
    let port = free_port();
    let child = common::serve(data, port);
    common::wait_listening(port);
    Served { child, port }
}

/// A process's peak resident memory, in bytes.
fn vm_hwm(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Runs the CLI, following its peak memory while it runs; returns (stdout, peak bytes).
fn cli(args: &[&str], env: &[(&str, &str)]) -> (String, u64) {
    let mut child = Command::new(BIN)
        .args(args)
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut peak = 0;
    let out = loop {
        if let Some(m) = vm_hwm(pid) {
            peak = peak.max(m);
        }
        if child.try_wait().unwrap().is_some() {
            break child.wait_with_output().unwrap();
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (String::from_utf8(out.stdout).unwrap(), peak)
}

/// Writes `size` pseudo-random (incompressible) bytes; returns their sha256.
fn random_file(path: &Path, size: u64) -> String {
    let mut f =
        std::io::BufWriter::with_capacity(4 * MIB as usize, std::fs::File::create(path).unwrap());
    let mut h = Sha256::new();
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut buf = vec![0u8; MIB as usize];
    for _ in 0..size / MIB {
        for chunk in buf.chunks_exact_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            chunk.copy_from_slice(&x.to_le_bytes());
        }
        h.update(&buf);
        f.write_all(&buf).unwrap();
    }
    f.flush().unwrap();
    hex::encode(h.finalize())
}

fn project(dir: &Path, size: u64, comment: &str) -> String {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(
        dir.join("cog.yaml"),
        "build:\n  python_version: \"3.11\"\npredict: \"predict.py:Predictor\"\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("predict.py"),
        format!(
            "# {comment}\nimport hashlib\n\nfrom cog import BasePredictor\n\n\n\
             class Predictor(BasePredictor):\n    def predict(self) -> str:\n        \
             h = hashlib.sha256()\n        with open(\"weights.bin\", \"rb\") as f:\n            \
             for chunk in iter(lambda: f.read(1 << 20), b\"\"):\n                \
             h.update(chunk)\n        return h.hexdigest()\n"
        ),
    )
    .unwrap();
    if dir.join("weights.bin").exists() {
        String::new()
    } else {
        random_file(&dir.join("weights.bin"), size)
    }
}

/// Bytes the data directory holds on disk, each file counted once however many links it has.
fn stored_bytes(dir: &Path) -> u64 {
    let mut seen = HashSet::new();
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(m) = e.path().symlink_metadata() else {
                continue;
            };
            if m.is_dir() {
                stack.push(e.path());
            } else if m.is_file() && seen.insert(m.ino()) {
                total += m.len();
            }
        }
    }
    total
}

fn staging_folders(data: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(data.join("tmp"))
        .map(|r| {
            r.flatten()
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with("push-"))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// A data directory with the account alice, a server on it, the client's environment, and the
/// model alice/big.
fn with_model() -> (
    tempfile::TempDir,
    PathBuf,
    Served,
    [(&'static str, String); 2],
) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let d = data.to_str().unwrap();
    let (token, _) = cli(&["admin", "user", "create", "alice", "--data-dir", d], &[]);
    let token = token.lines().last().unwrap().to_string();
    let server = serve(&data);
    let env = [
        ("MODELYARD_URL", format!("http://127.0.0.1:{}", server.port)),
        ("MODELYARD_TOKEN", token),
    ];
    let borrowed = env.each_ref().map(|(k, v)| (*k, v.as_str()));
    cli(&["models", "create", "alice/big"], &borrowed);
    (dir, data, server, env)
}

#[test]
fn a_gigabyte_model_pushes_with_flat_memory_round_trips_and_is_stored_once() {
    let (dir, data, server, env) = with_model();
    let env = env.each_ref().map(|(k, v)| (*k, v.as_str()));

    let proj = dir.path().join("big");
    let sha = project(&proj, GIB, "v1");
    let idle = vm_hwm(server.child.id()).unwrap();
    let p = proj.to_str().unwrap();
    let (out, cli_peak) = cli(&["push", "alice/big", p], &env);
    let v1 = out.lines().last().unwrap().to_string();
    let server_peak = vm_hwm(server.child.id()).unwrap();
    assert!(
        server_peak.saturating_sub(idle) < 64 * MIB,
        "the server grew by {} MiB for a 1 GiB push",
        (server_peak - idle) / MIB
    );
    assert!(
        cli_peak < 64 * MIB,
        "the CLI peaked at {} MiB",
        cli_peak / MIB
    );

    // Byte for byte: the model hashes the weights file it was given.
    let (out, _) = cli(
        &[
            "predictions",
            "create",
            &format!("alice/big:{v1}"),
            "--wait",
            "--json",
        ],
        &env,
    );
    let run: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(run["output"], sha.as_str());

    // A version that changes only its code adds its code, not another gigabyte.
    let before = stored_bytes(&data);
    project(&proj, GIB, "v2: only a comment changed");
    let (out, _) = cli(&["push", "alice/big", p], &env);
    let v2 = out.lines().last().unwrap().to_string();
    assert_ne!(v1, v2);
    let added = stored_bytes(&data).saturating_sub(before);
    assert!(added < MIB, "the second version added {added} bytes");

    // The shared weights stay while a version uses them, and go with the last (deleted for good:
    // the server would otherwise keep them in its trash for a week).
    cli(
        &["versions", "delete", &format!("alice/big:{v1}"), "--purge"],
        &env,
    );
    assert!(
        stored_bytes(&data) > GIB,
        "the weights went with the first version"
    );
    cli(
        &["versions", "delete", &format!("alice/big:{v2}"), "--purge"],
        &env,
    );
    assert!(
        stored_bytes(&data) < 64 * MIB,
        "the weights outlived their last version: {} bytes",
        stored_bytes(&data)
    );
}

#[test]
fn a_push_killed_half_way_leaves_nothing_after_a_restart() {
    let (dir, data, mut server, env) = with_model();
    let env = env.each_ref().map(|(k, v)| (*k, v.as_str()));
    let proj = dir.path().join("big");
    project(&proj, GIB, "v1");
    let mut push = Command::new(BIN)
        .args(["push", "alice/big"])
        .arg(&proj)
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Half-way: the staging folder is there and filling.
    let until = Instant::now() + Duration::from_secs(120);
    loop {
        let filling = staging_folders(&data)
            .iter()
            .any(|f| stored_bytes(f) > 64 * MIB);
        if filling {
            break;
        }
        assert!(Instant::now() < until, "the push never reached the server");
        std::thread::sleep(Duration::from_millis(50));
    }
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    let _ = push.kill();
    let _ = push.wait();
    assert!(
        !staging_folders(&data).is_empty(),
        "a kill -9 cleans nothing up by itself"
    );
    let _restarted = serve(&data);
    assert_eq!(staging_folders(&data), Vec::<PathBuf>::new());
    assert!(
        stored_bytes(&data) < 64 * MIB,
        "{} bytes stayed",
        stored_bytes(&data)
    );
}
