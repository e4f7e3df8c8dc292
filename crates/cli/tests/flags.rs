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
