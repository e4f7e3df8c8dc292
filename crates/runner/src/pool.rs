//! Cog servers: started on demand in a working copy of the version's project, kept warm for a
//! while, capped in number, health-checked, and stopped with modelyard.
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use rand::RngCore;
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::callbacks::{self, Current};
use crate::cgroup::Cgroup;
pub use crate::cog_http::CogClient;
use crate::env::{tail, PyEnv};
use crate::sandbox::{self, Sandbox};
use crate::{bridge, Inner};

/// Inside a sandbox (its own network namespace) these ports are always free.
const COG_PORT: u16 = 5000;
const CALLBACK_PORT: u16 = 5001;
const PROXY_PORT: u16 = 3128;

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
    /// Keep the project and weights in this node's cache while a server uses them (with an
    /// object store); a running server holds them.
    pub pins: Vec<modelyard_blobs::Pin>,
    /// Whether output comes item by item (an iterator): then progress is followed through Cog's
    /// webhooks; otherwise one synchronous request is quicker.
    pub streams: bool,
    /// Whether the version asks for a GPU (cog.yaml's `build.gpu`): then its server gets one
    /// of this node's to itself, and waits for one when all are taken.
    pub gpu: bool,
}

struct Instance {
    id: u64,
    key: Key,
    /// How this host reaches the Cog server: confined, through its Unix socket, with no
    /// copying task of ours in between.
    cog: CogClient,
    child: Child,
    stdin: Option<ChildStdin>,
    /// The server's own directory: its sockets, and (unconfined) its working copy.
    workdir: PathBuf,
    log: PathBuf,
    busy: bool,
    last_used: Instant,
    /// The job it runs now: the only one its callbacks may speak of.
    current: Current,
    /// Where the Cog server sends webhooks, as it sees it.
    callback_base: String,
    _pins: Vec<modelyard_blobs::Pin>,
    cgroup: Option<Cgroup>,
    /// Processes killed for memory in its cgroup when last looked at: read only when a job
    /// fails, not on every job.
    oom_seen: u64,
    /// The GPUs it was given, free again once it has stopped.
    gpus: Vec<u32>,
    /// Its callback endpoint and bridges, stopped with it.
    _tasks: Tasks,
}

/// Tasks that end when their owner is dropped.
struct Tasks(Vec<JoinHandle<()>>);

impl Drop for Tasks {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}

#[derive(Default)]
struct State {
    instances: Vec<Instance>,
    starting: usize,
    /// The keys of the servers being started, counted against a key's cap.
    starting_keys: Vec<Key>,
    /// Servers a deployment wants warm: never stopped for idleness.
    warm: Vec<(Key, usize)>,
    /// This node's GPUs no server holds (one being stopped still holds its own).
    free_gpus: Vec<u32>,
    closed: bool,
}

impl State {
    /// A GPU for a server of `spec`, taken from the free ones: `Some(vec![])` when it needs
    /// none, `None` when it needs one and none is free.
    fn take_gpus(&mut self, spec: &Spec, node_has_gpus: bool) -> Option<Vec<u32>> {
        // Where the node has no GPU at all the version runs on its CPU, as it would on a
        // machine without one; in a cluster the queue keeps it for nodes that have one.
        if !spec.gpu || !node_has_gpus {
            return Some(Vec::new());
        }
        (!self.free_gpus.is_empty()).then(|| vec![self.free_gpus.remove(0)])
    }

    fn give_back_gpus(&mut self, gpus: &[u32]) {
        self.free_gpus.extend_from_slice(gpus);
        self.free_gpus.sort_unstable();
    }
}

pub struct Pool {
    state: Mutex<State>,
    changed: Notify,
    work_dir: PathBuf,
    max: usize,
    idle: Duration,
    setup_timeout: Duration,
    next_id: AtomicU64,
    sandbox: Arc<Sandbox>,
    /// Names this runner's servers (their directories, cgroups and upload paths).
    label: String,
    /// Whether this node has GPUs to give.
    has_gpus: bool,
    inner: Weak<Inner>,
}

/// A server lent to one job.
pub struct Lease {
    pub cog: CogClient,
    id: u64,
    /// Where the server sends webhooks, as it sees it.
    pub callback_base: String,
    /// The job it runs, as its callback endpoint knows it.
    pub current: Current,
}

pub struct StartError(pub String);

pub struct PoolConfig {
    pub work_dir: PathBuf,
    pub max: usize,
    pub idle: Duration,
    pub setup_timeout: Duration,
    pub sandbox: Arc<Sandbox>,
    pub label: String,
}

impl Pool {
    pub fn new(c: PoolConfig, inner: Weak<Inner>) -> Self {
        let gpus = c.sandbox.gpu_ids();
        Pool {
            has_gpus: !gpus.is_empty(),
            state: Mutex::new(State {
                free_gpus: gpus,
                ..State::default()
            }),
            changed: Notify::new(),
            work_dir: c.work_dir,
            max: c.max.max(1),
            idle: c.idle,
            setup_timeout: c.setup_timeout,
            next_id: AtomicU64::new(1),
            sandbox: c.sandbox,
            label: c.label,
            inner,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A server for `spec.key`: an idle one, a new one while under the cap (and, for a GPU
    /// version, while a GPU is free), or one made room for by stopping the longest-idle server
    /// of another key (one holding a GPU, when a GPU is what is missing). Waits while every
    /// server that could make room is busy.
    /// `cap` limits how many servers this key may have (a deployment's `max_instances`).
    /// The server's callbacks are accepted for `job` only, until the lease is given back.
    pub async fn acquire(
        &self,
        spec: &Spec,
        cap: Option<usize>,
        job: &str,
    ) -> Result<Lease, StartError> {
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            enum Next {
                Start(Vec<u32>),
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
                    return Ok(i.lend(job));
                }
                let of_key = st.instances.iter().filter(|i| i.key == spec.key).count()
                    + st.starting_keys.iter().filter(|k| **k == spec.key).count();
                let room = st.instances.len() + st.starting < self.max;
                if cap.is_some_and(|c| of_key >= c.max(1)) {
                    Next::Wait
                } else if let Some(gpus) = room.then(|| st.take_gpus(spec, self.has_gpus)).flatten()
                {
                    st.starting += 1;
                    st.starting_keys.push(spec.key.clone());
                    Next::Start(gpus)
                } else {
                    // Under the cap, only a GPU is missing: only stopping a GPU server helps.
                    let need_gpu = room;
                    let warm = st.warm.clone();
                    let victim = st
                        .instances
                        .iter()
                        .enumerate()
                        .filter(|(_, i)| !i.busy && !warm.iter().any(|(k, _)| *k == i.key))
                        .filter(|(_, i)| !need_gpu || !i.gpus.is_empty())
                        .min_by_key(|(_, i)| i.last_used)
                        .map(|(pos, _)| pos);
                    match victim {
                        Some(pos) => Next::Evict(Box::new(st.instances.remove(pos))),
                        None => Next::Wait,
                    }
                }
            };
            let gpus = match next {
                Next::Start(gpus) => gpus,
                Next::Evict(victim) => {
                    self.retire(*victim).await;
                    continue;
                }
                Next::Wait => {
                    notified.await;
                    continue;
                }
            };
            let started = self.start(spec, &gpus).await;
            let placed = {
                let mut st = self.lock();
                st.starting -= 1;
                if let Some(p) = st.starting_keys.iter().position(|k| *k == spec.key) {
                    st.starting_keys.remove(p);
                }
                match started {
                    Ok(mut inst) if !st.closed => {
                        inst.busy = true;
                        let lease = inst.lend(job);
                        st.instances.push(inst);
                        Ok(lease)
                    }
                    Ok(inst) => Err((Some(inst), StartError("the server is shutting down".into()))),
                    Err(e) => {
                        st.give_back_gpus(&gpus);
                        Err((None, e))
                    }
                }
            };
            return match placed {
                Ok(lease) => Ok(lease),
                Err((inst, e)) => {
                    if let Some(inst) = inst {
                        self.retire(inst).await;
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
            if let Some(p) = pos {
                st.instances[p].current.set(None);
            }
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
            self.retire(i).await;
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

    /// Whether the kernel killed a process of the server for memory since this was last asked
    /// (or since it started). Asked only when a job failed, so the count is not read on every
    /// job: a kill during a job that still succeeded (a subprocess the model recovered from) is
    /// told with the server's next failure instead.
    pub fn out_of_memory(&self, lease: &Lease) -> bool {
        let mut st = self.lock();
        let Some(inst) = st.instances.iter_mut().find(|i| i.id == lease.id) else {
            return false;
        };
        let Some(kills) = inst.cgroup.as_ref().map(Cgroup::oom_kills) else {
            return false;
        };
        let new = kills > inst.oom_seen;
        inst.oom_seen = kills;
        new
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

    /// Starts a server for a warm key and leaves it idle (when there is room, and a GPU for
    /// a GPU version: keeping warm never stops another server).
    pub async fn warm_up(&self, spec: &Spec) -> Result<(), StartError> {
        let gpus = {
            let mut st = self.lock();
            if st.closed || st.instances.len() + st.starting >= self.max {
                return Ok(());
            }
            let Some(gpus) = st.take_gpus(spec, self.has_gpus) else {
                return Ok(());
            };
            st.starting += 1;
            gpus
        };
        let started = self.start(spec, &gpus).await;
        {
            let mut st = self.lock();
            st.starting -= 1;
            match started {
                Ok(inst) => st.instances.push(inst),
                Err(e) => {
                    st.give_back_gpus(&gpus);
                    return Err(e);
                }
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
            self.retire(g).await;
        }
        if any {
            self.changed.notify_waiters();
        }
    }

    pub fn count(&self) -> usize {
        self.lock().instances.len()
    }

    /// The keys of the servers running or being started: what they run on must stay.
    pub fn keys_in_use(&self) -> Vec<Key> {
        let st = self.lock();
        st.instances
            .iter()
            .map(|i| i.key.clone())
            .chain(st.starting_keys.iter().cloned())
            .collect()
    }

    /// Stops every server; no new one starts afterwards.
    pub async fn shutdown(&self) {
        let all: Vec<Instance> = {
            let mut st = self.lock();
            st.closed = true;
            st.instances.drain(..).collect()
        };
        for i in all {
            self.retire(i).await;
        }
        self.changed.notify_waiters();
    }

    /// Stops a server taken out of the pool, then frees its GPUs: a GPU is given to the next
    /// server only once the last one's processes (and their GPU memory) are gone.
    async fn retire(&self, inst: Instance) {
        let gpus = inst.gpus.clone();
        stop(inst).await;
        if !gpus.is_empty() {
            self.lock().give_back_gpus(&gpus);
            self.changed.notify_waiters();
        }
    }

    async fn start(&self, spec: &Spec, gpus: &[u32]) -> Result<Instance, StartError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let name = format!("{}-{id}", self.label);
        let workdir = self.work_dir.join(&name);
        let err = |m: String| StartError(m);
        let sb = &self.sandbox;
        let cfg = sb.config();
        std::fs::create_dir_all(&workdir)
            .map_err(|e| err(format!("could not prepare the server's directory: {e}")))?;
        if sb.confined() {
            // Its sockets are made there by the sandbox user.
            let _ = std::os::unix::fs::chown(&workdir, Some(cfg.uid), Some(cfg.gid));
        }
        let log_path = self.work_dir.join(format!("{name}.log"));
        let log = std::fs::File::create(&log_path).map_err(|e| err(e.to_string()))?;

        let current = Current::default();
        let mut secret = [0u8; 12];
        rand::thread_rng().fill_bytes(&mut secret);
        // The upload path names this server: another server's files never land in its jobs.
        let upload_label = format!("{name}-{}", hex::encode(secret));
        let router = callbacks::router(self.inner.clone(), current.clone(), upload_label.clone());
        let mut tasks = Vec::new();
        let mut jail = sb.jail(&workdir);
        let (cog, cog_port, callback_base, project) = if sb.confined() {
            let cb = bridge::bind_unix(&workdir.join("cb.sock"), cfg.uid, cfg.gid)
                .map_err(|e| err(format!("could not open the callback socket: {e}")))?;
            tasks.push(tokio::spawn(async move {
                let _ = axum::serve(bridge::Capped::new(cb), router).await;
            }));
            if cfg.egress {
                let eg = bridge::bind_unix(&workdir.join("egress.sock"), cfg.uid, cfg.gid)
                    .map_err(|e| err(format!("could not open the egress socket: {e}")))?;
                tasks.push(bridge::egress(eg));
            }
            let cog = CogClient::handed(&workdir.join("cog.sock"));
            let run = jail.rw(&workdir, sandbox::RUN);
            let sock = |f: &str| format!("unix:{}", run.join(f).display());
            let tcp = |p: u16| format!("tcp:127.0.0.1:{p}");
            jail.hand(sock("cog.sock"), tcp(COG_PORT));
            jail.forward(tcp(CALLBACK_PORT), sock("cb.sock"));
            if cfg.egress {
                jail.forward(tcp(PROXY_PORT), sock("egress.sock"));
                let proxy = format!("http://127.0.0.1:{PROXY_PORT}");
                for k in ["HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"] {
                    jail.env(k, &proxy);
                }
                jail.env("NO_PROXY", "localhost,127.0.0.1");
            }
            let callback_base = format!("http://127.0.0.1:{CALLBACK_PORT}");
            (cog, COG_PORT, callback_base, spec.project.clone())
        } else {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .map_err(|e| err(format!("no free port: {e}")))?;
            let cb_port = l.local_addr().map_err(|e| err(e.to_string()))?.port();
            tasks.push(tokio::spawn(async move {
                let _ = axum::serve(bridge::Capped::new(l), router).await;
            }));
            let port = free_port().map_err(|e| err(format!("no free port: {e}")))?;
            // A working copy, since nothing stops unconfined code writing to its project.
            let (src, dst) = (spec.project.clone(), workdir.join("src"));
            tokio::task::spawn_blocking(move || link_tree(&src, &dst))
                .await
                .map_err(|e| err(e.to_string()))?
                .map_err(|e| err(format!("could not prepare the working directory: {e}")))?;
            jail.watch();
            let base = format!("http://127.0.0.1:{cb_port}");
            let cog = CogClient::tcp(port);
            (cog, port, base, workdir.join("src"))
        };
        let tasks = Tasks(tasks);
        let src = jail.project(&project, sandbox::SRC);
        let python = match &spec.env.dir {
            Some(dir) => {
                let env = jail.ro(dir, sandbox::ENV);
                let mut path = std::ffi::OsString::from(env.join("bin"));
                path.push(":");
                path.push(sb.default_path());
                jail.env("PATH", path);
                env.join("bin/python")
            }
            None => sb.python().to_path_buf(),
        };
        let scratch = jail.scratch(sandbox::SCRATCH);
        jail.env("HOME", &scratch)
            .env("PORT", cog_port.to_string())
            .cwd(src)
            .limits(&name)
            .gpus(gpus);
        if spec.key.train {
            jail.env("COG_TRAIN_TYPE_STUB", &spec.stub);
        } else {
            jail.env("COG_PREDICT_TYPE_STUB", &spec.stub);
        }
        if let Some(w) = &spec.weights {
            let file = w.file_name().and_then(|n| n.to_str()).unwrap_or("weights");
            let inside = jail.ro(w, &format!("{}/{file}", sandbox::WEIGHTS));
            jail.env("COG_WEIGHTS", inside);
        }
        let upload_url = format!("{callback_base}/uploads/{upload_label}/");
        let mut args = vec![
            "-m",
            "cog.server.http",
            "--host",
            "127.0.0.1",
            "--upload-url",
            &upload_url,
        ];
        if spec.key.train {
            args.extend(["--x-mode", "train"]);
        }
        let started = jail
            .command(&python, args)
            .map_err(|e| err(e.to_string()))?;
        let mut cmd = started.cmd;
        cmd.stdin(std::process::Stdio::piped())
            .stdout(log.try_clone().map_err(|e| err(e.to_string()))?)
            .stderr(log)
            // Confined, killing bubblewrap ends the whole sandbox. Unconfined, closing the
            // wrapper's standard input stops its process group; killing it would not.
            .kill_on_drop(sb.confined());
        let mut child = cmd
            .spawn()
            .map_err(|e| err(format!("could not start Cog: {e}")))?;
        let stdin = child.stdin.take();
        let mut inst = Instance {
            id,
            key: spec.key.clone(),
            cog,
            child,
            stdin,
            workdir,
            log: log_path.clone(),
            busy: false,
            last_used: Instant::now(),
            current,
            callback_base,
            _pins: spec.pins.clone(),
            cgroup: started.cgroup,
            oom_seen: 0,
            gpus: gpus.to_vec(),
            _tasks: tasks,
        };
        match self.wait_ready(&mut inst).await {
            Ok(()) => {
                // A kill during setup that setup survived is no job's doing.
                inst.oom_seen = inst.cgroup.as_ref().map_or(0, Cgroup::oom_kills);
                Ok(inst)
            }
            Err(m) => {
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                let oom = inst.cgroup.as_ref().is_some_and(|c| c.oom_kills() > 0);
                stop(inst).await;
                let m = if oom {
                    format!(
                        "the model ran out of memory during setup (its limit is {})\n{m}",
                        limit_text(cfg.memory_limit)
                    )
                } else {
                    m
                };
                Err(StartError(
                    format!("{m}\n{}", tail(&log, 20)).trim_end().to_string(),
                ))
            }
        }
    }

    async fn wait_ready(&self, inst: &mut Instance) -> Result<(), String> {
        let deadline = Instant::now() + self.setup_timeout;
        let url = format!("{}/health-check", inst.cog.base);
        loop {
            if let Ok(Some(status)) = inst.child.try_wait() {
                return Err(format!("the model server exited during setup ({status})"));
            }
            if let Ok(r) = inst
                .cog
                .send(
                    hyper::Method::GET,
                    &url,
                    None,
                    None,
                    Some(Duration::from_secs(2)),
                )
                .await
            {
                if let Ok(v) = r.json() {
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
    // Its cgroup (anything left in it is killed) and bridges go with it.
    let _ = tokio::task::spawn_blocking(move || {
        drop(inst);
        std::fs::remove_dir_all(dir)
    })
    .await;
}

/// A memory limit in words.
pub fn limit_text(limit: Option<u64>) -> String {
    match limit {
        Some(b) => format!("{} MiB", b / (1024 * 1024)),
        None => "unlimited".into(),
    }
}

impl Instance {
    fn lend(&self, job: &str) -> Lease {
        self.current.set(Some(job));
        Lease {
            cog: self.cog.clone(),
            id: self.id,
            callback_base: self.callback_base.clone(),
            current: self.current.clone(),
        }
    }
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
