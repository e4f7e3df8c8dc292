//! However `modelyard serve` ends, even killed outright, no Cog server it started lives on.
use std::path::Path;
use std::process::{Child, Command};
use std::time::Duration;

mod common;

use common::{free_port, serve, wait_for, BIN};

fn run(args: &[&str], env: &[(&str, &str)]) -> String {
    let out = Command::new(BIN)
        .args(args)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Processes of Cog servers started by the `modelyard serve` with this process id.
fn cog_servers(pid: u32) -> Vec<String> {
    // Their upload URLs name the runner: `/uploads/<pid>-<random>-<n>-<secret>/`.
    let needle = format!("/uploads/{pid}-");
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| std::fs::read(e.ok()?.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .filter(|c| c.contains("cog.server") && c.contains(&needle))
        .collect()
}

fn with_running_prediction(kill: impl FnOnce(&mut Child)) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let d = data.to_str().unwrap();
    let token = run(&["admin", "user", "create", "alice", "--data-dir", d], &[]);
    let token = token.lines().last().unwrap().to_string();
    let port = free_port();
    let mut server = serve(&data, port);
    let url = format!("http://127.0.0.1:{port}");
    let env = [
        ("MODELYARD_URL", url.as_str()),
        ("MODELYARD_TOKEN", token.as_str()),
    ];
    common::wait_listening(port);
    run(&["models", "create", "alice/slow"], &env);
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/cog/slow");
    run(&["push", "alice/slow", fixture.to_str().unwrap()], &env);
    run(
        &["predictions", "create", "alice/slow", "-i", "seconds=120"],
        &env,
    );
    let pid = server.id();
    wait_for("a Cog server", Duration::from_secs(60), || {
        !cog_servers(pid).is_empty()
    });

    kill(&mut server);
    let _ = server.wait();
    wait_for("the Cog servers to stop", Duration::from_secs(20), || {
        cog_servers(pid).is_empty()
    });
}

#[test]
fn no_cog_server_outlives_a_killed_server() {
    with_running_prediction(|server| server.kill().unwrap());
}

#[test]
fn no_cog_server_outlives_a_terminated_server() {
    with_running_prediction(|server| {
        let ok = Command::new("kill")
            .args(["-TERM", &server.id().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
    });
}
