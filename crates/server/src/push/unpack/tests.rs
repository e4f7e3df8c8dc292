use super::*;

fn gz(tar: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, tar).unwrap();
    gz.finish().unwrap()
}

fn archive(build: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    build(&mut b);
    gz(&b.into_inner().unwrap())
}

/// A header whose name bytes are written as given, as a hostile client would.
fn raw_header(path: &str, kind: tar::EntryType, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_size(size);
    h.set_mode(0o644);
    h.set_entry_type(kind);
    h.as_old_mut().name[..path.len()].copy_from_slice(path.as_bytes());
    h.set_cksum();
    h
}

fn file(b: &mut tar::Builder<Vec<u8>>, path: &str, data: &[u8]) {
    let h = raw_header(path, tar::EntryType::Regular, data.len() as u64);
    b.append(&h, data).unwrap();
}

fn dir(b: &mut tar::Builder<Vec<u8>>, path: &str) {
    b.append(&raw_header(path, tar::EntryType::Directory, 0), &[][..])
        .unwrap();
}

fn link(b: &mut tar::Builder<Vec<u8>>, path: &str, target: &str) {
    let mut h = raw_header(path, tar::EntryType::Symlink, 0);
    h.set_link_name(target).unwrap();
    h.set_cksum();
    b.append(&h, &[][..]).unwrap();
}

/// A staging dir inside a parent whose contents the tests watch for escapes.
struct Staging {
    outer: tempfile::TempDir,
}

impl Staging {
    fn new() -> Self {
        let outer = tempfile::tempdir().unwrap();
        std::fs::create_dir(outer.path().join("tree")).unwrap();
        std::fs::write(outer.path().join("victim"), b"original").unwrap();
        Staging { outer }
    }
    fn tree(&self) -> PathBuf {
        self.outer.path().join("tree")
    }
    fn unpack(&self, a: &[u8]) -> Result<String, UnpackError> {
        unpack(a, &self.tree(), 1 << 20)
    }
    /// Nothing but `tree` and the untouched `victim` is beside the tree.
    fn assert_untouched(&self) {
        let mut names: Vec<_> = std::fs::read_dir(self.outer.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["tree", "victim"]);
        assert_eq!(
            std::fs::read(self.outer.path().join("victim")).unwrap(),
            b"original"
        );
    }
}

fn is_invalid(r: &Result<String, UnpackError>) -> bool {
    matches!(r, Err(UnpackError::Invalid(_)))
}

fn is_too_large(r: &Result<String, UnpackError>) -> bool {
    matches!(r, Err(UnpackError::TooLarge(_)))
}

#[test]
fn same_content_same_digest_and_different_content_differs() {
    let a = archive(|b| file(b, "cog.yaml", b"predict: p.py:P\n"));
    let (s1, s2, s3) = (Staging::new(), Staging::new(), Staging::new());
    let x = s1.unpack(&a).unwrap();
    assert_eq!(x, s2.unpack(&a).unwrap());
    let b = archive(|b| file(b, "cog.yaml", b"predict: q.py:P\n"));
    assert_ne!(x, s3.unpack(&b).unwrap());
    assert_eq!(
        std::fs::read(s1.tree().join("cog.yaml")).unwrap(),
        b"predict: p.py:P\n"
    );
}

#[test]
fn implied_and_named_directories_give_the_same_digest() {
    let implied = archive(|b| file(b, "src/p.py", b"x"));
    let named_after = archive(|b| {
        file(b, "src/p.py", b"x");
        dir(b, "src/");
    });
    let named_first = archive(|b| {
        dir(b, "src/");
        file(b, "src/p.py", b"x");
    });
    let (a, b, c) = (Staging::new(), Staging::new(), Staging::new());
    let d1 = a.unpack(&implied).unwrap();
    let d2 = b.unpack(&named_after).unwrap();
    assert_eq!(d2, c.unpack(&named_first).unwrap());
    // An explicit directory entry is part of the content, as it always was.
    assert_ne!(d1, d2);
}

#[test]
fn refuses_paths_and_links_that_leave_the_tree() {
    for path in ["../escape.txt", "/abs.txt", "a/../../escape.txt"] {
        let s = Staging::new();
        assert!(
            is_invalid(&s.unpack(&archive(|b| file(b, path, b"x")))),
            "{path}"
        );
        s.assert_untouched();
    }
    for target in ["/etc/passwd", "../../x", "a/../../x", "..", "sub/../.."] {
        let s = Staging::new();
        assert!(
            is_invalid(&s.unpack(&archive(|b| link(b, "l", target)))),
            "{target}"
        );
        s.assert_untouched();
    }
    let s = Staging::new();
    s.unpack(&archive(|b| link(b, "sub/l", "../cog.yaml")))
        .unwrap();
    assert_eq!(
        std::fs::read_link(s.tree().join("sub/l")).unwrap(),
        Path::new("../cog.yaml")
    );
}

#[test]
fn chains_of_links_are_resolved_against_the_tree() {
    // Each link alone looks inside the tree; together the second leads out.
    let chains: &[&[(&str, &str)]] = &[
        &[("sub/up", ".."), ("esc", "sub/up/..")],
        &[("a", "."), ("b", "a/a/a/..")],
        &[("d/x", "../d"), ("d/y", "x/../x/../../..")],
        &[("p", "q"), ("q", "p")],
        &[("one", "two/.."), ("two", "three"), ("three", "..")],
    ];
    for chain in chains {
        for then_file in [false, true] {
            let s = Staging::new();
            let a = archive(|b| {
                for (at, to) in *chain {
                    link(b, at, to);
                }
                if then_file {
                    // The old attack: a file named like the last link, written through it.
                    file(b, chain.last().unwrap().0, b"pwned");
                    file(b, &format!("{}/victim", chain.last().unwrap().0), b"pwned");
                }
            });
            let r = s.unpack(&a);
            assert!(is_invalid(&r), "{chain:?} {then_file}");
            s.assert_untouched();
        }
    }
    // Chains that stay inside are fine.
    let s = Staging::new();
    s.unpack(&archive(|b| {
        link(b, "a", "b");
        link(b, "b", "c/d");
        file(b, "c/d", b"data");
        link(b, "c/up", "../c");
    }))
    .unwrap();
    assert_eq!(std::fs::read(s.tree().join("a")).unwrap(), b"data");
}

#[test]
fn nothing_is_written_through_or_over_a_link() {
    type Case = dyn Fn(&mut tar::Builder<Vec<u8>>);
    let cases: &[&Case] = &[
        // The same name twice: a link, then a file.
        &|b| {
            link(b, "l", "x");
            file(b, "l", b"pwned");
        },
        // A file, then a link over it.
        &|b| {
            file(b, "l", b"x");
            link(b, "l", "cog.yaml");
        },
        // A file under a link to a directory inside the tree.
        &|b| {
            dir(b, "d/");
            link(b, "l", "d");
            file(b, "l/f", b"x");
        },
        // A directory entry with a link's name.
        &|b| {
            link(b, "l", ".");
            dir(b, "l/");
        },
        // A file under a file.
        &|b| {
            file(b, "f", b"x");
            file(b, "f/g", b"x");
        },
    ];
    for (i, case) in cases.iter().enumerate() {
        let s = Staging::new();
        assert!(is_invalid(&s.unpack(&archive(|b| case(b)))), "case {i}");
        s.assert_untouched();
    }
}

#[test]
fn refuses_hard_links_devices_and_sized_non_files() {
    let s = Staging::new();
    let a = archive(|b| {
        let mut h = raw_header("h", tar::EntryType::Link, 0);
        h.set_link_name("cog.yaml").unwrap();
        h.set_cksum();
        b.append(&h, &[][..]).unwrap();
    });
    assert!(is_invalid(&s.unpack(&a)));
    for kind in [
        tar::EntryType::Char,
        tar::EntryType::Fifo,
        tar::EntryType::GNUSparse,
    ] {
        let a = archive(|b| b.append(&raw_header("dev", kind, 0), &[][..]).unwrap());
        assert!(is_invalid(&Staging::new().unpack(&a)), "{kind:?}");
    }
    // A directory that claims content would make the server decompress it for nothing.
    let a = archive(|b| {
        b.append(
            &raw_header("d/", tar::EntryType::Directory, 4096),
            &[0u8; 4096][..],
        )
        .unwrap()
    });
    assert!(is_invalid(&Staging::new().unpack(&a)));
}

#[test]
fn extension_headers_are_capped_before_they_are_read() {
    // A GNU long name that claims a gigabyte: refused from its header, its body never read
    // (the archive does not even contain it).
    for kind in [
        tar::EntryType::GNULongName,
        tar::EntryType::GNULongLink,
        tar::EntryType::XHeader,
        tar::EntryType::XGlobalHeader,
    ] {
        let h = raw_header("././@LongLink", kind, 1 << 30);
        let r = Staging::new().unpack(&gz(h.as_bytes()));
        assert!(is_too_large(&r), "{kind:?}");
    }
    // Within the caps, they work: a long name, and a PAX path.
    let long = format!("{}/f.txt", "d".repeat(200));
    let s = Staging::new();
    s.unpack(&archive(|b| {
        let mut h = tar::Header::new_gnu();
        h.set_size(2);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, &long, &b"hi"[..]).unwrap();
        b.append_pax_extensions([("path", "pax/name.txt".as_bytes())])
            .unwrap();
        file(b, "ignored", b"ok");
    }))
    .unwrap();
    assert_eq!(std::fs::read(s.tree().join(&long)).unwrap(), b"hi");
    assert_eq!(std::fs::read(s.tree().join("pax/name.txt")).unwrap(), b"ok");
    assert!(!s.tree().join("ignored").exists());
    // A name over PATH_MAX, given by PAX, is refused.
    let big = "n/".repeat(MAX_NAME / 2 + 1);
    let a = archive(|b| {
        b.append_pax_extensions([("path", big.as_bytes())]).unwrap();
        file(b, "x", b"x");
    });
    assert!(is_invalid(&Staging::new().unpack(&a)));
    // PAX `size` would make other readers see another archive.
    let a = archive(|b| {
        b.append_pax_extensions([("size", "0".as_bytes())]).unwrap();
        file(b, "x", b"x");
    });
    assert!(is_invalid(&Staging::new().unpack(&a)));
    // An extension header with nothing after it.
    let a = archive(|b| b.append_pax_extensions([("path", "x".as_bytes())]).unwrap());
    assert!(is_invalid(&Staging::new().unpack(&a)));
}

#[test]
fn caps_entries_and_bytes() {
    let a = archive(|b| {
        for i in 0..=MAX_ENTRIES {
            file(b, &format!("f{i}"), b"");
        }
    });
    assert!(is_too_large(&Staging::new().unpack(&a)));
    let a = archive(|b| file(b, "big", &[0u8; 2048]));
    assert!(is_too_large(&unpack(
        a.as_slice(),
        &Staging::new().tree(),
        1024
    )));
    assert!(is_invalid(&Staging::new().unpack(b"not gzip")));
}

#[test]
fn the_tree_on_disk_is_checked_for_links_that_leave_it() {
    let s = Staging::new();
    std::fs::create_dir(s.tree().join("d")).unwrap();
    std::fs::write(s.tree().join("d/f"), b"x").unwrap();
    std::os::unix::fs::symlink("../d/f", s.tree().join("d/in")).unwrap();
    std::os::unix::fs::symlink("nowhere", s.tree().join("dangling")).unwrap();
    check_links_on_disk(&s.tree()).unwrap();
    std::os::unix::fs::symlink("../../victim", s.tree().join("d/out")).unwrap();
    assert!(matches!(
        check_links_on_disk(&s.tree()),
        Err(UnpackError::Invalid(_))
    ));
}
