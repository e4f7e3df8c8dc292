//! The one place pushed code is started: every path that runs a model's Python (reading its
//! schema at push, environment builds, Cog servers for predictions and trainings) builds its
//! command here.
//!
//! Confined (the default), the command runs under bubblewrap in its own mount, PID, IPC, UTS,
//! cgroup and network namespaces: it sees the system's `/usr`, the Python installation, and only
//! the paths its caller binds (its project and environment read-only), a private `/tmp` and
//! scratch directory (size-capped tmpfs, gone when it stops), a fresh `/proc` that shows only its
//! own processes, and a minimal `/dev`. Started by root, it drops to an unprivileged user with no
//! capabilities and `no_new_privs` (setpriv); started by anyone else, bubblewrap maps it to an
//! unprivileged id in a user namespace. It has no network but its own loopback: the platform
//! reaches it, and it reaches the platform and (when egress is on) the internet, only through
//! Unix sockets bridged by `wrapper.py` (see `bridge.rs`). Memory and processes are capped by a
//! cgroup where this host lets us make one, and everything it starts dies with it.
//!
//! `--unsafe-no-sandbox` runs the same commands as the server's own user, on the host.
use std::ffi::{OsStr, OsString};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use tokio::process::Command;

use crate::cgroup::{Cgroup, Cgroups};

pub const WRAPPER: &str = include_str!("wrapper.py");

/// The GPUs this node offers model servers; the pool gives each GPU server its own.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Gpus {
    None,
    All,
    Some(Vec<u32>),
}

impl Gpus {
    /// `none`, `all` or a list of indices such as `0,1`.
    pub fn parse(s: &str) -> Result<Gpus, String> {
        match s.trim() {
            "" | "none" => Ok(Gpus::None),
            "all" => Ok(Gpus::All),
            list => list
                .split(',')
                .map(|p| {
                    p.trim()
                        .parse::<u32>()
                        .map_err(|_| format!("'{p}' is not a GPU index (use none, all or 0,1,...)"))
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Gpus::Some),
        }
    }

    /// The GPU indices these name: the listed ones, or with `all` every `nvidiaN` under the
    /// device root (none where there is no driver).
    pub fn ids(&self, device_root: &Path) -> Vec<u32> {
        let mut ids = match self {
            Gpus::None => Vec::new(),
            Gpus::Some(list) => list.clone(),
            Gpus::All => std::fs::read_dir(device_root)
                .map(|entries| {
                    entries
                        .flatten()
                        .filter_map(|e| gpu_index(&e.file_name().to_string_lossy()))
                        .collect()
                })
                .unwrap_or_default(),
        };
        ids.sort_unstable();
        ids.dedup();
        ids
    }
}

#[derive(Clone, Debug)]
pub struct SandboxConfig {
    /// False only with `--unsafe-no-sandbox`.
    pub confine: bool,
    /// Whether model code may reach the internet (through the egress proxy; never the host).
    pub egress: bool,
    /// Memory a model server may use, with everything it starts; `None` is unlimited.
    pub memory_limit: Option<u64>,
    /// Processes (and threads) a model server may have at once.
    pub max_processes: u64,
    /// Size of each private tmpfs (`/tmp` and the scratch directory).
    pub scratch_limit: u64,
    pub gpus: Gpus,
    /// Where GPU device files are looked for (`/dev`; tests use stand-in nodes elsewhere).
    pub device_root: PathBuf,
    /// The unprivileged user and group model code runs as when the server runs as root.
    pub uid: u32,
    pub gid: u32,
}

/// The defaults, in the units `modelyard serve` takes them.
pub const DEFAULT_MEMORY_MB: u64 = 16384;
pub const DEFAULT_MAX_PROCESSES: u64 = 1024;
pub const DEFAULT_SCRATCH_MB: u64 = 10240;

impl SandboxConfig {
    /// How many GPUs this node's model servers may be given (see [`Gpus::ids`]). A worker with
    /// none takes no version that needs a GPU.
    pub fn gpu_count(&self) -> usize {
        self.gpus.ids(&self.device_root).len()
    }
}

impl Default for SandboxConfig {
    fn default() -> Self {
        SandboxConfig {
            confine: true,
            egress: true,
            memory_limit: Some(DEFAULT_MEMORY_MB * 1024 * 1024),
            max_processes: DEFAULT_MAX_PROCESSES,
            scratch_limit: DEFAULT_SCRATCH_MB * 1024 * 1024,
            gpus: Gpus::None,
            device_root: PathBuf::from("/dev"),
            uid: 65534,
            gid: 65534,
        }
    }
}

#[derive(Debug)]
pub struct Sandbox {
    cfg: SandboxConfig,
    /// The interpreter that has Cog, as an absolute path.
    python: PathBuf,
    /// Its installation, bound read-only when it lives outside `/usr`.
    python_root: Option<PathBuf>,
    /// Whether this server runs as root (then model code drops to `cfg.uid`).
    root: bool,
    cgroups: Option<Cgroups>,
    /// `passwd` and `group` naming the sandbox user, for code that looks itself up.
    etc: PathBuf,
    /// `wrapper.py`, written out once.
    wrapper: PathBuf,
}

/// Where the things a sandboxed program is given appear to it.
pub const SRC: &str = "/src";
pub const ENV: &str = "/env";
pub const RUN: &str = "/run/modelyard";
pub const SCRATCH: &str = "/scratch";
pub const WEIGHTS: &str = "/weights";
const WRAPPER_INSIDE: &str = "/opt/modelyard/wrapper.py";
/// Where [`Jail::project`] mounts the stored project read-only.
const PROJECT: &str = "/opt/modelyard/project";

/// Why a sandbox could not be set up or started. The messages name the fix where there is one.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("cannot run {python}: {source}")]
    Python {
        python: String,
        source: std::io::Error,
    },
    #[error("{python} does not run: {stderr}")]
    PythonFails { python: String, stderr: String },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the sandbox check did not finish within 60 seconds")]
    CheckTimeout,
    #[error(
        "bubblewrap (bwrap) is not installed: install it (Debian/Ubuntu: apt-get install \
         bubblewrap; scripts/setup.sh does this), or pass --unsafe-no-sandbox to run pushed \
         model code unconfined"
    )]
    NoBubblewrap,
    #[error("cannot start bubblewrap: {0}")]
    Bubblewrap(std::io::Error),
    #[error(
        "the sandbox does not work on this host ({status}): {stderr}. Model code needs Linux \
         namespaces: run as root, or enable unprivileged user namespaces \
         (sysctl kernel.unprivileged_userns_clone=1, and on Ubuntu \
         kernel.apparmor_restrict_unprivileged_userns=0); or pass --unsafe-no-sandbox to run \
         pushed model code unconfined"
    )]
    Unsupported { status: String, stderr: String },
    #[error("the sandbox ran model code as user '{0}', not an unprivileged user")]
    Privileged(String),
    #[error("cannot make the model's cgroup: {0}")]
    Cgroup(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SandboxError + '_ {
    move |source| SandboxError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl Sandbox {
    /// Resolves the interpreter and prepares what every sandbox shares. `state` is a directory
    /// of the server's own (the data directory's `sandbox/`).
    pub fn new(cfg: SandboxConfig, python: &str, state: &Path) -> Result<Sandbox, SandboxError> {
        let out = std::process::Command::new(python)
            .args([
                "-c",
                "import sys; print(sys.executable); print(sys.base_prefix)",
            ])
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .output()
            .map_err(|source| SandboxError::Python {
                python: python.into(),
                source,
            })?;
        if !out.status.success() {
            return Err(SandboxError::PythonFails {
                python: python.into(),
                stderr: String::from_utf8_lossy(&out.stderr).into(),
            });
        }
        let text = String::from_utf8_lossy(&out.stdout);
        let mut lines = text.lines();
        let exe = PathBuf::from(lines.next().unwrap_or_default());
        let prefix = PathBuf::from(lines.next().unwrap_or_default());
        let exe = std::fs::canonicalize(&exe).unwrap_or(exe);
        let prefix = std::fs::canonicalize(&prefix).unwrap_or(prefix);
        let python_root = (!prefix.starts_with("/usr")).then_some(prefix);
        let root = std::fs::metadata("/proc/self")
            .map(|m| m.uid() == 0)
            .unwrap_or(false);
        let etc = state.join("etc");
        std::fs::create_dir_all(&etc).map_err(io(&etc))?;
        let (uid, gid) = (cfg.uid, cfg.gid);
        let passwd = etc.join("passwd");
        std::fs::write(
            &passwd,
            format!("model:x:{uid}:{gid}:model:{SCRATCH}:/bin/sh\n"),
        )
        .map_err(io(&passwd))?;
        let group = etc.join("group");
        std::fs::write(&group, format!("model:x:{gid}:\n")).map_err(io(&group))?;
        let wrapper = state.join("wrapper.py");
        std::fs::write(&wrapper, WRAPPER).map_err(io(&wrapper))?;
        let cgroups = if cfg.confine {
            match Cgroups::detect() {
                Ok(c) => Some(c),
                Err(e) => {
                    tracing::warn!(
                        reason = %e,
                        "no cgroup for model servers: their memory is not capped and their \
                         process count is capped per user only"
                    );
                    None
                }
            }
        } else {
            None
        };
        Ok(Sandbox {
            cfg,
            python: exe,
            python_root,
            root,
            cgroups,
            etc,
            wrapper,
        })
    }

    pub fn config(&self) -> &SandboxConfig {
        &self.cfg
    }

    pub fn confined(&self) -> bool {
        self.cfg.confine
    }

    /// The interpreter, as sandboxed code sees it (the same path: it is bound where it is).
    pub fn python(&self) -> &Path {
        &self.python
    }

    /// Whether memory and processes are capped by a cgroup.
    pub fn has_cgroups(&self) -> bool {
        self.cgroups.is_some()
    }

    /// Runs a trivial confined program, so a host that cannot sandbox is found at start, with
    /// the fix named, rather than at the first push.
    pub async fn check(&self) -> Result<(), SandboxError> {
        if !self.cfg.confine {
            return Ok(());
        }
        let scratch = tempfile::tempdir().map_err(io(&std::env::temp_dir()))?;
        let jail = self.jail(scratch.path());
        let probe = "import os, sys; sys.stdout.write(str(os.getuid()))";
        let mut started = jail.command(self.python(), ["-c", probe])?;
        let out = tokio::time::timeout(std::time::Duration::from_secs(60), {
            started.cmd.stdin(std::process::Stdio::null());
            started.cmd.output()
        })
        .await
        .map_err(|_| SandboxError::CheckTimeout)?
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                SandboxError::NoBubblewrap
            } else {
                SandboxError::Bubblewrap(e)
            }
        })?;
        let uid = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            return Err(SandboxError::Unsupported {
                status: out.status.to_string(),
                stderr: String::from_utf8_lossy(&out.stderr).trim().into(),
            });
        }
        if uid.trim() == "0" || uid.trim().is_empty() {
            return Err(SandboxError::Privileged(uid.trim().into()));
        }
        Ok(())
    }

    /// A sandbox to fill in. `host_dir` is a private directory of the caller's: with
    /// `--unsafe-no-sandbox`, scratch space is made there.
    pub fn jail(&self, host_dir: &Path) -> Jail<'_> {
        Jail {
            sb: self,
            mounts: Vec::new(),
            env: vec![
                ("PATH".into(), self.default_path()),
                ("PYTHONDONTWRITEBYTECODE".into(), "1".into()),
                ("PYTHONUNBUFFERED".into(), "1".into()),
                ("LANG".into(), "C.UTF-8".into()),
            ],
            cwd: None,
            forwards: Vec::new(),
            host_dir: host_dir.to_path_buf(),
            limits: None,
            farm: None,
            watch: false,
            gpus: Vec::new(),
        }
    }

    /// The `PATH` sandboxed programs get: the interpreter's directory, then the system's.
    pub fn default_path(&self) -> OsString {
        let mut p = OsString::new();
        if let Some(bin) = self.python.parent() {
            p.push(bin);
            p.push(":");
        }
        p.push("/usr/local/bin:/usr/bin:/bin");
        p
    }

    /// This node's GPUs, which the pool hands out one server at a time.
    pub fn gpu_ids(&self) -> Vec<u32> {
        self.cfg.gpus.ids(&self.cfg.device_root)
    }

    /// Device files to pass for the given GPUs, from the device root: their `nvidiaN`, and
    /// the ones every CUDA program opens. Nothing when no GPU is given.
    fn gpu_devices(&self, ids: &[u32]) -> Vec<(PathBuf, String)> {
        let mut out = Vec::new();
        if ids.is_empty() {
            return out;
        }
        let Ok(entries) = std::fs::read_dir(&self.cfg.device_root) else {
            return out;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            let pass = match gpu_index(&name) {
                Some(n) => ids.contains(&n),
                // nvidiactl, nvidia-uvm, nvidia-uvm-tools, nvidia-modeset, nvidia-caps
                None => name.starts_with("nvidia") || name == "dri",
            };
            if pass {
                out.push((e.path(), format!("/dev/{name}")));
            }
        }
        out.sort();
        out
    }
}

/// N for a GPU's own device file `nvidiaN`.
fn gpu_index(name: &str) -> Option<u32> {
    let rest = name.strip_prefix("nvidia")?;
    if rest.is_empty() || !rest.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    rest.parse().ok()
}

/// bubblewrap makes the missing parents of a mount point private (0700) to root: a sandbox
/// user could not pass through `/etc` or `/run`. Each parent is made first, open to pass.
fn with_open_parents(args: Vec<OsString>) -> Vec<OsString> {
    // Options followed by (source, destination) and by a destination alone.
    const TWO: [&str; 6] = [
        "--ro-bind",
        "--ro-bind-try",
        "--bind",
        "--dev-bind",
        "--symlink",
        "--bind-try",
    ];
    let mut out = Vec::with_capacity(args.len() * 2);
    let mut made: std::collections::HashSet<PathBuf> = Default::default();
    let mut i = 0;
    // The options before the first mount (namespaces, ids) pass through unchanged.
    while i < args.len() {
        let a = args[i].to_string_lossy().to_string();
        if a == "--" {
            out.extend(args[i..].iter().cloned());
            break;
        }
        let dest = if TWO.contains(&a.as_str()) {
            args.get(i + 2)
        } else if a == "--tmpfs" || a == "--proc" || a == "--dev" || a == "--dir" {
            args.get(i + 1)
        } else {
            None
        };
        if let Some(d) = dest {
            let mut parents: Vec<PathBuf> = Path::new(d)
                .ancestors()
                .skip(1)
                .filter(|p| p.parent().is_some())
                .map(Path::to_path_buf)
                .collect();
            parents.reverse();
            // `--perms`/`--size` already pushed for this mount stay attached to it: insert
            // the parents before them.
            let mut attached = Vec::new();
            while out
                .len()
                .checked_sub(2)
                .and_then(|k| out.get(k))
                .is_some_and(|o: &OsString| o == "--perms" || o == "--size")
            {
                let v = out.pop().unwrap_or_default();
                let k = out.pop().unwrap_or_default();
                attached.insert(0, v);
                attached.insert(0, k);
            }
            for p in parents {
                if made.insert(p.clone()) && p != Path::new("/dev") && !p.starts_with("/dev/") {
                    out.extend(["--perms".into(), "0755".into(), "--dir".into(), p.into()]);
                }
            }
            out.extend(attached);
            made.insert(PathBuf::from(d));
        }
        out.push(args[i].clone());
        i += 1;
    }
    out
}

enum Mount {
    Ro(PathBuf, String),
    Rw(PathBuf, String),
    Tmpfs(String),
}

/// One sandboxed program being put together.
pub struct Jail<'a> {
    sb: &'a Sandbox,
    mounts: Vec<Mount>,
    env: Vec<(OsString, OsString)>,
    cwd: Option<PathBuf>,
    /// Bridges `wrapper.py` runs inside: its option (`--forward`, `--hand`) and
    /// `LISTEN=CONNECT`, each `tcp:HOST:PORT` or `unix:PATH`.
    forwards: Vec<(&'static str, String)>,
    host_dir: PathBuf,
    limits: Option<String>,
    /// A link farm the wrapper makes before the program starts: (from, to).
    farm: Option<(PathBuf, PathBuf)>,
    /// Run under `wrapper.py`, which stops everything when its standard input closes.
    watch: bool,
    /// The GPUs this program is given (their device files are passed).
    gpus: Vec<u32>,
}

/// A command ready to spawn, and the cgroup it joins (removed when this is dropped).
pub struct Started {
    pub cmd: Command,
    pub cgroup: Option<Cgroup>,
}

impl Jail<'_> {
    /// Binds a host path read-only; returns the path the program uses for it.
    pub fn ro(&mut self, host: &Path, inside: &str) -> PathBuf {
        if !self.sb.cfg.confine {
            return host.to_path_buf();
        }
        self.mounts
            .push(Mount::Ro(host.to_path_buf(), inside.into()));
        PathBuf::from(inside)
    }

    /// Binds a host path writable; returns the path the program uses for it.
    pub fn rw(&mut self, host: &Path, inside: &str) -> PathBuf {
        if !self.sb.cfg.confine {
            return host.to_path_buf();
        }
        self.mounts
            .push(Mount::Rw(host.to_path_buf(), inside.into()));
        PathBuf::from(inside)
    }

    /// A private, size-capped, writable directory that disappears with the program.
    pub fn scratch(&mut self, inside: &str) -> PathBuf {
        if !self.sb.cfg.confine {
            let dir = self.host_dir.join(inside.trim_start_matches('/'));
            let _ = std::fs::create_dir_all(&dir);
            return dir;
        }
        self.mounts.push(Mount::Tmpfs(inside.into()));
        PathBuf::from(inside)
    }

    pub fn env(&mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> &mut Self {
        let key = key.into();
        self.env.retain(|(k, _)| *k != key);
        self.env.push((key, value.into()));
        self
    }

    pub fn cwd(&mut self, dir: PathBuf) -> &mut Self {
        self.cwd = Some(dir);
        self
    }

    /// A private, writable copy of a read-only project at `inside`, made of links (see
    /// `wrapper.py`), so a model can write beside its files but never change them. Returns the
    /// path the program uses.
    pub fn project(&mut self, host: &Path, inside: &str) -> PathBuf {
        if !self.sb.cfg.confine {
            return host.to_path_buf();
        }
        let ro = self.ro(host, PROJECT);
        let dir = self.scratch(inside);
        self.farm = Some((ro, dir.clone()));
        self.watch = true;
        dir
    }

    /// Runs a bridge inside (see `wrapper.py`); implies [`Jail::watch`].
    pub fn forward(&mut self, listen: String, connect: String) -> &mut Self {
        self.forwards
            .push(("--forward", format!("{listen}={connect}")));
        self.watch = true;
        self
    }

    /// Has the wrapper hand out connections to `connect` on the Unix socket `listen` (see
    /// `wrapper.py` and `cog_http.rs`); implies [`Jail::watch`].
    pub fn hand(&mut self, listen: String, connect: String) -> &mut Self {
        self.forwards
            .push(("--hand", format!("{listen}={connect}")));
        self.watch = true;
        self
    }

    /// Runs the program under `wrapper.py`: closing its standard input (or the server dying)
    /// stops the program and everything it started.
    pub fn watch(&mut self) -> &mut Self {
        self.watch = true;
        self
    }

    /// Caps memory and processes with a cgroup named `name` (where cgroups are available).
    pub fn limits(&mut self, name: &str) -> &mut Self {
        self.limits = Some(name.to_string());
        self
    }

    /// Gives the program exactly these GPUs: their device files, and the variables CUDA and
    /// NVIDIA's tools read, so it neither sees nor picks another server's GPU. With none, CUDA
    /// sees no device at all (an empty list), rather than whatever the driver would offer.
    pub fn gpus(&mut self, ids: &[u32]) -> &mut Self {
        let list = ids.iter().map(u32::to_string).collect::<Vec<_>>().join(",");
        // CUDA numbers devices fastest first unless told otherwise; `nvidiaN` and `--gpus`
        // follow the bus order, so this makes index N the same device for all of them.
        self.env("CUDA_DEVICE_ORDER", "PCI_BUS_ID");
        self.env("CUDA_VISIBLE_DEVICES", &list);
        // `none` is NVIDIA's word for "no GPU"; an empty value would mean "not managed".
        let nvidia = if ids.is_empty() {
            "none"
        } else {
            list.as_str()
        };
        self.env("NVIDIA_VISIBLE_DEVICES", nvidia);
        self.gpus = ids.to_vec();
        self
    }

    /// The command for `program args`, sandboxed. The environment is exactly what was set.
    pub fn command<I, S>(self, program: &Path, args: I) -> Result<Started, SandboxError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let sb = self.sb;
        let mut inner: Vec<OsString> = Vec::new();
        if self.watch {
            inner.push(sb.python.clone().into());
            inner.push(if sb.cfg.confine {
                WRAPPER_INSIDE.into()
            } else {
                sb.wrapper.clone().into()
            });
            if let Some((from, to)) = &self.farm {
                inner.push("--farm".into());
                inner.push(from.into());
                inner.push(to.into());
            }
            for (option, f) in &self.forwards {
                inner.push(option.into());
                inner.push(f.into());
            }
            inner.push("--".into());
        }
        inner.push(program.into());
        inner.extend(args.into_iter().map(|a| a.as_ref().to_os_string()));

        if !sb.cfg.confine {
            let mut cmd = Command::new(&inner[0]);
            cmd.args(&inner[1..]).env_clear();
            for (k, v) in &self.env {
                cmd.env(k, v);
            }
            if let Some(d) = &self.cwd {
                cmd.current_dir(d);
            }
            // Its own process group, which the wrapper stops as a whole.
            cmd.process_group(0);
            return Ok(Started { cmd, cgroup: None });
        }

        let mut a: Vec<OsString> = Vec::new();
        let mut arg = |s: &dyn AsRef<OsStr>| a.push(s.as_ref().to_os_string());
        for flag in [
            "--unshare-ipc",
            "--unshare-pid",
            "--unshare-uts",
            "--unshare-net",
            "--unshare-cgroup-try",
            "--die-with-parent",
            "--new-session",
            "--hostname",
            "model",
        ] {
            arg(&flag);
        }
        if !sb.root {
            for flag in ["--unshare-user", "--disable-userns", "--uid"] {
                arg(&flag);
            }
            arg(&sb.cfg.uid.to_string());
            arg(&"--gid");
            arg(&sb.cfg.gid.to_string());
        }
        // The system, read-only; merged-/usr links are recreated as links.
        arg(&"--ro-bind");
        arg(&"/usr");
        arg(&"/usr");
        for top in ["/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"] {
            match std::fs::read_link(top) {
                Ok(target) => {
                    arg(&"--symlink");
                    arg(&target);
                    arg(&top);
                }
                Err(_) if Path::new(top).is_dir() => {
                    arg(&"--ro-bind");
                    arg(&top);
                    arg(&top);
                }
                Err(_) => {}
            }
        }
        if let Some(root) = &sb.python_root {
            arg(&"--ro-bind");
            arg(root);
            arg(root);
        }
        for f in [
            "/etc/hosts",
            "/etc/nsswitch.conf",
            "/etc/ld.so.cache",
            "/etc/ld.so.conf",
            "/etc/ld.so.conf.d",
            "/etc/ssl",
            "/etc/ca-certificates",
            "/etc/pki",
            "/etc/pip.conf",
            "/etc/localtime",
            "/etc/mime.types",
            "/etc/alternatives",
        ] {
            arg(&"--ro-bind-try");
            arg(&f);
            arg(&f);
        }
        arg(&"--ro-bind");
        arg(&sb.wrapper);
        arg(&WRAPPER_INSIDE);
        for f in ["passwd", "group"] {
            arg(&"--ro-bind");
            arg(&sb.etc.join(f));
            arg(&format!("/etc/{f}"));
        }
        arg(&"--proc");
        arg(&"/proc");
        arg(&"--dev");
        arg(&"/dev");
        let size = sb.cfg.scratch_limit.to_string();
        for t in ["/tmp", "/dev/shm"] {
            for x in ["--perms", "1777", "--size", &size, "--tmpfs", t] {
                arg(&x);
            }
        }
        for (host, inside) in sb.gpu_devices(&self.gpus) {
            arg(&"--dev-bind");
            arg(&host);
            arg(&inside);
        }
        for m in &self.mounts {
            match m {
                Mount::Ro(h, i) => {
                    arg(&"--ro-bind");
                    arg(h);
                    arg(i);
                }
                Mount::Rw(h, i) => {
                    arg(&"--bind");
                    arg(h);
                    arg(i);
                }
                Mount::Tmpfs(i) => {
                    for x in ["--perms", "1777", "--size", &size, "--tmpfs", i] {
                        arg(&x);
                    }
                }
            }
        }
        arg(&"--clearenv");
        for (k, v) in &self.env {
            arg(&"--setenv");
            arg(k);
            arg(v);
        }
        arg(&"--chdir");
        arg(&self.cwd.clone().unwrap_or_else(|| PathBuf::from("/")));
        arg(&"--");
        if sb.root {
            // Root inside the namespaces still holds every capability: give them all up and
            // become the unprivileged sandbox user for good.
            for x in [
                "setpriv".to_string(),
                format!("--reuid={}", sb.cfg.uid),
                format!("--regid={}", sb.cfg.gid),
                "--clear-groups".into(),
                "--inh-caps=-all".into(),
                "--ambient-caps=-all".into(),
                "--bounding-set=-all".into(),
                "--no-new-privs".into(),
                "--".into(),
            ] {
                arg(&x);
            }
        }
        if sb.cgroups.is_none() {
            // No cgroup: processes are capped per user, which still stops a fork bomb.
            arg(&"prlimit");
            arg(&format!("--nproc={}", sb.cfg.max_processes));
            arg(&"--");
        }
        let a = with_open_parents(a);
        let mut a = a;
        a.extend(inner);

        let cgroup = match (&sb.cgroups, &self.limits) {
            (Some(c), Some(name)) => Some(
                c.create(name, sb.cfg.memory_limit, sb.cfg.max_processes)
                    .map_err(SandboxError::Cgroup)?,
            ),
            _ => None,
        };
        let mut cmd = match &cgroup {
            // Join the cgroup before bubblewrap starts, so nothing it forks escapes the cap.
            Some(cg) => {
                let mut script = String::new();
                for f in cg.procs_files() {
                    script.push_str(&format!("echo $$ > '{}' && ", f.display()));
                }
                script.push_str("exec \"$@\"");
                let mut c = Command::new("/bin/sh");
                c.arg("-c").arg(script).arg("sh").arg("bwrap");
                c
            }
            None => Command::new("bwrap"),
        };
        cmd.args(a).env_clear();
        cmd.env("PATH", "/usr/local/bin:/usr/bin:/bin");
        Ok(Started { cmd, cgroup })
    }
}

#[cfg(test)]
mod tests {
    use super::Gpus;

    #[test]
    fn all_gpus_are_the_device_files_present() {
        let dev = tempfile::tempdir().unwrap();
        for f in [
            "nvidia2",
            "nvidia0",
            "nvidiactl",
            "nvidia-uvm",
            "nvidia-caps",
            "null",
        ] {
            std::fs::write(dev.path().join(f), "").unwrap();
        }
        assert_eq!(Gpus::All.ids(dev.path()), [0, 2]);
        let none = tempfile::tempdir().unwrap();
        assert_eq!(Gpus::All.ids(none.path()), Vec::<u32>::new());
        assert_eq!(Gpus::None.ids(dev.path()), Vec::<u32>::new());
        assert_eq!(Gpus::parse("1, 0,1").unwrap().ids(none.path()), [0, 1]);
    }
}
