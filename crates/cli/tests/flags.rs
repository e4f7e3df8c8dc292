//! Boolean options take the usual spellings from the environment. Checked on the real binary,
//! one process per case, so no test changes another's environment.
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_modelyard");

/// What `modelyard serve` says of these variables, stopped by a bad `--gpus` right after every
/// option is parsed (so nothing starts).
fn serve_with(var: &str, value: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(["serve", "--gpus", "bogus", "--data-dir"])
        .arg(dir.path().join("data"))
        .env(var, value)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        !dir.path().join("data").exists(),
        "a refused start made the data directory"
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn boolean_env_vars_take_the_usual_spellings() {
    for var in [
        "MODELYARD_ALLOW_PRIVATE_WEBHOOKS",
        "MODELYARD_NO_RUNNER",
        "MODELYARD_UNSAFE_NO_SANDBOX",
        "MODELYARD_MODEL_EGRESS",
    ] {
        for v in ["1", "0", "true", "FALSE", "yes", "No", "on", "OFF"] {
            let err = serve_with(var, v);
            assert!(err.contains("--gpus: 'bogus'"), "{var}={v}: {err}");
        }
        let err = serve_with(var, "maybe");
        assert!(err.contains("invalid value 'maybe'"), "{var}=maybe: {err}");
    }
}

#[test]
fn boolean_flags_take_no_value_on_the_command_line() {
    let out = Command::new(BIN)
        .args([
            "serve",
            "--allow-private-webhooks",
            "--no-runner",
            "--addr",
            "x",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--addr"), "{err}");
}

/// `modelyard serve` with these arguments, which must refuse to start before touching the data
/// directory; returns what it said.
fn refused(args: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .arg("serve")
        .args(args)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .env_remove("MODELYARD_DATABASE_URL")
        .env_remove("MODELYARD_BLOB_STORE")
        .env_remove("MODELYARD_PUBLIC_URL")
        .output()
        .unwrap();
    assert!(!out.status.success(), "{args:?} started");
    assert!(
        !dir.path().join("data").exists(),
        "{args:?} made the data directory"
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_cluster_node_needs_postgres_and_an_object_store() {
    let err = refused(&["--role", "worker"]);
    assert!(
        err.contains("PostgreSQL") && err.contains("--blob-store"),
        "{err}"
    );
    let err = refused(&["--role", "api", "--blob-store", "s3://bucket/prefix"]);
    assert!(
        err.contains("PostgreSQL") && !err.contains("--blob-store s3"),
        "{err}"
    );
    let err = refused(&["--role", "api", "--database-url", "postgres://127.0.0.1/x"]);
    assert!(
        err.contains("object store") && !err.contains("PostgreSQL ("),
        "{err}"
    );
    assert!(err.contains("--public-url"), "{err}");
    let err = refused(&[
        "--role",
        "worker",
        "--database-url",
        "postgres://127.0.0.1/x",
        "--blob-store",
        "s3://b/p",
    ]);
    assert!(
        err.contains("--public-url") && !err.contains("object store"),
        "{err}"
    );
    let err = refused(&["--role", "everything"]);
    assert!(err.contains("all, api or worker"), "{err}");
}

#[test]
fn hardware_names_come_from_the_catalogue() {
    let err = refused(&["--hardware", "cpu,tpu-v5"]);
    assert!(
        err.contains("\"tpu-v5\"") && err.contains("gpu-a100-large"),
        "{err}"
    );
}
