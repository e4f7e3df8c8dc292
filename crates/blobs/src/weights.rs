//! Fine-tunes' weights, stored by content: `weights/<sha256>/<name>`.
use std::path::Path;

use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::error::{io, BlobError, Result};
use crate::layout::{part, sha256};
use crate::remote::Remote;
use crate::{Blobs, Held, Opened};

/// Weights placed by [`Blobs::put_weights`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlacedWeights {
    /// What a version stores as its `weights`: `<sha256>/<name>`.
    pub key: String,
    /// Whether this put stored them (`false`: the same content was stored under that name).
    pub new: bool,
}

/// `<sha256>/<name>` checked and split.
pub(crate) fn split_key(key: &str) -> Result<(&str, &str)> {
    let (sha, name) = key.split_once('/').unwrap_or((key, ""));
    Ok((sha256("weights digest", sha)?, part("weights name", name)?))
}

/// The hex sha256 of a file, read in chunks: weights can be gigabytes. Needs no lock, so a
/// training hashes before it takes one.
pub async fn digest_file(path: &Path) -> Result<String> {
    use tokio::io::AsyncReadExt;
    let read = io("read", path);
    let mut f = match tokio::fs::File::open(path).await {
        Ok(f) => f,
        Err(e) => return Err(read(e)),
    };
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        match f.read(&mut buf).await {
            Ok(0) => return Ok(hex::encode(h.finalize())),
            Ok(n) => h.update(&buf[..n]),
            Err(e) => return Err(read(e)),
        }
    }
}

pub(crate) fn weights_key(r: &Remote, key: &str) -> Result<object_store::path::Path> {
    let (sha, name) = split_key(key)?;
    Ok(r.key(&["weights", sha, name]))
}

impl Blobs {
    /// The stored weights of a key (`<sha256>/<name>`) as a local file: the data directory's
    /// own, or this node's copy, downloaded the first time. Hold the answer's [`Opened::pin`]
    /// while the file is used.
    pub async fn weights(&self, key: &str) -> Result<Opened> {
        let Some(sh) = &self.shared else {
            return Ok(Opened::local(self.local_weights(key)?));
        };
        let remote_key = weights_key(&sh.remote, key)?;
        sh.cache
            .open(&format!("weights/{key}"), |tmp| async move {
                if !sh.remote.get_to_file(&remote_key, &tmp).await? {
                    return Err(BlobError::Missing {
                        what: "weights",
                        name: key.to_string(),
                    });
                }
                let m = tokio::fs::metadata(&tmp).await.map_err(io("read", &tmp))?;
                Ok(m.len())
            })
            .await
    }

    /// The size of stored weights.
    pub async fn weights_size(&self, key: &str) -> Result<u64> {
        let opened = self.weights(key).await?;
        let p = opened.path();
        Ok(tokio::fs::metadata(p).await.map_err(io("read", p))?.len())
    }

    /// Uploads weights the object store lacks before the lock is taken, so gigabytes going up
    /// do not hold up every push and deletion of the cluster; [`Blobs::put_weights`] checks
    /// again under the lock. Answers whether it uploaded them (then a training whose version
    /// cannot be recorded releases them). Nothing to do for the data directory.
    pub async fn prepare_weights(&self, file: &Path, sha: &str, name: &str) -> Result<bool> {
        let Some(sh) = &self.shared else {
            return Ok(false);
        };
        let key = format!(
            "{}/{}",
            sha256("weights digest", sha)?,
            part("weights name", name)?
        );
        let k = weights_key(&sh.remote, &key)?;
        if sh.remote.exists(&k).await? {
            return Ok(false);
        }
        sh.remote.put_file(&k, file).await?;
        Ok(true)
    }

    /// Stores the file at `file`, whose content is `sha` ([`digest_file`]), as weights named
    /// `name`: a hard link when the data directory is one file system (no bytes move), else a
    /// copy done by the kernel. They appear under their name only whole (a temporary name, then
    /// a rename); stored already, they are kept as they are.
    pub async fn put_weights(
        &self,
        _held: &Held<'_>,
        file: &Path,
        sha: &str,
        name: &str,
    ) -> Result<PlacedWeights> {
        let key = format!(
            "{}/{}",
            sha256("weights digest", sha)?,
            part("weights name", name)?
        );
        if let Some(sh) = &self.shared {
            // Under the lock a release cannot remove them before the version that records them;
            // one that did since [`Blobs::prepare_weights`] is undone here.
            let k = weights_key(&sh.remote, &key)?;
            if sh.remote.exists(&k).await? {
                return Ok(PlacedWeights { key, new: false });
            }
            sh.remote.put_file(&k, file).await?;
            return Ok(PlacedWeights { key, new: true });
        }
        let dest = self.local_weights(&key)?;
        let new = place(file, &dest)
            .await
            .map_err(io("store weights at", &dest))?;
        Ok(PlacedWeights { key, new })
    }
}

async fn place(file: &Path, dest: &Path) -> std::io::Result<bool> {
    if tokio::fs::try_exists(dest).await? {
        return Ok(false);
    }
    let dir = dest.parent().unwrap_or(dest);
    tokio::fs::create_dir_all(dir).await?;
    let mut t = [0u8; 8];
    rand::thread_rng().fill_bytes(&mut t);
    let tmp = dir.join(format!(".{}.part", hex::encode(t)));
    let placed = match tokio::fs::hard_link(file, &tmp).await {
        Ok(()) => Ok(()),
        Err(_) => tokio::fs::copy(file, &tmp).await.map(|_| ()),
    };
    let placed = match placed {
        Ok(()) => tokio::fs::rename(&tmp, dest).await,
        Err(e) => Err(e),
    };
    if placed.is_err() {
        let _ = tokio::fs::remove_file(&tmp).await;
    }
    placed.map(|()| true)
}
