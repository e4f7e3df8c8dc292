//! The one place that names what the data directory holds. Nothing else joins a folder name
//! onto the data directory.
use std::path::{Path, PathBuf};

use crate::error::{BlobError, Result};

/// Where everything lives under the data directory.
#[derive(Clone, Debug)]
pub struct Layout {
    root: PathBuf,
}

impl Layout {
    pub fn new(root: impl Into<PathBuf>) -> Layout {
        Layout { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The embedded SQLite database (when no database URL is given).
    pub fn database(&self) -> PathBuf {
        self.root.join("modelyard.db")
    }

    /// The server's persistent key, from which capability URLs are derived.
    pub fn server_key(&self) -> PathBuf {
        self.root.join("server.key")
    }

    /// The sandbox's own state (its `/etc` files, the wrapper).
    pub fn sandbox(&self) -> PathBuf {
        self.root.join("sandbox")
    }

    /// Pushed project trees, one per content digest: `artifacts/<digest>/`.
    pub fn artifacts(&self) -> PathBuf {
        self.root.join("artifacts")
    }

    /// Files stored once by content, `blobs/<sha256>` (`-x` for executables), hard-linked into
    /// every tree that holds them.
    pub fn blobs(&self) -> PathBuf {
        self.root.join("blobs")
    }

    /// Fine-tunes' weights: `weights/<sha256>/<name>`.
    pub fn weights(&self) -> PathBuf {
        self.root.join("weights")
    }

    /// Pushes' private staging folders (`tmp/push-*`), removed when the push ends.
    pub fn staging(&self) -> PathBuf {
        self.root.join("tmp")
    }

    /// Files jobs returned, `outputs/<job>/<random token>/<name>`: the path is the capability.
    pub fn outputs(&self) -> PathBuf {
        self.root.join("outputs")
    }

    /// The output files of one job.
    pub fn job_outputs(&self, job_id: &str) -> Result<PathBuf> {
        Ok(self.outputs().join(part("job id", job_id)?))
    }

    /// Files uploaded through `/v1/files`: `files/<id>`.
    pub fn files(&self) -> PathBuf {
        self.root.join("files")
    }

    /// A node's local copies of trees and weights kept in an object store: `cache/trees/<digest>/`,
    /// `cache/weights/<sha256>/<name>`, bounded and emptied at start.
    pub fn cache(&self) -> PathBuf {
        self.root.join("cache")
    }

    /// Python environments, one per set of `python_packages`: `envs/<key>/`.
    pub fn envs(&self) -> PathBuf {
        self.root.join("envs")
    }

    /// Running model servers' private folders, emptied at start.
    pub fn work(&self) -> PathBuf {
        self.root.join("work")
    }
}

/// `name` as one path component: not empty, `.` or `..`, and without a separator, so joining it
/// never leaves the folder it is joined to.
pub(crate) fn part<'a>(what: &'static str, name: &'a str) -> Result<&'a str> {
    let ok = !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '\\', '\0']);
    if ok {
        Ok(name)
    } else {
        Err(BlobError::BadName {
            what,
            name: name.into(),
        })
    }
}

/// `name` as a hex sha256.
pub(crate) fn sha256<'a>(what: &'static str, name: &'a str) -> Result<&'a str> {
    if name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(name)
    } else {
        Err(BlobError::BadName {
            what,
            name: name.into(),
        })
    }
}

/// Creates `dir` and its missing parents, readable only by the server's user (0700).
pub fn private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}
