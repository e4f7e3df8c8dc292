//! Project trees stored by content digest, each file a hard link to the blob of its content;
//! with an object store, a manifest naming each file's blob, laid out again in a node's cache.
use std::path::{Path, PathBuf};

use futures_util::{StreamExt, TryStreamExt};

use crate::error::{io, BlobError, Result};
use crate::manifest::{safe_rel, Kind, Manifest};
use crate::remote::Remote;
use crate::{layout, private_dir, Blobs, Held, Opened};

/// Blobs moved to or from the object store at once.
const PARALLEL: usize = 4;

/// A file of a staged tree and the sha256 of its content.
#[derive(Clone, Debug)]
pub struct TreeFile {
    /// Relative to the tree.
    pub path: PathBuf,
    pub sha256: String,
    /// Executables are stored apart (`-x`): a hard link shares the mode too.
    pub executable: bool,
}

fn manifest_key(r: &Remote, digest: &str) -> Result<object_store::path::Path> {
    let d = layout::part("artifact", digest)?;
    Ok(r.key(&["trees", &format!("{d}.json")]))
}

fn blob_key(r: &Remote, sha: &str) -> Result<object_store::path::Path> {
    Ok(r.key(&["blobs", layout::sha256("blob", sha)?]))
}

impl Blobs {
    /// The stored tree of an artifact digest as a local folder: the data directory's own, or
    /// this node's copy of it, laid out from its manifest the first time. Hold the answer's
    /// [`Opened::pin`] while the folder is used.
    pub async fn tree(&self, digest: &str) -> Result<Opened> {
        let Some(sh) = &self.shared else {
            return Ok(Opened::local(self.local_tree(digest)?));
        };
        let key = manifest_key(&sh.remote, digest)?;
        let name = format!("trees/{digest}");
        sh.cache
            .open(&name, |tmp| async move {
                let bytes = sh
                    .remote
                    .get_bytes(&key)
                    .await?
                    .ok_or_else(|| BlobError::Missing {
                        what: "tree",
                        name: digest.to_string(),
                    })?;
                let m = Manifest::parse(digest, &bytes)?;
                lay_out(&sh.remote, &m, &tmp).await?;
                Ok(m.size())
            })
            .await
    }

    /// Whether an artifact's tree is stored.
    pub async fn has_tree(&self, digest: &str) -> Result<bool> {
        match &self.shared {
            None => Ok(self.local_tree(digest)?.exists()),
            Some(sh) => sh.remote.exists(&manifest_key(&sh.remote, digest)?).await,
        }
    }

    /// Uploads the blobs of a staged tree the object store lacks, before the lock is taken (a
    /// large project does not hold up other pushes); [`Blobs::put_tree`] checks again under it.
    /// Nothing to do for the data directory.
    pub async fn prepare_tree(&self, staged: &Path, files: &[TreeFile]) -> Result<()> {
        match &self.shared {
            None => Ok(()),
            Some(sh) => {
                let mut seen = std::collections::HashSet::new();
                let sources = files
                    .iter()
                    .filter(|f| seen.insert(&f.sha256))
                    .map(|f| (f.sha256.clone(), staged.join(&f.path)))
                    .collect();
                upload_missing(&sh.remote, sources).await
            }
        }
    }

    /// Stores the tree staged at `staged` as the artifact `digest`, each file shared with every
    /// other tree that holds the same content. `staged` must lie in a private folder of the
    /// caller's ([`Blobs::stage`]); it is moved, not copied. When the digest is stored already,
    /// nothing changes and the answer is `false`.
    ///
    /// With an object store: each blob is checked under the lock and uploaded again when a
    /// release removed it since [`Blobs::prepare_tree`], then the manifest is written; the
    /// staged tree becomes this node's copy.
    pub async fn put_tree(
        &self,
        _held: &Held<'_>,
        digest: &str,
        staged: &Path,
        files: Vec<TreeFile>,
    ) -> Result<bool> {
        if let Some(sh) = &self.shared {
            let key = manifest_key(&sh.remote, digest)?;
            if sh.remote.exists(&key).await? {
                return Ok(false);
            }
            let root = staged.to_path_buf();
            let m = tokio::task::spawn_blocking(move || Manifest::of_tree(&root, &files)).await??;
            upload_missing(&sh.remote, m.sources(staged)).await?;
            let json = serde_json::to_vec(&m).map_err(|source| BlobError::Manifest {
                digest: digest.to_string(),
                source,
            })?;
            sh.remote.put_bytes(&key, json).await?;
            // A copy this node would otherwise download again; failing to keep it costs nothing.
            let _ = sh.cache.adopt(&format!("trees/{digest}"), staged, m.size());
            return Ok(true);
        }
        let dest = self.local_tree(digest)?;
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
        if self.shared.is_some() {
            return self.manifest_blobs(digest).await;
        }
        let tree = self.local_tree(digest)?;
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
        if self.shared.is_some() {
            return self.manifest_blobs(digest).await;
        }
        let (tree, blobs) = (self.local_tree(digest)?, self.layout.blobs());
        tokio::task::spawn_blocking(move || scan(&tree, &blobs)).await?
    }

    /// The blobs a tree's manifest names (in an object store, a blob is named by its sha256
    /// alone: the mode is the manifest's). Empty when there is no manifest.
    pub(crate) async fn manifest_blobs(&self, digest: &str) -> Result<Vec<(String, i64)>> {
        let Some(sh) = &self.shared else {
            return Ok(vec![]);
        };
        match sh
            .remote
            .get_bytes(&manifest_key(&sh.remote, digest)?)
            .await?
        {
            Some(b) => Ok(Manifest::parse(digest, &b)?.blobs()),
            None => Ok(vec![]),
        }
    }

    /// Removes a tree's manifest, and the blobs among `candidates` no recorded tree links any
    /// more. Under the lock, after the database forgot the tree.
    pub(crate) async fn remove_remote_tree(
        &self,
        digest: &str,
        candidates: &[String],
    ) -> Result<()> {
        let Some(sh) = &self.shared else {
            return Ok(());
        };
        sh.remote.delete(&manifest_key(&sh.remote, digest)?).await?;
        for b in candidates {
            if !self.store.blob_in_use(b).await? {
                sh.remote.delete(&blob_key(&sh.remote, b)?).await?;
            }
        }
        sh.cache.drop_unpinned(&format!("trees/{digest}"));
        Ok(())
    }
}

/// Uploads each blob (its sha256, where its bytes are) the store lacks.
async fn upload_missing(r: &Remote, sources: Vec<(String, PathBuf)>) -> Result<()> {
    let todo: Vec<_> = sources
        .iter()
        .map(|(sha, path)| upload_one(r, sha, path))
        .collect();
    futures_util::stream::iter(todo)
        .buffer_unordered(PARALLEL)
        .try_collect::<()>()
        .await
}

async fn upload_one(r: &Remote, sha: &str, path: &Path) -> Result<()> {
    let key = blob_key(r, sha)?;
    if !r.exists(&key).await? {
        r.put_file(&key, path).await?;
    }
    Ok(())
}

fn bad_path(p: &str) -> BlobError {
    BlobError::BadName {
        what: "manifest path",
        name: p.to_string(),
    }
}

/// Lays the tree of `m` out at `dest` (new): folders, then files from their blobs, then links.
async fn lay_out(r: &Remote, m: &Manifest, dest: &Path) -> Result<()> {
    tokio::fs::create_dir(dest)
        .await
        .map_err(io("create", dest))?;
    for e in &m.entries {
        if let Kind::Dir = e.kind {
            let p = dest.join(safe_rel(&e.path).ok_or_else(|| bad_path(&e.path))?);
            tokio::fs::create_dir(&p).await.map_err(io("create", &p))?;
        }
    }
    let downloads: Vec<_> = m.entries.iter().map(|e| download_one(r, dest, e)).collect();
    futures_util::stream::iter(downloads)
        .buffer_unordered(PARALLEL)
        .try_collect::<()>()
        .await?;
    for e in &m.entries {
        if let Kind::Link { target } = &e.kind {
            let p = dest.join(safe_rel(&e.path).ok_or_else(|| bad_path(&e.path))?);
            tokio::fs::symlink(target, &p)
                .await
                .map_err(io("link", &p))?;
        }
    }
    Ok(())
}

async fn download_one(r: &Remote, dest: &Path, e: &crate::manifest::Entry) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let Kind::File { sha, mode, .. } = &e.kind else {
        return Ok(());
    };
    let p = dest.join(safe_rel(&e.path).ok_or_else(|| bad_path(&e.path))?);
    if !r.get_to_file(&blob_key(r, sha)?, &p).await? {
        return Err(BlobError::Missing {
            what: "blob",
            name: sha.clone(),
        });
    }
    let perm = std::fs::Permissions::from_mode(mode & 0o755);
    tokio::fs::set_permissions(&p, perm)
        .await
        .map_err(io("set the mode of", &p))
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
