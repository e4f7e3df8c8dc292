//! However `modelyard serve` ends, even killed outright, no Cog server it started lives on.
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_modelyard");

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

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
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

fn serve(data: &Path, port: u16) -> Child {
    Command::new(BIN)
        .args([
            "serve",
            "--addr",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
        ])
        .arg(data)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn wait_for(what: &str, limit: Duration, mut ok: impl FnMut() -> bool) {
    let until = Instant::now() + limit;
    while !ok() {
        assert!(Instant::now() < until, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
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
    wait_for("the server", Duration::from_secs(30), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
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
