//! The data directory against a real store (SQLite in a temporary folder): content is placed by
//! digest and goes exactly when no version refers to it any more.
mod versions;

use std::os::unix::fs::MetadataExt;
use std::sync::Arc;

use modelyard_blobs::{digest_file, BlobError, Blobs, Held, Released, Stored, TreeFile};
use modelyard_domain::{AccountKind, NewModel};
use modelyard_storage::prelude::*;
use modelyard_storage::SqlStore;
use sha2::{Digest, Sha256};

struct Data {
    dir: tempfile::TempDir,
    store: Arc<SqlStore>,
    blobs: Blobs,
    model_id: i64,
}

async fn data() -> Data {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("modelyard.db").display());
    let store = Arc::new(SqlStore::connect(&url).await.unwrap());
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
    let blobs = Blobs::new(dir.path().join("data"), store.clone());
    Data {
        dir,
        store,
        blobs,
        model_id: model.id,
    }
}

impl Data {
    /// Stages `files` (name, content) as a tree and stores it under its digest.
    async fn put_tree(&self, digest: &str, files: &[(&str, &[u8])]) -> bool {
        let held = self.blobs.lock().await.unwrap();
        self.put_tree_held(&held, digest, files).await
    }

    async fn put_tree_held(&self, held: &Held<'_>, digest: &str, files: &[(&str, &[u8])]) -> bool {
        let stage = self.blobs.stage().unwrap();
        let tree = stage.path().join("tree");
        let mut listed = vec![];
        for (name, bytes) in files {
            let p = tree.join(name);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, bytes).unwrap();
            listed.push(TreeFile {
                path: name.into(),
                sha256: hex::encode(Sha256::digest(bytes)),
                executable: false,
            });
        }
        self.blobs
            .put_tree(held, digest, &tree, listed)
            .await
            .unwrap()
    }

    async fn version(&self, artifact: &str, weights: Option<&str>) -> String {
        versions::record(&self.store, self.model_id, artifact, weights).await
    }

    async fn delete(&self, version_id: &str) {
        versions::delete(&self.store, self.model_id, version_id).await
    }

    /// The stored blobs with how many links each has.
    fn blobs(&self) -> Vec<(String, u64)> {
        let mut found: Vec<_> = std::fs::read_dir(self.blobs.layout().blobs())
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let links = e.metadata().unwrap().nlink();
                (e.file_name().to_string_lossy().into_owned(), links)
            })
            .collect();
        found.sort();
        found
    }
}

fn sha(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

#[tokio::test]
async fn trees_share_blobs_and_go_only_when_unreferenced() {
    let d = data().await;
    let (a, b) = ("a".repeat(64), "b".repeat(64));
    let shared: &[u8] = b"the same large weights";
    assert!(
        d.put_tree(&a, &[("w.bin", shared), ("predict.py", b"v1")])
            .await
    );
    assert!(
        d.put_tree(&b, &[("w.bin", shared), ("predict.py", b"v2")])
            .await
    );
    // Stored already: the second put of a digest changes nothing.
    assert!(!d.put_tree(&a, &[("w.bin", shared)]).await);
    let va = d.version(&a, None).await;
    let vb = d.version(&b, None).await;
    let mut want = vec![(sha(shared), 3), (sha(b"v1"), 2), (sha(b"v2"), 2)];
    want.sort();
    assert_eq!(
        d.blobs(),
        want,
        "one blob per content, linked from each tree"
    );

    // A digest a version still uses is kept, files and all.
    assert_eq!(
        d.blobs.release(Stored::Artifact(&a)).await.unwrap(),
        Released::InUse
    );
    assert!(d
        .blobs
        .tree(&a)
        .await
        .unwrap()
        .path()
        .join("w.bin")
        .is_file());

    // Once unreferenced, the tree goes with the blobs only it linked to; the shared one stays.
    d.delete(&va).await;
    assert_eq!(
        d.blobs.release(Stored::Artifact(&a)).await.unwrap(),
        Released::Removed
    );
    assert!(!d.blobs.has_tree(&a).await.unwrap());
    let mut want = vec![(sha(shared), 2), (sha(b"v2"), 2)];
    want.sort();
    assert_eq!(d.blobs(), want);
    assert_eq!(
        std::fs::read(d.blobs.tree(&b).await.unwrap().path().join("w.bin")).unwrap(),
        shared
    );

    // The last tree takes the last blobs with it.
    d.delete(&vb).await;
    assert_eq!(
        d.blobs.release(Stored::Artifact(&b)).await.unwrap(),
        Released::Removed
    );
    assert_eq!(d.blobs(), vec![]);
    assert_eq!(
        std::fs::read_dir(d.blobs.layout().artifacts())
            .unwrap()
            .count(),
        0
    );
    // Released twice: already gone is gone.
    assert_eq!(
        d.blobs.release(Stored::Artifact(&b)).await.unwrap(),
        Released::Removed
    );
}

#[tokio::test]
async fn a_release_waits_for_content_being_stored_and_then_keeps_it() {
    let d = data().await;
    let a = "e".repeat(64);
    // A deletion freed the tree: it is on disk, and no version uses it.
    d.put_tree(&a, &[("predict.py", b"x")]).await;
    // A push of the same content holds the lock while it records its version...
    let held = d.blobs.lock().await.unwrap();
    assert!(!d.put_tree_held(&held, &a, &[("predict.py", b"x")]).await);
    let release = d.blobs.release(Stored::Artifact(&a));
    tokio::pin!(release);
    // ...so the deletion's release waits...
    assert!(
        tokio::time::timeout(std::time::Duration::from_millis(200), &mut release)
            .await
            .is_err()
    );
    d.version(&a, None).await;
    drop(held);
    // ...and then finds the content used again, and keeps it.
    assert_eq!(release.await.unwrap(), Released::InUse);
    assert!(d
        .blobs
        .tree(&a)
        .await
        .unwrap()
        .path()
        .join("predict.py")
        .is_file());
}

#[tokio::test]
async fn weights_go_only_when_no_version_names_them() {
    let d = data().await;
    let art = "c".repeat(64);
    d.put_tree(&art, &[("predict.py", b"x")]).await;
    let src = d.dir.path().join("out.bin");
    // Over two read chunks, so the chunks are joined correctly.
    let bytes: Vec<u8> = (0..(2 << 20) + 17).map(|i| (i * 31 % 251) as u8).collect();
    std::fs::write(&src, &bytes).unwrap();
    let digest = digest_file(&src).await.unwrap();
    assert_eq!(digest, sha(&bytes));

    let held = d.blobs.lock().await.unwrap();
    let one = d
        .blobs
        .put_weights(&held, &src, &digest, "w.bin")
        .await
        .unwrap();
    assert!(one.new);
    assert_eq!(one.key, format!("{digest}/w.bin"));
    // The same content under the same name is stored already; under another, beside it.
    assert!(
        !d.blobs
            .put_weights(&held, &src, &digest, "w.bin")
            .await
            .unwrap()
            .new
    );
    let two = d
        .blobs
        .put_weights(&held, &src, &digest, "other.bin")
        .await
        .unwrap();
    drop(held);
    let v1 = d.version(&art, Some(&one.key)).await;
    let v2 = d.version(&art, Some(&two.key)).await;
    let file = d
        .blobs
        .weights(&one.key)
        .await
        .unwrap()
        .path()
        .to_path_buf();
    assert_eq!(std::fs::read(&file).unwrap(), bytes);
    let names: Vec<_> = std::fs::read_dir(file.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 2, "no temporary file stays: {names:?}");

    assert_eq!(
        d.blobs.release(Stored::Weights(&one.key)).await.unwrap(),
        Released::InUse
    );
    d.delete(&v1).await;
    assert_eq!(
        d.blobs.release(Stored::Weights(&one.key)).await.unwrap(),
        Released::Removed
    );
    assert!(!file.exists());
    // The other name of the same digest is still used, and still there.
    assert!(d
        .blobs
        .weights(&two.key)
        .await
        .unwrap()
        .path()
        .to_path_buf()
        .is_file());
    d.delete(&v2).await;
    d.blobs.release(Stored::Weights(&two.key)).await.unwrap();
    assert_eq!(
        std::fs::read_dir(d.blobs.layout().weights())
            .unwrap()
            .count(),
        0
    );
    // The artifact is unreferenced now too, and goes.
    assert_eq!(
        d.blobs.release(Stored::Artifact(&art)).await.unwrap(),
        Released::Removed
    );
}

#[tokio::test]
async fn names_that_leave_their_folder_touch_nothing() {
    let d = data().await;
    let outside = d.dir.path().join("data/keep");
    std::fs::create_dir_all(&outside).unwrap();
    for bad in [
        Stored::Artifact(".."),
        Stored::Artifact("../keep"),
        Stored::Artifact(""),
        Stored::Weights("../keep"),
        Stored::Weights(&format!("{}/..", "d".repeat(64))),
        Stored::Weights("abc/w.bin"),
    ] {
        assert!(
            matches!(d.blobs.release(bad).await, Err(BlobError::BadName { .. })),
            "{bad:?}"
        );
    }
    assert!(outside.is_dir());
    assert!(d.store.as_ref().artifact_in_use("x").await.is_ok());
}

#[tokio::test]
async fn staging_left_by_a_crash_is_removed() {
    let d = data().await;
    let tmp = d.blobs.layout().staging();
    let live = d.blobs.stage().unwrap();
    assert_eq!(live.path().parent().unwrap(), tmp);
    // Inside a folder only the server's user may enter.
    assert_eq!(std::fs::metadata(&tmp).unwrap().mode() & 0o777, 0o700);
    drop(live);
    std::fs::create_dir_all(tmp.join("push-abc/tree/sub")).unwrap();
    std::fs::write(tmp.join("push-abc/tree/sub/f"), b"x").unwrap();
    std::os::unix::fs::symlink("/", tmp.join("push-abc/tree/root")).unwrap();
    std::fs::create_dir(tmp.join("other")).unwrap();
    d.blobs.clean_staging();
    assert!(!tmp.join("push-abc").exists());
    assert!(tmp.join("other").is_dir());
}

#[tokio::test]
async fn a_recorded_tree_checks_only_its_own_blobs_and_is_forgotten() {
    let d = data().await;
    let (a, b, c) = ("a".repeat(64), "b".repeat(64), "c".repeat(64));
    let shared: &[u8] = b"the same large weights";
    d.put_tree(&a, &[("w.bin", shared), ("predict.py", b"v1")])
        .await;
    d.put_tree(&b, &[("w.bin", shared), ("predict.py", b"v2")])
        .await;
    let (va, vb) = (d.version(&a, None).await, d.version(&b, None).await);
    // What a push records, here measured from disk as for a tree stored before sizes were.
    for t in [&a, &b] {
        let sizes = d.blobs.scan_tree_blobs(t).await.unwrap();
        d.store.record_artifact(t, &sizes).await.unwrap();
    }
    let mut want = vec![(sha(shared), shared.len() as i64), (sha(b"v1"), 2)];
    want.sort();
    assert_eq!(d.blobs.scan_tree_blobs(&a).await.unwrap(), want);
    // A blob no recorded tree names (left by some earlier failure): a recorded release does not
    // look at it, a release of an unrecorded tree does.
    let stray = d.blobs.layout().blobs().join("f".repeat(64));
    std::fs::write(&stray, b"stray").unwrap();

    d.delete(&va).await;
    assert_eq!(
        d.blobs.release(Stored::Artifact(&a)).await.unwrap(),
        Released::Removed
    );
    let mut want = vec![("f".repeat(64), 1), (sha(shared), 2), (sha(b"v2"), 2)];
    want.sort();
    assert_eq!(d.blobs(), want);
    assert!(d.store.artifact_blobs(&a).await.unwrap().is_empty());
    assert_eq!(d.store.artifact_blobs(&b).await.unwrap().len(), 2);

    d.delete(&vb).await;
    d.blobs.release(Stored::Artifact(&b)).await.unwrap();
    assert_eq!(d.blobs(), vec![("f".repeat(64), 1)]);

    d.put_tree(&c, &[("predict.py", b"v3")]).await;
    let vc = d.version(&c, None).await;
    d.delete(&vc).await;
    d.blobs.release(Stored::Artifact(&c)).await.unwrap();
    assert_eq!(d.blobs(), vec![]);
}
