//! A node's local copies of content kept in an object store (`cache/`): each tree or weights
//! file comes down once (one download per name however many ask at once), appears under its
//! name only whole (a rename), and is dropped, least recently used first, when the cache
//! outgrows its bound, unless something holds it open ([`Pin`]). Emptied at start: what it held
//! is in the store.
use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rand::RngCore;

use crate::error::{io, Result};
use crate::private_dir;

/// Held while a local copy is in use (a running server's project or weights): the cache keeps
/// it until every clone is dropped.
#[derive(Clone, Debug)]
pub struct Pin(#[allow(dead_code)] Arc<()>);

/// Stored content opened as a local path.
#[derive(Clone, Debug)]
pub struct Opened {
    path: PathBuf,
    pin: Option<Pin>,
}

impl Opened {
    pub(crate) fn local(path: PathBuf) -> Opened {
        Opened { path, pin: None }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// What keeps the local copy while it is used; `None` for the data directory's own content.
    pub fn pin(&self) -> Option<Pin> {
        self.pin.clone()
    }
}

pub(crate) struct Cache {
    root: PathBuf,
    bound: u64,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    items: HashMap<String, Item>,
    flights: HashMap<String, Arc<tokio::sync::Mutex<()>>>,
    clock: u64,
}

struct Item {
    size: u64,
    used: u64,
    pin: Arc<()>,
}

impl Cache {
    /// The cache at `root`, emptied, holding at most `bound` bytes of unpinned copies.
    pub fn new(root: PathBuf, bound: u64) -> Result<Cache> {
        match std::fs::remove_dir_all(&root) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(io("empty", &root)(e))
            }
            _ => {}
        }
        private_dir(&root).map_err(io("create", &root))?;
        Ok(Cache {
            root,
            bound,
            state: Mutex::default(),
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn hit(&self, name: &str) -> Option<Opened> {
        let mut st = self.state();
        st.clock += 1;
        let now = st.clock;
        let item = st.items.get_mut(name)?;
        item.used = now;
        Some(Opened {
            path: self.root.join(name),
            pin: Some(Pin(item.pin.clone())),
        })
    }

    /// The local copy named `name` (`trees/<digest>`, `weights/<sha>/<name>`), made by `fill`
    /// (given a fresh path to write, answering the bytes it wrote) when it is not here.
    pub async fn open<F, Fut>(&self, name: &str, fill: F) -> Result<Opened>
    where
        F: FnOnce(PathBuf) -> Fut,
        Fut: Future<Output = Result<u64>>,
    {
        if let Some(o) = self.hit(name) {
            return Ok(o);
        }
        let flight = self.state().flights.entry(name.into()).or_default().clone();
        let _one = flight.lock().await;
        if let Some(o) = self.hit(name) {
            return Ok(o);
        }
        let tmp = self.tmp_name();
        let filled = fill(tmp.clone()).await;
        let placed = match filled {
            Ok(size) => self.place(name, &tmp, size),
            Err(e) => Err(e),
        };
        if placed.is_err() {
            remove_any(&tmp);
        }
        self.state().flights.remove(name);
        placed
    }

    /// Takes `from` (a tree or file the caller made, on the same file system) as the copy named
    /// `name`, unless one is here already.
    pub fn adopt(&self, name: &str, from: &Path, size: u64) -> Result<()> {
        if self.state().items.contains_key(name) {
            return Ok(());
        }
        self.place(name, from, size).map(drop)
    }

    fn place(&self, name: &str, from: &Path, size: u64) -> Result<Opened> {
        let dest = self.root.join(name);
        if let Some(dir) = dest.parent() {
            std::fs::create_dir_all(dir).map_err(io("create", dir))?;
        }
        let mut st = self.state();
        std::fs::rename(from, &dest).map_err(io("move into the cache", &dest))?;
        st.clock += 1;
        let pin = Arc::new(());
        let used = st.clock;
        st.items.insert(
            name.into(),
            Item {
                size,
                used,
                pin: pin.clone(),
            },
        );
        let victims = self.over_bound(&mut st);
        drop(st);
        self.remove(victims);
        Ok(Opened {
            path: dest,
            pin: Some(Pin(pin)),
        })
    }

    /// Takes unpinned copies out, least recently used first, until the cache is within bound;
    /// each is renamed aside at once (so its name is free for a new copy) and removed after.
    fn over_bound(&self, st: &mut State) -> Vec<PathBuf> {
        let mut total: u64 = st.items.values().map(|i| i.size).sum();
        let mut victims = vec![];
        while total > self.bound {
            let oldest = st
                .items
                .iter()
                .filter(|(_, i)| Arc::strong_count(&i.pin) == 1)
                .min_by_key(|(_, i)| i.used)
                .map(|(n, _)| n.clone());
            let Some(name) = oldest else { break };
            if let Some(item) = st.items.remove(&name) {
                total -= item.size;
            }
            victims.extend(self.set_aside(&name));
        }
        victims
    }

    fn set_aside(&self, name: &str) -> Option<PathBuf> {
        let aside = self.tmp_name();
        std::fs::rename(self.root.join(name), &aside).ok()?;
        Some(aside)
    }

    fn remove(&self, victims: Vec<PathBuf>) {
        for v in victims {
            remove_any(&v);
        }
        // Weights leave their digest's folder behind; an empty one goes too.
        if let Ok(dirs) = std::fs::read_dir(self.root.join("weights")) {
            for d in dirs.flatten() {
                let _ = std::fs::remove_dir(d.path());
            }
        }
    }

    /// Drops the copy named `name` now, unless it is pinned. Answers whether it is gone.
    pub fn drop_unpinned(&self, name: &str) -> bool {
        let mut st = self.state();
        match st.items.get(name) {
            Some(i) if Arc::strong_count(&i.pin) == 1 => {}
            Some(_) => return false,
            None => return true,
        }
        st.items.remove(name);
        let aside = self.set_aside(name);
        drop(st);
        self.remove(aside.into_iter().collect());
        true
    }

    /// The names of the copies held now.
    pub fn names(&self) -> Vec<String> {
        self.state().items.keys().cloned().collect()
    }

    /// The bytes held now.
    pub fn bytes(&self) -> u64 {
        self.state().items.values().map(|i| i.size).sum()
    }

    fn tmp_name(&self) -> PathBuf {
        let mut t = [0u8; 8];
        rand::thread_rng().fill_bytes(&mut t);
        self.root.join(format!("tmp-{}", hex::encode(t)))
    }
}

/// Removes a file or a folder; links inside are not followed.
fn remove_any(p: &Path) {
    let _ = match std::fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(p),
        Ok(_) => std::fs::remove_file(p),
        Err(_) => Ok(()),
    };
}
