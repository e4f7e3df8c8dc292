//! Python environments for versions: one per set of `python_packages`, built once and cached
//! by content, with its build log kept beside it.
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};
use tokio::process::Command;

/// Where a version's Python is.
#[derive(Clone, Debug)]
pub struct PyEnv {
    pub python: PathBuf,
    /// Put first on PATH: Cog starts its worker with whatever `python` is there.
    pub bin: Option<PathBuf>,
}

pub struct Envs {
    dir: PathBuf,
    python: String,
    building: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

pub fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

impl Envs {
    pub fn new(dir: PathBuf, python: String) -> Self {
        Envs {
            dir,
            python,
            building: Default::default(),
        }
    }

    pub fn key(&self, packages: &[String]) -> String {
        let mut sorted = packages.to_vec();
        sorted.sort();
        let mut h = Sha256::new();
        h.update(self.python.as_bytes());
        for p in sorted {
            h.update(b"\0");
            h.update(p.as_bytes());
        }
        hex::encode(h.finalize())
    }

    pub fn log_path(&self, packages: &[String]) -> PathBuf {
        self.dir.join(self.key(packages)).join("build.log")
    }

    /// The environment for these packages, building it the first time. A build that failed
    /// stays failed (with its log) until the packages change.
    pub async fn ensure(&self, packages: &[String]) -> Result<PyEnv, String> {
        if packages.is_empty() {
            // Cog itself comes from the interpreter the server was given.
            return Ok(PyEnv {
                python: PathBuf::from(&self.python),
                bin: None,
            });
        }
        let key = self.key(packages);
        let dir = self.dir.join(&key);
        let lock = self
            .building
            .lock()
            .map_err(|_| "environment lock poisoned".to_string())?
            .entry(key.clone())
            .or_default()
            .clone();
        let _guard = lock.lock().await;
        let env = PyEnv {
            python: dir.join("bin/python"),
            bin: Some(dir.join("bin")),
        };
        if dir.join("ready").exists() {
            return Ok(env);
        }
        let log = dir.join("build.log");
        if dir.join("failed").exists() {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            return Err(failure(&log, &text));
        }
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let result = build(&self.python, &dir, packages, &log).await;
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        match result {
            Ok(()) => {
                std::fs::write(dir.join("ready"), b"").map_err(|e| e.to_string())?;
                Ok(env)
            }
            Err(e) => {
                let _ = std::fs::write(dir.join("failed"), e.as_bytes());
                Err(failure(&log, &text))
            }
        }
    }
}

fn failure(log: &Path, text: &str) -> String {
    format!(
        "building the Python environment failed (log: {}):\n{}",
        log.display(),
        tail(text, 15)
    )
}

async fn build(python: &str, dir: &Path, packages: &[String], log: &Path) -> Result<(), String> {
    let open = || {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .map_err(|e| e.to_string())
    };
    let steps: Vec<(String, Vec<String>)> = vec![
        (
            python.to_string(),
            vec![
                "-m".into(),
                "venv".into(),
                "--system-site-packages".into(),
                dir.display().to_string(),
            ],
        ),
        (dir.join("bin/python").display().to_string(), {
            let mut a: Vec<String> = [
                "-m",
                "pip",
                "install",
                "--disable-pip-version-check",
                "--no-input",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            a.extend(packages.iter().cloned());
            a
        }),
    ];
    for (program, args) in steps {
        let status = Command::new(&program)
            .args(&args)
            .stdin(std::process::Stdio::null())
            .stdout(open()?)
            .stderr(open()?)
            .kill_on_drop(true)
            .status()
            .await
            .map_err(|e| format!("could not run {program}: {e}"))?;
        if !status.success() {
            return Err(format!("{program} {} exited with {status}", args.join(" ")));
        }
    }
    Ok(())
}
