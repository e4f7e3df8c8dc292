//! Unpacking an uploaded Cog project safely, and the digest of its content.
//!
//! The archive is hostile input. The defences, each against a class of attack:
//! - the tar stream is read *raw*: extension headers (GNU long names and links, PAX) are
//!   interpreted here, after their size is checked, so no header is read whole into memory;
//! - every name and link target is capped, and so is the number of entries;
//! - nothing is ever written through a link: links are only recorded while the archive is laid
//!   out, every directory is created here (never through an existing path), every file is
//!   created new (`O_CREAT|O_EXCL`, which does not follow a link), and a path that appears twice
//!   or lies under a file or a link is refused;
//! - once the whole archive is laid out, each link is resolved against the tree being built,
//!   following chains of links, and one whose target leaves the tree is refused; only then are
//!   links created, and the tree on disk is checked again.
//!
//! `dest` must be a private, empty staging directory: nothing outside it is touched.
use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use sha2::{Digest, Sha256};

/// The longest path or link target accepted (Linux's `PATH_MAX`).
pub const MAX_NAME: usize = 4096;
/// The largest PAX extension header accepted; real ones hold a few names and times.
pub const MAX_PAX: u64 = 64 * 1024;
/// The most entries (files, directories, links) a project may have.
pub const MAX_ENTRIES: usize = 20_000;
/// How many links may be followed to resolve one link (Linux's limit).
const MAX_HOPS: u32 = 40;

/// Why an upload was refused; each says what to fix.
#[derive(Debug)]
pub enum UnpackError {
    Invalid(String),
    TooLarge(String),
}

fn invalid(m: impl Into<String>) -> UnpackError {
    UnpackError::Invalid(m.into())
}

fn io_err(e: std::io::Error) -> UnpackError {
    invalid(format!("the project could not be unpacked: {e}"))
}

/// What the tree holds; the content digest is taken over it in path order.
enum Node {
    /// `explicit`: named by an entry of its own (implied directories do not count in the
    /// digest, so a project's digest does not depend on how its archive lists directories).
    Dir {
        explicit: bool,
    },
    File {
        sha256: String,
        executable: bool,
    },
    Link(PathBuf),
}

fn shown(p: &Path) -> String {
    format!("{:?}", p.display().to_string())
}

/// Checks a path inside the archive: relative, no `..`, nothing odd.
fn safe_path(p: &Path) -> Result<PathBuf, UnpackError> {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(part) => out.push(part),
            Component::CurDir => {}
            _ => {
                return Err(invalid(format!(
                    "the upload contains the path {}, which leads outside the project; \
                     only relative paths inside the project are accepted",
                    shown(p)
                )))
            }
        }
    }
    Ok(out)
}

/// Where a link at `at` leads, resolved against `nodes` and following every link on the way,
/// as the kernel would. `Err` when it leaves the tree (or loops).
fn resolve(
    nodes: &BTreeMap<PathBuf, Node>,
    base: PathBuf,
    target: &Path,
    hops: &mut u32,
) -> Result<PathBuf, ()> {
    let mut cur = base;
    for c in target.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                if !cur.pop() {
                    return Err(());
                }
            }
            Component::Normal(part) => {
                cur.push(part);
                if let Some(Node::Link(next)) = nodes.get(&cur) {
                    *hops += 1;
                    if *hops > MAX_HOPS {
                        return Err(());
                    }
                    let mut parent = cur.clone();
                    parent.pop();
                    cur = resolve(nodes, parent, next, hops)?;
                }
            }
            Component::RootDir | Component::Prefix(_) => return Err(()),
        }
    }
    Ok(cur)
}

/// What an entry is called, once extension headers have had their say.
#[derive(Default)]
struct Pending {
    path: Option<Vec<u8>>,
    link: Option<Vec<u8>>,
    /// An extension header was seen: a real entry must follow.
    any: bool,
}

/// Reads an extension header's body, refusing one larger than `cap` before reading it.
fn read_capped(
    entry: &mut impl Read,
    size: u64,
    cap: u64,
    what: &str,
) -> Result<Vec<u8>, UnpackError> {
    if size > cap {
        return Err(UnpackError::TooLarge(format!(
            "upload has a {what} of {size} bytes; at most {cap} are accepted"
        )));
    }
    let mut buf = Vec::with_capacity(size as usize);
    entry
        .by_ref()
        .take(cap)
        .read_to_end(&mut buf)
        .map_err(io_err)?;
    Ok(buf)
}

fn strip_nul(mut v: Vec<u8>) -> Vec<u8> {
    while v.last() == Some(&0) {
        v.pop();
    }
    v
}

fn checked_name(bytes: &[u8], what: &str) -> Result<PathBuf, UnpackError> {
    if bytes.len() > MAX_NAME {
        return Err(invalid(format!(
            "the upload has a {what} of {} bytes; at most {MAX_NAME} are accepted",
            bytes.len()
        )));
    }
    if bytes.is_empty() || bytes.contains(&0) {
        return Err(invalid(format!(
            "the upload has an empty or malformed {what}"
        )));
    }
    Ok(PathBuf::from(OsStr::from_bytes(bytes)))
}

/// The tree being laid out under `dest`.
struct Layout<'a> {
    dest: &'a Path,
    nodes: BTreeMap<PathBuf, Node>,
}

impl Layout<'_> {
    /// Creates the directories above `rel` (never through a file or a link) and refuses a path
    /// that is already taken.
    fn claim(&mut self, rel: &Path, dir: bool) -> Result<(), UnpackError> {
        let ancestors: Vec<PathBuf> = rel
            .ancestors()
            .skip(1)
            .filter(|a| !a.as_os_str().is_empty())
            .map(Path::to_path_buf)
            .collect();
        for anc in ancestors.into_iter().rev() {
            match self.nodes.get(&anc) {
                Some(Node::Dir { .. }) => {}
                Some(_) => {
                    return Err(invalid(format!(
                        "{} lies under {}, which is a file or a link; links to directories are \
                         not followed",
                        shown(rel),
                        shown(&anc)
                    )))
                }
                None => {
                    std::fs::create_dir(self.dest.join(&anc)).map_err(io_err)?;
                    self.nodes.insert(anc, Node::Dir { explicit: false });
                }
            }
        }
        match self.nodes.get_mut(rel) {
            None => Ok(()),
            // A directory named again (often after its contents) is the same directory.
            Some(Node::Dir { explicit }) if dir => {
                *explicit = true;
                Ok(())
            }
            Some(_) => Err(invalid(format!(
                "{} appears twice in the upload; every path must appear once",
                shown(rel)
            ))),
        }
    }
}

/// Unpacks a gzip'd tar into `dest` (a private, empty staging directory), refusing anything
/// that could escape it, and returns the content digest. At most `max_bytes` of file content
/// are written.
#[cfg(test)]
pub fn unpack(archive: impl Read, dest: &Path, max_bytes: u64) -> Result<String, UnpackError> {
    unpack_files(archive, dest, max_bytes).map(|u| u.digest)
}

/// What an accepted archive holds: its content digest, and each file's content hash.
pub struct Unpacked {
    pub digest: String,
    /// (path in the tree, sha256 of its content, executable).
    pub files: Vec<(PathBuf, String, bool)>,
}

/// [`unpack`], telling also each file's content hash (taken while it was written).
pub fn unpack_files(
    archive: impl Read,
    dest: &Path,
    max_bytes: u64,
) -> Result<Unpacked, UnpackError> {
    let gz = flate2::read::GzDecoder::new(archive);
    let mut tar = tar::Archive::new(gz);
    let bad = |e: std::io::Error| {
        invalid(format!(
            "the upload is not a gzip-compressed tar archive: {e}"
        ))
    };
    let mut layout = Layout {
        dest,
        nodes: BTreeMap::new(),
    };
    let mut written: u64 = 0;
    let mut count = 0usize;
    let mut pending = Pending::default();
    for entry in tar.entries().map_err(bad)?.raw(true) {
        let mut entry = entry.map_err(bad)?;
        let kind = entry.header().entry_type();
        let size = entry.header().entry_size().map_err(bad)?;
        let twice = || invalid("the upload names one entry twice with extension headers");
        if kind.is_gnu_longname() {
            if pending.path.is_some() {
                return Err(twice());
            }
            let v = read_capped(&mut entry, size, MAX_NAME as u64 + 1, "long name")?;
            pending.path = Some(strip_nul(v));
            pending.any = true;
            continue;
        }
        if kind.is_gnu_longlink() {
            if pending.link.is_some() {
                return Err(twice());
            }
            let v = read_capped(&mut entry, size, MAX_NAME as u64 + 1, "long link name")?;
            pending.link = Some(strip_nul(v));
            pending.any = true;
            continue;
        }
        if kind.is_pax_local_extensions() || kind.is_pax_global_extensions() {
            let v = read_capped(&mut entry, size, MAX_PAX, "PAX extension header")?;
            // Global headers (`git archive` writes one with the commit) change nothing here.
            if kind.is_pax_local_extensions() {
                for ext in tar::PaxExtensions::new(&v) {
                    let ext = ext.map_err(bad)?;
                    match ext.key_bytes() {
                        b"path" => pending.path = Some(ext.value_bytes().to_vec()),
                        b"linkpath" => pending.link = Some(ext.value_bytes().to_vec()),
                        // Other readers would take the entry's size from here, and see a
                        // different archive than this one does.
                        b"size" => return Err(invalid("the upload sets an entry's size in a PAX header, which is not accepted")),
                        _ => {}
                    }
                }
                pending.any = true;
            }
            continue;
        }
        let names = std::mem::take(&mut pending);
        count += 1;
        if count > MAX_ENTRIES {
            return Err(UnpackError::TooLarge(format!(
                "upload has more than {MAX_ENTRIES} entries, the limit of this server"
            )));
        }
        let raw = match names.path {
            Some(p) => p,
            None => entry.header().path_bytes().into_owned(),
        };
        let raw = checked_name(&raw, "path")?;
        let rel = safe_path(&raw)?;
        if !kind.is_file() && size != 0 {
            // Only files have content; anything else with a size is data read for nothing.
            return Err(invalid(format!(
                "{} is not a file but carries {size} bytes",
                shown(&raw)
            )));
        }
        if rel.as_os_str().is_empty() {
            if kind.is_dir() {
                continue;
            }
            return Err(invalid(
                "the upload has an entry that is the project itself",
            ));
        }
        if kind.is_dir() {
            layout.claim(&rel, true)?;
            if let std::collections::btree_map::Entry::Vacant(slot) = layout.nodes.entry(rel) {
                std::fs::create_dir(dest.join(slot.key())).map_err(io_err)?;
                slot.insert(Node::Dir { explicit: true });
            }
        } else if kind.is_file() {
            written = written.saturating_add(size);
            if written > max_bytes {
                return Err(UnpackError::TooLarge(format!(
                    "project unpacks to more than {max_bytes} bytes, the limit of this server"
                )));
            }
            layout.claim(&rel, false)?;
            let executable = entry
                .header()
                .mode()
                .map(|m| m & 0o111 != 0)
                .unwrap_or(false);
            // create_new: O_CREAT|O_EXCL, which never follows a link at the last component.
            let mut out = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(dest.join(&rel))
                .map_err(io_err)?;
            let mut h = Sha256::new();
            let mut buf = vec![0u8; 64 * 1024];
            let mut body = (&mut entry).take(size);
            loop {
                let n = body.read(&mut buf).map_err(bad)?;
                if n == 0 {
                    break;
                }
                h.update(&buf[..n]);
                out.write_all(&buf[..n]).map_err(io_err)?;
            }
            let sha256 = hex::encode(h.finalize());
            layout.nodes.insert(rel, Node::File { sha256, executable });
        } else if kind.is_symlink() {
            let target = match names.link {
                Some(l) => l,
                None => entry
                    .header()
                    .link_name_bytes()
                    .map(|l| l.into_owned())
                    .unwrap_or_default(),
            };
            let target = checked_name(&target, "link target")?;
            layout.claim(&rel, false)?;
            // Recorded only: links are created once the whole tree is checked.
            layout.nodes.insert(rel, Node::Link(target));
        } else {
            return Err(invalid(format!(
                "{} is neither a file, a directory nor a link (hard links, devices and sparse \
                 files are not accepted)",
                shown(&rel)
            )));
        }
    }
    if pending.any {
        return Err(invalid(
            "the upload ends with an extension header that describes no entry",
        ));
    }
    create_links(&layout)?;
    check_links_on_disk(dest)?;
    let files = layout
        .nodes
        .iter()
        .filter_map(|(p, n)| match n {
            Node::File { sha256, executable } => Some((p.clone(), sha256.clone(), *executable)),
            _ => None,
        })
        .collect();
    Ok(Unpacked {
        digest: digest(&layout.nodes),
        files,
    })
}

/// Resolves every link against the complete tree, then creates them.
fn create_links(layout: &Layout) -> Result<(), UnpackError> {
    for (at, node) in &layout.nodes {
        let Node::Link(target) = node else { continue };
        let mut parent = at.clone();
        parent.pop();
        let mut hops = 0;
        if resolve(&layout.nodes, parent, target, &mut hops).is_err() {
            return Err(invalid(format!(
                "the link {} points to {}, which leads outside the project (or loops); links \
                 must stay inside it",
                shown(at),
                shown(target)
            )));
        }
    }
    for (at, node) in &layout.nodes {
        if let Node::Link(target) = node {
            // symlink(2) never follows anything at `at`: it fails if the name exists.
            std::os::unix::fs::symlink(target, layout.dest.join(at)).map_err(io_err)?;
        }
    }
    Ok(())
}

/// Checks a laid-out tree on disk: every link that resolves must resolve inside `root`, and
/// nothing but files, directories and links is there. Run after unpacking, and again before a
/// tree is stored, since the predictor's code ran in it meanwhile.
pub fn check_links_on_disk(root: &Path) -> Result<(), UnpackError> {
    let canon_root = std::fs::canonicalize(root).map_err(io_err)?;
    let mut stack = vec![root.to_path_buf()];
    let mut seen = 0usize;
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).map_err(io_err)? {
            let e = e.map_err(io_err)?;
            seen += 1;
            if seen > MAX_ENTRIES * 2 {
                return Err(UnpackError::TooLarge(format!(
                    "project holds more than {} entries",
                    MAX_ENTRIES * 2
                )));
            }
            let ft = e.file_type().map_err(io_err)?;
            let path = e.path();
            if ft.is_dir() {
                stack.push(path);
            } else if ft.is_symlink() {
                // A dangling link leads nowhere; one that resolves must stay inside.
                if let Ok(real) = std::fs::canonicalize(&path) {
                    if !real.starts_with(&canon_root) {
                        let rel = path.strip_prefix(root).unwrap_or(&path);
                        return Err(invalid(format!(
                            "the link {} leads outside the project; links must stay inside it",
                            shown(rel)
                        )));
                    }
                }
            } else if !ft.is_file() {
                let rel = path.strip_prefix(root).unwrap_or(&path);
                return Err(invalid(format!(
                    "{} is neither a file, a directory nor a link",
                    shown(rel)
                )));
            }
        }
    }
    Ok(())
}

fn digest(nodes: &BTreeMap<PathBuf, Node>) -> String {
    let mut h = Sha256::new();
    for (path, n) in nodes {
        let tag: &[u8] = match n {
            Node::Dir { explicit: false } => continue,
            Node::Dir { explicit: true } => b"\0d\0",
            Node::File { executable, .. } if *executable => b"\0x\0",
            Node::File { .. } => b"\0f\0",
            Node::Link(_) => b"\0l\0",
        };
        h.update(path.to_string_lossy().as_bytes());
        h.update(tag);
        match n {
            Node::File { sha256, .. } => h.update(sha256.as_bytes()),
            Node::Link(t) => h.update(t.to_string_lossy().as_bytes()),
            Node::Dir { .. } => {}
        }
        h.update(b"\n");
    }
    hex::encode(h.finalize())
}

#[cfg(test)]
mod tests;
