//! The storage layer's races, run against SQLite and PostgreSQL alike: contenders start
//! together behind a barrier, and whatever order they land in, the outcome must be one a
//! serial order could give. Also the settings every node of one database shares, decided once
//! whoever offers first.
#[macro_use]
mod common;

use std::collections::BTreeSet;
use std::sync::Arc;

use common::*;
use modelyard_domain::*;
use modelyard_storage::prelude::*;
use modelyard_storage::{MemberRemoval, SqlStore, StoreError, StoredVersion};
use tokio::sync::Barrier;

conformance! {
    race_prediction_vs_version_deletion => sqlite_race_prediction_vs_version_deletion, postgres_race_prediction_vs_version_deletion;
    race_own_prediction_vs_version_deletion => sqlite_race_own_prediction_vs_version_deletion, postgres_race_own_prediction_vs_version_deletion;
    race_deployment_vs_version_deletion => sqlite_race_deployment_vs_version_deletion, postgres_race_deployment_vs_version_deletion;
    race_version_vs_model_deletion => sqlite_race_version_vs_model_deletion, postgres_race_version_vs_model_deletion;
    race_fine_tune_vs_version_deletion => sqlite_race_fine_tune_vs_version_deletion, postgres_race_fine_tune_vs_version_deletion;
    race_same_content_push => sqlite_race_same_content_push, postgres_race_same_content_push;
    race_removing_the_last_two_members => sqlite_race_removing_the_last_two_members, postgres_race_removing_the_last_two_members;
    shared_settings_are_decided_once => sqlite_shared_settings_are_decided_once, postgres_shared_settings_are_decided_once;
}

// Races. Each round starts its contenders together behind a barrier; whatever the order they
// land in, the outcome must be one a serial order could give.

const ROUNDS: usize = 20;

async fn race_prediction_vs_version_deletion(store: SqlStore) {
    const PREDICTORS: usize = 3;
    let alice = user(&store, "alice").await;
    let bob = user(&store, "bob").await.account;
    let m = model(&store, alice.account.id, "m", Visibility::Private).await;
    let (mut deleted, mut refused, mut bobs_runs) = (0, 0, 0);
    for round in 0..ROUNDS {
        let v = version(&store, m.id, &format!("d{round}"), &format!("a{round}")).await;
        let barrier = Arc::new(Barrier::new(1 + PREDICTORS));
        let deleter = {
            let (store, alice, vid) = (store.clone(), alice.clone(), v.id.clone());
            contend(&barrier, async move {
                store.delete_version(m.id, &vid, &alice, false).await
            })
        };
        let predictors: Vec<_> = (0..PREDICTORS)
            .map(|_| {
                let (store, vid) = (store.clone(), v.id.clone());
                contend(&barrier, async move {
                    store
                        .create_job(new_job(JobKind::Prediction, bob.id, &vid))
                        .await
                })
            })
            .collect();
        let deletion = deleter
            .await
            .unwrap()
            .unwrap_or_else(|e| panic!("round {round}: delete: {e}"));
        let mut ok = Vec::new();
        for p in predictors {
            match p.await.unwrap() {
                Ok(job) => ok.push(job),
                Err(StoreError::NotFound(_)) => {}
                Err(e) => panic!("round {round}: create_job failed otherwise than NotFound: {e}"),
            }
        }
        let bobs_on_v: Vec<Job> = store
            .list_jobs(JobKind::Prediction, bob.id, all())
            .await
            .unwrap()
            .into_iter()
            .filter(|j| j.version_id == v.id)
            .collect();
        if deletion.deleted {
            deleted += 1;
            assert!(
                ok.is_empty(),
                "round {round}: the version was deleted, yet {} prediction(s) on it succeeded",
                ok.len()
            );
            assert!(deletion.blockers.is_empty());
            assert!(
                bobs_on_v.is_empty(),
                "round {round}: jobs reference a deleted version"
            );
            assert!(store.version_by_id(&v.id).await.unwrap().is_none());
        } else {
            refused += 1;
            assert_eq!(
                ok.len(),
                PREDICTORS,
                "round {round}: the version stayed, so every prediction must succeed"
            );
            assert_eq!(
                kinds(&deletion.blockers),
                [BlockerKind::PredictionsByOthers],
                "round {round}"
            );
            let b = &deletion.blockers[0];
            assert_eq!(b.account.as_deref(), Some("bob"));
            let n = b.prediction_count.unwrap();
            assert!(
                (1..=PREDICTORS as i64).contains(&n),
                "round {round}: count {n}"
            );
            assert_eq!(bobs_on_v.len(), PREDICTORS);
            assert!(store.version_by_id(&v.id).await.unwrap().is_some());
            bobs_runs += PREDICTORS as i64;
        }
    }
    assert_eq!(deleted + refused, ROUNDS);
    // The run count saw exactly the predictions that stayed.
    assert_eq!(run_count(&store, "alice/m").await, bobs_runs);
    eprintln!("{}: {deleted} deleted, {refused} refused", store.backend());
}

async fn race_own_prediction_vs_version_deletion(store: SqlStore) {
    const PREDICTORS: usize = 3;
    let alice = user(&store, "alice").await;
    let a = alice.account.id;
    let m = model(&store, a, "m", Visibility::Private).await;
    for round in 0..ROUNDS {
        let v = version(&store, m.id, &format!("d{round}"), "art").await;
        let barrier = Arc::new(Barrier::new(1 + PREDICTORS));
        let deleter = {
            let (store, alice, vid) = (store.clone(), alice.clone(), v.id.clone());
            contend(&barrier, async move {
                store.delete_version(m.id, &vid, &alice, false).await
            })
        };
        let predictors: Vec<_> = (0..PREDICTORS)
            .map(|_| {
                let (store, vid) = (store.clone(), v.id.clone());
                contend(&barrier, async move {
                    store
                        .create_job(new_job(JobKind::Prediction, a, &vid))
                        .await
                })
            })
            .collect();
        let deletion = deleter
            .await
            .unwrap()
            .unwrap_or_else(|e| panic!("round {round}: delete: {e}"));
        // Own runs never block: the deletion always goes through.
        assert!(
            deletion.deleted && deletion.blockers.is_empty(),
            "round {round}: {deletion:?}"
        );
        for p in predictors {
            match p.await.unwrap() {
                // It landed first and went with the version.
                Ok(job) => assert!(store
                    .job(JobKind::Prediction, &job.id)
                    .await
                    .unwrap()
                    .is_none()),
                Err(StoreError::NotFound(_)) => {}
                Err(e) => panic!("round {round}: create_job failed otherwise than NotFound: {e}"),
            }
        }
    }
    assert!(store
        .list_jobs(JobKind::Prediction, a, all())
        .await
        .unwrap()
        .is_empty());
    assert_eq!(run_count(&store, "alice/m").await, 0);
}

async fn race_deployment_vs_version_deletion(store: SqlStore) {
    let alice = user(&store, "alice").await;
    let a = alice.account.id;
    let m = model(&store, a, "m", Visibility::Private).await;
    let (mut deleted, mut refused) = (0, 0);
    for round in 0..ROUNDS {
        let v = version(&store, m.id, &format!("d{round}"), &format!("a{round}")).await;
        let name = format!("dep{round}");
        let barrier = Arc::new(Barrier::new(2));
        let deleter = {
            let (store, alice, vid) = (store.clone(), alice.clone(), v.id.clone());
            contend(&barrier, async move {
                store.delete_version(m.id, &vid, &alice, false).await
            })
        };
        let deployer = {
            let (store, vid, name) = (store.clone(), v.id.clone(), name.clone());
            contend(&barrier, async move {
                store
                    .create_deployment(a, &name, release(&vid, 0, 1), "alice")
                    .await
            })
        };
        let deletion = deleter
            .await
            .unwrap()
            .unwrap_or_else(|e| panic!("round {round}: delete: {e}"));
        let deployed = deployer.await.unwrap();
        let stored = store.deployment("alice", &name).await.unwrap();
        if deletion.deleted {
            deleted += 1;
            assert!(
                is_not_found(&deployed),
                "round {round}: version deleted, yet create_deployment gave {deployed:?}"
            );
            assert!(
                stored.is_none(),
                "round {round}: a deployment runs a deleted version"
            );
            assert!(store.version_by_id(&v.id).await.unwrap().is_none());
        } else {
            refused += 1;
            let dep = deployed.unwrap_or_else(|e| panic!("round {round}: version kept, yet {e}"));
            assert_eq!(
                kinds(&deletion.blockers),
                [BlockerKind::Deployment],
                "round {round}"
            );
            let full = format!("alice/{name}");
            assert_eq!(
                deletion.blockers[0].deployment.as_deref(),
                Some(full.as_str())
            );
            assert_eq!(stored.expect("deployment").release.version_id, v.id);
            assert_eq!(dep.release.version_id, v.id);
        }
    }
    assert_eq!(deleted + refused, ROUNDS);
    eprintln!("{}: {deleted} deleted, {refused} refused", store.backend());
}

async fn race_version_vs_model_deletion(store: SqlStore) {
    let alice = user(&store, "alice").await;
    let a = alice.account.id;
    for round in 0..ROUNDS {
        let name = format!("m{round}");
        let m = model(&store, a, &name, Visibility::Private).await;
        let barrier = Arc::new(Barrier::new(2));
        let deleter = {
            let (store, alice) = (store.clone(), alice.clone());
            contend(&barrier, async move {
                store.delete_model(m.id, &alice, false).await
            })
        };
        let pusher = {
            let store = store.clone();
            contend(&barrier, async move {
                store.create_version(new_version(m.id, "d", "art")).await
            })
        };
        let deletion = deleter
            .await
            .unwrap()
            .unwrap_or_else(|e| panic!("round {round}: delete: {e}"));
        let pushed = pusher.await.unwrap();
        if deletion.deleted {
            assert!(
                is_not_found(&pushed),
                "round {round}: model deleted, yet the push gave {pushed:?}"
            );
            assert!(store.model("alice", &name).await.unwrap().is_none());
        } else {
            let StoredVersion {
                version: v,
                created,
            } = pushed.unwrap_or_else(|e| panic!("round {round}: model kept, yet {e}"));
            assert!(created);
            assert_eq!(
                kinds(&deletion.blockers),
                [BlockerKind::HasVersions],
                "round {round}"
            );
            assert_eq!(deletion.blockers[0].versions.as_deref(), Some(&[v.id][..]));
            assert!(store.model("alice", &name).await.unwrap().is_some());
        }
    }
}

async fn race_fine_tune_vs_version_deletion(store: SqlStore) {
    let alice = user(&store, "alice").await;
    let bob = user(&store, "bob").await.account;
    let a = alice.account.id;
    let base = model(&store, a, "base", Visibility::Private).await;
    let ft = model(&store, bob.id, "ft", Visibility::Private).await;
    let (mut deleted, mut refused) = (0, 0);
    for round in 0..ROUNDS {
        let v = version(&store, base.id, &format!("d{round}"), "art").await;
        let barrier = Arc::new(Barrier::new(3));
        let deleter = {
            let (store, alice, vid) = (store.clone(), alice.clone(), v.id.clone());
            contend(&barrier, async move {
                store.delete_version(base.id, &vid, &alice, false).await
            })
        };
        // Bob starts a training from it while pushing a version fine-tuned from it.
        let trainer = {
            let (store, vid) = (store.clone(), v.id.clone());
            contend(&barrier, async move {
                let mut j = new_job(JobKind::Training, bob.id, &vid);
                j.destination_model_id = Some(ft.id);
                store.create_job(j).await
            })
        };
        let pusher = {
            let (store, vid) = (store.clone(), v.id.clone());
            contend(&barrier, async move {
                let mut nv = new_version(ft.id, &format!("ft{round}"), "ft-art");
                nv.base_version_id = Some(vid);
                store.create_version(nv).await
            })
        };
        let deletion = deleter
            .await
            .unwrap()
            .unwrap_or_else(|e| panic!("round {round}: delete: {e}"));
        let trained = trainer.await.unwrap();
        let pushed = pusher.await.unwrap();
        if deletion.deleted {
            deleted += 1;
            assert!(
                is_not_found(&trained),
                "round {round}: base deleted, yet the training gave {trained:?}"
            );
            assert!(
                is_not_found(&pushed),
                "round {round}: base deleted, yet the fine-tuned push gave {pushed:?}"
            );
        } else {
            refused += 1;
            let t = trained.unwrap_or_else(|e| panic!("round {round}: base kept, yet {e}"));
            let fv = pushed
                .unwrap_or_else(|e| panic!("round {round}: base kept, yet {e}"))
                .version;
            assert!(
                !deletion.blockers.is_empty()
                    && deletion
                        .blockers
                        .iter()
                        .all(|b| b.kind == BlockerKind::FineTuneBase),
                "round {round}: {:?}",
                deletion.blockers
            );
            // Each blocker names what was there when the deletion looked, and nothing else.
            let derived = format!("bob/ft:{}", fv.id);
            for b in &deletion.blockers {
                assert!(
                    b.training.as_deref() == Some(t.id.as_str())
                        || b.version.as_deref() == Some(derived.as_str()),
                    "round {round}: {b:?}"
                );
            }
            assert!(store.version_by_id(&v.id).await.unwrap().is_some());
            // Leave nothing running, so the next round starts clean.
            store.cancel_job(JobKind::Training, &t.id).await.unwrap();
        }
    }
    assert_eq!(deleted + refused, ROUNDS);
    eprintln!("{}: {deleted} deleted, {refused} refused", store.backend());
}

async fn race_same_content_push(store: SqlStore) {
    const PUSHERS: usize = 4;
    let alice = user(&store, "alice").await;
    let m = model(&store, alice.account.id, "m", Visibility::Private).await;
    for round in 0..ROUNDS {
        let barrier = Arc::new(Barrier::new(PUSHERS));
        let pushers: Vec<_> = (0..PUSHERS)
            .map(|_| {
                let store = store.clone();
                contend(&barrier, async move {
                    store
                        .create_version(new_version(m.id, &format!("d{round}"), "art"))
                        .await
                })
            })
            .collect();
        let mut ids = BTreeSet::new();
        let mut created = 0;
        for p in pushers {
            let pushed = p.await.unwrap().unwrap_or_else(|e| {
                panic!("round {round}: pushing the same content twice at once: {e}")
            });
            ids.insert(pushed.version.id);
            created += pushed.created as usize;
        }
        assert_eq!(ids.len(), 1, "round {round}: one content, one version");
        assert_eq!(created, 1, "round {round}: exactly one push creates it");
    }
    assert_eq!(store.versions(m.id, all()).await.unwrap().len(), ROUNDS);
}

async fn race_removing_the_last_two_members(store: SqlStore) {
    let acme = org(&store, "acme").await.account;
    let alice = user(&store, "alice").await.account;
    let bob = user(&store, "bob").await.account;
    for round in 0..ROUNDS {
        store.add_member(acme.id, alice.id).await.unwrap();
        store.add_member(acme.id, bob.id).await.unwrap();
        let barrier = Arc::new(Barrier::new(2));
        let removals: Vec<_> = [alice.id, bob.id]
            .into_iter()
            .map(|member| {
                let store = store.clone();
                contend(&barrier, async move {
                    store.remove_member(acme.id, member).await
                })
            })
            .collect();
        let mut outcomes = Vec::new();
        for r in removals {
            outcomes.push(
                r.await
                    .unwrap()
                    .unwrap_or_else(|e| panic!("round {round}: remove_member: {e}")),
            );
        }
        let removed = outcomes
            .iter()
            .filter(|o| **o == MemberRemoval::Removed)
            .count();
        assert_eq!(removed, 1, "round {round}: {outcomes:?}");
        assert!(
            outcomes.iter().any(
                |o| matches!(o, MemberRemoval::Refused(b) if kinds(b) == [BlockerKind::LastMember])
            ),
            "round {round}: {outcomes:?}"
        );
        assert_eq!(
            store.members(acme.id).await.unwrap().len(),
            1,
            "round {round}: the organization must keep exactly one member"
        );
    }
}

// Settings every node shares.

/// Nodes starting at once each offer a key; all of them end up with the same one, and later
/// offers change nothing.
async fn shared_settings_are_decided_once(store: SqlStore) {
    let store = Arc::new(store);
    let barrier = Arc::new(Barrier::new(8));
    let mut tasks = Vec::new();
    for i in 0..8 {
        let (store, barrier) = (store.clone(), barrier.clone());
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            store
                .shared_setting("server_key", &format!("key-{i}"))
                .await
                .unwrap()
        }));
    }
    let mut seen = Vec::new();
    for t in tasks {
        seen.push(t.await.unwrap());
    }
    assert!(seen.iter().all(|k| *k == seen[0]), "{seen:?}");
    assert!(seen[0].starts_with("key-"), "{seen:?}");
    assert_eq!(
        store.shared_setting("server_key", "late").await.unwrap(),
        seen[0]
    );
    assert_eq!(store.shared_setting("other", "x").await.unwrap(), "x");
}
