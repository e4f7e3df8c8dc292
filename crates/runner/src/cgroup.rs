//! A cgroup per model server: caps its memory and processes, tells when the kernel killed
//! something for memory, and lets everything in it be killed at once. cgroup v2 and the v1
//! `memory` and `pids` hierarchies are both supported; where neither can be written, the sandbox
//! goes without (and says so at start).
use std::path::{Path, PathBuf};

#[derive(Debug)]
enum Layout {
    /// One directory per server under our own cgroup's `models/`.
    V2 { base: PathBuf },
    /// A directory per server in each of the two hierarchies.
    V1 { memory: PathBuf, pids: PathBuf },
}

#[derive(Debug)]
pub struct Cgroups {
    layout: Layout,
}

/// One server's cgroup, removed when dropped (after what runs in it is killed).
#[derive(Debug)]
pub struct Cgroup {
    dirs: Vec<PathBuf>,
    memory: PathBuf,
    v2: bool,
}

const ROOT: &str = "/sys/fs/cgroup";

fn own_path(controller: Option<&str>) -> Option<String> {
    let text = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    text.lines().find_map(|l| {
        let mut parts = l.splitn(3, ':');
        let (_, ctrls, path) = (parts.next()?, parts.next()?, parts.next()?);
        let matches = match controller {
            None => ctrls.is_empty(),
            Some(c) => ctrls.split(',').any(|x| x == c),
        };
        matches.then(|| path.to_string())
    })
}

fn write(path: &Path, value: &str) -> Result<(), String> {
    std::fs::write(path, value).map_err(|e| format!("{}: {e}", path.display()))
}

impl Cgroups {
    pub fn detect() -> Result<Cgroups, String> {
        let me = format!("modelyard-{}", std::process::id());
        if Path::new(ROOT).join("cgroup.controllers").exists() {
            let own = own_path(None).ok_or("no cgroup v2 entry in /proc/self/cgroup")?;
            let own = Path::new(ROOT).join(own.trim_start_matches('/'));
            // cgroup v2 lets a cgroup hand controllers to children only once it holds no
            // process itself: this server moves to a leaf of its own first.
            let leaf = own.join(format!("{me}-server"));
            std::fs::create_dir_all(&leaf).map_err(|e| format!("{}: {e}", leaf.display()))?;
            write(&leaf.join("cgroup.procs"), &std::process::id().to_string())?;
            write(&own.join("cgroup.subtree_control"), "+memory +pids")?;
            let base = own.join(&me);
            std::fs::create_dir_all(&base).map_err(|e| format!("{}: {e}", base.display()))?;
            write(&base.join("cgroup.subtree_control"), "+memory +pids")?;
            remove_stale(&own);
            return Ok(Cgroups {
                layout: Layout::V2 { base },
            });
        }
        let mut dirs = Vec::new();
        for c in ["memory", "pids"] {
            let own = own_path(Some(c)).ok_or(format!("no cgroup v1 {c} hierarchy"))?;
            let parent = Path::new(ROOT).join(c).join(own.trim_start_matches('/'));
            let base = parent.join(&me);
            std::fs::create_dir_all(&base).map_err(|e| format!("{}: {e}", base.display()))?;
            remove_stale(&parent);
            dirs.push(base);
        }
        let pids = dirs.pop().unwrap_or_default();
        let memory = dirs.pop().unwrap_or_default();
        Ok(Cgroups {
            layout: Layout::V1 { memory, pids },
        })
    }

    pub fn create(&self, name: &str, memory: Option<u64>, pids: u64) -> Result<Cgroup, String> {
        let fail = |e: String| format!("cannot make the model server's cgroup: {e}");
        match &self.layout {
            Layout::V2 { base } => {
                let dir = base.join(name);
                let _ = std::fs::remove_dir(&dir);
                std::fs::create_dir_all(&dir).map_err(|e| fail(e.to_string()))?;
                let cg = Cgroup {
                    dirs: vec![dir.clone()],
                    memory: dir.clone(),
                    v2: true,
                };
                if let Some(m) = memory {
                    write(&dir.join("memory.max"), &m.to_string()).map_err(fail)?;
                    let _ = write(&dir.join("memory.swap.max"), "0");
                }
                write(&dir.join("pids.max"), &pids.to_string()).map_err(fail)?;
                Ok(cg)
            }
            Layout::V1 {
                memory: mem_base,
                pids: pids_base,
            } => {
                let (m, p) = (mem_base.join(name), pids_base.join(name));
                for d in [&m, &p] {
                    let _ = std::fs::remove_dir(d);
                    std::fs::create_dir_all(d).map_err(|e| fail(e.to_string()))?;
                }
                let cg = Cgroup {
                    dirs: vec![m.clone(), p.clone()],
                    memory: m.clone(),
                    v2: false,
                };
                if let Some(limit) = memory {
                    write(&m.join("memory.limit_in_bytes"), &limit.to_string()).map_err(fail)?;
                    // Swap would let a model far past its cap, slowly.
                    let _ = write(&m.join("memory.memsw.limit_in_bytes"), &limit.to_string());
                }
                write(&p.join("pids.max"), &pids.to_string()).map_err(fail)?;
                Ok(cg)
            }
        }
    }
}

/// Cgroups left by a server that died: their processes died with their PID namespaces.
fn remove_stale(parent: &Path) {
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        let Some(pid) = name
            .strip_prefix("modelyard-")
            .and_then(|r| r.split('-').next())
        else {
            continue;
        };
        if Path::new("/proc").join(pid).exists() {
            continue;
        }
        if let Ok(children) = std::fs::read_dir(e.path()) {
            for c in children.flatten() {
                if c.path().is_dir() {
                    let _ = std::fs::remove_dir(c.path());
                }
            }
        }
        let _ = std::fs::remove_dir(e.path());
    }
}

impl Drop for Cgroups {
    fn drop(&mut self) {
        let bases = match &self.layout {
            Layout::V2 { base } => vec![base],
            Layout::V1 { memory, pids } => vec![memory, pids],
        };
        for b in bases {
            let _ = std::fs::remove_dir(b);
        }
    }
}

impl Cgroup {
    /// The files a process writes its pid to, to join.
    pub fn procs_files(&self) -> Vec<PathBuf> {
        self.dirs.iter().map(|d| d.join("cgroup.procs")).collect()
    }

    /// How many processes the kernel has killed in this cgroup for want of memory.
    pub fn oom_kills(&self) -> u64 {
        let file = if self.v2 {
            "memory.events"
        } else {
            "memory.oom_control"
        };
        std::fs::read_to_string(self.memory.join(file))
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("oom_kill ")?.trim().parse().ok())
            .unwrap_or(0)
    }

    fn pids(&self) -> Vec<String> {
        self.procs_files()
            .iter()
            .flat_map(|f| {
                std::fs::read_to_string(f)
                    .unwrap_or_default()
                    .lines()
                    .map(str::to_string)
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// Kills everything still in the cgroup.
    pub fn kill_all(&self) {
        if self.v2 && std::fs::write(self.dirs[0].join("cgroup.kill"), "1").is_ok() {
            return;
        }
        for _ in 0..3 {
            let pids = self.pids();
            if pids.is_empty() {
                return;
            }
            let _ = std::process::Command::new("kill")
                .arg("-KILL")
                .args(&pids)
                .stderr(std::process::Stdio::null())
                .status();
        }
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        self.kill_all();
        for d in &self.dirs {
            // A killed process leaves its cgroup a moment later.
            for _ in 0..50 {
                if std::fs::remove_dir(d).is_ok() || !d.exists() {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
        }
    }
}
