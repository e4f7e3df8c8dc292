//! Release: stored content goes once no version refers to it. One routine for trees and
//! weights; they differ only in what the database is asked and what is removed.
use std::path::PathBuf;

use crate::error::{io, Result};
use crate::{tree, weights, Blobs, Held};

/// Content versions refer to, by the name they store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stored<'a> {
    /// A project tree, by its content digest (a version's `artifact`).
    Artifact(&'a str),
    /// A fine-tune's weights file, by its key `<sha256>/<name>` (a version's `weights`).
    Weights(&'a str),
}

/// What a release did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Released {
    /// Nothing refers to it any more: it is gone (or was already).
    Removed,
    /// A version still refers to it: kept.
    InUse,
}

impl Stored<'_> {
    /// Where it is stored; a name that cannot be stored content touches nothing.
    fn path(self, b: &Blobs) -> Result<PathBuf> {
        match self {
            Stored::Artifact(d) => b.local_tree(d),
            Stored::Weights(k) => b.local_weights(k),
        }
    }

    async fn in_use(self, b: &Blobs) -> Result<bool> {
        Ok(match self {
            Stored::Artifact(d) => b.store.artifact_in_use(d).await?,
            Stored::Weights(k) => b.store.weights_in_use(k).await?,
        })
    }
}

impl Blobs {
    /// Removes `what` if no version refers to it, under the content lock.
    pub async fn release(&self, what: Stored<'_>) -> Result<Released> {
        let held = self.lock().await?;
        self.release_held(&held, what).await
    }

    /// [`Blobs::release`] for a caller that holds the lock already (a push or training whose
    /// version could not be recorded after it placed the content).
    pub async fn release_held(&self, _held: &Held<'_>, what: Stored<'_>) -> Result<Released> {
        let path = what.path(self)?;
        if what.in_use(self).await? {
            return Ok(Released::InUse);
        }
        if self.shared.is_some() {
            return self.release_remote(what).await;
        }
        // The blobs the tree links, as recorded at push: only those can lose their last link.
        let linked = match what {
            Stored::Artifact(d) => self.store.artifact_blobs(d).await?,
            Stored::Weights(_) => vec![],
        };
        let gone = match what {
            // remove_dir_all does not follow links inside the tree it removes.
            Stored::Artifact(_) => tokio::fs::remove_dir_all(&path).await,
            Stored::Weights(_) => tokio::fs::remove_file(&path).await,
        };
        match gone {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(io("remove", &path)(e))
            }
            _ => {}
        }
        match what {
            // Blobs only this tree linked to have one link left, the store's own.
            Stored::Artifact(d) => {
                tree::sweep_blobs(&self.layout.blobs(), linked).await?;
                self.store.forget_artifact(d).await?;
            }
            // Another name may share the digest's folder; an empty folder goes with its file.
            Stored::Weights(k) => {
                if let Some(dir) = path.parent() {
                    let _ = tokio::fs::remove_dir(dir).await;
                }
                self.store.forget_weights(k).await?;
            }
        }
        Ok(Released::Removed)
    }
}

impl Blobs {
    /// [`Blobs::release_held`] in an object store: the database forgets first, so the blobs
    /// another recorded tree still links are known, then the manifest and the blobs no recorded
    /// tree links go. A push racing this one uploads again, under the lock, what it lost.
    async fn release_remote(&self, what: Stored<'_>) -> Result<Released> {
        let Some(sh) = &self.shared else {
            return Ok(Released::InUse);
        };
        match what {
            Stored::Artifact(d) => {
                let mut linked = self.store.artifact_blobs(d).await?;
                if linked.is_empty() {
                    linked = self
                        .manifest_blobs(d)
                        .await?
                        .into_iter()
                        .map(|b| b.0)
                        .collect();
                }
                self.store.forget_artifact(d).await?;
                self.remove_remote_tree(d, &linked).await?;
            }
            Stored::Weights(k) => {
                sh.remote
                    .delete(&weights::weights_key(&sh.remote, k)?)
                    .await?;
                sh.cache.drop_unpinned(&format!("weights/{k}"));
                self.store.forget_weights(k).await?;
            }
        }
        Ok(Released::Removed)
    }
}
