//! modelyard's data directory, shared by the server and the runner: where everything lives
//! (`layout.rs`), content stored by digest (project trees whose files are hard links to
//! `blobs/<sha256>`, fine-tunes' weights), and its release once no version refers to it.
//!
//! With an object store (`--blob-store s3://bucket/prefix`, `remote.rs`) the bytes live in the
//! bucket instead (`blobs/<sha256>`, a manifest per tree, weights, outputs, uploads), shared by
//! every node of a cluster; a node opens trees and weights through its local cache
//! (`cache.rs`).
//!
//! Placing content and recording the version that uses it, and checking that nothing uses it
//! and removing it, each happen under one lock ([`Blobs::lock`]), held by pushes, deletions and
//! trainings alike: a push or training that stores content a deletion is freeing at that moment
//! can never lose its files. The lock is a mutex in this process and, with an object store,
//! also the database's content lock (`ContentLockStore`), which every node shares.
//!
//! Callers speak in stored content ("put this tree as digest D", "open the tree D", "release D
//! if unreferenced"), not in paths joined by hand, so the content can live elsewhere.
#![forbid(unsafe_code)]

mod cache;
mod error;
mod files;
mod layout;
mod manifest;
mod release;
mod remote;
mod staging;
mod sweep;
mod tree;
mod weights;

use std::path::PathBuf;
use std::sync::Arc;

use modelyard_storage::{ContentLock, Store};
use tokio::sync::{Mutex, MutexGuard};

pub use cache::{Opened, Pin};
pub use error::{BlobError, Result};
pub use files::{Content, LocalCopy};
pub use layout::{private_dir, Layout};
pub use release::{Released, Stored};
pub use tree::TreeFile;
pub use weights::{digest_file, PlacedWeights};

/// The data directory's content, and the lock that guards placing and removing it.
pub struct Blobs {
    layout: Layout,
    store: Arc<dyn Store>,
    lock: Mutex<()>,
    /// The object store the bytes live in, and this node's copies; `None`: the data directory.
    shared: Option<Shared>,
}

struct Shared {
    remote: remote::Remote,
    cache: cache::Cache,
}

/// Proof that [`Blobs::lock`] is held: what places or removes content takes one.
pub struct Held<'a> {
    _guard: MutexGuard<'a, ()>,
    _cluster: Option<ContentLock>,
}

impl Blobs {
    /// The data directory at `root`; `store` says which content versions still use.
    pub fn new(root: impl Into<PathBuf>, store: Arc<dyn Store>) -> Blobs {
        Blobs {
            layout: Layout::new(root),
            store,
            lock: Mutex::new(()),
            shared: None,
        }
    }

    /// The bytes in the object store at `url` (`s3://bucket/prefix`), this node's copies of
    /// trees and weights under the data directory at `root`, at most `cache_bytes` of them
    /// unused.
    pub fn with_object_store(
        root: impl Into<PathBuf>,
        store: Arc<dyn Store>,
        url: &str,
        cache_bytes: u64,
    ) -> Result<Blobs> {
        let layout = Layout::new(root);
        let shared = Shared {
            remote: remote::Remote::from_url(url)?,
            cache: cache::Cache::new(layout.cache(), cache_bytes)?,
        };
        Ok(Blobs {
            layout,
            store,
            lock: Mutex::new(()),
            shared: Some(shared),
        })
    }

    /// Whether the bytes live in an object store.
    pub fn is_shared(&self) -> bool {
        self.shared.is_some()
    }

    /// Every key in the object store under this platform's prefix (none without one): what a
    /// deletion left can be checked.
    pub async fn stored_keys(&self) -> Result<Vec<String>> {
        match &self.shared {
            None => Ok(vec![]),
            Some(sh) => sh.remote.list(&sh.remote.key(&[])).await,
        }
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// Takes the content lock. Hold it from placing content until the version that uses it is
    /// recorded (or released again), and nothing else: deletions wait on it. With an object
    /// store every node shares it (the database's content lock), taken after this process's
    /// own so a node holds at most one connection for it.
    pub async fn lock(&self) -> Result<Held<'_>> {
        let guard = self.lock.lock().await;
        let cluster = match self.shared {
            Some(_) => Some(self.store.content_lock().await?),
            None => None,
        };
        Ok(Held {
            _guard: guard,
            _cluster: cluster,
        })
    }

    /// The data directory's own tree of a digest (it may not exist).
    fn local_tree(&self, digest: &str) -> Result<PathBuf> {
        Ok(self
            .layout
            .artifacts()
            .join(layout::part("artifact", digest)?))
    }

    /// The data directory's own file of a weights key, `<sha256>/<name>` (it may not exist).
    fn local_weights(&self, key: &str) -> Result<PathBuf> {
        let (sha, name) = weights::split_key(key)?;
        Ok(self.layout.weights().join(sha).join(name))
    }
}

impl Blobs {
    /// Makes the folders the runner writes to and empties `work/`: servers of an earlier run of
    /// this data directory are gone, and so are their folders.
    pub fn prepare_runner(&self) -> Result<()> {
        let l = &self.layout;
        for d in [l.work(), l.envs(), l.outputs(), l.weights()] {
            std::fs::create_dir_all(&d).map_err(error::io("create", &d))?;
        }
        let work = l.work();
        if let Ok(entries) = std::fs::read_dir(&work) {
            for e in entries.flatten() {
                let p = e.path();
                let _ = if p.is_dir() {
                    std::fs::remove_dir_all(&p)
                } else {
                    std::fs::remove_file(&p)
                };
            }
        }
        Ok(())
    }
}
