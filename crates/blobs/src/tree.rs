//! Project trees stored by content digest, each file a hard link to the blob of its content.
use std::path::{Path, PathBuf};

use crate::error::{io, Result};
use crate::{private_dir, Blobs, Held};

/// A file of a staged tree and the sha256 of its content.
#[derive(Clone, Debug)]
pub struct TreeFile {
    /// Relative to the tree.
    pub path: PathBuf,
    pub sha256: String,
    /// Executables are stored apart (`-x`): a hard link shares the mode too.
    pub executable: bool,
}

impl Blobs {
    /// Stores the tree staged at `staged` as the artifact `digest`, each file shared with every
    /// other tree that holds the same content. `staged` must lie in a private folder of the
    /// caller's ([`Blobs::stage`]); it is moved, not copied. When the digest is stored already,
    /// nothing changes and the answer is `false`.
    pub async fn put_tree(
        &self,
        _held: &Held<'_>,
        digest: &str,
        staged: &Path,
        files: Vec<TreeFile>,
    ) -> Result<bool> {
        let dest = self.tree(digest)?;
        if dest.exists() {
            return Ok(false);
        }
        let artifacts = self.layout().artifacts();
        tokio::fs::create_dir_all(&artifacts)
            .await
            .map_err(io("create", &artifacts))?;
        let (t, blobs) = (staged.to_path_buf(), self.layout().blobs());
        tokio::task::spawn_blocking(move || share_files(&t, &blobs, &files)).await??;
        tokio::fs::rename(staged, &dest)
            .await
            .map_err(io("move a staged tree to", &dest))?;
        Ok(true)
    }
}

impl Blobs {
    /// The blobs a stored tree links (their names under `blobs/`) and their sizes, for
    /// `SizeStore::record_artifact`: `files` as given to [`Blobs::put_tree`], each counted once.
    pub async fn tree_blobs(&self, digest: &str, files: &[TreeFile]) -> Result<Vec<(String, i64)>> {
        let tree = self.tree(digest)?;
        let mut seen = std::collections::BTreeMap::new();
        for f in files {
            let name = blob_name(f);
            if seen.contains_key(&name) {
                continue;
            }
            let path = tree.join(&f.path);
            let meta = tokio::fs::symlink_metadata(&path)
                .await
                .map_err(io("measure", &path))?;
            seen.insert(name, meta.len() as i64);
        }
        Ok(seen.into_iter().collect())
    }

    /// [`Blobs::tree_blobs`] for a tree stored before sizes were recorded: each of its files is
    /// matched to its blob by inode (they are hard links).
    pub async fn scan_tree_blobs(&self, digest: &str) -> Result<Vec<(String, i64)>> {
        let (tree, blobs) = (self.tree(digest)?, self.layout.blobs());
        tokio::task::spawn_blocking(move || scan(&tree, &blobs)).await?
    }
}

fn blob_name(f: &TreeFile) -> String {
    if f.executable {
        format!("{}-x", f.sha256)
    } else {
        f.sha256.clone()
    }
}

fn scan(tree: &Path, blobs: &Path) -> Result<Vec<(String, i64)>> {
    use std::os::unix::fs::MetadataExt;
    let mut by_inode = std::collections::HashMap::new();
    for e in std::fs::read_dir(blobs)
        .map_err(io("list", blobs))?
        .flatten()
    {
        if let (Ok(m), Some(name)) = (e.metadata(), e.file_name().to_str()) {
            by_inode.insert((m.dev(), m.ino()), (name.to_string(), m.len() as i64));
        }
    }
    let mut found = std::collections::BTreeMap::new();
    let mut dirs = vec![tree.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for e in std::fs::read_dir(&dir).map_err(io("list", &dir))?.flatten() {
            // Links are not followed: a tree's files are regular files, its links only names.
            let Ok(m) = std::fs::symlink_metadata(e.path()) else {
                continue;
            };
            if m.is_dir() {
                dirs.push(e.path());
            } else if m.is_file() {
                if let Some((name, size)) = by_inode.get(&(m.dev(), m.ino())) {
                    found.insert(name.clone(), *size);
                }
            }
        }
    }
    Ok(found.into_iter().collect())
}

/// Replaces each file of `tree` with a hard link to the stored blob of its content, storing the
/// blob first when it is new.
fn share_files(tree: &Path, blobs: &Path, files: &[TreeFile]) -> Result<()> {
    private_dir(blobs).map_err(io("create", blobs))?;
    // Outside the tree, so no name of the project's can collide with it.
    let staged = tree.with_file_name("dedupe");
    for f in files {
        let blob = blobs.join(blob_name(f));
        let file = tree.join(&f.path);
        if blob.exists() {
            // Same bytes: this tree's copy goes, the stored one takes its place.
            std::fs::hard_link(&blob, &staged).map_err(io("link", &blob))?;
            std::fs::rename(&staged, &file).map_err(io("replace", &file))?;
        } else {
            std::fs::hard_link(&file, &blob).map_err(io("store", &blob))?;
        }
    }
    Ok(())
}

/// Removes blobs no tree links to any more (their only link is the store's own). Called under
/// the lock, after a tree is removed, with the blobs that tree linked (`candidates`, as
/// recorded at push); a tree stored before they were recorded (none given) has every blob
/// checked, which costs a look at each blob of the data directory.
pub(crate) async fn sweep_blobs(blobs: &Path, candidates: Vec<String>) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let blobs = blobs.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let paths: Vec<PathBuf> = if candidates.is_empty() {
            match std::fs::read_dir(&blobs) {
                Ok(entries) => entries.flatten().map(|e| e.path()).collect(),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
                Err(e) => return Err(io("list", &blobs)(e)),
            }
        } else {
            // Recorded names are blob names; anything else touches nothing.
            candidates
                .iter()
                .filter_map(|c| crate::layout::part("blob", c).ok())
                .map(|c| blobs.join(c))
                .collect()
        };
        for p in paths {
            if std::fs::symlink_metadata(&p).is_ok_and(|m| m.is_file() && m.nlink() == 1) {
                // One blob that stays is logged; the others still go.
                if let Err(err) = std::fs::remove_file(&p) {
                    tracing::warn!(error = %err, blob = %p.display(), "could not remove an unused blob");
                }
            }
        }
        Ok(())
    })
    .await?
}
