//! `modelyard trash list|restore|purge`, `versions prune` and `storage` against the real
//! binary serving a fresh data directory (the server keeps its default trash of 7 days).
mod common;

use std::path::Path;
use std::process::{Child, Command, Output};

use common::{free_port, BIN};

struct Served {
    child: Child,
    url: String,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn run(args: &[&str], url: &str, token: &str) -> Output {
    let mut cmd = Command::new(BIN);
    for (k, _) in std::env::vars() {
        if k.starts_with("MODELYARD_") {
            cmd.env_remove(k);
        }
    }
    cmd.args(args)
        .env("MODELYARD_URL", url)
        .env("MODELYARD_TOKEN", token)
        .output()
        .unwrap()
}

fn ok(o: Output) -> String {
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        o.status.success(),
        "failed: {out}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    out
}

fn user(data: &Path, name: &str) -> String {
    let o = Command::new(BIN)
        .args(["admin", "user", "create", name, "--data-dir"])
        .arg(data)
        .output()
        .unwrap();
    ok(o).lines().last().unwrap().trim().to_string()
}

fn fixture(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures/cog")
        .join(name)
        .display()
        .to_string()
}

#[test]
fn trash_and_prune_from_the_command_line() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let token = user(&data, "alice");
    let port = free_port();
    let server = Served {
        child: common::serve(&data, port),
        url: format!("http://127.0.0.1:{port}"),
    };
    common::wait_listening(port);
    let cli = |args: &[&str]| run(args, &server.url, &token);

    ok(cli(&["models", "create", "alice/c"]));
    let push = |f: &str| {
        let out = ok(cli(&["push", "alice/c", &fixture(f)]));
        out.lines().last().unwrap().trim().to_string()
    };
    let (old, new) = (push("echo"), push("echo2"));

    // A dry run shows the decisions and the bytes, and changes nothing.
    let dry = ok(cli(&[
        "versions",
        "prune",
        "alice/c",
        "--keep",
        "1",
        "--dry-run",
    ]));
    assert!(
        dry.contains(&format!("{}  kept: one of the newest", &new[..12])),
        "{dry}"
    );
    assert!(
        dry.contains(&format!("{}  would be deleted", &old[..12])),
        "{dry}"
    );
    assert!(
        dry.contains("1 version would be deleted, 1 kept; it would free"),
        "{dry}"
    );
    assert!(!dry.contains("it would free 0 B"), "{dry}");
    let listed = ok(cli(&["versions", "list", "alice/c"]));
    assert!(listed.contains(&old), "{listed}");

    let pruned = ok(cli(&["versions", "prune", "alice/c", "--keep", "1"]));
    assert!(
        pruned.contains(&format!("{}  deleted", &old[..12])),
        "{pruned}"
    );
    let listed = ok(cli(&["versions", "list", "alice/c"]));
    assert!(!listed.contains(&old) && listed.contains(&new), "{listed}");

    let trash = ok(cli(&["trash", "list"]));
    assert!(trash.contains(&format!("alice/c:{old}")), "{trash}");
    let restored = ok(cli(&["trash", "restore", &format!("alice/c:{old}")]));
    assert!(restored.contains("Restored"), "{restored}");
    assert!(ok(cli(&["versions", "list", "alice/c"])).contains(&old));
    assert!(!ok(cli(&["trash", "list"])).contains(&old));

    // Deleted again, then purged: no way back.
    ok(cli(&["versions", "delete", &format!("alice/c:{old}")]));
    assert!(ok(cli(&["trash", "list"])).contains(&old));
    ok(cli(&["trash", "purge", &format!("alice/c:{old}")]));
    assert!(!ok(cli(&["trash", "list"])).contains(&old));
    let again = cli(&["trash", "restore", &format!("alice/c:{old}")]);
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("not in your trash"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );

    let storage = ok(cli(&["storage"]));
    assert!(
        storage.contains("Stored:") && !storage.contains("Stored:        0 B"),
        "{storage}"
    );
}
