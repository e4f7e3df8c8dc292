//! Cog servers: started on demand in a working copy of the version's project, kept warm for a
//! while, capped in number, health-checked, and stopped with modelyard.
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::Notify;

use crate::env::{tail, PyEnv};

const WRAPPER: &str = include_str!("wrapper.py");

/// Which server can run a job: same version, mode and weights.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Key {
    pub version_id: String,
    pub train: bool,
}

/// How to start a server for a key.
#[derive(Clone, Debug)]
pub struct Spec {
    pub key: Key,
    pub env: PyEnv,
    /// The unpacked project.
    pub project: PathBuf,
    /// e.g. "predict.py:Predictor"
    pub stub: String,
    pub weights: Option<PathBuf>,
    pub upload_url: String,
    /// Whether output comes item by item (an iterator): then progress is followed through Cog's
    /// webhooks; otherwise one synchronous request is quicker.
    pub streams: bool,
}

struct Instance {
    id: u64,
    key: Key,
    port: u16,
    child: Child,
    stdin: Option<ChildStdin>,
    workdir: PathBuf,
    log: PathBuf,
    busy: bool,
    last_used: Instant,
}

#[derive(Default)]
struct State {
    instances: Vec<Instance>,
    starting: usize,
    /// The keys of the servers being started, counted against a key's cap.
    starting_keys: Vec<Key>,
    /// Servers a deployment wants warm: never stopped for idleness.
    warm: Vec<(Key, usize)>,
    closed: bool,
}

pub struct Pool {
    state: Mutex<State>,
    changed: Notify,
    work_dir: PathBuf,
    max: usize,
    idle: Duration,
    setup_timeout: Duration,
    next_id: AtomicU64,
    http: reqwest::Client,
}

/// A server lent to one job.
pub struct Lease {
    pub port: u16,
    id: u64,
}

pub struct StartError(pub String);

impl Pool {
    pub fn new(work_dir: PathBuf, max: usize, idle: Duration, setup_timeout: Duration) -> Self {
        Pool {
            state: Mutex::new(State::default()),
            changed: Notify::new(),
            work_dir,
            max: max.max(1),
            idle,
            setup_timeout,
            next_id: AtomicU64::new(1),
            http: reqwest::Client::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A server for `spec.key`: an idle one, a new one while under the cap, or one freed by
    /// stopping the longest-idle server of another key. Waits while every server is busy.
    /// `cap` limits how many servers this key may have (a deployment's `max_instances`).
    pub async fn acquire(&self, spec: &Spec, cap: Option<usize>) -> Result<Lease, StartError> {
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            enum Next {
                Start,
                Evict(Box<Instance>),
                Wait,
            }
            let next = {
                let mut st = self.lock();
                if st.closed {
                    return Err(StartError("the server is shutting down".into()));
                }
                if let Some(i) = st
                    .instances
                    .iter_mut()
                    .find(|i| i.key == spec.key && !i.busy)
                {
                    i.busy = true;
                    return Ok(Lease {
                        port: i.port,
                        id: i.id,
                    });
                }
                let of_key = st.instances.iter().filter(|i| i.key == spec.key).count()
                    + st.starting_keys.iter().filter(|k| **k == spec.key).count();
                if cap.is_some_and(|c| of_key >= c.max(1)) {
                    Next::Wait
                } else if st.instances.len() + st.starting < self.max {
                    st.starting += 1;
                    st.starting_keys.push(spec.key.clone());
                    Next::Start
                } else {
                    let warm = st.warm.clone();
                    let victim = st
                        .instances
                        .iter()
                        .enumerate()
                        .filter(|(_, i)| !i.busy && !warm.iter().any(|(k, _)| *k == i.key))
                        .min_by_key(|(_, i)| i.last_used)
                        .map(|(pos, _)| pos);
                    match victim {
                        Some(pos) => Next::Evict(Box::new(st.instances.remove(pos))),
                        None => Next::Wait,
                    }
                }
            };
            match next {
                Next::Start => {}
                Next::Evict(victim) => {
                    stop(*victim).await;
                    continue;
                }
                Next::Wait => {
                    notified.await;
                    continue;
                }
            }
            let started = self.start(spec).await;
            let placed = {
                let mut st = self.lock();
                st.starting -= 1;
                if let Some(p) = st.starting_keys.iter().position(|k| *k == spec.key) {
                    st.starting_keys.remove(p);
                }
                match started {
                    Ok(mut inst) if !st.closed => {
                        inst.busy = true;
                        let lease = Lease {
                            port: inst.port,
                            id: inst.id,
                        };
                        st.instances.push(inst);
                        Ok(lease)
                    }
                    Ok(inst) => Err((Some(inst), StartError("the server is shutting down".into()))),
                    Err(e) => Err((None, e)),
                }
            };
            return match placed {
                Ok(lease) => Ok(lease),
                Err((inst, e)) => {
                    if let Some(inst) = inst {
                        stop(inst).await;
                    }
                    self.changed.notify_waiters();
                    Err(e)
                }
            };
        }
    }

    /// Gives a server back; one that misbehaved is stopped instead.
    pub async fn release(&self, lease: Lease, healthy: bool) {
        let stopped = {
            let mut st = self.lock();
            let pos = st.instances.iter().position(|i| i.id == lease.id);
            match pos {
                Some(p) if healthy && !st.closed => {
                    st.instances[p].busy = false;
                    st.instances[p].last_used = Instant::now();
                    None
                }
                Some(p) => Some(st.instances.remove(p)),
                None => None,
            }
        };
        if let Some(i) = stopped {
            stop(i).await;
        }
        self.changed.notify_waiters();
    }

    /// Whether a server for this key is idle now.
    pub fn has_idle(&self, key: &Key) -> bool {
        self.lock()
            .instances
            .iter()
            .any(|i| i.key == *key && !i.busy)
    }

    /// Whether the server behind a lease is still running.
    pub fn alive(&self, lease: &Lease) -> bool {
        let mut st = self.lock();
        st.instances
            .iter_mut()
            .find(|i| i.id == lease.id)
            .is_some_and(|i| matches!(i.child.try_wait(), Ok(None)))
    }

    /// The server's own log (Cog writes structured lines there).
    pub fn log_path(&self, lease: &Lease) -> Option<PathBuf> {
        self.lock()
            .instances
            .iter()
            .find(|i| i.id == lease.id)
            .map(|i| i.log.clone())
    }

    pub fn set_warm(&self, warm: Vec<(Key, usize)>) {
        self.lock().warm = warm;
    }

    /// Keys that want more warm servers than they have, and how many more.
    pub fn warm_deficit(&self) -> Vec<(Key, usize)> {
        let st = self.lock();
        st.warm
            .iter()
            .filter_map(|(k, want)| {
                let have = st.instances.iter().filter(|i| i.key == *k).count();
                (have < *want).then(|| (k.clone(), want - have))
            })
            .collect()
    }

    /// Starts a server for a warm key and leaves it idle.
    pub async fn warm_up(&self, spec: &Spec) -> Result<(), StartError> {
        {
            let mut st = self.lock();
            if st.closed || st.instances.len() + st.starting >= self.max {
                return Ok(());
            }
            st.starting += 1;
        }
        let started = self.start(spec).await;
        {
            let mut st = self.lock();
            st.starting -= 1;
            match started {
                Ok(inst) => st.instances.push(inst),
                Err(e) => return Err(e),
            }
        }
        self.changed.notify_waiters();
        Ok(())
    }

    /// Stops servers idle for longer than the idle time (warm ones excepted) and forgets
    /// servers that died, so the next job starts a fresh one.
    pub async fn reap(&self) {
        let gone: Vec<Instance> = {
            let mut st = self.lock();
            let now = Instant::now();
            let warm = st.warm.clone();
            let mut gone = Vec::new();
            let mut i = 0;
            while i < st.instances.len() {
                let key = st.instances[i].key.clone();
                let same_key = st.instances.iter().filter(|j| j.key == key).count();
                let wanted = warm
                    .iter()
                    .find(|(k, _)| *k == key)
                    .map(|(_, n)| *n)
                    .unwrap_or(0);
                let inst = &mut st.instances[i];
                let dead = !matches!(inst.child.try_wait(), Ok(None));
                let idle_out = !inst.busy
                    && now.duration_since(inst.last_used) > self.idle
                    && same_key > wanted;
                if (dead && !inst.busy) || idle_out {
                    gone.push(st.instances.remove(i));
                } else {
                    i += 1;
                }
            }
            gone
        };
        let any = !gone.is_empty();
        for g in gone {
            stop(g).await;
        }
        if any {
            self.changed.notify_waiters();
        }
    }

    pub fn count(&self) -> usize {
        self.lock().instances.len()
    }

    /// Stops every server; no new one starts afterwards.
    pub async fn shutdown(&self) {
        let all: Vec<Instance> = {
            let mut st = self.lock();
            st.closed = true;
            st.instances.drain(..).collect()
        };
        for i in all {
            stop(i).await;
        }
        self.changed.notify_waiters();
    }

    async fn start(&self, spec: &Spec) -> Result<Instance, StartError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let workdir = self.work_dir.join(format!("{}-{id}", std::process::id()));
        let err = |m: String| StartError(m);
        let (src, dst) = (spec.project.clone(), workdir.clone());
        tokio::task::spawn_blocking(move || link_tree(&src, &dst))
            .await
            .map_err(|e| err(e.to_string()))?
            .map_err(|e| err(format!("could not prepare the working directory: {e}")))?;
        let port = free_port().map_err(|e| err(format!("no free port: {e}")))?;
        let log_path = self
            .work_dir
            .join(format!("{}-{id}.log", std::process::id()));
        let log = std::fs::File::create(&log_path).map_err(|e| err(e.to_string()))?;
        let mut path = std::env::var_os("PATH").unwrap_or_default();
        if let Some(bin) = &spec.env.bin {
            let mut joined = std::env::join_paths([bin.clone()]).unwrap_or_default();
            joined.push(":");
            joined.push(&path);
            path = joined;
        }
        let mut cmd = Command::new(&spec.env.python);
        cmd.arg("-c")
            .arg(WRAPPER)
            .arg(&spec.env.python)
            .args([
                "-m",
                "cog.server.http",
                "--host",
                "127.0.0.1",
                "--upload-url",
                &spec.upload_url,
            ])
            .current_dir(&workdir)
            .env_clear()
            .env("PATH", path)
            .env("HOME", &workdir)
            .env("PORT", port.to_string())
            .env("PYTHONUNBUFFERED", "1")
            .stdin(std::process::Stdio::piped())
            // Its own process group, which the wrapper stops as a whole.
            .process_group(0)
            .stdout(log.try_clone().map_err(|e| err(e.to_string()))?)
            .stderr(log)
            .kill_on_drop(true);
        if spec.key.train {
            cmd.args(["--x-mode", "train"])
                .env("COG_TRAIN_TYPE_STUB", &spec.stub);
        } else {
            cmd.env("COG_PREDICT_TYPE_STUB", &spec.stub);
        }
        if let Some(w) = &spec.weights {
            cmd.env("COG_WEIGHTS", w);
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| err(format!("could not start Cog: {e}")))?;
        let stdin = child.stdin.take();
        let mut inst = Instance {
            id,
            key: spec.key.clone(),
            port,
            child,
            stdin,
            workdir,
            log: log_path.clone(),
            busy: false,
            last_used: Instant::now(),
        };
        match self.wait_ready(&mut inst).await {
            Ok(()) => Ok(inst),
            Err(m) => {
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                stop(inst).await;
                Err(StartError(
                    format!("{m}\n{}", tail(&log, 20)).trim_end().to_string(),
                ))
            }
        }
    }

    async fn wait_ready(&self, inst: &mut Instance) -> Result<(), String> {
        let deadline = Instant::now() + self.setup_timeout;
        let url = format!("http://127.0.0.1:{}/health-check", inst.port);
        loop {
            if let Ok(Some(status)) = inst.child.try_wait() {
                return Err(format!("the model server exited during setup ({status})"));
            }
            if let Ok(r) = self
                .http
                .get(&url)
                .timeout(Duration::from_secs(2))
                .send()
                .await
            {
                if let Ok(v) = r.json::<serde_json::Value>().await {
                    match v["status"].as_str() {
                        Some("READY") | Some("BUSY") => return Ok(()),
                        Some("SETUP_FAILED") | Some("DEFUNCT") => {
                            let logs = v["setup"]["logs"].as_str().unwrap_or_default();
                            return Err(format!("the model's setup failed:\n{}", tail(logs, 15)));
                        }
                        _ => {}
                    }
                }
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "the model server was not ready within {} seconds",
                    self.setup_timeout.as_secs()
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Closing the wrapper's stdin makes it stop the server's process group; a wrapper that does
/// not exit in time is killed.
async fn stop(mut inst: Instance) {
    drop(inst.stdin.take());
    if tokio::time::timeout(Duration::from_secs(8), inst.child.wait())
        .await
        .is_err()
    {
        // The wrapper leads the server's process group: kill all of it, never the wrapper
        // alone, which would leave the server behind.
        if let Some(pid) = inst.child.id() {
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{pid}")])
                .status()
                .await;
        }
        let _ = inst.child.kill().await;
    }
    let (dir, log) = (inst.workdir.clone(), inst.log.clone());
    let _ = std::fs::remove_file(log);

    let _ = tokio::task::spawn_blocking(move || std::fs::remove_dir_all(dir)).await;
}

fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// A working copy of the project made of hard links (a copy where links are not possible):
/// each server gets its own directory, and files it writes never land in the stored artifact.
fn link_tree(src: &Path, dst: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dst)?;
    for entry in std::fs::read_dir(src)? {
        let entry = entry?;
        let (from, to) = (entry.path(), dst.join(entry.file_name()));
        let kind = entry.file_type()?;
        if kind.is_dir() {
            link_tree(&from, &to)?;
        } else if kind.is_symlink() {
            #[cfg(unix)]
            std::os::unix::fs::symlink(std::fs::read_link(&from)?, &to)?;
        } else if std::fs::hard_link(&from, &to).is_err() {
            std::fs::copy(&from, &to)?;
        }
    }
    Ok(())
}
