//! Packing a Cog project directory for `POST /v1/models/{owner}/{name}/versions`.
use std::fs;
use std::io;
use std::path::Path;

use flate2::write::GzEncoder;
use flate2::Compression;
use tar::{Builder, HeaderMode};

/// Names left out at any depth: version control, Python's caches and Cog's build output.
pub const SKIPPED: &[&str] = &[".git", "__pycache__", ".cog"];

/// Packs `dir` as a gzip'd tar of relative paths, in a stable order with stable metadata, so
/// the same content packs the same way. Symlinks stay symlinks (the server judges where they
/// point); `.git`, `__pycache__` and `.cog` are left out; sockets and devices are skipped.
pub fn pack_dir(dir: &Path) -> io::Result<Vec<u8>> {
    pack_into(dir, Vec::new(), |_| {})
}

/// Packs `dir` into `out` as it goes (nothing the size of the project is held), calling
/// `progress` with the number of bytes of the tar stream made so far. Compression is gzip's
/// fastest level: weights hardly compress, and the version's identity is its unpacked content.
pub fn pack_into<W: io::Write>(dir: &Path, out: W, progress: impl FnMut(u64)) -> io::Result<W> {
    let meta = fs::metadata(dir)?;
    if !meta.is_dir() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "it is not a directory",
        ));
    }
    let counted = Counting {
        inner: GzEncoder::new(out, Compression::fast()),
        n: 0,
        progress,
    };
    let mut builder = Builder::new(counted);
    builder.mode(HeaderMode::Deterministic);
    builder.follow_symlinks(false);
    add_dir(&mut builder, dir, Path::new(""))?;
    builder.into_inner()?.inner.finish()
}

/// About how many bytes the tar stream of `dir` has: the files' sizes and a header each.
pub fn packed_size(dir: &Path) -> io::Result<u64> {
    let mut total = 1024;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d)? {
            let e = e?;
            if SKIPPED.iter().any(|s| e.file_name() == *s) {
                continue;
            }
            let t = e.file_type()?;
            total += 512;
            if t.is_dir() {
                stack.push(e.path());
            } else if t.is_file() {
                total += e.metadata()?.len().div_ceil(512) * 512;
            }
        }
    }
    Ok(total)
}

/// Counts what passes through, for progress.
struct Counting<W, F> {
    inner: W,
    n: u64,
    progress: F,
}

impl<W: io::Write, F: FnMut(u64)> io::Write for Counting<W, F> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.n += n as u64;
        (self.progress)(self.n);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

fn add_dir<W: io::Write>(b: &mut Builder<W>, root: &Path, rel: &Path) -> io::Result<()> {
    let mut entries = fs::read_dir(root.join(rel))?.collect::<io::Result<Vec<_>>>()?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let name = entry.file_name();
        if SKIPPED.iter().any(|s| name == *s) {
            continue;
        }
        let rel_path = rel.join(&name);
        let file_type = entry.file_type()?;
        if file_type.is_dir() {
            b.append_path_with_name(entry.path(), &rel_path)?;
            add_dir(b, root, &rel_path)?;
        } else if file_type.is_file() || file_type.is_symlink() {
            b.append_path_with_name(entry.path(), &rel_path)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::read::GzDecoder;
    use std::io::Read;

    fn entries(packed: &[u8]) -> Vec<(String, tar::EntryType, Option<String>, String)> {
        let mut ar = tar::Archive::new(GzDecoder::new(packed));
        ar.entries()
            .unwrap()
            .map(|e| {
                let mut e = e.unwrap();
                let path = e.path().unwrap().to_string_lossy().into_owned();
                let kind = e.header().entry_type();
                let link = e
                    .link_name()
                    .unwrap()
                    .map(|l| l.to_string_lossy().into_owned());
                let mut content = String::new();
                if kind.is_file() {
                    e.read_to_string(&mut content).unwrap();
                }
                (path, kind, link, content)
            })
            .collect()
    }

    #[test]
    fn packs_relative_paths_and_skips_caches() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        fs::write(d.join("predict.py"), "print(1)\n").unwrap();
        fs::write(d.join("cog.yaml"), "predict: predict.py:Predictor\n").unwrap();
        fs::create_dir_all(d.join(".git/objects")).unwrap();
        fs::write(d.join(".git/HEAD"), "ref").unwrap();
        fs::create_dir_all(d.join("lib/__pycache__")).unwrap();
        fs::write(d.join("lib/__pycache__/x.pyc"), "x").unwrap();
        fs::write(d.join("lib/util.py"), "y = 2\n").unwrap();
        fs::create_dir_all(d.join(".cog")).unwrap();
        fs::write(d.join(".cog/openapi_schema.json"), "{}").unwrap();
        fs::create_dir_all(d.join("empty")).unwrap();
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink("predict.py", d.join("alias.py")).unwrap();
            std::os::unix::fs::symlink("/etc/passwd", d.join("outside")).unwrap();
        }

        let packed = pack_dir(d).unwrap();
        let got = entries(&packed);
        let names: Vec<&str> = got.iter().map(|e| e.0.trim_end_matches('/')).collect();
        #[cfg(unix)]
        assert_eq!(
            names,
            [
                "alias.py",
                "cog.yaml",
                "empty",
                "lib",
                "lib/util.py",
                "outside",
                "predict.py"
            ]
        );
        assert!(!names
            .iter()
            .any(|n| n.contains(".git") || n.contains("pycache") || n.contains(".cog")));
        let predict = got.iter().find(|e| e.0 == "predict.py").unwrap();
        assert_eq!(predict.3, "print(1)\n");
        #[cfg(unix)]
        {
            let alias = got.iter().find(|e| e.0 == "alias.py").unwrap();
            assert_eq!(alias.1, tar::EntryType::Symlink);
            assert_eq!(alias.2.as_deref(), Some("predict.py"));
            let outside = got.iter().find(|e| e.0 == "outside").unwrap();
            assert_eq!(outside.2.as_deref(), Some("/etc/passwd"));
        }
        // The same content packs the same way.
        assert_eq!(packed, pack_dir(d).unwrap());
    }

    #[test]
    fn refuses_what_is_not_a_directory() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("file");
        fs::write(&f, "x").unwrap();
        assert!(pack_dir(&f).is_err());
        assert!(pack_dir(&dir.path().join("missing")).is_err());
    }
}
