//! Stored content in a real S3-compatible store (moto's server) with a real database: trees and
//! weights go up and come down whole, a release removes only what no recorded tree links, a
//! node's cache stays within its bound, and a push racing a release on another node (one
//! PostgreSQL database, one bucket) never loses a file.
mod moto;
mod versions;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

use modelyard_blobs::{Blobs, Held, Released, Stored, TreeFile};
use modelyard_domain::{AccountKind, NewModel};
use modelyard_storage::prelude::*;
use modelyard_storage::SqlStore;
use moto::Moto;
use sha2::{Digest, Sha256};
use sqlx::Connection;

fn sha(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

/// A database (SQLite in the temporary folder, or a fresh PostgreSQL database dropped at the
/// end), a model to hang versions on, and a bucket.
struct World {
    dir: tempfile::TempDir,
    store: Arc<SqlStore>,
    model_id: i64,
    url: String,
    pg: Option<String>,
    moto: Moto,
}

const PG_BASE: &str = "postgres://postgres@127.0.0.1:5432/postgres";

async fn world(postgres: bool) -> World {
    let moto = Moto::start();
    let url = moto.bucket("models", "cluster/one");
    let dir = tempfile::tempdir().unwrap();
    let (db, pg) = if postgres {
        sqlx::any::install_default_drivers();
        let name = format!(
            "modelyard_s3_{}",
            &sha(dir.path().to_string_lossy().as_bytes())[..16]
        );
        let mut c = sqlx::AnyConnection::connect(PG_BASE)
            .await
            .expect("PostgreSQL on 127.0.0.1:5432");
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut c)
            .await
            .unwrap();
        (
            format!("postgres://postgres@127.0.0.1:5432/{name}"),
            Some(name),
        )
    } else {
        (
            format!("sqlite://{}", dir.path().join("modelyard.db").display()),
            None,
        )
    };
    let store = Arc::new(SqlStore::connect(&db).await.unwrap());
    let owner = store
        .create_account(AccountKind::User, "alice", "Alice")
        .await
        .unwrap();
    let model = store
        .create_model(NewModel {
            owner_id: owner.id,
            name: "m".into(),
            hardware: "cpu".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    World {
        dir,
        store,
        model_id: model.id,
        url,
        pg,
        moto,
    }
}

impl Drop for World {
    fn drop(&mut self) {
        let Some(name) = self.pg.take() else { return };
        let _ = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(async {
                    if let Ok(mut c) = sqlx::AnyConnection::connect(PG_BASE).await {
                        let _ =
                            sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                                .execute(&mut c)
                                .await;
                    }
                })
        })
        .join();
    }
}

impl World {
    /// A node: its own data directory, the shared database and bucket.
    fn node(&self, name: &str, cache_bytes: u64) -> Blobs {
        self.moto.with_env(|| {
            Blobs::with_object_store(
                self.dir.path().join(name),
                self.store.clone(),
                &self.url,
                cache_bytes,
            )
            .unwrap()
        })
    }

    async fn keys(&self, b: &Blobs) -> Vec<String> {
        let mut k = b.stored_keys().await.unwrap();
        k.sort();
        k
    }

    async fn version(&self, artifact: &str, weights: Option<&str>) -> String {
        versions::record(&self.store, self.model_id, artifact, weights).await
    }

    async fn delete(&self, version_id: &str) {
        versions::delete(&self.store, self.model_id, version_id).await
    }
}

/// Stages `files` (name, content, executable) as a tree on `b`; its files and the staging
/// folder (keep it until the tree is put).
fn stage(b: &Blobs, files: &[(&str, &[u8], bool)]) -> (tempfile::TempDir, Vec<TreeFile>) {
    let stage = b.stage().unwrap();
    let tree = stage.path().join("tree");
    let mut listed = vec![];
    for (name, bytes, x) in files {
        let p = tree.join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, bytes).unwrap();
        let mode = if *x { 0o755 } else { 0o644 };
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        listed.push(TreeFile {
            path: name.into(),
            sha256: sha(bytes),
            executable: *x,
        });
    }
    (stage, listed)
}

/// A push: blobs up before the lock, then under it the tree, the version and its blobs.
async fn push(w: &World, b: &Blobs, digest: &str, files: &[(&str, &[u8], bool)]) -> String {
    let (stage, listed) = stage(b, files);
    let tree = stage.path().join("tree");
    b.prepare_tree(&tree, &listed).await.unwrap();
    let held = b.lock().await.unwrap();
    let id = put_held(w, b, &held, digest, &tree, listed).await;
    drop(held);
    id
}

async fn put_held(
    w: &World,
    b: &Blobs,
    held: &Held<'_>,
    digest: &str,
    tree: &Path,
    listed: Vec<TreeFile>,
) -> String {
    let placed = b
        .put_tree(held, digest, tree, listed.clone())
        .await
        .unwrap();
    let id = w.version(digest, None).await;
    if placed {
        let sizes = b.tree_blobs(digest, &listed).await.unwrap();
        w.store.record_artifact(digest, &sizes).await.unwrap();
    }
    id
}

#[tokio::test]
async fn a_tree_goes_up_once_and_comes_down_whole_on_another_node() {
    let w = world(false).await;
    let (a, b) = (w.node("a", 1 << 30), w.node("b", 1 << 30));
    let (big, code) = (vec![7u8; 100_000], b"print('hi')\n".to_vec());
    let files: &[(&str, &[u8], bool)] = &[
        ("weights/w.bin", &big, false),
        ("predict.py", &code, false),
        ("run.sh", b"#!/bin/sh\n", true),
        ("copy.bin", &big, false),
        ("pkg/__init__.py", b"", false),
    ];
    let (staged, listed) = stage(&a, files);
    std::os::unix::fs::symlink("weights/w.bin", staged.path().join("tree/link")).unwrap();
    std::fs::create_dir(staged.path().join("tree/empty")).unwrap();
    // A file the push did not hash (the predictor wrote it while it was imported).
    std::fs::write(
        staged.path().join("tree/pkg/cache.pyc"),
        b"written at import",
    )
    .unwrap();
    let tree = staged.path().join("tree");
    a.prepare_tree(&tree, &listed).await.unwrap();
    let held = a.lock().await.unwrap();
    assert!(a
        .put_tree(&held, "d1", &tree, listed.clone())
        .await
        .unwrap());
    // Stored already: nothing changes.
    let (again, listed2) = stage(&a, files);
    assert!(!a
        .put_tree(&held, "d1", &again.path().join("tree"), listed2)
        .await
        .unwrap());
    drop(held);
    assert_eq!(
        w.keys(&a).await,
        vec![
            format!("blobs/{}", sha(b"#!/bin/sh\n")),
            format!("blobs/{}", sha(&code)),
            format!("blobs/{}", sha(&big)),
            format!("blobs/{}", sha(b"")),
            format!("blobs/{}", sha(b"written at import")),
            "trees/d1.json".to_string(),
        ]
        .into_iter()
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect::<Vec<_>>()
    );
    assert!(b.has_tree("d1").await.unwrap());
    assert!(!b.has_tree("d2").await.unwrap());

    let opened = b.tree("d1").await.unwrap();
    let t = opened.path();
    assert!(t.starts_with(w.dir.path().join("b")));
    assert_eq!(std::fs::read(t.join("weights/w.bin")).unwrap(), big);
    assert_eq!(std::fs::read(t.join("copy.bin")).unwrap(), big);
    assert_eq!(std::fs::read(t.join("predict.py")).unwrap(), code);
    let mode = |p: &str| std::fs::metadata(t.join(p)).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode("run.sh"), 0o755);
    assert_eq!(mode("predict.py"), 0o644);
    assert_eq!(
        std::fs::read_link(t.join("link")).unwrap(),
        Path::new("weights/w.bin")
    );
    assert!(t.join("empty").is_dir());
    assert_eq!(std::fs::read(t.join("pkg/__init__.py")).unwrap(), b"");
    assert_eq!(
        std::fs::read(t.join("pkg/cache.pyc")).unwrap(),
        b"written at import"
    );
    // Opened again: the same copy, no second download.
    assert_eq!(b.tree("d1").await.unwrap().path(), t);
    assert_eq!(b.cached_bytes(), 200_000 + code.len() as u64 + 10 + 17);
    assert!(matches!(
        b.tree("nope").await,
        Err(modelyard_blobs::BlobError::Missing { .. })
    ));
}

#[tokio::test]
async fn weights_are_streamed_up_in_parts_and_down_to_another_node() {
    let w = world(false).await;
    let (a, b) = (w.node("a", 1 << 30), w.node("b", 1 << 30));
    // Past one part of the upload (10 MiB): a multipart upload.
    let data: Vec<u8> = (0..23 * 1024 * 1024).map(|i| (i % 251) as u8).collect();
    let file = w.dir.path().join("weights.tar");
    std::fs::write(&file, &data).unwrap();
    let s = modelyard_blobs::digest_file(&file).await.unwrap();
    let held = a.lock().await.unwrap();
    let placed = a
        .put_weights(&held, &file, &s, "weights.tar")
        .await
        .unwrap();
    assert!(placed.new);
    assert!(
        !a.put_weights(&held, &file, &s, "weights.tar")
            .await
            .unwrap()
            .new
    );
    drop(held);
    // Uploaded before the lock only when the store lacks them.
    assert!(!a.prepare_weights(&file, &s, "weights.tar").await.unwrap());
    assert_eq!(w.keys(&a).await, vec![format!("weights/{s}/weights.tar")]);
    let opened = b.weights(&placed.key).await.unwrap();
    assert_eq!(
        modelyard_blobs::digest_file(opened.path()).await.unwrap(),
        s
    );
    assert_eq!(
        b.weights_size(&placed.key).await.unwrap(),
        data.len() as u64
    );

    // Unreferenced weights go from the bucket at release, and from the node's cache.
    let art = w.version("base", Some(&placed.key)).await;
    assert_eq!(
        a.release(Stored::Weights(&placed.key)).await.unwrap(),
        Released::InUse
    );
    w.delete(&art).await;
    drop(opened);
    assert_eq!(
        b.release(Stored::Weights(&placed.key)).await.unwrap(),
        Released::Removed
    );
    assert!(w.keys(&a).await.is_empty());
    assert_eq!(b.cached_bytes(), 0);
}

#[tokio::test]
async fn a_release_removes_only_the_blobs_no_recorded_tree_links() {
    let w = world(false).await;
    let a = w.node("a", 1 << 30);
    let (shared, only_a, only_b) = (
        b"shared".as_slice(),
        b"only a".as_slice(),
        b"only b".as_slice(),
    );
    let va = push(&w, &a, "ta", &[("s", shared, false), ("x", only_a, false)]).await;
    let vb = push(&w, &a, "tb", &[("s", shared, false), ("y", only_b, true)]).await;
    assert_eq!(
        a.release(Stored::Artifact("ta")).await.unwrap(),
        Released::InUse
    );
    w.delete(&va).await;
    assert_eq!(
        a.release(Stored::Artifact("ta")).await.unwrap(),
        Released::Removed
    );
    let mut want = vec![
        format!("blobs/{}", sha(shared)),
        format!("blobs/{}", sha(only_b)),
        "trees/tb.json".to_string(),
    ];
    want.sort();
    assert_eq!(w.keys(&a).await, want);
    assert!(!a.has_tree("ta").await.unwrap());
    w.delete(&vb).await;
    a.release(Stored::Artifact("tb")).await.unwrap();
    assert!(w.keys(&a).await.is_empty());
    assert!(w.store.artifact_blobs("tb").await.unwrap().is_empty());
}

#[tokio::test]
async fn the_cache_drops_least_recently_used_unpinned_trees_and_unreferenced_ones() {
    let w = world(false).await;
    let a = w.node("a", 1 << 30);
    // Each tree is 1000 bytes; the other node keeps at most 2500 unused.
    let mut ids = vec![];
    for (i, d) in ["t1", "t2", "t3", "t4"].iter().enumerate() {
        let body = vec![i as u8; 1000];
        ids.push(push(&w, &a, d, &[("f", &body, false)]).await);
    }
    let b = w.node("b", 2500);
    let cached = |n: &str| w.dir.path().join("b/cache/trees").join(n).is_dir();
    let pinned = b.tree("t1").await.unwrap();
    drop(b.tree("t2").await.unwrap());
    drop(b.tree("t3").await.unwrap());
    // Past the bound: t1 is the oldest but pinned, so t2 goes.
    assert!(cached("t1"), "a pinned tree stays");
    assert!(!cached("t2"), "the least recently used unpinned tree goes");
    assert!(cached("t3"));
    drop(b.tree("t2").await.unwrap());
    assert!(!cached("t3") && cached("t2") && cached("t1"));
    assert_eq!(b.cached_bytes(), 2000);
    drop(pinned);
    drop(b.tree("t4").await.unwrap());
    assert!(!cached("t1") && cached("t2") && cached("t4"));

    // A tree no version uses any more goes at the next check, on every node; one that a
    // version uses stays.
    w.delete(&ids[3]).await;
    assert_eq!(b.sweep_cache().await.unwrap(), 1);
    assert!(!cached("t4") && cached("t2"));
    // The check runs by itself, too.
    let b = Arc::new(b);
    w.delete(&ids[1]).await;
    b.start_cache_sweep(std::time::Duration::from_millis(50));
    let until = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while cached("t2") {
        assert!(
            std::time::Instant::now() < until,
            "the periodic check did not drop t2"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Two nodes on one PostgreSQL database and bucket: node A keeps releasing a tree whose last
/// version it deletes while node B pushes a tree sharing its blobs. Whatever the interleaving,
/// every blob of every recorded tree is in the bucket.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_push_racing_a_release_on_another_node_never_loses_files() {
    let w = world(true).await;
    let (a, b) = (w.node("a", 1 << 20), w.node("b", 1 << 20));
    let shared = b"weights both trees hold".as_slice();
    let mut lost = vec![];
    for i in 0..200 {
        let old = format!("old{i}");
        let new = format!("new{i}");
        let mine = format!("code {i}");
        let v_old = push(&w, &a, &old, &[("w", shared, false)]).await;
        let release = async {
            w.delete(&v_old).await;
            a.release(Stored::Artifact(&old)).await.unwrap()
        };
        let files = [("w", shared, false), ("predict.py", mine.as_bytes(), false)];
        let racing = push(&w, &b, &new, &files);
        let (released, v_new) = tokio::join!(release, racing);
        assert_eq!(released, Released::Removed);
        let keys = w.keys(&a).await;
        for blob in [sha(shared), sha(mine.as_bytes())] {
            if !keys.contains(&format!("blobs/{blob}")) {
                lost.push((i, blob));
            }
        }
        assert!(keys.contains(&format!("trees/{new}.json")));
        // Node A opens the new tree whole.
        let t = a.tree(&new).await.unwrap();
        assert_eq!(std::fs::read(t.path().join("w")).unwrap(), shared);
        drop(t);
        w.delete(&v_new).await;
        b.release(Stored::Artifact(&new)).await.unwrap();
    }
    assert!(lost.is_empty(), "blobs lost: {lost:?}");
    assert!(w.keys(&a).await.is_empty());
}

async fn read_all(c: modelyard_blobs::Content) -> Vec<u8> {
    use futures_util::TryStreamExt;
    match c {
        modelyard_blobs::Content::Local(p) => std::fs::read(p).unwrap(),
        modelyard_blobs::Content::Stream { size, body } => {
            let chunks: Vec<_> = body.try_collect().await.unwrap();
            let all = chunks.concat();
            assert_eq!(all.len() as u64, size);
            all
        }
    }
}

#[tokio::test]
async fn outputs_and_uploads_are_served_by_any_node_and_removed_everywhere() {
    let w = world(false).await;
    let (a, b) = (w.node("a", 1 << 20), w.node("b", 1 << 20));
    // The runner writes an output file into the data directory, then publishes it.
    let dir = a.layout().job_outputs("job1").unwrap().join("tok");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("out.txt"), b"an output").unwrap();
    a.publish_output("job1", "tok", "out.txt").await.unwrap();
    assert!(!a.layout().job_outputs("job1").unwrap().exists());
    let got = b.output("job1", "tok", "out.txt").await.unwrap().unwrap();
    assert_eq!(read_all(got).await, b"an output");
    assert!(b.output("job1", "tok", "other").await.unwrap().is_none());
    assert!(b.output("job1", "..", "out.txt").await.is_err());
    let copy = b
        .output_copy("job1", "tok", "out.txt")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(std::fs::read(copy.path()).unwrap(), b"an output");
    drop(copy);
    assert_eq!(b.output_jobs().await.unwrap(), vec!["job1".to_string()]);
    b.remove_outputs("job1").await.unwrap();
    assert!(a.output("job1", "tok", "out.txt").await.unwrap().is_none());
    assert!(b.output_jobs().await.unwrap().is_empty());

    // An upload is written where uploads arrive, then kept in the bucket.
    std::fs::create_dir_all(a.uploads_dir()).unwrap();
    let part = a.uploads_dir().join(".x.part");
    std::fs::write(&part, b"uploaded").unwrap();
    a.put_file("file1", &part).await.unwrap();
    assert!(!part.exists());
    let got = b.file("file1").await.unwrap().unwrap();
    assert_eq!(read_all(got).await, b"uploaded");
    b.remove_file("file1").await.unwrap();
    assert!(a.file("file1").await.unwrap().is_none());
    assert!(w.keys(&a).await.is_empty());
}
