//! The content lock every node of one database shares, and which blobs recorded trees still
//! link: what a release in a shared object store decides on.
#[macro_use]
mod common;

use std::time::Duration;

use common::*;
use modelyard_storage::prelude::*;
use modelyard_storage::SqlStore;

conformance! {
    the_content_lock_excludes_other_holders_until_dropped => sqlite_the_content_lock_excludes_other_holders_until_dropped, postgres_the_content_lock_excludes_other_holders_until_dropped;
    a_blob_is_in_use_while_a_recorded_tree_links_it => sqlite_a_blob_is_in_use_while_a_recorded_tree_links_it, postgres_a_blob_is_in_use_while_a_recorded_tree_links_it;
}

async fn the_content_lock_excludes_other_holders_until_dropped(store: SqlStore) {
    let held = store.content_lock().await.unwrap();
    let second = tokio::time::timeout(Duration::from_millis(300), store.content_lock()).await;
    if store.backend() == "sqlite" {
        // One node: its own mutex is the lock, and the database's guard holds nothing.
        assert!(second.is_ok());
        return;
    }
    assert!(second.is_err(), "a second holder got the lock");
    drop(held);
    let again = tokio::time::timeout(Duration::from_secs(5), store.content_lock())
        .await
        .expect("the lock was not given back when its guard dropped")
        .unwrap();
    drop(again);
}

async fn a_blob_is_in_use_while_a_recorded_tree_links_it(store: SqlStore) {
    let alice = user(&store, "alice").await;
    let m = model(
        &store,
        alice.account.id,
        "m",
        modelyard_domain::Visibility::Private,
    )
    .await;
    let a = version(&store, m.id, "da", "ta").await;
    version(&store, m.id, "db", "tb").await;
    store
        .record_artifact("ta", &[("shared".into(), 1), ("only-a".into(), 2)])
        .await
        .unwrap();
    store
        .record_artifact("tb", &[("shared".into(), 1)])
        .await
        .unwrap();
    assert!(store.blob_in_use("shared").await.unwrap());
    assert!(store.blob_in_use("only-a").await.unwrap());
    assert!(!store.blob_in_use("never").await.unwrap());
    remove_version(&store, m.id, &a.id, &alice).await;
    store.forget_artifact("ta").await.unwrap();
    assert!(store.blob_in_use("shared").await.unwrap());
    assert!(!store.blob_in_use("only-a").await.unwrap());
}
