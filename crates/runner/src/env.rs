//! Python environments for versions: one per set of `python_packages`, built once and cached
//! by content, with its build log kept beside it.
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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
    /// When each environment (its directory) was last handed to a job, since this start.
    used: Mutex<HashMap<PathBuf, Instant>>,
    /// The size of each built environment: it does not change once ready.
    sizes: Mutex<HashMap<PathBuf, u64>>,
}

/// Bytes of the files under `dir` (links not followed).
fn dir_size(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            match e.file_type() {
                Ok(t) if t.is_dir() => stack.push(e.path()),
                Ok(t) if t.is_file() => total += e.metadata().map(|m| m.len()).unwrap_or(0),
                _ => {}
            }
        }
    }
    total
}

/// When an environment was built (its `ready` marker), for ones no job used since this start.
fn built_at(dir: &Path) -> Option<std::time::SystemTime> {
    std::fs::metadata(dir.join("ready"))
        .and_then(|m| m.modified())
        .ok()
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
            used: Default::default(),
            sizes: Default::default(),
        }
    }

    /// The directory of an environment (its venv's parent), as `evict` and `in_use` name it.
    pub fn dir_of(env: &PyEnv) -> Option<PathBuf> {
        env.dir
            .as_deref()
            .and_then(Path::parent)
            .map(Path::to_path_buf)
    }

    /// A job is about to use this environment: it is the last to go when the cache is full.
    pub fn touch(&self, env: &PyEnv) {
        if let (Some(d), Ok(mut used)) = (Self::dir_of(env), self.used.lock()) {
            used.insert(d, Instant::now());
        }
    }

    /// Removes built environments, least recently used first, until they take at most
    /// `budget` bytes together: never one in `in_use` (a server runs on it, or is starting on
    /// it) nor one handed to a job within `keep`. Failed builds and their logs are kept (they are
    /// small, and say why). Returns the directories removed. Blocking: file-system work.
    pub fn evict(&self, budget: u64, in_use: &HashSet<PathBuf>, keep: Duration) -> Vec<PathBuf> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let used = self.used.lock().map(|u| u.clone()).unwrap_or_default();
        let mut ready: Vec<(PathBuf, u64, Option<Instant>)> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|d| d.join("ready").exists())
            .map(|d| {
                let size = self.size_of(&d);
                let at = used.get(&d).copied();
                (d, size, at)
            })
            .collect();
        let mut total: u64 = ready.iter().map(|(_, size, _)| size).sum();
        // Never used since this start first (by when they were built), then by last use.
        ready.sort_by_key(|(d, _, at)| (at.is_some(), *at, built_at(d)));
        let mut gone = Vec::new();
        for (d, size, at) in ready {
            if total <= budget {
                break;
            }
            if in_use.contains(&d) || at.is_some_and(|t| t.elapsed() < keep) {
                continue;
            }
            // Out of sight first, so a build or a server never finds it half removed.
            let doomed = self.dir.join(format!(
                ".evicted-{}",
                rand::Rng::gen::<u64>(&mut rand::thread_rng())
            ));
            if std::fs::rename(&d, &doomed).is_ok() {
                let _ = std::fs::remove_dir_all(&doomed);
                total = total.saturating_sub(size);
                if let Ok(mut sizes) = self.sizes.lock() {
                    sizes.remove(&d);
                }
                if let Ok(mut used) = self.used.lock() {
                    used.remove(&d);
                }
                tracing::info!(env = %d.display(), bytes = size, "removed a Python environment to stay within the cache's size");
                gone.push(d);
            }
        }
        gone
    }

    fn size_of(&self, dir: &Path) -> u64 {
        if let Some(s) = self.sizes.lock().ok().and_then(|m| m.get(dir).copied()) {
            return s;
        }
        let size = dir_size(dir);
        if let Ok(mut m) = self.sizes.lock() {
            m.insert(dir.to_path_buf(), size);
        }
        size
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

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::sync::Arc;
    use std::time::Duration;

    use super::{Envs, PyEnv};
    use crate::sandbox::{Sandbox, SandboxConfig};

    /// A built environment of `bytes` bytes, as `ensure` leaves one.
    fn built(root: &std::path::Path, name: &str, bytes: usize) -> PyEnv {
        let dir = root.join(name);
        std::fs::create_dir_all(dir.join("venv/lib")).unwrap();
        std::fs::write(dir.join("venv/lib/site.bin"), vec![0u8; bytes]).unwrap();
        std::fs::write(dir.join("ready"), b"").unwrap();
        PyEnv {
            dir: Some(dir.join("venv")),
        }
    }

    #[test]
    fn the_least_recently_used_unused_environments_go_first() {
        let tmp = tempfile::tempdir().unwrap();
        let cfg = SandboxConfig {
            confine: false,
            ..Default::default()
        };
        let sandbox = Arc::new(Sandbox::new(cfg, "python3", &tmp.path().join("sandbox")).unwrap());
        let root = tmp.path().join("envs");
        let envs = Envs::new(root.clone(), sandbox);
        let [a, b, c, d] = ["a", "b", "c", "d"].map(|n| built(&root, n, 1000));
        // A failed build is not counted, nor removed.
        std::fs::create_dir_all(root.join("broken")).unwrap();
        std::fs::write(root.join("broken/failed"), b"pip said no").unwrap();
        for e in [&c, &a, &b, &d] {
            envs.touch(e);
            std::thread::sleep(Duration::from_millis(5));
        }
        let dir = |e: &PyEnv| Envs::dir_of(e).unwrap();
        // c is the oldest but a server runs on it; a is next: it goes, then b.
        let in_use = HashSet::from([dir(&c)]);
        let gone = envs.evict(2000, &in_use, Duration::ZERO);
        assert_eq!(gone, [dir(&a), dir(&b)]);
        assert!(!dir(&a).exists() && !dir(&b).exists());
        assert!(dir(&c).exists() && dir(&d).exists() && root.join("broken/failed").exists());
        // Within budget: nothing more goes.
        assert!(envs.evict(2000, &HashSet::new(), Duration::ZERO).is_empty());
        // Ones used within `keep` stay even over budget.
        assert!(envs
            .evict(0, &HashSet::new(), Duration::from_secs(600))
            .is_empty());
        assert_eq!(envs.evict(0, &in_use, Duration::ZERO), [dir(&d)]);
        assert!(dir(&c).exists());
        // Nothing half-removed is left beside them.
        let left: Vec<_> = std::fs::read_dir(&root)
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(left.len(), 2, "{left:?}");
    }
}
