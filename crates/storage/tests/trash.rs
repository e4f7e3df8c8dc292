//! The trash, on SQLite and PostgreSQL alike: what a deletion to it hides, what a restore
//! brings back, purging (by the owner, by the sweep once expired), the names it keeps, what a
//! deletion frees, pruning, and the races between them.
#[macro_use]
mod common;

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use common::*;
use modelyard_domain::*;
use modelyard_storage::prelude::*;
use modelyard_storage::{
    Deletion, KeptReason, Purge, PurgeBy, Restore, SqlStore, StoreError, StoredVersion, TrashKind,
    Unreferenced,
};
use tokio::sync::Barrier;

conformance! {
    a_trashed_version_is_gone_from_every_read => sqlite_a_trashed_version_is_gone_from_every_read, postgres_a_trashed_version_is_gone_from_every_read;
    a_trashed_model_is_gone_and_keeps_its_name => sqlite_a_trashed_model_is_gone_and_keeps_its_name, postgres_a_trashed_model_is_gone_and_keeps_its_name;
    restore_brings_a_version_back_with_its_predictions => sqlite_restore_brings_a_version_back_with_its_predictions, postgres_restore_brings_a_version_back_with_its_predictions;
    a_version_comes_back_only_after_its_model => sqlite_a_version_comes_back_only_after_its_model, postgres_a_version_comes_back_only_after_its_model;
    trashing_follows_the_deletion_rules => sqlite_trashing_follows_the_deletion_rules, postgres_trashing_follows_the_deletion_rules;
    purge_deletes_for_good_and_frees_files => sqlite_purge_deletes_for_good_and_frees_files, postgres_purge_deletes_for_good_and_frees_files;
    expiry_with_a_short_window => sqlite_expiry_with_a_short_window, postgres_expiry_with_a_short_window;
    trash_listing_per_owner => sqlite_trash_listing_per_owner, postgres_trash_listing_per_owner;
    frees_bytes_counts_shared_content_once => sqlite_frees_bytes_counts_shared_content_once, postgres_frees_bytes_counts_shared_content_once;
    storage_of_versions_models_and_accounts => sqlite_storage_of_versions_models_and_accounts, postgres_storage_of_versions_models_and_accounts;
    final_model_deletion_takes_its_trashed_versions => sqlite_final_model_deletion_takes_its_trashed_versions, postgres_final_model_deletion_takes_its_trashed_versions;
    prune_keeps_the_newest_and_the_blocked => sqlite_prune_keeps_the_newest_and_the_blocked, postgres_prune_keeps_the_newest_and_the_blocked;
    race_purge_vs_restore => sqlite_race_purge_vs_restore, postgres_race_purge_vs_restore;
    race_restore_vs_new_model_of_the_same_name => sqlite_race_restore_vs_new_model_of_the_same_name, postgres_race_restore_vs_new_model_of_the_same_name;
    race_prediction_vs_trashing => sqlite_race_prediction_vs_trashing, postgres_race_prediction_vs_trashing;
}

const ROUNDS: usize = 20;

fn week() -> DateTime<Utc> {
    Utc::now() + Duration::days(7)
}

async fn trash_version(store: &SqlStore, model_id: i64, id: &str, who: &Caller) -> Deletion {
    let d = store
        .trash_version(model_id, id, who, false, week())
        .await
        .expect("trash_version");
    assert!(d.deleted, "{d:?}");
    d
}

async fn trash_model(store: &SqlStore, model_id: i64, who: &Caller) -> Deletion {
    let d = store
        .trash_model(model_id, who, false, week())
        .await
        .expect("trash_model");
    assert!(d.deleted, "{d:?}");
    d
}

async fn restored_version(store: &SqlStore, model_id: i64, id: &str, who: &Caller) -> Version {
    match store.restore_version(model_id, id, who).await.unwrap() {
        Restore::Restored(v) => v,
        other => panic!("restore_version: {other:?}"),
    }
}

async fn restored_model(store: &SqlStore, model_id: i64, who: &Caller) -> Model {
    match store.restore_model(model_id, who).await.unwrap() {
        Restore::Restored(m) => m,
        other => panic!("restore_model: {other:?}"),
    }
}

/// A version whose artifact holds these blobs (name, bytes).
async fn sized_version(
    store: &SqlStore,
    model_id: i64,
    artifact: &str,
    blobs: &[(&str, i64)],
) -> Version {
    let v = version(store, model_id, artifact, artifact).await;
    let blobs: Vec<(String, i64)> = blobs.iter().map(|(b, n)| (b.to_string(), *n)).collect();
    store.record_artifact(artifact, &blobs).await.unwrap();
    v
}

async fn version_ids(store: &SqlStore, model_id: i64) -> Vec<String> {
    store
        .versions(model_id, all())
        .await
        .unwrap()
        .into_iter()
        .map(|v| v.id)
        .collect()
}

async fn audit_trail(store: &SqlStore, owner_id: i64) -> Vec<(String, String, String)> {
    let mut e: Vec<_> = store
        .audit_events(&[owner_id], all())
        .await
        .unwrap()
        .into_iter()
        .map(|e| (e.action, e.outcome, e.actor))
        .collect();
    e.reverse();
    e
}

/// Rows of a table for a key, read around the store (the trash keeps rows the store hides).
async fn count_rows(sql: &str, key: &str) -> i64 {
    let pool = raw().await;
    let n: i64 = sqlx::query_scalar(sql)
        .bind(key)
        .fetch_one(&pool)
        .await
        .unwrap();
    pool.close().await;
    n
}

fn s(v: &str) -> (String, i64) {
    (v.to_string(), 0)
}

async fn a_trashed_version_is_gone_from_every_read(store: SqlStore) {
    let alice = user(&store, "alice").await;
    let a = alice.account.id;
    let m = model(&store, a, "m", Visibility::Private).await;
    let old = version(&store, m.id, "d1", "a1").await;
    let v = version(&store, m.id, "d2", "a2").await;
    let done = predict(&store, a, &v.id).await.id;
    let queued = predict(&store, a, &v.id).await.id;
    set_job_status(&done, Status::Succeeded).await;
    predict(&store, a, &old.id).await;
    assert_eq!(run_count(&store, "alice/m").await, 3);

    let d = trash_version(&store, m.id, &v.id, &alice).await;
    assert!(d.purge_at.is_some());
    assert!(d.unreferenced.artifacts.is_empty(), "the trash keeps files");
    // Gone from every read at once.
    assert_eq!(version_ids(&store, m.id).await, vec![old.id.clone()]);
    assert!(store.version(m.id, &v.id).await.unwrap().is_none());
    assert!(store.version_by_id(&v.id).await.unwrap().is_none());
    let got = store.model("alice", "m").await.unwrap().unwrap();
    assert_eq!(got.latest_version.unwrap().id, old.id);
    assert_eq!(got.run_count, 1, "its predictions leave the run count");
    for id in [&done, &queued] {
        assert!(store.job(JobKind::Prediction, id).await.unwrap().is_none());
    }
    assert_eq!(
        store
            .list_jobs(JobKind::Prediction, a, all())
            .await
            .unwrap()
            .len(),
        1
    );
    assert_eq!(store.model_jobs(m.id, a, 10).await.unwrap().len(), 1);
    assert!(store
        .queued_jobs(&modelyard_domain::worker::Offer::new(vec![], 1), 100)
        .await
        .unwrap()
        .iter()
        .all(|j| j.version_id != v.id));
    // Its files stay while it is in the trash.
    assert!(store.artifact_in_use("a2").await.unwrap());

    // Nothing can use it or point to it.
    for kind in [JobKind::Prediction, JobKind::Training] {
        let r = store.create_job(new_job(kind, a, &v.id)).await;
        assert!(is_not_found(&r), "{r:?}");
    }
    let r = store
        .create_deployment(a, "d", release(&v.id, 0, 1), "alice")
        .await;
    assert!(is_not_found(&r), "{r:?}");
    let dep = store
        .create_deployment(a, "d", release(&old.id, 0, 1), "alice")
        .await
        .unwrap();
    let r = store
        .update_deployment(dep.id, release(&v.id, 0, 1), "alice")
        .await;
    assert!(is_not_found(&r), "{r:?}");
    let mut ft = new_version(m.id, "ft", "a-ft");
    ft.base_version_id = Some(v.id.clone());
    let r = store.create_version(ft).await;
    assert!(is_not_found(&r), "{r:?}");
    // The same content again is the trashed version: restore or purge it first.
    let r = store.create_version(new_version(m.id, "d2", "a2")).await;
    assert!(
        matches!(&r, Err(StoreError::Conflict(m)) if m.contains("trash")),
        "{r:?}"
    );
    // A second deletion finds nothing.
    let r = store
        .trash_version(m.id, &v.id, &alice, false, week())
        .await;
    assert!(is_not_found(&r), "{r:?}");
    let r = store.delete_version(m.id, &v.id, &alice, true).await;
    assert!(is_not_found(&r), "{r:?}");
    // The unfinished prediction was canceled, the finished one kept as it was (hidden).
    let pool = raw().await;
    let status: String = sqlx::query_scalar("SELECT status FROM jobs WHERE id = $1")
        .bind(&queued)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(status, "canceled");
    pool.close().await;
    assert_eq!(
        audit_trail(&store, a).await.last().unwrap(),
        &("delete_version".into(), "trashed".into(), "alice".into())
    );
}

async fn a_trashed_model_is_gone_and_keeps_its_name(store: SqlStore) {
    let alice = user(&store, "alice").await;
    let bob = user(&store, "bob").await;
    let a = alice.account.id;
    let m = model(&store, a, "m", Visibility::Private).await;
    let v = version(&store, m.id, "d1", "a1").await;
    // Versions in the trash do not block their model: they go with it.
    trash_version(&store, m.id, &v.id, &alice).await;
    let until = week();
    let d = store.trash_model(m.id, &alice, false, until).await.unwrap();
    assert!(d.deleted, "{d:?}");
    assert!(store.model("alice", "m").await.unwrap().is_none());
    assert!(store
        .list_models(Some(&alice), None, all())
        .await
        .unwrap()
        .is_empty());
    assert!(store
        .list_models(Some(&alice), Some("m"), all())
        .await
        .unwrap()
        .is_empty());
    assert!(store.models_owned_by(&[a], 10).await.unwrap().is_empty());
    let r = store.update_model(m.id, ModelPatch::default()).await;
    assert!(is_not_found(&r), "{r:?}");
    let r = store.create_version(new_version(m.id, "d9", "a9")).await;
    assert!(is_not_found(&r), "a push to a trashed model: {r:?}");

    // The name stays its owner's, and saying until when.
    let new = NewModel {
        owner_id: a,
        name: "m".into(),
        hardware: "cpu".into(),
        ..Default::default()
    };
    let held = store
        .create_model_checked(new.clone())
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!((held.owner.as_str(), held.name.as_str()), ("alice", "m"));
    assert_eq!(held.purge_at.timestamp_micros(), until.timestamp_micros());
    assert!(held.to_string().contains("in the trash until"), "{held}");
    assert!(
        !held.to_string().contains("  "),
        "one sentence, no stray gap: {held}"
    );
    let r = store.create_model(new.clone()).await;
    assert!(
        matches!(&r, Err(StoreError::Conflict(m)) if m.contains("trash")),
        "{r:?}"
    );
    // Another account's model of that name is another name.
    model(&store, bob.account.id, "m", Visibility::Private).await;

    // Purged, the name is free.
    let p = store
        .purge_model(m.id, PurgeBy::Owner(&alice))
        .await
        .unwrap();
    assert_eq!(
        p,
        Purge::Purged(Unreferenced {
            artifacts: vec!["a1".into()],
            weights: vec![]
        })
    );
    let again = store.create_model_checked(new).await.unwrap().unwrap();
    assert_ne!(again.id, m.id);
}

async fn restore_brings_a_version_back_with_its_predictions(store: SqlStore) {
    let alice = user(&store, "alice").await;
    let bob = user(&store, "bob").await;
    let a = alice.account.id;
    let m = model(&store, a, "m", Visibility::Private).await;
    let v = version(&store, m.id, "d1", "a1").await;
    let mut mine = Vec::new();
    for _ in 0..3 {
        let id = predict(&store, a, &v.id).await.id;
        set_job_status(&id, Status::Succeeded).await;
        mine.push(id);
    }
    let t = train(&store, a, &v.id, m.id).await.id;
    set_job_status(&t, Status::Succeeded).await;
    trash_version(&store, m.id, &v.id, &alice).await;
    assert_eq!(run_count(&store, "alice/m").await, 0);

    // Only an owner finds it in the trash.
    let r = store.restore_version(m.id, &v.id, &bob).await.unwrap();
    assert!(matches!(r, Restore::NotInTrash), "{r:?}");
    let back = restored_version(&store, m.id, &v.id, &alice).await;
    assert_eq!(back.id, v.id);
    assert_eq!(version_ids(&store, m.id).await, vec![v.id.clone()]);
    assert!(store.version_by_id(&v.id).await.unwrap().is_some());
    for id in &mine {
        let j = store
            .job(JobKind::Prediction, id)
            .await
            .unwrap()
            .expect("back");
        assert_eq!(j.status, Status::Succeeded);
    }
    assert!(store.job(JobKind::Training, &t).await.unwrap().is_some());
    assert_eq!(run_count(&store, "alice/m").await, 3);
    // It runs again, under the same id.
    predict(&store, a, &v.id).await;
    assert_eq!(run_count(&store, "alice/m").await, 4);
    // A restore finds nothing the second time.
    let r = store.restore_version(m.id, &v.id, &alice).await.unwrap();
    assert!(matches!(r, Restore::NotInTrash), "{r:?}");
    let trail = audit_trail(&store, a).await;
    assert_eq!(
        trail,
        [
            ("delete_version".into(), "trashed".into(), "alice".into()),
            ("restore_version".into(), "restored".into(), "alice".into()),
        ]
    );
}

async fn a_version_comes_back_only_after_its_model(store: SqlStore) {
    let alice = user(&store, "alice").await;
    let a = alice.account.id;
    let m = model(&store, a, "m", Visibility::Private).await;
    let v = version(&store, m.id, "d1", "a1").await;
    trash_version(&store, m.id, &v.id, &alice).await;
    trash_model(&store, m.id, &alice).await;
    let r = store.restore_version(m.id, &v.id, &alice).await.unwrap();
    let Restore::Refused(b) = r else {
        panic!("{r:?}")
    };
    assert_eq!(kinds(&b), [BlockerKind::ModelInTrash]);
    assert_eq!(b[0].model.as_deref(), Some("alice/m"));
    // Refused, nothing changed; the refusal is on record.
    assert!(store
        .trashed_version("alice", "m", &v.id)
        .await
        .unwrap()
        .is_some());
    assert_eq!(
        audit_trail(&store, a).await.last().unwrap(),
        &("restore_version".into(), "refused".into(), "alice".into())
    );

    let back = restored_model(&store, m.id, &alice).await;
    assert_eq!(back.id, m.id);
    assert!(
        back.latest_version.is_none(),
        "its versions stay in the trash"
    );
    assert!(store.model("alice", "m").await.unwrap().is_some());
    restored_version(&store, m.id, &v.id, &alice).await;
    let got = store.model("alice", "m").await.unwrap().unwrap();
    assert_eq!(got.latest_version.unwrap().id, v.id);
}

async fn trashing_follows_the_deletion_rules(store: SqlStore) {
    let alice = user(&store, "alice").await;
    let bob = user(&store, "bob").await;
    let a = alice.account.id;
    let m = model(&store, a, "m", Visibility::Public).await;
    let v = version(&store, m.id, "d1", "a1").await;
    predict(&store, bob.account.id, &v.id).await;
    let d = store
        .trash_version(m.id, &v.id, &alice, false, week())
        .await
        .unwrap();
    assert!(!d.deleted && d.purge_at.is_none());
    assert_eq!(
        kinds(&d.blockers),
        [BlockerKind::Public, BlockerKind::PredictionsByOthers]
    );
    let d = store
        .trash_model(m.id, &alice, false, week())
        .await
        .unwrap();
    assert_eq!(
        kinds(&d.blockers),
        [BlockerKind::Public, BlockerKind::HasVersions]
    );
    assert!(store.version(m.id, &v.id).await.unwrap().is_some());
    assert_eq!(
        audit_trail(&store, a).await,
        [
            ("delete_version".into(), "refused".into(), "alice".into()),
            ("delete_model".into(), "refused".into(), "alice".into()),
        ]
    );

    // A fine-tune in the trash still needs its base.
    let base_m = model(&store, a, "base", Visibility::Private).await;
    let base = version(&store, base_m.id, "b1", "ab").await;
    let ft_m = model(&store, a, "ft", Visibility::Private).await;
    let mut nv = new_version(ft_m.id, "f1", "ab");
    nv.base_version_id = Some(base.id.clone());
    let StoredVersion { version: ft, .. } = store.create_version(nv).await.unwrap();
    trash_version(&store, ft_m.id, &ft.id, &alice).await;
    let d = store
        .trash_version(base_m.id, &base.id, &alice, false, week())
        .await
        .unwrap();
    assert_eq!(kinds(&d.blockers), [BlockerKind::FineTuneBase]);
    assert!(
        d.blockers[0].detail.contains("in the trash"),
        "{:?}",
        d.blockers
    );
    // Once the fine-tune is purged, its base can go.
    let p = store
        .purge_version(ft_m.id, &ft.id, PurgeBy::Owner(&alice))
        .await
        .unwrap();
    assert_eq!(
        p,
        Purge::Purged(Unreferenced::default()),
        "the base still uses the artifact"
    );
    trash_version(&store, base_m.id, &base.id, &alice).await;

    // A dry run tells, and changes nothing.
    let other = version(&store, base_m.id, "b2", "ab2").await;
    let d = store
        .trash_version(base_m.id, &other.id, &alice, true, week())
        .await
        .unwrap();
    assert!(!d.deleted && d.blockers.is_empty() && d.purge_at.is_none());
    assert!(store.version(base_m.id, &other.id).await.unwrap().is_some());
}

async fn purge_deletes_for_good_and_frees_files(store: SqlStore) {
    let alice = user(&store, "alice").await;
    let bob = user(&store, "bob").await;
    let a = alice.account.id;
    let m = model(&store, a, "m", Visibility::Private).await;
    let shared = version(&store, m.id, "d1", "shared").await;
    let v = version(&store, m.id, "d2", "shared").await;
    let mut w = new_version(m.id, "d3", "own");
    w.weights = Some("w1/weights.tar".into());
    let StoredVersion {
        version: weighted, ..
    } = store.create_version(w).await.unwrap();
    let p = predict(&store, a, &v.id).await.id;
    trash_version(&store, m.id, &v.id, &alice).await;
    trash_version(&store, m.id, &weighted.id, &alice).await;

    // Not the owner: there is nothing in a trash of theirs.
    let r = store
        .purge_version(m.id, &v.id, PurgeBy::Owner(&bob))
        .await
        .unwrap();
    assert_eq!(r, Purge::NotInTrash);
    // The artifact is still another version's.
    let r = store
        .purge_version(m.id, &v.id, PurgeBy::Owner(&alice))
        .await
        .unwrap();
    assert_eq!(r, Purge::Purged(Unreferenced::default()));
    assert_eq!(
        count_rows("SELECT COUNT(*) FROM versions WHERE id = $1", &v.id).await,
        0
    );
    assert_eq!(
        count_rows("SELECT COUNT(*) FROM jobs WHERE id = $1", &p).await,
        0
    );
    assert!(store
        .trashed_version("alice", "m", &v.id)
        .await
        .unwrap()
        .is_none());
    let r = store.restore_version(m.id, &v.id, &alice).await.unwrap();
    assert!(matches!(r, Restore::NotInTrash), "{r:?}");
    // The last user of its artifact and weights: both are the caller's to release.
    let r = store
        .purge_version(m.id, &weighted.id, PurgeBy::Owner(&alice))
        .await
        .unwrap();
    assert_eq!(
        r,
        Purge::Purged(Unreferenced {
            artifacts: vec!["own".into()],
            weights: vec!["w1/weights.tar".into()]
        })
    );
    assert!(!store.weights_in_use("w1/weights.tar").await.unwrap());
    // A purge only takes what is in the trash.
    let r = store
        .purge_version(m.id, &shared.id, PurgeBy::Owner(&alice))
        .await
        .unwrap();
    assert_eq!(r, Purge::NotInTrash);
    assert_eq!(version_ids(&store, m.id).await, vec![shared.id.clone()]);
    let trail = audit_trail(&store, a).await;
    assert_eq!(
        &trail[2..],
        [
            ("purge_version".into(), "purged".into(), "alice".into()),
            ("purge_version".into(), "purged".into(), "alice".into()),
        ]
    );
}

async fn expiry_with_a_short_window(store: SqlStore) {
    let alice = user(&store, "alice").await;
    let a = alice.account.id;
    let m = model(&store, a, "m", Visibility::Private).await;
    let keep = model(&store, a, "keep", Visibility::Private).await;
    let v = version(&store, m.id, "d1", "a1").await;
    let later = version(&store, keep.id, "d2", "a2").await;
    // Times before the window ends are taken before it starts, so a slow machine cannot
    // make them late.
    let before = Utc::now();
    let window = Duration::milliseconds(300);
    let d = store
        .trash_version(m.id, &v.id, &alice, false, before + window)
        .await
        .unwrap();
    assert!(d.deleted);
    store
        .trash_version(keep.id, &later.id, &alice, false, week())
        .await
        .unwrap();
    assert!(store.expired_trash(before, 100).await.unwrap().is_empty());
    // The sweep purges only what expired, checked again as it purges.
    let r = store
        .purge_version(m.id, &v.id, PurgeBy::Sweep { now: before })
        .await
        .unwrap();
    assert_eq!(r, Purge::NotInTrash);

    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    let now = Utc::now();
    let due = store.expired_trash(now, 100).await.unwrap();
    assert_eq!(due.len(), 1, "{due:?}");
    assert_eq!(due[0].kind, TrashKind::Version);
    assert_eq!(due[0].version_id.as_deref(), Some(v.id.as_str()));
    assert!(due[0].purge_at <= now);
    let r = store
        .purge_version(m.id, &v.id, PurgeBy::Sweep { now })
        .await
        .unwrap();
    assert!(matches!(r, Purge::Purged(_)), "{r:?}");
    assert!(store.expired_trash(now, 100).await.unwrap().is_empty());
    assert_eq!(
        audit_trail(&store, a).await.last().unwrap(),
        &(
            "purge_version".into(),
            "purged".into(),
            "trash sweep".into()
        )
    );

    // A model and its versions expire alike; the batch is bounded, soonest first.
    let v3 = version(&store, m.id, "d3", "a3").await;
    trash_version(&store, m.id, &v3.id, &alice).await;
    store
        .trash_model(m.id, &alice, false, Utc::now() - Duration::seconds(1))
        .await
        .unwrap();
    let due = store.expired_trash(Utc::now(), 1).await.unwrap();
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].kind, TrashKind::Model);
    let r = store
        .purge_model(m.id, PurgeBy::Sweep { now: Utc::now() })
        .await
        .unwrap();
    assert!(matches!(r, Purge::Purged(_)), "{r:?}");
    assert_eq!(
        count_rows("SELECT COUNT(*) FROM versions WHERE id = $1", &v3.id).await,
        0
    );
    assert!(store
        .expired_trash(Utc::now(), 100)
        .await
        .unwrap()
        .is_empty());
}

async fn trash_listing_per_owner(store: SqlStore) {
    user(&store, "alice").await;
    let bob = user(&store, "bob").await;
    let acme = org(&store, "acme").await;
    let alice = join(&store, &acme, "alice").await;
    let m = model(&store, alice.account.id, "m", Visibility::Private).await;
    let om = model(&store, acme.account.id, "om", Visibility::Private).await;
    let bm = model(&store, bob.account.id, "bm", Visibility::Private).await;
    let v = sized_version(&store, m.id, "a1", &[("b1", 10)]).await;
    trash_version(&store, m.id, &v.id, &alice).await;
    trash_model(&store, om.id, &alice).await;
    trash_model(&store, bm.id, &bob).await;

    let items = store
        .trash(&[alice.account.id, acme.account.id], all())
        .await
        .unwrap();
    let got: Vec<_> = items
        .iter()
        .map(|i| (i.kind, i.target(), i.trashed_by.clone(), i.frees_bytes))
        .collect();
    assert_eq!(
        got,
        [
            (TrashKind::Model, "acme/om".into(), Some("alice".into()), 0),
            (
                TrashKind::Version,
                format!("alice/m:{}", v.id),
                Some("alice".into()),
                10
            ),
        ],
        "newest first, only the trashes asked for"
    );
    assert!(items[0].purge_at > items[0].trashed_at);
    let bobs = store.trash(&[bob.account.id], all()).await.unwrap();
    assert_eq!(bobs.len(), 1);
    // Paged by the time each was deleted.
    let cursor = items[0].trashed_at.timestamp_micros();
    let next = store
        .trash(&[alice.account.id, acme.account.id], page(Some(cursor), 10))
        .await
        .unwrap();
    assert_eq!(next.len(), 1);
    assert_eq!(next[0].kind, TrashKind::Version);
    // Lookups by name.
    let item = store.trashed_model("acme", "om").await.unwrap().unwrap();
    assert_eq!(item.model_id, om.id);
    assert!(store.trashed_model("alice", "m").await.unwrap().is_none());
    let item = store
        .trashed_version("alice", "m", &v.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(item.frees_bytes, 10);
}

async fn frees_bytes_counts_shared_content_once(store: SqlStore) {
    let alice = user(&store, "alice").await;
    let a = alice.account.id;
    let m = model(&store, a, "m", Visibility::Private).await;
    let other = model(&store, a, "other", Visibility::Private).await;
    // v1 and v2 share blob "b"; v3 (another model) shares v1's whole artifact.
    let v1 = sized_version(&store, m.id, "a1", &[("a", 100), ("b", 200)]).await;
    let v2 = sized_version(&store, m.id, "a2", &[("b", 200), ("c", 400)]).await;
    let StoredVersion { version: v3, .. } = store
        .create_version(new_version(other.id, "a1", "a1"))
        .await
        .unwrap();
    let frees = |id: String, m_id: i64| {
        let (store, alice) = (store.clone(), alice.clone());
        async move {
            store
                .trash_version(m_id, &id, &alice, true, week())
                .await
                .unwrap()
                .frees_bytes
        }
    };
    assert_eq!(frees(v2.id.clone(), m.id).await, 400, "b is v1's too");
    assert_eq!(frees(v1.id.clone(), m.id).await, 0, "a1 is v3's too");
    // What is in the trash counts as going.
    trash_version(&store, other.id, &v3.id, &alice).await;
    assert_eq!(frees(v1.id.clone(), m.id).await, 100, "b is still v2's");
    let d = trash_version(&store, m.id, &v2.id, &alice).await;
    assert_eq!(d.frees_bytes, 400);
    assert_eq!(frees(v1.id.clone(), m.id).await, 300);
    // The final deletion's preview says the same.
    let d = store
        .delete_version(m.id, &v1.id, &alice, true)
        .await
        .unwrap();
    assert_eq!(d.frees_bytes, 300);
    // The model's: everything of its versions no version outside the trash keeps.
    trash_version(&store, m.id, &v1.id, &alice).await;
    let d = store.trash_model(m.id, &alice, true, week()).await.unwrap();
    assert_eq!(d.frees_bytes, 700);
    // Weights count once, while no other version uses them.
    let w = model(&store, a, "w", Visibility::Private).await;
    let mut ids = Vec::new();
    for d in ["w1", "w2"] {
        let mut nv = new_version(w.id, d, "aw");
        nv.weights = Some("sha/weights.tar".into());
        ids.push(store.create_version(nv).await.unwrap().version.id);
    }
    store.record_weights("sha/weights.tar", 5000).await.unwrap();
    assert_eq!(frees(ids[0].clone(), w.id).await, 0);
    trash_version(&store, w.id, &ids[1], &alice).await;
    assert_eq!(frees(ids[0].clone(), w.id).await, 5000);
    // Recording is idempotent.
    store
        .record_artifact("a1", &[s("a"), ("b".into(), 200)])
        .await
        .unwrap();
    assert_eq!(
        count_rows(
            "SELECT COUNT(*) FROM artifact_blobs WHERE artifact = $1",
            "a1"
        )
        .await,
        2
    );
    // What a release checks on disk once the tree is gone.
    let mut linked = store.artifact_blobs("a1").await.unwrap();
    linked.sort();
    assert_eq!(linked, vec!["a".to_string(), "b".to_string()]);
    assert!(store.artifact_blobs("none").await.unwrap().is_empty());
}

async fn storage_of_versions_models_and_accounts(store: SqlStore) {
    let alice = user(&store, "alice").await;
    let bob = user(&store, "bob").await;
    let a = alice.account.id;
    let m = model(&store, a, "m", Visibility::Private).await;
    let v1 = sized_version(&store, m.id, "a1", &[("a", 100), ("b", 200)]).await;
    let v2 = sized_version(&store, m.id, "a2", &[("b", 200), ("c", 400)]).await;
    let bm = model(&store, bob.account.id, "bm", Visibility::Private).await;
    sized_version(&store, bm.id, "a3", &[("c", 400), ("d", 800)]).await;

    let st = store.version_storage(&v1.id).await.unwrap();
    assert_eq!((st.bytes, st.unique_bytes), (300, 100));
    let st = store.version_storage(&v2.id).await.unwrap();
    assert_eq!((st.bytes, st.unique_bytes), (600, 0));
    let st = store.model_storage(m.id).await.unwrap();
    assert_eq!((st.bytes, st.unique_bytes), (700, 300), "c is bob's too");
    let r = store.version_storage("nope").await;
    assert!(is_not_found(&r), "{r:?}");

    let acc = store.account_storage(a).await.unwrap();
    assert_eq!(
        (acc.bytes, acc.unique_bytes, acc.trash_bytes),
        (700, 300, 0)
    );
    trash_version(&store, m.id, &v1.id, &alice).await;
    let acc = store.account_storage(a).await.unwrap();
    assert_eq!(
        (acc.bytes, acc.unique_bytes, acc.trash_bytes),
        (700, 300, 100),
        "a trashed version still takes its room until purged"
    );

    // Forgetting sizes waits until no version uses the content.
    store.forget_artifact("a1").await.unwrap();
    assert_eq!(store.version_storage(&v1.id).await.unwrap().bytes, 300);
    store
        .purge_version(m.id, &v1.id, PurgeBy::Owner(&alice))
        .await
        .unwrap();
    store.forget_artifact("a1").await.unwrap();
    assert_eq!(
        count_rows("SELECT COUNT(*) FROM blobs WHERE blob = $1", "a").await,
        0
    );
    assert_eq!(
        count_rows("SELECT COUNT(*) FROM blobs WHERE blob = $1", "b").await,
        1
    );
    // Artifacts stored before sizes were recorded are listed for the server to measure.
    version(&store, m.id, "old", "unmeasured").await;
    assert_eq!(
        store.artifacts_without_sizes(10).await.unwrap(),
        ["unmeasured"]
    );
}

async fn final_model_deletion_takes_its_trashed_versions(store: SqlStore) {
    let alice = user(&store, "alice").await;
    let a = alice.account.id;
    let m = model(&store, a, "m", Visibility::Private).await;
    let v = sized_version(&store, m.id, "a1", &[("x", 50)]).await;
    let p = predict(&store, a, &v.id).await.id;
    trash_version(&store, m.id, &v.id, &alice).await;
    let d = store.delete_model(m.id, &alice, true).await.unwrap();
    assert!(d.blockers.is_empty());
    assert_eq!(d.frees_bytes, 50);
    let d = store.delete_model(m.id, &alice, false).await.unwrap();
    assert!(d.deleted, "{d:?}");
    assert_eq!(d.unreferenced.artifacts, ["a1"]);
    assert_eq!(d.unreferenced_artifact.as_deref(), Some("a1"));
    assert_eq!(
        count_rows("SELECT COUNT(*) FROM jobs WHERE id = $1", &p).await,
        0
    );
    assert!(store
        .trashed_version("alice", "m", &v.id)
        .await
        .unwrap()
        .is_none());
    model(&store, a, "m", Visibility::Private).await;
}

async fn prune_keeps_the_newest_and_the_blocked(store: SqlStore) {
    let alice = user(&store, "alice").await;
    let bob = user(&store, "bob").await;
    let a = alice.account.id;
    let m = model(&store, a, "m", Visibility::Private).await;
    // Oldest first: v0 .. v4; v1 is blocked by bob's prediction; v0 and v2 share a blob.
    let mut v = Vec::new();
    for i in 0..5 {
        let blobs = [
            (format!("own{i}"), 10 * (i as i64 + 1)),
            ("shared".into(), 1000),
        ];
        let blobs: Vec<(&str, i64)> = if i == 0 || i == 2 {
            blobs.iter().map(|(b, n)| (b.as_str(), *n)).collect()
        } else {
            blobs[..1].iter().map(|(b, n)| (b.as_str(), *n)).collect()
        };
        v.push(sized_version(&store, m.id, &format!("a{i}"), &blobs).await);
    }
    predict(&store, bob.account.id, &v[1].id).await;

    let dry = store
        .prune_versions(m.id, 2, &alice, true, Some(week()))
        .await
        .unwrap();
    assert_eq!(dry.deleted, [v[2].id.clone(), v[0].id.clone()]);
    let kept: Vec<_> = dry.kept.iter().map(|(id, _)| id.clone()).collect();
    assert_eq!(kept, [v[4].id.clone(), v[3].id.clone(), v[1].id.clone()]);
    assert_eq!(dry.kept[0].1, KeptReason::Newest);
    let KeptReason::Blocked(b) = &dry.kept[2].1 else {
        panic!("{:?}", dry.kept)
    };
    assert_eq!(kinds(b), [BlockerKind::PredictionsByOthers]);
    assert_eq!(dry.frees_bytes, 10 + 30 + 1000, "the shared blob once");
    assert_eq!(
        version_ids(&store, m.id).await.len(),
        5,
        "a dry run changes nothing"
    );

    let real = store
        .prune_versions(m.id, 2, &alice, false, Some(week()))
        .await
        .unwrap();
    assert_eq!(real.deleted, dry.deleted);
    assert_eq!(real.kept, dry.kept);
    assert_eq!(real.frees_bytes, dry.frees_bytes);
    assert_eq!(
        version_ids(&store, m.id).await,
        [v[4].id.clone(), v[3].id.clone(), v[1].id.clone()]
    );
    assert_eq!(store.trash(&[a], all()).await.unwrap().len(), 2);
    // Without the trash, the versions go for good and their files are named.
    let gone = store
        .prune_versions(m.id, 1, &alice, false, None)
        .await
        .unwrap();
    assert_eq!(gone.deleted, [v[3].id.clone()]);
    assert_eq!(gone.unreferenced.artifacts, ["a3"]);
    let r = store.prune_versions(999, 1, &alice, true, None).await;
    assert!(is_not_found(&r), "{r:?}");
}

async fn race_purge_vs_restore(store: SqlStore) {
    let alice = user(&store, "alice").await;
    let a = alice.account.id;
    let m = model(&store, a, "m", Visibility::Private).await;
    let (mut restored, mut purged) = (0, 0);
    for round in 0..ROUNDS {
        let v = version(&store, m.id, &format!("d{round}"), &format!("a{round}")).await;
        let p = predict(&store, a, &v.id).await.id;
        trash_version(&store, m.id, &v.id, &alice).await;
        let barrier = Arc::new(Barrier::new(2));
        let restorer = {
            let (store, alice, id) = (store.clone(), alice.clone(), v.id.clone());
            contend(&barrier, async move {
                store.restore_version(m.id, &id, &alice).await
            })
        };
        let purger = {
            let (store, alice, id) = (store.clone(), alice.clone(), v.id.clone());
            contend(&barrier, async move {
                store.purge_version(m.id, &id, PurgeBy::Owner(&alice)).await
            })
        };
        let r = restorer.await.unwrap().unwrap();
        let p2 = purger.await.unwrap().unwrap();
        match (r, p2) {
            (Restore::Restored(_), Purge::NotInTrash) => {
                restored += 1;
                assert!(
                    store.version(m.id, &v.id).await.unwrap().is_some(),
                    "round {round}"
                );
                assert!(store.job(JobKind::Prediction, &p).await.unwrap().is_some());
            }
            (Restore::NotInTrash, Purge::Purged(u)) => {
                purged += 1;
                assert_eq!(u.artifacts, [format!("a{round}")], "round {round}");
                assert_eq!(
                    count_rows("SELECT COUNT(*) FROM versions WHERE id = $1", &v.id).await,
                    0
                );
                assert_eq!(
                    count_rows("SELECT COUNT(*) FROM jobs WHERE id = $1", &p).await,
                    0
                );
            }
            other => panic!("round {round}: exactly one must win: {other:?}"),
        }
        assert!(store
            .trashed_version("alice", "m", &v.id)
            .await
            .unwrap()
            .is_none());
    }
    assert_eq!(restored + purged, ROUNDS);
    // Each trashed, then restored or purged: the log has one outcome per round.
    let trail = audit_trail(&store, a).await;
    let outcomes = trail
        .iter()
        .filter(|(_, o, _)| o == "restored" || o == "purged")
        .count();
    assert_eq!(outcomes, ROUNDS);
    assert_eq!(run_count(&store, "alice/m").await, restored as i64);
    eprintln!(
        "{}: versions: {restored} restored, {purged} purged",
        store.backend()
    );

    // A model, with a version in the trash that goes with it when purged.
    let (mut restored, mut purged) = (0, 0);
    for round in 0..ROUNDS {
        let m = model(&store, a, &format!("model{round}"), Visibility::Private).await;
        let v = version(&store, m.id, &format!("m{round}"), &format!("am{round}")).await;
        trash_version(&store, m.id, &v.id, &alice).await;
        trash_model(&store, m.id, &alice).await;
        let barrier = Arc::new(Barrier::new(2));
        let restorer = {
            let (store, alice) = (store.clone(), alice.clone());
            contend(
                &barrier,
                async move { store.restore_model(m.id, &alice).await },
            )
        };
        let purger = {
            let (store, alice) = (store.clone(), alice.clone());
            contend(&barrier, async move {
                store.purge_model(m.id, PurgeBy::Owner(&alice)).await
            })
        };
        let (r, p) = (
            restorer.await.unwrap().unwrap(),
            purger.await.unwrap().unwrap(),
        );
        let versions_left = count_rows("SELECT COUNT(*) FROM versions WHERE id = $1", &v.id).await;
        match (r, p) {
            (Restore::Restored(_), Purge::NotInTrash) => {
                restored += 1;
                assert_eq!(
                    versions_left, 1,
                    "round {round}: its version stays in the trash"
                );
                assert!(store
                    .trashed_version("alice", &m.name, &v.id)
                    .await
                    .unwrap()
                    .is_some());
            }
            (Restore::NotInTrash, Purge::Purged(u)) => {
                purged += 1;
                assert_eq!(versions_left, 0, "round {round}");
                assert_eq!(u.artifacts, [format!("am{round}")]);
                assert!(store.model("alice", &m.name).await.unwrap().is_none());
            }
            other => panic!("round {round}: exactly one must win: {other:?}"),
        }
    }
    assert_eq!(restored + purged, ROUNDS);
    eprintln!(
        "{}: models: {restored} restored, {purged} purged",
        store.backend()
    );
}

async fn race_restore_vs_new_model_of_the_same_name(store: SqlStore) {
    let alice = user(&store, "alice").await;
    let a = alice.account.id;
    for round in 0..ROUNDS {
        let name = format!("m{round}");
        let m = model(&store, a, &name, Visibility::Private).await;
        trash_model(&store, m.id, &alice).await;
        let barrier = Arc::new(Barrier::new(2));
        let restorer = {
            let (store, alice) = (store.clone(), alice.clone());
            contend(
                &barrier,
                async move { store.restore_model(m.id, &alice).await },
            )
        };
        let creator = {
            let (store, name) = (store.clone(), name.clone());
            contend(&barrier, async move {
                store
                    .create_model_checked(NewModel {
                        owner_id: a,
                        name,
                        hardware: "cpu".into(),
                        ..Default::default()
                    })
                    .await
            })
        };
        let r = restorer.await.unwrap().unwrap();
        assert!(matches!(r, Restore::Restored(_)), "round {round}: {r:?}");
        match creator.await.unwrap() {
            Ok(Err(held)) => assert_eq!(held.name, name),
            Err(StoreError::Conflict(_)) => {}
            other => panic!("round {round}: the name was the trashed model's: {other:?}"),
        }
        let got = store.model("alice", &name).await.unwrap().unwrap();
        assert_eq!(got.id, m.id, "round {round}");
    }
}

async fn race_prediction_vs_trashing(store: SqlStore) {
    let alice = user(&store, "alice").await;
    let bob = user(&store, "bob").await.account;
    let m = model(&store, alice.account.id, "m", Visibility::Private).await;
    let (mut trashed, mut refused) = (0, 0);
    for round in 0..ROUNDS {
        let v = version(&store, m.id, &format!("d{round}"), &format!("a{round}")).await;
        let barrier = Arc::new(Barrier::new(2));
        let trasher = {
            let (store, alice, id) = (store.clone(), alice.clone(), v.id.clone());
            contend(&barrier, async move {
                store.trash_version(m.id, &id, &alice, false, week()).await
            })
        };
        let predictor = {
            let (store, id) = (store.clone(), v.id.clone());
            contend(&barrier, async move {
                store
                    .create_job(new_job(JobKind::Prediction, bob.id, &id))
                    .await
            })
        };
        let d = trasher.await.unwrap().unwrap();
        let p = predictor.await.unwrap();
        if d.deleted {
            trashed += 1;
            assert!(
                is_not_found(&p),
                "round {round}: a prediction on a trashed version: {p:?}"
            );
        } else {
            refused += 1;
            assert!(p.is_ok(), "round {round}: {p:?}");
            assert_eq!(kinds(&d.blockers), [BlockerKind::PredictionsByOthers]);
        }
    }
    assert_eq!(trashed + refused, ROUNDS);
    assert_eq!(run_count(&store, "alice/m").await, refused as i64);
    eprintln!("{}: {trashed} trashed, {refused} refused", store.backend());
}
