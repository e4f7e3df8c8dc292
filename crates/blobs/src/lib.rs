//! modelyard's data directory, shared by the server and the runner: where everything lives
//! (`layout.rs`), content stored by digest (project trees whose files are hard links to
//! `blobs/<sha256>`, fine-tunes' weights), and its release once no version refers to it.
//!
//! Placing content and recording the version that uses it, and checking that nothing uses it
//! and removing it, each happen under one lock ([`Blobs::lock`]), held by pushes, deletions and
//! trainings alike: a push or training that stores content a deletion is freeing at that moment
//! can never lose its files. The lock lives in this process, so one server process serves a
//! data directory.
//!
//! Callers speak in stored content ("put this tree as digest D", "open the tree D", "release D
//! if unreferenced"), not in paths joined by hand, so the content can later live elsewhere.
#![forbid(unsafe_code)]

mod error;
mod layout;
mod release;
mod staging;
mod tree;
mod weights;

use std::path::PathBuf;
use std::sync::Arc;

use modelyard_storage::Store;
use tokio::sync::{Mutex, MutexGuard};

pub use error::{BlobError, Result};
pub use layout::{private_dir, Layout};
pub use release::{Released, Stored};
pub use tree::TreeFile;
pub use weights::{digest_file, PlacedWeights};

/// The data directory's content, and the lock that guards placing and removing it.
pub struct Blobs {
    layout: Layout,
    store: Arc<dyn Store>,
    lock: Mutex<()>,
}

/// Proof that [`Blobs::lock`] is held: what places or removes content takes one.
pub struct Held<'a> {
    _guard: MutexGuard<'a, ()>,
}

impl Blobs {
    /// The data directory at `root`; `store` says which content versions still use.
    pub fn new(root: impl Into<PathBuf>, store: Arc<dyn Store>) -> Blobs {
        Blobs {
            layout: Layout::new(root),
            store,
            lock: Mutex::new(()),
        }
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// Takes the content lock. Hold it from placing content until the version that uses it is
    /// recorded (or released again), and nothing else: deletions wait on it.
    pub async fn lock(&self) -> Held<'_> {
        Held {
            _guard: self.lock.lock().await,
        }
    }

    /// The stored tree of an artifact digest (it may not exist).
    pub fn tree(&self, digest: &str) -> Result<PathBuf> {
        Ok(self
            .layout
            .artifacts()
            .join(layout::part("artifact", digest)?))
    }

    /// The stored file of a weights key, `<sha256>/<name>` (it may not exist).
    pub fn weights_file(&self, key: &str) -> Result<PathBuf> {
        let (sha, name) = weights::split_key(key)?;
        Ok(self.layout.weights().join(sha).join(name))
    }

    /// Whether an artifact's tree is stored.
    pub fn has_tree(&self, digest: &str) -> Result<bool> {
        Ok(self.tree(digest)?.exists())
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
