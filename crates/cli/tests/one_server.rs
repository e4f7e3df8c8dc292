//! One `modelyard serve` per SQLite database: a second is refused at start (the first keeps
//! rows in memory that must see every write), while `modelyard admin` still works beside it.
use std::process::Command;
use std::time::{Duration, Instant};

mod common;

use common::{free_port, serve, wait_listening, BIN};

#[test]
fn a_second_server_on_one_sqlite_database_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let port = free_port();
    let mut first = serve(&data, port);
    wait_listening(port);

    let second_port = free_port();
    let mut second = Command::new(BIN)
        .args([
            "serve",
            "--addr",
            &format!("127.0.0.1:{second_port}"),
            "--data-dir",
        ])
        .arg(&data)
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let until = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = second.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > until {
            let _ = second.kill();
            let _ = first.kill();
            panic!("a second server started on the same database");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut second.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(!status.success());
    assert!(
        stderr.contains("another modelyard server (process")
            && stderr.contains(&first.id().to_string()),
        "{stderr}"
    );

    // The administration command shares the database with the running server.
    let token = succeeds(
        Command::new(BIN)
            .args(["admin", "user", "create", "bob", "--data-dir"])
            .arg(&data),
    );
    let token = token.lines().last().unwrap().trim().to_string();
    succeeds(
        Command::new(BIN)
            .args(["models", "create", "bob/m"])
            .env("MODELYARD_URL", format!("http://127.0.0.1:{port}"))
            .env("MODELYARD_TOKEN", &token),
    );

    first.kill().unwrap();
    first.wait().unwrap();
    // Once the first has ended, another may serve the database.
    let mut again = serve(&data, second_port);
    wait_listening(second_port);
    again.kill().unwrap();
    again.wait().unwrap();
}

/// Runs `cmd`, which must succeed: its standard output.
fn succeeds(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}
