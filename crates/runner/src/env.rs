//! Python environments for versions: one per set of `python_packages`, built once and cached
//! by content, with its build log kept beside it.
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};

use crate::bridge;
use crate::sandbox::{self, Sandbox};

/// Where a version's Python is.
#[derive(Clone, Debug)]
pub struct PyEnv {
    /// The environment's directory on this host; `None` is the server's own interpreter.
    pub dir: Option<PathBuf>,
}

pub struct Envs {
    dir: PathBuf,
    sandbox: Arc<Sandbox>,
    building: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

/// The last `lines` lines of `text`, for error messages.
pub fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

impl Envs {
    pub fn new(dir: PathBuf, sandbox: Arc<Sandbox>) -> Self {
        Envs {
            dir,
            sandbox,
            building: Default::default(),
        }
    }

    pub fn key(&self, packages: &[String]) -> String {
        let mut sorted = packages.to_vec();
        sorted.sort();
        let mut h = Sha256::new();
        h.update(self.sandbox.python().as_os_str().as_encoded_bytes());
        // A confined environment lives at a fixed path inside the sandbox, an unconfined one
        // where it is: they are not interchangeable.
        h.update(if self.sandbox.confined() {
            &b"\0confined"[..]
        } else {
            &b"\0host"[..]
        });
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
    /// `say` hears what happens, for the logs of the job that waits: that the environment is
    /// being built, and pip's output as it comes.
    pub async fn ensure(&self, packages: &[String], say: &Say<'_>) -> Result<PyEnv, String> {
        if packages.is_empty() {
            // Cog itself comes from the interpreter the server was given.
            return Ok(PyEnv { dir: None });
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
        let _guard = match lock.try_lock() {
            Ok(g) => g,
            Err(_) => {
                say("Waiting for this version's Python environment, which is being built...\n");
                lock.lock().await
            }
        };
        let env = PyEnv {
            dir: Some(dir.join("venv")),
        };
        if dir.join("ready").exists() {
            return Ok(env);
        }
        let log = dir.join("build.log");
        if dir.join("failed").exists() {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            return Err(failure(&log, &text));
        }
        // A build cut short leaves a partial environment: start again from nothing.
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("venv")).map_err(|e| e.to_string())?;
        say(&format!(
            "Building this version's Python environment ({} package{}); this happens once.\n",
            packages.len(),
            if packages.len() == 1 { "" } else { "s" }
        ));
        // pip's output goes to the build log; what it adds is passed on while it runs.
        let build = self.build(&dir, packages, &log);
        tokio::pin!(build);
        let mut shown = 0usize;
        let result = loop {
            tokio::select! {
                r = &mut build => {
                    pass_on(&log, &mut shown, say);
                    break r;
                }
                _ = tokio::time::sleep(std::time::Duration::from_millis(250)) => {
                    pass_on(&log, &mut shown, say);
                }
            }
        };
        if result.is_ok() {
            say("The environment is ready.\n");
        }
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

    /// `python -m venv`, then `pip install -- PACKAGES`, in the sandbox: the packages' own
    /// build code is pushed code too. Only the environment's directory is writable, and the
    /// network is the egress proxy's (for the package index).
    async fn build(&self, dir: &Path, packages: &[String], log: &Path) -> Result<(), String> {
        let sb = &self.sandbox;
        let cfg = sb.config();
        let venv = dir.join("venv");
        let run = dir.join("run");
        std::fs::create_dir_all(&run).map_err(|e| e.to_string())?;
        if sb.confined() {
            for d in [&venv, &run] {
                let _ = std::os::unix::fs::chown(d, Some(cfg.uid), Some(cfg.gid));
            }
        }
        let mut proxy = None;
        if sb.confined() && cfg.egress {
            let l = bridge::bind_unix(&run.join("egress.sock"), cfg.uid, cfg.gid)
                .map_err(|e| format!("could not open the egress socket: {e}"))?;
            proxy = Some(bridge::egress(l));
        }
        let open = || {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(log)
                .map_err(|e| e.to_string())
        };
        // Unique: two servers of one process may build the same environment at once.
        let cgroup_name = format!(
            "env-{:016x}",
            rand::Rng::gen::<u64>(&mut rand::thread_rng())
        );
        let result = async {
            for step in 0..2 {
                let mut jail = sb.jail(&run);
                let inside = jail.rw(&venv, sandbox::ENV);
                let scratch = jail.scratch(sandbox::SCRATCH);
                jail.env("HOME", &scratch)
                    .env("PIP_NO_INPUT", "1")
                    .limits(&cgroup_name)
                    .watch();
                if proxy.is_some() {
                    let r = jail.rw(&run, sandbox::RUN);
                    jail.forward(
                        "tcp:127.0.0.1:3128".into(),
                        format!("unix:{}", r.join("egress.sock").display()),
                    );
                    for k in ["HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"] {
                        jail.env(k, "http://127.0.0.1:3128");
                    }
                }
                let (program, args): (PathBuf, Vec<std::ffi::OsString>) = if step == 0 {
                    (
                        sb.python().to_path_buf(),
                        vec![
                            "-m".into(),
                            "venv".into(),
                            "--system-site-packages".into(),
                            inside.clone().into(),
                        ],
                    )
                } else {
                    let mut a: Vec<std::ffi::OsString> = [
                        "-m",
                        "pip",
                        "install",
                        "--disable-pip-version-check",
                        "--no-input",
                        // Everything after this is a requirement, never an option.
                        "--",
                    ]
                    .iter()
                    .map(Into::into)
                    .collect();
                    a.extend(packages.iter().map(Into::into));
                    (inside.join("bin/python"), a)
                };
                let started = jail.command(&program, &args).map_err(|e| e.to_string())?;
                let mut cmd = started.cmd;
                let mut child = cmd
                    .stdin(std::process::Stdio::piped())
                    .stdout(open()?)
                    .stderr(open()?)
                    .kill_on_drop(true)
                    .spawn()
                    .map_err(|e| format!("could not run the build: {e}"))?;
                // Held open while it runs: the wrapper stops the build when it closes.
                let stdin = child.stdin.take();
                let status = child.wait().await.map_err(|e| e.to_string())?;
                drop(stdin);
                let oom = started.cgroup.as_ref().is_some_and(|c| c.oom_kills() > 0);
                drop(started.cgroup);
                if oom {
                    return Err(format!(
                        "the build ran out of memory (its limit is {})",
                        crate::pool::limit_text(cfg.memory_limit)
                    ));
                }
                if !status.success() {
                    let what = if step == 0 { "venv" } else { "pip install" };
                    return Err(format!("{what} exited with {status}"));
                }
            }
            Ok(())
        }
        .await;
        if let Some(p) = proxy {
            p.abort();
        }
        let _ = std::fs::remove_dir_all(&run);
        result
    }
}

/// Hears progress text for a job's logs.
pub type Say<'a> = dyn Fn(&str) + Send + Sync + 'a;

/// Passes on what the log gained since `shown` (whole lines only, so nothing is cut in two).
fn pass_on(log: &Path, shown: &mut usize, say: &Say<'_>) {
    let Ok(text) = std::fs::read(log) else {
        return;
    };
    let Some(new) = text.get(*shown..) else {
        return;
    };
    let Some(end) = new.iter().rposition(|b| *b == b'\n') else {
        return;
    };
    say(&String::from_utf8_lossy(&new[..=end]));
    *shown += end + 1;
}

fn failure(log: &Path, text: &str) -> String {
    format!(
        "building the Python environment failed (log: {}):\n{}",
        log.display(),
        tail(text, 15)
    )
}
