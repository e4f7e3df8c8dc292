//! Unpacking an uploaded Cog project safely, and the digest of its content.
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Component, Path, PathBuf};

use sha2::{Digest, Sha256};

/// Why an upload was refused; each says what to fix.
#[derive(Debug)]
pub enum UnpackError {
    Invalid(String),
    TooLarge(String),
}

/// What the tree holds, in a canonical order: the content digest is taken over this.
enum Entry {
    File { sha256: String, executable: bool },
    Dir,
    Link(String),
}

/// Checks a path inside the archive: relative, no `..`, nothing odd.
fn safe_path(p: &Path) -> Result<PathBuf, UnpackError> {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(part) => out.push(part),
            Component::CurDir => {}
            _ => {
                return Err(UnpackError::Invalid(format!(
                    "the upload contains the path {:?}, which leads outside the project; \
                     only relative paths inside the project are accepted",
                    p.display().to_string()
                )))
            }
        }
    }
    Ok(out)
}

/// A symlink may point only at something inside the tree.
fn check_link(at: &Path, target: &Path) -> Result<(), UnpackError> {
    let refuse = || {
        UnpackError::Invalid(format!(
            "the link {:?} points to {:?}, outside the project; links must stay inside it",
            at.display().to_string(),
            target.display().to_string()
        ))
    };
    if target.is_absolute() {
        return Err(refuse());
    }
    let mut depth: i64 = at.components().count() as i64 - 1;
    for c in target.components() {
        match c {
            Component::ParentDir => depth -= 1,
            Component::Normal(_) => depth += 1,
            Component::CurDir => {}
            _ => return Err(refuse()),
        }
        if depth < 0 {
            return Err(refuse());
        }
    }
    Ok(())
}

/// Unpacks a gzip'd tar into `dest`, refusing anything that could escape it, and returns the
/// content digest. At most `max_bytes` are written.
pub fn unpack(archive: &[u8], dest: &Path, max_bytes: u64) -> Result<String, UnpackError> {
    let gz = flate2::read::GzDecoder::new(archive);
    let mut tar = tar::Archive::new(gz);
    let bad = |e: std::io::Error| {
        UnpackError::Invalid(format!(
            "the upload is not a gzip-compressed tar archive: {e}"
        ))
    };
    let mut entries: BTreeMap<PathBuf, Entry> = BTreeMap::new();
    let mut written: u64 = 0;
    for entry in tar.entries().map_err(bad)? {
        let mut entry = entry.map_err(bad)?;
        let raw = entry.path().map_err(bad)?.into_owned();
        let rel = safe_path(&raw)?;
        if rel.as_os_str().is_empty() {
            continue;
        }
        let out = dest.join(&rel);
        let kind = entry.header().entry_type();
        if let Some(parent) = out.parent() {
            // A parent that is a link would let a later file land outside the tree.
            for anc in rel.ancestors().skip(1) {
                if matches!(entries.get(anc), Some(Entry::Link(_))) {
                    return Err(UnpackError::Invalid(format!(
                        "{:?} lies under a link; links to directories are not accepted",
                        rel.display().to_string()
                    )));
                }
            }
            std::fs::create_dir_all(parent).map_err(|e| UnpackError::Invalid(e.to_string()))?;
        }
        if kind.is_dir() {
            std::fs::create_dir_all(&out).map_err(|e| UnpackError::Invalid(e.to_string()))?;
            entries.insert(rel, Entry::Dir);
        } else if kind.is_file() {
            let size = entry.header().size().map_err(bad)?;
            written = written.saturating_add(size);
            if written > max_bytes {
                return Err(UnpackError::TooLarge(format!(
                    "the project unpacks to more than {max_bytes} bytes, the limit of this server"
                )));
            }
            let mut content = Vec::with_capacity(size as usize);
            entry
                .by_ref()
                .take(size)
                .read_to_end(&mut content)
                .map_err(bad)?;
            let executable = entry
                .header()
                .mode()
                .map(|m| m & 0o111 != 0)
                .unwrap_or(false);
            std::fs::write(&out, &content).map_err(|e| UnpackError::Invalid(e.to_string()))?;
            let sha256 = hex::encode(Sha256::digest(&content));
            entries.insert(rel, Entry::File { sha256, executable });
        } else if kind.is_symlink() {
            let target = entry
                .link_name()
                .map_err(bad)?
                .ok_or_else(|| UnpackError::Invalid("a link without a target".into()))?
                .into_owned();
            check_link(&rel, &target)?;
            #[cfg(unix)]
            std::os::unix::fs::symlink(&target, &out)
                .map_err(|e| UnpackError::Invalid(e.to_string()))?;
            entries.insert(rel, Entry::Link(target.to_string_lossy().into_owned()));
        } else {
            return Err(UnpackError::Invalid(format!(
                "{:?} is neither a file, a directory nor a link (hard links and devices are not accepted)",
                rel.display().to_string()
            )));
        }
    }
    let mut h = Sha256::new();
    for (path, e) in &entries {
        h.update(path.to_string_lossy().as_bytes());
        match e {
            Entry::File { sha256, executable } => {
                h.update(if *executable { b"\0x\0" } else { b"\0f\0" });
                h.update(sha256.as_bytes());
            }
            Entry::Dir => h.update(b"\0d\0"),
            Entry::Link(t) => {
                h.update(b"\0l\0");
                h.update(t.as_bytes());
            }
        }
        h.update(b"\n");
    }
    Ok(hex::encode(h.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn archive(build: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        build(&mut b);
        let tar = b.into_inner().unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &tar).unwrap();
        gz.finish().unwrap()
    }

    fn file(b: &mut tar::Builder<Vec<u8>>, path: &str, data: &[u8]) {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        // set_path refuses "..", so write the name bytes directly, as a hostile client would.
        h.as_old_mut().name[..path.len()].copy_from_slice(path.as_bytes());
        h.set_cksum();
        b.append(&h, data).unwrap();
    }

    fn link(b: &mut tar::Builder<Vec<u8>>, path: &str, target: &str) {
        let mut h = tar::Header::new_gnu();
        h.set_size(0);
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_path(path).unwrap();
        h.set_link_name(target).unwrap();
        h.set_cksum();
        b.append(&h, &[][..]).unwrap();
    }

    #[test]
    fn same_content_same_digest_and_different_content_differs() {
        let a = archive(|b| file(b, "cog.yaml", b"predict: p.py:P\n"));
        let d1 = tempfile::tempdir().unwrap();
        let d2 = tempfile::tempdir().unwrap();
        let x = unpack(&a, d1.path(), 1 << 20).unwrap();
        assert_eq!(x, unpack(&a, d2.path(), 1 << 20).unwrap());
        let b = archive(|b| file(b, "cog.yaml", b"predict: q.py:P\n"));
        let d3 = tempfile::tempdir().unwrap();
        assert_ne!(x, unpack(&b, d3.path(), 1 << 20).unwrap());
        assert!(d1.path().join("cog.yaml").is_file());
    }

    #[test]
    fn refuses_traversal_links_out_and_oversize() {
        let d = tempfile::tempdir().unwrap();
        let inner = d.path().join("in");
        std::fs::create_dir(&inner).unwrap();
        let a = archive(|b| file(b, "../escape.txt", b"x"));
        assert!(matches!(
            unpack(&a, &inner, 1 << 20),
            Err(UnpackError::Invalid(_))
        ));
        assert!(!d.path().join("escape.txt").exists());
        for target in ["/etc/passwd", "../../x", "a/../../x"] {
            let a = archive(|b| link(b, "l", target));
            assert!(
                matches!(unpack(&a, &inner, 1 << 20), Err(UnpackError::Invalid(_))),
                "{target}"
            );
        }
        let a = archive(|b| link(b, "sub/l", "../cog.yaml"));
        assert!(unpack(&a, &inner, 1 << 20).is_ok());
        let a = archive(|b| file(b, "big", &[0u8; 2048]));
        assert!(matches!(
            unpack(&a, &inner, 1024),
            Err(UnpackError::TooLarge(_))
        ));
        assert!(matches!(
            unpack(b"not gzip", &inner, 1024),
            Err(UnpackError::Invalid(_))
        ));
    }
}
