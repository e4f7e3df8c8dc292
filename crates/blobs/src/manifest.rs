//! A tree in an object store is its manifest, `trees/<digest>.json`: each entry's path and what
//! it is (a file by the sha256 of its content, mode and size; a link by its target; a folder),
//! enough to lay the tree out again from `blobs/<sha256>`.
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{io, BlobError, Result};
use crate::TreeFile;

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct Manifest {
    pub entries: Vec<Entry>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct Entry {
    /// Relative to the tree, `/`-separated.
    pub path: String,
    #[serde(flatten)]
    pub kind: Kind,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "type", rename_all = "lowercase")]
pub(crate) enum Kind {
    Dir,
    File { sha: String, mode: u32, size: u64 },
    Link { target: String },
}

impl Manifest {
    /// The tree staged at `root`, its files' content named by `files` (as the push hashed them).
    /// Parents come before their children, so laying it out in order needs no look-ahead.
    pub fn of_tree(root: &Path, files: &[TreeFile]) -> Result<Manifest> {
        use std::os::unix::fs::PermissionsExt;
        let shas: HashMap<&Path, &str> = files
            .iter()
            .map(|f| (f.path.as_path(), f.sha256.as_str()))
            .collect();
        let mut entries = vec![];
        let mut dirs = vec![PathBuf::new()];
        while let Some(rel) = dirs.pop() {
            let dir = root.join(&rel);
            let mut names: Vec<_> = std::fs::read_dir(&dir)
                .map_err(io("list", &dir))?
                .flatten()
                .map(|e| e.file_name())
                .collect();
            names.sort();
            for name in names {
                let rel = rel.join(&name);
                let path = root.join(&rel);
                let m = std::fs::symlink_metadata(&path).map_err(io("read", &path))?;
                let text = rel.to_string_lossy().into_owned();
                let kind = if m.is_dir() {
                    dirs.push(rel.clone());
                    Kind::Dir
                } else if m.is_symlink() {
                    let t = std::fs::read_link(&path).map_err(io("read", &path))?;
                    Kind::Link {
                        target: t.to_string_lossy().into_owned(),
                    }
                } else {
                    // A file the push did not hash (one the predictor wrote while it was
                    // imported, unconfined) is hashed here: the manifest holds the whole tree.
                    let sha = match shas.get(rel.as_path()) {
                        Some(sha) => sha.to_string(),
                        None => hash_file(&path)?,
                    };
                    Kind::File {
                        sha,
                        mode: m.permissions().mode() & 0o777,
                        size: m.len(),
                    }
                };
                entries.push(Entry { path: text, kind });
            }
        }
        Ok(Manifest { entries })
    }

    /// Each file's blob and where its bytes are under `root`, each blob once.
    pub fn sources(&self, root: &Path) -> Vec<(String, PathBuf)> {
        let mut seen = std::collections::HashSet::new();
        self.entries
            .iter()
            .filter_map(|e| match &e.kind {
                Kind::File { sha, .. } if seen.insert(sha.clone()) => {
                    Some((sha.clone(), root.join(&e.path)))
                }
                _ => None,
            })
            .collect()
    }

    pub fn parse(digest: &str, bytes: &[u8]) -> Result<Manifest> {
        serde_json::from_slice(bytes).map_err(|source| BlobError::Manifest {
            digest: digest.to_string(),
            source,
        })
    }

    /// Each blob once, with its size.
    pub fn blobs(&self) -> Vec<(String, i64)> {
        let mut seen = std::collections::BTreeMap::new();
        for e in &self.entries {
            if let Kind::File { sha, size, .. } = &e.kind {
                seen.insert(sha.clone(), *size as i64);
            }
        }
        seen.into_iter().collect()
    }

    pub fn size(&self) -> u64 {
        self.entries
            .iter()
            .map(|e| match e.kind {
                Kind::File { size, .. } => size,
                _ => 0,
            })
            .sum()
    }
}

fn hash_file(path: &Path) -> Result<String> {
    use sha2::{Digest, Sha256};
    let mut f = std::fs::File::open(path).map_err(io("read", path))?;
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h).map_err(io("read", path))?;
    Ok(hex::encode(h.finalize()))
}

/// `rel` as a path under a tree: relative, and never through `..`.
pub(crate) fn safe_rel(rel: &str) -> Option<&Path> {
    let p = Path::new(rel);
    p.components()
        .all(|c| matches!(c, std::path::Component::Normal(_)))
        .then_some(p)
}
