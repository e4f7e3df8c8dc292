//! One conformance suite for the storage layer, run against SQLite and PostgreSQL alike.
//!
//! Every test is an `async fn name(store: SqlStore)` that sees a fresh, migrated database;
//! [`conformance!`] instantiates it as `sqlite_name` and `postgres_name`.
#[macro_use]
mod common;

use chrono::{Duration, Utc};
use common::*;
use modelyard_domain::*;
use modelyard_storage::prelude::*;
use modelyard_storage::{
    Deletion, JobEnd, JobLease, MemberRemoval, PasswordRecord, SqlStore, StoredVersion,
};
use serde_json::json;

conformance! {
    accounts_members_and_tokens => sqlite_accounts_members_and_tokens, postgres_accounts_members_and_tokens;
    models_create_and_get => sqlite_models_create_and_get, postgres_models_create_and_get;
    list_models_visibility => sqlite_list_models_visibility, postgres_list_models_visibility;
    list_models_search => sqlite_list_models_search, postgres_list_models_search;
    pagination_by_cursor => sqlite_pagination_by_cursor, postgres_pagination_by_cursor;
    update_model_patch => sqlite_update_model_patch, postgres_update_model_patch;
    versions_are_content_addressed => sqlite_versions_are_content_addressed, postgres_versions_are_content_addressed;
    jobs_run_count_and_cancel => sqlite_jobs_run_count_and_cancel, postgres_jobs_run_count_and_cancel;
    delete_model_rules => sqlite_delete_model_rules, postgres_delete_model_rules;
    delete_version_public => sqlite_delete_version_public, postgres_delete_version_public;
    own_predictions_go_with_the_version => sqlite_own_predictions_go_with_the_version, postgres_own_predictions_go_with_the_version;
    predictions_by_others_block => sqlite_predictions_by_others_block, postgres_predictions_by_others_block;
    fine_tune_base_blocks => sqlite_fine_tune_base_blocks, postgres_fine_tune_base_blocks;
    deployment_blocks_its_version => sqlite_deployment_blocks_its_version, postgres_deployment_blocks_its_version;
    dry_run_changes_nothing => sqlite_dry_run_changes_nothing, postgres_dry_run_changes_nothing;
    audit_events_outlive_their_objects => sqlite_audit_events_outlive_their_objects, postgres_audit_events_outlive_their_objects;
    unreferenced_artifact_on_last_use => sqlite_unreferenced_artifact_on_last_use, postgres_unreferenced_artifact_on_last_use;
    delete_deployment_rules => sqlite_delete_deployment_rules, postgres_delete_deployment_rules;
    web_passwords_and_sessions => sqlite_web_passwords_and_sessions, postgres_web_passwords_and_sessions;
    web_listings_tokens_and_members => sqlite_web_listings_tokens_and_members, postgres_web_listings_tokens_and_members;
    unknown_stored_values_are_corrupt => sqlite_unknown_stored_values_are_corrupt, postgres_unknown_stored_values_are_corrupt;
    reads_follow_every_stores_writes => sqlite_reads_follow_every_stores_writes, postgres_reads_follow_every_stores_writes;
    reads_follow_the_job_path => sqlite_reads_follow_the_job_path, postgres_reads_follow_the_job_path;
    a_created_job_is_answered_as_it_reads_back => sqlite_a_created_job_is_answered_as_it_reads_back, postgres_a_created_job_is_answered_as_it_reads_back;
}

fn full_names(models: &[Model]) -> Vec<String> {
    models.iter().map(Model::full_name).collect()
}

fn sorted(mut v: Vec<i64>) -> Vec<i64> {
    v.sort();
    v
}

// Accounts, organizations and tokens.

async fn accounts_members_and_tokens(store: SqlStore) {
    let alice = store
        .create_account(AccountKind::User, "alice", "Alice A.")
        .await
        .unwrap();
    assert_eq!(
        (alice.kind, alice.username.as_str(), alice.name.as_str()),
        (AccountKind::User, "alice", "Alice A.")
    );
    assert_eq!(store.account("alice").await.unwrap(), Some(alice.clone()));
    assert_eq!(store.account("nobody").await.unwrap(), None);

    // A username is taken whatever the kind of the account that wants it.
    let dup = store
        .create_account(AccountKind::Organization, "alice", "Other")
        .await;
    assert!(is_conflict(&dup), "{dup:?}");
    let dup = store
        .create_account(AccountKind::User, "alice", "Alice again")
        .await;
    assert!(is_conflict(&dup), "{dup:?}");
    assert_eq!(
        store.account("alice").await.unwrap().unwrap().name,
        "Alice A."
    );

    let bob = store
        .create_account(AccountKind::User, "bob", "Bob")
        .await
        .unwrap();
    let acme = store
        .create_account(AccountKind::Organization, "acme", "Acme")
        .await
        .unwrap();
    let beta = store
        .create_account(AccountKind::Organization, "beta", "Beta")
        .await
        .unwrap();
    assert_eq!(acme.kind, AccountKind::Organization);
    assert_ne!(acme.id, alice.id);

    store.add_member(acme.id, bob.id).await.unwrap();
    store.add_member(acme.id, alice.id).await.unwrap();
    store.add_member(beta.id, alice.id).await.unwrap();
    // Adding a member twice is harmless.
    store.add_member(acme.id, alice.id).await.unwrap();
    let members: Vec<String> = member_names(&store, acme.id).await;
    assert_eq!(members, ["alice", "bob"]);
    let members: Vec<String> = member_names(&store, beta.id).await;
    assert_eq!(members, ["alice"]);
    assert!(store.members(bob.id).await.unwrap().is_empty());

    store.add_token(alice.id, "hash-alice-1").await.unwrap();
    store.add_token(alice.id, "hash-alice-2").await.unwrap();
    store.add_token(bob.id, "hash-bob").await.unwrap();
    store.add_token(acme.id, "hash-acme").await.unwrap();
    // A token hash names one account.
    let dup = store.add_token(bob.id, "hash-alice-1").await;
    assert!(dup.is_err(), "a token hash was given to a second account");

    for hash in ["hash-alice-1", "hash-alice-2"] {
        let c = store
            .caller_by_token(hash)
            .await
            .unwrap()
            .expect("alice's token");
        assert_eq!(c.account, alice);
        assert_eq!(sorted(c.org_ids.clone()), sorted(vec![acme.id, beta.id]));
        assert!(c.acts_for(alice.id) && c.acts_for(acme.id) && c.acts_for(beta.id));
        assert!(!c.acts_for(bob.id));
    }
    let c = store.caller_by_token("hash-bob").await.unwrap().unwrap();
    assert_eq!(c.account.id, bob.id);
    assert_eq!(c.org_ids, [acme.id]);
    assert!(!c.acts_for(beta.id));
    let c = store.caller_by_token("hash-acme").await.unwrap().unwrap();
    assert_eq!(c.account, acme);
    assert!(c.org_ids.is_empty());
    assert!(store
        .caller_by_token("hash-nobody")
        .await
        .unwrap()
        .is_none());
}

// Models.

async fn models_create_and_get(store: SqlStore) {
    let alice = user(&store, "alice").await.account;
    let bob = user(&store, "bob").await.account;
    let m = store
        .create_model(NewModel {
            owner_id: alice.id,
            name: "hello".into(),
            description: Some("Says hello".into()),
            visibility: None,
            hardware: "gpu-a40-large".into(),
            github_url: Some("https://github.com/alice/hello".into()),
            paper_url: None,
            license_url: Some("https://example.com/license".into()),
            cover_image_url: None,
        })
        .await
        .unwrap();
    assert_eq!(m.full_name(), "alice/hello");
    assert_eq!(m.owner_id, alice.id);
    assert_eq!(
        m.visibility,
        Visibility::Private,
        "a model is private unless asked otherwise"
    );
    assert_eq!(m.run_count, 0);
    assert!(m.latest_version.is_none());

    let got = store.model("alice", "hello").await.unwrap().expect("model");
    assert_eq!(got.id, m.id);
    assert_eq!(got.description.as_deref(), Some("Says hello"));
    assert_eq!(got.hardware, "gpu-a40-large");
    assert_eq!(
        got.github_url.as_deref(),
        Some("https://github.com/alice/hello")
    );
    assert_eq!(got.paper_url, None);
    assert_eq!(
        got.license_url.as_deref(),
        Some("https://example.com/license")
    );
    assert_eq!(got.created_at, m.created_at);

    assert!(store.model("alice", "nope").await.unwrap().is_none());
    assert!(store.model("bob", "hello").await.unwrap().is_none());

    let dup = store
        .create_model(NewModel {
            owner_id: alice.id,
            name: "hello".into(),
            ..Default::default()
        })
        .await;
    assert!(is_conflict(&dup), "{dup:?}");
    // The same name under another owner is another model.
    let bobs = model(&store, bob.id, "hello", Visibility::Public).await;
    assert_ne!(bobs.id, m.id);
    assert_eq!(
        store.model("bob", "hello").await.unwrap().unwrap().owner,
        "bob"
    );

    // The latest version is the newest one pushed.
    version(&store, m.id, "d1", "a1").await;
    let v2 = version(&store, m.id, "d2", "a2").await;
    let got = store.model("alice", "hello").await.unwrap().unwrap();
    assert_eq!(
        got.latest_version.as_ref().map(|v| v.id.as_str()),
        Some(v2.id.as_str())
    );
    assert!(store
        .model("bob", "hello")
        .await
        .unwrap()
        .unwrap()
        .latest_version
        .is_none());
}

async fn list_models_visibility(store: SqlStore) {
    let alice = user(&store, "alice").await;
    user(&store, "bob").await;
    let carol = user(&store, "carol").await;
    let acme = org(&store, "acme").await;
    let bob = join(&store, &acme, "bob").await;

    model(&store, alice.account.id, "pub-a", Visibility::Public).await;
    let priv_a = model(&store, alice.account.id, "priv-a", Visibility::Private).await;
    model(&store, acme.account.id, "priv-acme", Visibility::Private).await;
    model(&store, acme.account.id, "pub-acme", Visibility::Public).await;
    model(&store, carol.account.id, "priv-c", Visibility::Private).await;

    let list = |viewer: Option<Caller>| {
        let store = store.clone();
        async move {
            full_names(
                &store
                    .list_models(viewer.as_ref(), None, all())
                    .await
                    .unwrap(),
            )
        }
    };
    // Newest first, and only what the viewer may see.
    assert_eq!(list(None).await, ["acme/pub-acme", "alice/pub-a"]);
    assert_eq!(
        list(Some(alice.clone())).await,
        ["acme/pub-acme", "alice/priv-a", "alice/pub-a"]
    );
    assert_eq!(
        list(Some(bob.clone())).await,
        ["acme/pub-acme", "acme/priv-acme", "alice/pub-a"]
    );
    assert_eq!(
        list(Some(acme.clone())).await,
        ["acme/pub-acme", "acme/priv-acme", "alice/pub-a"]
    );
    assert_eq!(
        list(Some(carol.clone())).await,
        ["carol/priv-c", "acme/pub-acme", "alice/pub-a"]
    );

    // A search does not widen what one sees.
    let found = store
        .list_models(Some(&carol), Some("priv"), all())
        .await
        .unwrap();
    assert_eq!(full_names(&found), ["carol/priv-c"]);
    let found = store.list_models(None, Some("priv"), all()).await.unwrap();
    assert!(found.is_empty(), "{:?}", full_names(&found));

    // Making a model public shows it to everyone; private again hides it.
    set_visibility(&store, priv_a.id, Visibility::Public).await;
    assert!(list(None).await.contains(&"alice/priv-a".to_string()));
    set_visibility(&store, priv_a.id, Visibility::Private).await;
    assert!(!list(Some(carol))
        .await
        .contains(&"alice/priv-a".to_string()));
}

async fn list_models_search(store: SqlStore) {
    let alice = user(&store, "alice").await.account;
    let bobby = user(&store, "bobby").await.account;
    let mk = |owner_id: i64, name: &str, description: Option<&str>| {
        let store = store.clone();
        let m = NewModel {
            owner_id,
            name: name.into(),
            description: description.map(Into::into),
            visibility: Some(Visibility::Public),
            hardware: "cpu".into(),
            ..Default::default()
        };
        async move { store.create_model(m).await.unwrap() }
    };
    mk(alice.id, "image-gen", Some("Makes PICTURES from text")).await;
    mk(alice.id, "llama_7b", Some("100% open weights")).await;
    mk(bobby.id, "whisper", None).await;
    mk(bobby.id, "speech", Some("Transcribes audio")).await;

    let search = |q: &str| {
        let store = store.clone();
        let q = q.to_string();
        async move {
            let mut names = full_names(
                &store
                    .list_models(None, Some(&q), all())
                    .await
                    .unwrap_or_else(|e| {
                        panic!("search {q:?}: {e}");
                    }),
            );
            names.sort();
            names
        }
    };
    let none: [&str; 0] = [];
    // Name, owner and description, whatever the case.
    assert_eq!(search("IMAGE").await, ["alice/image-gen"]);
    assert_eq!(search("pictures").await, ["alice/image-gen"]);
    assert_eq!(search("Pictures FROM").await, ["alice/image-gen"]);
    assert_eq!(search("BOBBY").await, ["bobby/speech", "bobby/whisper"]);
    assert_eq!(search("Audio").await, ["bobby/speech"]);
    assert_eq!(
        search("alice/").await,
        none,
        "the full name is not searched as one string"
    );
    // An empty query matches everything, a model without a description included.
    assert_eq!(search("").await.len(), 4);
    // LIKE's wildcards and escape are literal characters in a query.
    assert_eq!(search("%").await, ["alice/llama_7b"]);
    assert_eq!(search("_").await, ["alice/llama_7b"]);
    assert_eq!(search("a_7").await, ["alice/llama_7b"]);
    assert_eq!(search("ll%b").await, none);
    assert_eq!(search("i_age").await, none);
    assert_eq!(search("w%er").await, none);
    assert_eq!(search("\\").await, none);
    assert_eq!(search("\\%").await, none);
    assert_eq!(search("'").await, none);
    // A search pages like a listing.
    let first = store
        .list_models(None, Some("e"), page(None, 2))
        .await
        .unwrap();
    assert_eq!(first.len(), 2);
    let rest = store
        .list_models(None, Some("e"), page(Some(first[1].id), 10))
        .await
        .unwrap();
    let mut seen: Vec<String> = full_names(&first);
    seen.extend(full_names(&rest));
    seen.sort();
    assert_eq!(
        seen,
        [
            "alice/image-gen",
            "alice/llama_7b",
            "bobby/speech",
            "bobby/whisper"
        ]
    );
}

async fn pagination_by_cursor(store: SqlStore) {
    let alice = user(&store, "alice").await;
    let bob = user(&store, "bob").await;
    let a = alice.account.id;

    // Models: the cursor is the model id, newest first.
    let mut made = Vec::new();
    for i in 0..5 {
        made.push(
            model(&store, a, &format!("m{i}"), Visibility::Public)
                .await
                .id,
        );
    }
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let p = store
            .list_models(Some(&alice), None, page(after, 2))
            .await
            .unwrap();
        assert!(p.len() <= 2);
        if p.is_empty() {
            break;
        }
        after = Some(p.last().unwrap().id);
        seen.extend(p.iter().map(|m| m.id));
    }
    made.reverse();
    assert_eq!(seen, made);

    // Versions: the cursor is the version's position (`Version::cursor`).
    let m = made[0];
    let mut pushed = Vec::new();
    for i in 0..5 {
        pushed.push(version(&store, m, &format!("d{i}"), "art").await.id);
    }
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let p = store.versions(m, page(after, 2)).await.unwrap();
        if p.is_empty() {
            break;
        }
        assert!(p.iter().all(|v| v.model_id == m));
        after = Some(p.last().unwrap().cursor);
        seen.extend(p.into_iter().map(|v| v.id));
    }
    pushed.reverse();
    assert_eq!(seen, pushed);
    assert!(store.versions(made[1], all()).await.unwrap().is_empty());

    // Jobs: the cursor is the job's position; only the account's own, of the asked kind.
    let mut jobs = Vec::new();
    for _ in 0..5 {
        jobs.push(predict(&store, a, &pushed[0]).await.id);
        predict(&store, bob.account.id, &pushed[0]).await;
    }
    train(&store, a, &pushed[0], m).await;
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let p = store
            .list_jobs(JobKind::Prediction, a, page(after, 2))
            .await
            .unwrap();
        if p.is_empty() {
            break;
        }
        assert!(p
            .iter()
            .all(|j| j.account_id == a && j.kind == JobKind::Prediction));
        after = Some(p.last().unwrap().cursor);
        seen.extend(p.into_iter().map(|j| j.id));
    }
    jobs.reverse();
    assert_eq!(seen, jobs);
    assert_eq!(
        store
            .list_jobs(JobKind::Training, a, all())
            .await
            .unwrap()
            .len(),
        1
    );

    // Deployments: the cursor is the deployment id.
    let mut deps = Vec::new();
    for i in 0..3 {
        deps.push(
            store
                .create_deployment(a, &format!("dep{i}"), release(&pushed[0], 0, 1), "alice")
                .await
                .unwrap()
                .id,
        );
    }
    store
        .create_deployment(bob.account.id, "other", release(&pushed[0], 0, 1), "bob")
        .await
        .unwrap();
    let p1 = store.list_deployments(&[a], page(None, 2)).await.unwrap();
    let p2 = store
        .list_deployments(&[a], page(Some(p1[1].id), 2))
        .await
        .unwrap();
    let seen: Vec<i64> = p1.iter().chain(&p2).map(|d| d.id).collect();
    deps.reverse();
    assert_eq!(seen, deps);
    assert_eq!(
        store
            .list_deployments(&[a, bob.account.id], all())
            .await
            .unwrap()
            .len(),
        4
    );
    assert!(store.list_deployments(&[], all()).await.unwrap().is_empty());

    // Audit events: the cursor is the event id.
    for i in 0..3 {
        store
            .record_audit(NewAuditEvent {
                actor_id: Some(a),
                actor: "alice".into(),
                owner_id: a,
                action: "test".into(),
                target: format!("t{i}"),
                outcome: "deleted".into(),
                blockers: vec![],
            })
            .await
            .unwrap();
    }
    let p1 = store.audit_events(&[a], page(None, 2)).await.unwrap();
    let p2 = store
        .audit_events(&[a], page(Some(p1[1].id), 2))
        .await
        .unwrap();
    let targets: Vec<&str> = p1.iter().chain(&p2).map(|e| e.target.as_str()).collect();
    assert_eq!(targets, ["t2", "t1", "t0"]);
    assert!(store.audit_events(&[], all()).await.unwrap().is_empty());
}

async fn update_model_patch(store: SqlStore) {
    let alice = user(&store, "alice").await.account;
    let m = store
        .create_model(NewModel {
            owner_id: alice.id,
            name: "m".into(),
            description: Some("desc".into()),
            visibility: Some(Visibility::Public),
            hardware: "cpu".into(),
            github_url: Some("gh".into()),
            paper_url: Some("paper".into()),
            license_url: Some("license".into()),
            cover_image_url: Some("cover".into()),
        })
        .await
        .unwrap();

    // An empty patch changes nothing.
    let same = store
        .update_model(m.id, ModelPatch::default())
        .await
        .unwrap();
    assert_eq!(
        (
            same.description.as_deref(),
            same.visibility,
            same.hardware.as_str()
        ),
        (Some("desc"), Visibility::Public, "cpu")
    );
    assert_eq!(
        (same.github_url.as_deref(), same.paper_url.as_deref()),
        (Some("gh"), Some("paper"))
    );
    assert_eq!(
        (same.license_url.as_deref(), same.cover_image_url.as_deref()),
        (Some("license"), Some("cover"))
    );

    // Some(None) clears, Some(Some(x)) sets, None leaves.
    let p = store
        .update_model(
            m.id,
            ModelPatch {
                description: Some(None),
                github_url: Some(Some("gh2".into())),
                hardware: Some("gpu-a100".into()),
                visibility: Some(Visibility::Private),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(p.description, None);
    assert_eq!(p.github_url.as_deref(), Some("gh2"));
    assert_eq!(p.hardware, "gpu-a100");
    assert_eq!(p.visibility, Visibility::Private);
    assert_eq!(p.paper_url.as_deref(), Some("paper"));
    assert_eq!(p.license_url.as_deref(), Some("license"));
    assert_eq!(p.cover_image_url.as_deref(), Some("cover"));

    store
        .update_model(
            m.id,
            ModelPatch {
                paper_url: Some(None),
                license_url: Some(None),
                cover_image_url: Some(None),
                description: Some(Some("back".into())),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    // What was written is what a fresh read sees.
    let got = store.model("alice", "m").await.unwrap().unwrap();
    assert_eq!(got.description.as_deref(), Some("back"));
    assert_eq!(got.github_url.as_deref(), Some("gh2"));
    assert_eq!(
        (got.paper_url, got.license_url, got.cover_image_url),
        (None, None, None)
    );
    assert_eq!(got.hardware, "gpu-a100");
    assert_eq!(got.visibility, Visibility::Private);
    assert_eq!(got.name, "m");

    let missing = store.update_model(m.id + 1000, ModelPatch::default()).await;
    assert!(is_not_found(&missing), "{missing:?}");
}

// Versions.

async fn versions_are_content_addressed(store: SqlStore) {
    let alice = user(&store, "alice").await.account;
    let m1 = model(&store, alice.id, "m1", Visibility::Private).await;
    let m2 = model(&store, alice.id, "m2", Visibility::Private).await;

    let StoredVersion {
        version: v,
        created,
    } = store
        .create_version(new_version(m1.id, "sha256:aaa", "art-1"))
        .await
        .unwrap();
    assert!(created);
    assert_eq!(v.id, ids::version_id(m1.id, "sha256:aaa"));
    assert!(ids::is_version_id(&v.id));
    assert_eq!(v.model_id, m1.id);
    assert_eq!(v.artifact, "art-1");
    assert_eq!(v.cog_version, "0.9.4");
    assert_eq!(*v.openapi_schema, new_version(0, "", "").openapi_schema);
    assert_eq!(v.base_version_id, None);

    // The same content again is the same version, unchanged, and not "created".
    let mut again = new_version(m1.id, "sha256:aaa", "art-other");
    again.cog_version = "0.10.0".into();
    let StoredVersion {
        version: v_again,
        created,
    } = store.create_version(again).await.unwrap();
    assert!(!created);
    assert_eq!(v_again.id, v.id);
    assert_eq!(v_again.artifact, "art-1");
    assert_eq!(v_again.created_at, v.created_at);
    assert_eq!(store.versions(m1.id, all()).await.unwrap().len(), 1);

    // The same content in another model is another version.
    let StoredVersion {
        version: w,
        created,
    } = store
        .create_version(new_version(m2.id, "sha256:aaa", "art-1"))
        .await
        .unwrap();
    assert!(created);
    assert_ne!(w.id, v.id);

    let ModelVersion {
        model: bm,
        version: bv,
        ..
    } = store
        .version_by_id(&v.id)
        .await
        .unwrap()
        .expect("version by id");
    assert_eq!((bm.id, bm.full_name()), (m1.id, "alice/m1".to_string()));
    assert_eq!(bv.id, v.id);
    assert_eq!(bm.latest_version.map(|l| l.id), Some(v.id.clone()));
    let ModelVersion { model: bm, .. } = store.version_by_id(&w.id).await.unwrap().unwrap();
    assert_eq!(bm.id, m2.id);
    assert!(store
        .version_by_id(&"0".repeat(64))
        .await
        .unwrap()
        .is_none());

    assert_eq!(
        store.version(m1.id, &v.id).await.unwrap().map(|x| x.id),
        Some(v.id.clone())
    );
    assert!(
        store.version(m2.id, &v.id).await.unwrap().is_none(),
        "a version belongs to one model"
    );

    // A fine-tuned version remembers its base.
    let mut ft = new_version(m2.id, "sha256:ft", "art-ft");
    ft.base_version_id = Some(v.id.clone());
    ft.training_id = Some("t-1".into());
    let StoredVersion { version: ftv, .. } = store.create_version(ft).await.unwrap();
    assert_eq!(ftv.base_version_id.as_deref(), Some(v.id.as_str()));
    let ModelVersion { version: got, .. } = store.version_by_id(&ftv.id).await.unwrap().unwrap();
    assert_eq!(got.base_version_id.as_deref(), Some(v.id.as_str()));

    // A base that does not exist, or a model that does not, is refused.
    let mut bad = new_version(m2.id, "sha256:bad", "art");
    bad.base_version_id = Some("f".repeat(64));
    assert!(store.create_version(bad).await.is_err());
    let r = store
        .create_version(new_version(m2.id + 1000, "sha256:x", "art"))
        .await;
    assert!(is_not_found(&r), "{r:?}");

    assert!(store.artifact_in_use("art-1").await.unwrap());
    assert!(!store.artifact_in_use("art-other").await.unwrap());
}

// Predictions and trainings.

async fn jobs_run_count_and_cancel(store: SqlStore) {
    let alice = user(&store, "alice").await.account;
    let bob = user(&store, "bob").await.account;
    let m = model(&store, alice.id, "m", Visibility::Public).await;
    let ft = model(&store, bob.id, "ft", Visibility::Private).await;
    let v = version(&store, m.id, "d1", "a1").await;

    let deadline = Utc::now() + Duration::minutes(5);
    let job = store
        .create_job(NewJob {
            kind: JobKind::Prediction,
            account_id: bob.id,
            version_id: v.id.clone(),
            deployment_id: None,
            destination_model_id: None,
            input: json!({"prompt": "a cat", "steps": 20, "nested": {"x": [1, 2.5, null]}}),
            source: "web".into(),
            webhook: Some("https://example.com/hook".into()),
            webhook_events_filter: vec!["start".into(), "completed".into()],
            deadline: Some(deadline),
        })
        .await
        .unwrap();
    assert_eq!(job.id.len(), 26);
    assert_eq!(job.kind, JobKind::Prediction);
    assert_eq!(job.status, Status::Starting);
    assert_eq!((job.account_id, job.account.as_str()), (bob.id, "bob"));
    assert_eq!(
        (job.version_id.as_str(), job.model.as_str()),
        (v.id.as_str(), "alice/m")
    );
    assert_eq!(
        job.input,
        json!({"prompt": "a cat", "steps": 20, "nested": {"x": [1, 2.5, null]}})
    );
    assert_eq!(job.source, "web");
    assert_eq!(job.webhook.as_deref(), Some("https://example.com/hook"));
    assert_eq!(job.webhook_events_filter, ["start", "completed"]);
    assert_eq!(
        job.deadline.map(|d| d.timestamp_micros()),
        Some(deadline.timestamp_micros())
    );
    assert_eq!(
        (job.deployment.as_deref(), job.destination.as_deref()),
        (None, None)
    );
    assert_eq!(
        (job.output.as_ref(), job.error.as_deref(), job.logs.as_str()),
        (None, None, "")
    );
    assert!(!job.data_removed);
    assert_eq!((job.started_at, job.completed_at), (None, None));

    let got = store
        .job(JobKind::Prediction, &job.id)
        .await
        .unwrap()
        .expect("job");
    assert_eq!((got.id, got.input), (job.id.clone(), job.input.clone()));
    assert!(
        store
            .job(JobKind::Training, &job.id)
            .await
            .unwrap()
            .is_none(),
        "kinds are apart"
    );

    // Predictions count; trainings do not.
    assert_eq!(run_count(&store, "alice/m").await, 1);
    predict(&store, alice.id, &v.id).await;
    predict(&store, bob.id, &v.id).await;
    let t = train(&store, bob.id, &v.id, ft.id).await;
    assert_eq!(t.kind, JobKind::Training);
    assert_eq!(t.destination.as_deref(), Some("bob/ft"));
    assert_eq!(run_count(&store, "alice/m").await, 3);
    let listed = store.list_models(None, None, all()).await.unwrap();
    assert_eq!(listed.iter().find(|x| x.id == m.id).unwrap().run_count, 3);
    assert_eq!(run_count(&store, "bob/ft").await, 0);

    // Cancel: a live job ends as canceled, once.
    let c = store
        .cancel_job(JobKind::Prediction, &job.id)
        .await
        .unwrap();
    assert_eq!(c.status, Status::Canceled);
    let at = c.completed_at.expect("completed_at is set on cancel");
    let again = store
        .cancel_job(JobKind::Prediction, &job.id)
        .await
        .unwrap();
    assert_eq!(
        (again.status, again.completed_at),
        (Status::Canceled, Some(at))
    );
    let p = predict(&store, bob.id, &v.id).await;
    set_job_status(&p.id, Status::Succeeded).await;
    let c = store.cancel_job(JobKind::Prediction, &p.id).await.unwrap();
    assert_eq!(
        (c.status, c.completed_at),
        (Status::Succeeded, None),
        "finished jobs stay"
    );
    set_job_status(&p.id, Status::Processing).await;
    assert_eq!(
        store
            .cancel_job(JobKind::Prediction, &p.id)
            .await
            .unwrap()
            .status,
        Status::Canceled
    );
    let c = store.cancel_job(JobKind::Training, &t.id).await.unwrap();
    assert_eq!(c.status, Status::Canceled);
    let r = store.cancel_job(JobKind::Training, &p.id).await;
    assert!(is_not_found(&r), "{r:?}");
    let r = store.cancel_job(JobKind::Prediction, "nope").await;
    assert!(is_not_found(&r), "{r:?}");

    // A version that does not exist.
    let r = store
        .create_job(new_job(JobKind::Prediction, bob.id, &"e".repeat(64)))
        .await;
    assert!(is_not_found(&r), "{r:?}");
    assert_eq!(run_count(&store, "alice/m").await, 4);

    // Through a deployment: the job names it and the deployment is marked used.
    let d = store
        .create_deployment(alice.id, "prod", release(&v.id, 1, 1), "alice")
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let mut j = new_job(JobKind::Prediction, bob.id, &v.id);
    j.deployment_id = Some(d.id);
    let j = store.create_job(j).await.unwrap();
    assert_eq!(j.deployment.as_deref(), Some("alice/prod"));
    let d2 = store.deployment("alice", "prod").await.unwrap().unwrap();
    assert!(
        d2.last_used_at > d.last_used_at,
        "{} <= {}",
        d2.last_used_at,
        d.last_used_at
    );
}

// Deletion rules.

async fn delete_model_rules(store: SqlStore) {
    let alice = user(&store, "alice").await;
    let a = alice.account.id;
    let m = model(&store, a, "m", Visibility::Public).await;
    let v1 = version(&store, m.id, "d1", "a1").await;
    let v2 = version(&store, m.id, "d2", "a2").await;

    let preview = store.delete_model(m.id, &alice, true).await.unwrap();
    assert_eq!(
        kinds(&preview.blockers),
        [BlockerKind::Public, BlockerKind::HasVersions]
    );
    assert!(!preview.deleted);
    let hv = &preview.blockers[1];
    assert_eq!(hv.version_count, Some(2));
    assert_eq!(
        hv.versions.as_deref(),
        Some(&[v2.id.clone(), v1.id.clone()][..])
    );
    assert_eq!(hv.model.as_deref(), Some("alice/m"));

    let refused = store.delete_model(m.id, &alice, false).await.unwrap();
    assert!(!refused.deleted);
    assert_eq!(refused.blockers, preview.blockers);
    assert!(store.model("alice", "m").await.unwrap().is_some());

    set_visibility(&store, m.id, Visibility::Private).await;
    let refused = store.delete_model(m.id, &alice, false).await.unwrap();
    assert_eq!(kinds(&refused.blockers), [BlockerKind::HasVersions]);

    for v in [&v1, &v2] {
        let d = remove_version(&store, m.id, &v.id, &alice).await;
        assert!(d.deleted && d.blockers.is_empty(), "{d:?}");
    }
    let preview = store.delete_model(m.id, &alice, true).await.unwrap();
    assert!(preview.blockers.is_empty() && !preview.deleted);
    assert!(
        store.model("alice", "m").await.unwrap().is_some(),
        "a preview deletes nothing"
    );

    let done = store.delete_model(m.id, &alice, false).await.unwrap();
    assert!(done.deleted && done.blockers.is_empty());
    assert!(store.model("alice", "m").await.unwrap().is_none());
    assert!(store
        .list_models(Some(&alice), None, all())
        .await
        .unwrap()
        .is_empty());
    let again = store.delete_model(m.id, &alice, false).await;
    assert!(is_not_found(&again), "{again:?}");
    let r = store.create_version(new_version(m.id, "d3", "a3")).await;
    assert!(is_not_found(&r), "{r:?}");

    // The name is free again.
    let m2 = model(&store, a, "m", Visibility::Private).await;
    assert_ne!(m2.id, m.id);

    let events = store.audit_events(&[a], all()).await.unwrap();
    let summary: Vec<(&str, &str, &str)> = events
        .iter()
        .map(|e| (e.action.as_str(), e.target.as_str(), e.outcome.as_str()))
        .collect();
    let t1 = format!("alice/m:{}", v1.id);
    let t2 = format!("alice/m:{}", v2.id);
    assert_eq!(
        summary,
        [
            ("delete_model", "alice/m", "deleted"),
            ("delete_version", t2.as_str(), "deleted"),
            ("delete_version", t1.as_str(), "deleted"),
            ("delete_model", "alice/m", "refused"),
            ("delete_model", "alice/m", "refused"),
        ]
    );
    assert_eq!(kinds(&events[3].blockers), [BlockerKind::HasVersions]);
    assert_eq!(
        kinds(&events[4].blockers),
        [BlockerKind::Public, BlockerKind::HasVersions]
    );
    assert_eq!(events[4].blockers[1].version_count, Some(2));
    assert!(events.iter().all(|e| e.actor == "alice"));
}

async fn delete_version_public(store: SqlStore) {
    let alice = user(&store, "alice").await;
    let m = model(&store, alice.account.id, "m", Visibility::Public).await;
    let v = version(&store, m.id, "d1", "a1").await;
    let d = remove_version(&store, m.id, &v.id, &alice).await;
    assert!(!d.deleted);
    assert_eq!(kinds(&d.blockers), [BlockerKind::Public]);
    assert_eq!(d.blockers[0].model.as_deref(), Some("alice/m"));
    assert!(d.unreferenced_artifact.is_none());
    assert!(store.version_by_id(&v.id).await.unwrap().is_some());

    // A version of another model, or no version at all.
    let other = model(&store, alice.account.id, "other", Visibility::Private).await;
    let r = store.delete_version(other.id, &v.id, &alice, false).await;
    assert!(is_not_found(&r), "{r:?}");
    let r = store
        .delete_version(m.id, &"0".repeat(64), &alice, true)
        .await;
    assert!(is_not_found(&r), "{r:?}");
    let r = store
        .delete_version(m.id + 1000, &v.id, &alice, false)
        .await;
    assert!(is_not_found(&r), "{r:?}");

    set_visibility(&store, m.id, Visibility::Private).await;
    let d = remove_version(&store, m.id, &v.id, &alice).await;
    assert!(d.deleted, "{d:?}");
    assert!(store.version_by_id(&v.id).await.unwrap().is_none());
    assert!(store
        .model("alice", "m")
        .await
        .unwrap()
        .unwrap()
        .latest_version
        .is_none());
}

async fn own_predictions_go_with_the_version(store: SqlStore) {
    let alice = user(&store, "alice").await;
    let a = alice.account.id;
    let m = model(&store, a, "m", Visibility::Private).await;
    let keep = version(&store, m.id, "keep", "a-keep").await;
    let v = version(&store, m.id, "d1", "a1").await;
    let mut mine = Vec::new();
    for _ in 0..3 {
        mine.push(predict(&store, a, &v.id).await.id);
    }
    let kept = predict(&store, a, &keep.id).await.id;
    assert_eq!(run_count(&store, "alice/m").await, 4);

    let d = remove_version(&store, m.id, &v.id, &alice).await;
    assert!(d.deleted && d.blockers.is_empty(), "{d:?}");
    assert_eq!(d.unreferenced_artifact.as_deref(), Some("a1"));
    for id in &mine {
        assert!(store.job(JobKind::Prediction, id).await.unwrap().is_none());
    }
    let left: Vec<String> = store
        .list_jobs(JobKind::Prediction, a, all())
        .await
        .unwrap()
        .into_iter()
        .map(|j| j.id)
        .collect();
    assert_eq!(left, [kept]);
    assert_eq!(run_count(&store, "alice/m").await, 1);
    assert!(store.version_by_id(&v.id).await.unwrap().is_none());
    assert!(store.version(m.id, &v.id).await.unwrap().is_none());

    // Nothing can run on it any more.
    let r = store
        .create_job(new_job(JobKind::Prediction, a, &v.id))
        .await;
    assert!(is_not_found(&r), "{r:?}");
    let r = store.create_job(new_job(JobKind::Training, a, &v.id)).await;
    assert!(is_not_found(&r), "{r:?}");
    assert_eq!(run_count(&store, "alice/m").await, 1);

    // Pushing the same content again brings the same id back, as a new version.
    let StoredVersion {
        version: back,
        created,
    } = store
        .create_version(new_version(m.id, "d1", "a1"))
        .await
        .unwrap();
    assert!(created);
    assert_eq!(back.id, v.id);

    // Members of an organization: one member's runs do not block that member.
    user(&store, "bob").await;
    let acme = org(&store, "acme").await;
    let bob = join(&store, &acme, "bob").await;
    let om = model(&store, acme.account.id, "om", Visibility::Private).await;
    let ov = version(&store, om.id, "o1", "ao").await;
    predict(&store, bob.account.id, &ov.id).await;
    let d = remove_version(&store, om.id, &ov.id, &bob).await;
    assert!(d.deleted, "{d:?}");
}

async fn predictions_by_others_block(store: SqlStore) {
    let alice = user(&store, "alice").await;
    let bob = user(&store, "bob").await.account;
    let carol = user(&store, "carol").await.account;
    let a = alice.account.id;
    let m = model(&store, a, "m", Visibility::Private).await;
    let v = version(&store, m.id, "d1", "a1").await;
    let mut jobs = vec![predict(&store, a, &v.id).await.id];
    for who in [carol.id, bob.id, bob.id] {
        jobs.push(predict(&store, who, &v.id).await.id);
    }
    // A canceled prediction still counts: the version was used.
    store
        .cancel_job(JobKind::Prediction, &jobs[1])
        .await
        .unwrap();

    let d = remove_version(&store, m.id, &v.id, &alice).await;
    assert!(!d.deleted);
    assert_eq!(kinds(&d.blockers), [BlockerKind::PredictionsByOthers; 2]);
    let who: Vec<(Option<&str>, Option<i64>)> = d
        .blockers
        .iter()
        .map(|b| (b.account.as_deref(), b.prediction_count))
        .collect();
    assert_eq!(who, [(Some("bob"), Some(2)), (Some("carol"), Some(1))]);
    assert!(d.unreferenced_artifact.is_none());
    // Nothing went: not the version, not alice's own prediction, not the others'.
    assert!(store.version_by_id(&v.id).await.unwrap().is_some());
    for id in &jobs {
        assert!(store.job(JobKind::Prediction, id).await.unwrap().is_some());
    }
    assert_eq!(run_count(&store, "alice/m").await, 4);
    let events = store.audit_events(&[a], all()).await.unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].outcome, "refused");
    assert_eq!(events[0].blockers, d.blockers);

    // Even from an account that acts for the owner, someone else's runs block.
    let r = store
        .delete_version(m.id, &v.id, &caller(&store, "bob").await, true)
        .await
        .unwrap();
    let who: Vec<Option<&str>> = r.blockers.iter().map(|b| b.account.as_deref()).collect();
    assert_eq!(who, [Some("alice"), Some("carol")]);
}

async fn fine_tune_base_blocks(store: SqlStore) {
    let alice = user(&store, "alice").await;
    let bob = user(&store, "bob").await.account;
    let a = alice.account.id;
    let base = model(&store, a, "base", Visibility::Private).await;
    let ft = model(&store, a, "ft", Visibility::Private).await;
    let v = version(&store, base.id, "d1", "a1").await;
    let preview = |who: Caller| {
        let store = store.clone();
        let (mid, vid) = (base.id, v.id.clone());
        async move {
            preview_version_deletion(&store, mid, &vid, &who)
                .await
                .blockers
        }
    };

    // A training still running blocks, whoever runs it; it is not a prediction.
    let t1 = train(&store, bob.id, &v.id, ft.id).await;
    let b = preview(alice.clone()).await;
    assert_eq!(kinds(&b), [BlockerKind::FineTuneBase]);
    assert_eq!(b[0].training.as_deref(), Some(t1.id.as_str()));
    assert_eq!(b[0].version, None);
    set_job_status(&t1.id, Status::Processing).await;
    assert_eq!(
        kinds(&preview(alice.clone()).await),
        [BlockerKind::FineTuneBase]
    );
    // Canceled and failed ones do not.
    store.cancel_job(JobKind::Training, &t1.id).await.unwrap();
    assert!(preview(alice.clone()).await.is_empty());
    let t2 = train(&store, a, &v.id, ft.id).await;
    assert_eq!(
        kinds(&preview(alice.clone()).await),
        [BlockerKind::FineTuneBase]
    );
    set_job_status(&t2.id, Status::Failed).await;
    assert!(preview(alice.clone()).await.is_empty());

    // A version trained from it blocks, for as long as it exists.
    let t3 = train(&store, a, &v.id, ft.id).await;
    set_job_status(&t3.id, Status::Succeeded).await;
    let mut nv = new_version(ft.id, "ft1", "a-ft");
    nv.base_version_id = Some(v.id.clone());
    nv.training_id = Some(t3.id.clone());
    let StoredVersion {
        version: derived, ..
    } = store.create_version(nv).await.unwrap();
    let d = remove_version(&store, base.id, &v.id, &alice).await;
    assert!(!d.deleted);
    assert_eq!(kinds(&d.blockers), [BlockerKind::FineTuneBase]);
    let named = format!("alice/ft:{}", derived.id);
    assert_eq!(d.blockers[0].version.as_deref(), Some(named.as_str()));
    assert_eq!(d.blockers[0].training.as_deref(), Some(t3.id.as_str()));
    assert!(store.version_by_id(&v.id).await.unwrap().is_some());

    let gone = remove_version(&store, ft.id, &derived.id, &alice).await;
    assert!(gone.deleted, "{gone:?}");
    let d = remove_version(&store, base.id, &v.id, &alice).await;
    assert!(d.deleted, "{d:?}");
    // The finished trainings went with it.
    for t in [&t1, &t2, &t3] {
        assert!(store.job(JobKind::Training, &t.id).await.unwrap().is_none());
    }
}

async fn deployment_blocks_its_version(store: SqlStore) {
    let alice = user(&store, "alice").await;
    let acme = org(&store, "acme").await;
    let a = alice.account.id;
    let m = model(&store, a, "m", Visibility::Private).await;
    let v1 = version(&store, m.id, "d1", "a1").await;
    let v2 = version(&store, m.id, "d2", "a2").await;

    let prod = store
        .create_deployment(a, "prod", release(&v1.id, 1, 3), "alice")
        .await
        .unwrap();
    assert_eq!(prod.full_name(), "alice/prod");
    assert_eq!(prod.release.number, 1);
    assert_eq!(prod.release.model, "alice/m");
    assert_eq!(prod.release.version_id, v1.id);
    assert_eq!(
        (prod.release.min_instances, prod.release.max_instances),
        (1, 3)
    );
    assert_eq!(
        (
            prod.release.hardware.as_str(),
            prod.release.created_by.as_str()
        ),
        ("gpu-t4", "alice")
    );
    let staging = store
        .create_deployment(acme.account.id, "staging", release(&v1.id, 0, 1), "bob")
        .await
        .unwrap();

    let dup = store
        .create_deployment(a, "prod", release(&v2.id, 0, 1), "alice")
        .await;
    assert!(is_conflict(&dup), "{dup:?}");
    let missing = store
        .create_deployment(a, "x", release(&"0".repeat(64), 0, 1), "alice")
        .await;
    assert!(is_not_found(&missing), "{missing:?}");
    assert!(store.deployment("alice", "x").await.unwrap().is_none());

    let d = remove_version(&store, m.id, &v1.id, &alice).await;
    assert!(!d.deleted);
    assert_eq!(kinds(&d.blockers), [BlockerKind::Deployment; 2]);
    let names: Vec<Option<&str>> = d.blockers.iter().map(|b| b.deployment.as_deref()).collect();
    assert_eq!(names, [Some("acme/staging"), Some("alice/prod")]);

    // Moving the deployments on frees the version; the release history stays.
    let moved = store
        .update_deployment(prod.id, release(&v2.id, 0, 1), "carol")
        .await
        .unwrap();
    assert_eq!(moved.release.number, 2);
    assert_eq!(moved.release.version_id, v2.id);
    assert_eq!(moved.release.created_by, "carol");
    assert!(moved.last_used_at >= prod.last_used_at);
    let d = preview_version_deletion(&store, m.id, &v1.id, &alice).await;
    let names: Vec<Option<&str>> = d.blockers.iter().map(|b| b.deployment.as_deref()).collect();
    assert_eq!(names, [Some("acme/staging")]);
    store
        .update_deployment(staging.id, release(&v2.id, 0, 0), "bob")
        .await
        .unwrap();
    let d = remove_version(&store, m.id, &v1.id, &alice).await;
    assert!(d.deleted && d.blockers.is_empty(), "{d:?}");

    // A deleted version cannot be deployed.
    let r = store
        .create_deployment(a, "late", release(&v1.id, 0, 1), "alice")
        .await;
    assert!(is_not_found(&r), "{r:?}");
    let r = store
        .update_deployment(prod.id, release(&v1.id, 0, 1), "alice")
        .await;
    assert!(is_not_found(&r), "{r:?}");
    let got = store.deployment("alice", "prod").await.unwrap().unwrap();
    assert_eq!(
        (got.release.number, got.release.version_id),
        (2, v2.id.clone())
    );
    let r = store
        .update_deployment(prod.id + 1000, release(&v2.id, 0, 1), "alice")
        .await;
    assert!(is_not_found(&r), "{r:?}");

    let d = remove_version(&store, m.id, &v2.id, &alice).await;
    assert_eq!(kinds(&d.blockers), [BlockerKind::Deployment; 2]);
}

async fn dry_run_changes_nothing(store: SqlStore) {
    let alice = user(&store, "alice").await;
    let a = alice.account.id;
    let m = model(&store, a, "m", Visibility::Private).await;
    let v = version(&store, m.id, "d1", "a1").await;
    let j = predict(&store, a, &v.id).await;
    let empty = model(&store, a, "empty", Visibility::Private).await;
    let dep = store
        .create_deployment(a, "off", release(&v.id, 0, 0), "alice")
        .await
        .unwrap();
    let later = Utc::now() + Duration::hours(1);

    let check = |d: Deletion| {
        assert!(d.blockers.is_empty(), "{d:?}");
        assert!(!d.deleted && d.unreferenced_artifact.is_none(), "{d:?}");
    };
    check(
        store
            .delete_deployment(dep.id, &alice, true, later, Duration::minutes(15))
            .await
            .unwrap(),
    );
    check(store.delete_model(empty.id, &alice, true).await.unwrap());
    assert!(store.deployment("alice", "off").await.unwrap().is_some());
    // With the deployment gone the version is deletable; preview that too.
    store
        .delete_deployment(dep.id, &alice, false, later, Duration::zero())
        .await
        .unwrap();
    check(preview_version_deletion(&store, m.id, &v.id, &alice).await);

    assert!(store.model("alice", "empty").await.unwrap().is_some());
    assert!(store.version_by_id(&v.id).await.unwrap().is_some());
    assert!(store
        .job(JobKind::Prediction, &j.id)
        .await
        .unwrap()
        .is_some());
    assert_eq!(run_count(&store, "alice/m").await, 1);
    assert!(store.artifact_in_use("a1").await.unwrap());
    // Only the real deletion was recorded.
    let events = store.audit_events(&[a], all()).await.unwrap();
    let actions: Vec<&str> = events.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(actions, ["delete_deployment"]);
}

async fn audit_events_outlive_their_objects(store: SqlStore) {
    let alice = user(&store, "alice").await;
    user(&store, "bob").await;
    let acme = org(&store, "acme").await;
    let bob = join(&store, &acme, "bob").await;
    let m = model(&store, acme.account.id, "m", Visibility::Public).await;
    let v = version(&store, m.id, "d1", "a1").await;

    let refused = remove_version(&store, m.id, &v.id, &bob).await;
    assert!(!refused.deleted);
    set_visibility(&store, m.id, Visibility::Private).await;
    assert!(remove_version(&store, m.id, &v.id, &bob).await.deleted);
    assert!(store.delete_model(m.id, &bob, false).await.unwrap().deleted);

    // The owner's log has it all, newest first, by whom, with the blockers as they were.
    let events = store.audit_events(&[acme.account.id], all()).await.unwrap();
    let target = format!("acme/m:{}", v.id);
    let summary: Vec<(&str, &str, &str, &str)> = events
        .iter()
        .map(|e| {
            (
                e.actor.as_str(),
                e.action.as_str(),
                e.target.as_str(),
                e.outcome.as_str(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("bob", "delete_model", "acme/m", "deleted"),
            ("bob", "delete_version", target.as_str(), "deleted"),
            ("bob", "delete_version", target.as_str(), "refused"),
        ]
    );
    assert_eq!(events[2].blockers, refused.blockers);
    assert!(events[0].blockers.is_empty() && events[1].blockers.is_empty());
    assert!(events[0].at >= events[2].at);
    assert!(events[0].id > events[1].id && events[1].id > events[2].id);
    // It is the owner's log, not the actor's, and nobody else's.
    assert!(store
        .audit_events(&[bob.account.id], all())
        .await
        .unwrap()
        .is_empty());
    assert!(store
        .audit_events(&[alice.account.id], all())
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        store.audit_events(&bob.org_ids, all()).await.unwrap().len(),
        3
    );

    // An event recorded by hand reads back as written.
    let blocker = refused.blockers[0].clone();
    store
        .record_audit(NewAuditEvent {
            actor_id: None,
            actor: "system".into(),
            owner_id: alice.account.id,
            action: "delete_version".into(),
            target: "alice/x:y".into(),
            outcome: "refused".into(),
            blockers: vec![blocker.clone()],
        })
        .await
        .unwrap();
    let e = store
        .audit_events(&[alice.account.id], all())
        .await
        .unwrap();
    assert_eq!(e.len(), 1);
    assert_eq!(
        (e[0].actor.as_str(), e[0].target.as_str()),
        ("system", "alice/x:y")
    );
    assert_eq!(e[0].blockers, [blocker]);
}

async fn unreferenced_artifact_on_last_use(store: SqlStore) {
    let alice = user(&store, "alice").await;
    let a = alice.account.id;
    let m1 = model(&store, a, "m1", Visibility::Private).await;
    let m2 = model(&store, a, "m2", Visibility::Private).await;
    // Two pushes can share an artifact: the same image under two models, or two digests.
    let v1 = version(&store, m1.id, "d1", "shared").await;
    let v2 = version(&store, m1.id, "d2", "shared").await;
    let v3 = version(&store, m1.id, "d3", "own").await;
    let v4 = version(&store, m2.id, "d1", "shared").await;

    let del = |mid: i64, vid: String| {
        let store = store.clone();
        let alice = alice.clone();
        async move { remove_version(&store, mid, &vid, &alice).await }
    };
    let d = del(m1.id, v1.id.clone()).await;
    assert!(d.deleted && d.unreferenced_artifact.is_none(), "{d:?}");
    let d = del(m1.id, v2.id.clone()).await;
    assert!(d.deleted && d.unreferenced_artifact.is_none(), "{d:?}");
    assert!(store.artifact_in_use("shared").await.unwrap());

    let d = del(m1.id, v3.id.clone()).await;
    assert_eq!(d.unreferenced_artifact.as_deref(), Some("own"));
    assert!(!store.artifact_in_use("own").await.unwrap());

    // A refused deletion frees nothing, even of the last user.
    set_visibility(&store, m2.id, Visibility::Public).await;
    let d = del(m2.id, v4.id.clone()).await;
    assert!(!d.deleted && d.unreferenced_artifact.is_none(), "{d:?}");
    assert!(store.artifact_in_use("shared").await.unwrap());
    set_visibility(&store, m2.id, Visibility::Private).await;
    let d = del(m2.id, v4.id.clone()).await;
    assert!(d.deleted, "{d:?}");
    assert_eq!(d.unreferenced_artifact.as_deref(), Some("shared"));
    assert!(!store.artifact_in_use("shared").await.unwrap());
}

async fn delete_deployment_rules(store: SqlStore) {
    let alice = user(&store, "alice").await;
    let a = alice.account.id;
    let bob = user(&store, "bob").await.account;
    let m = model(&store, a, "m", Visibility::Public).await;
    let v = version(&store, m.id, "d1", "a1").await;
    let idle = Duration::minutes(15);
    let d = store
        .create_deployment(a, "prod", release(&v.id, 1, 2), "alice")
        .await
        .unwrap();

    let r = store
        .delete_deployment(d.id, &alice, false, Utc::now(), idle)
        .await
        .unwrap();
    assert!(!r.deleted);
    assert_eq!(
        kinds(&r.blockers),
        [
            BlockerKind::DeploymentEnabled,
            BlockerKind::DeploymentRecentlyUsed
        ]
    );
    assert!(r
        .blockers
        .iter()
        .all(|b| b.deployment.as_deref() == Some("alice/prod")));
    // Enabled blocks however long it has been idle.
    let r = store
        .delete_deployment(d.id, &alice, true, Utc::now() + Duration::days(1), idle)
        .await
        .unwrap();
    assert_eq!(kinds(&r.blockers), [BlockerKind::DeploymentEnabled]);
    let r = store
        .delete_deployment(d.id, &alice, true, Utc::now(), Duration::zero())
        .await
        .unwrap();
    assert_eq!(kinds(&r.blockers), [BlockerKind::DeploymentEnabled]);
    // min 0 alone is not disabled.
    let d = store
        .update_deployment(d.id, release(&v.id, 0, 1), "alice")
        .await
        .unwrap();
    let r = store
        .delete_deployment(d.id, &alice, true, Utc::now(), Duration::zero())
        .await
        .unwrap();
    assert_eq!(kinds(&r.blockers), [BlockerKind::DeploymentEnabled]);

    // Disabled but changed just now.
    let d = store
        .update_deployment(d.id, release(&v.id, 0, 0), "alice")
        .await
        .unwrap();
    let r = store
        .delete_deployment(d.id, &alice, false, Utc::now(), idle)
        .await
        .unwrap();
    assert_eq!(kinds(&r.blockers), [BlockerKind::DeploymentRecentlyUsed]);
    assert!(store.deployment("alice", "prod").await.unwrap().is_some());
    let quiet = d.last_used_at + idle + Duration::milliseconds(1);
    let r = store
        .delete_deployment(d.id, &alice, true, quiet, idle)
        .await
        .unwrap();
    assert!(r.blockers.is_empty(), "{r:?}");

    // A prediction through it counts as use.
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let mut j = new_job(JobKind::Prediction, bob.id, &v.id);
    j.deployment_id = Some(d.id);
    let j = store.create_job(j).await.unwrap();
    let r = store
        .delete_deployment(d.id, &alice, true, quiet, idle)
        .await
        .unwrap();
    assert_eq!(kinds(&r.blockers), [BlockerKind::DeploymentRecentlyUsed]);

    let r = store
        .delete_deployment(d.id, &alice, false, Utc::now(), Duration::zero())
        .await
        .unwrap();
    assert!(r.deleted && r.blockers.is_empty(), "{r:?}");
    assert!(r.unreferenced_artifact.is_none());
    assert!(store.deployment("alice", "prod").await.unwrap().is_none());
    assert!(store
        .list_deployments(&[a], all())
        .await
        .unwrap()
        .is_empty());
    let again = store
        .delete_deployment(d.id, &alice, false, Utc::now(), Duration::zero())
        .await;
    assert!(is_not_found(&again), "{again:?}");
    // The prediction stays, no longer naming the deployment.
    let j = store
        .job(JobKind::Prediction, &j.id)
        .await
        .unwrap()
        .expect("prediction survives");
    assert_eq!(j.deployment, None);
    // The name is free again.
    store
        .create_deployment(a, "prod", release(&v.id, 0, 0), "alice")
        .await
        .unwrap();

    let events = store.audit_events(&[a], all()).await.unwrap();
    let summary: Vec<(&str, &str, &str)> = events
        .iter()
        .map(|e| (e.action.as_str(), e.target.as_str(), e.outcome.as_str()))
        .collect();
    assert_eq!(
        summary,
        [
            ("delete_deployment", "alice/prod", "deleted"),
            ("delete_deployment", "alice/prod", "refused"),
            ("delete_deployment", "alice/prod", "refused"),
        ]
    );
    assert_eq!(
        kinds(&events[1].blockers),
        [BlockerKind::DeploymentRecentlyUsed]
    );
    assert_eq!(kinds(&events[2].blockers).len(), 2);
}

// The web UI.

async fn web_passwords_and_sessions(store: SqlStore) {
    let alice = user(&store, "alice").await;
    let acme = org(&store, "acme").await;
    store
        .add_member(acme.account.id, alice.account.id)
        .await
        .unwrap();
    let PasswordRecord { account: a, hash } = store.password_hash("alice").await.unwrap().unwrap();
    assert_eq!((a.username.as_str(), hash), ("alice", None));
    assert!(store.password_hash("nobody").await.unwrap().is_none());
    store
        .set_password_hash(a.id, Some("$argon2id$x"))
        .await
        .unwrap();
    assert_eq!(
        store
            .password_hash("alice")
            .await
            .unwrap()
            .unwrap()
            .hash
            .as_deref(),
        Some("$argon2id$x")
    );
    assert!(is_not_found(&store.set_password_hash(-5, Some("h")).await));

    let now = Utc::now();
    store
        .create_session("s1", a.id, now + Duration::days(1))
        .await
        .unwrap();
    store
        .create_session("old", a.id, now - Duration::seconds(1))
        .await
        .unwrap();
    let c = store.session_caller("s1", now).await.unwrap().unwrap();
    assert_eq!(c.account.id, a.id);
    assert_eq!(c.org_ids, [acme.account.id]);
    // Expired and unknown sessions sign nobody in.
    assert!(store.session_caller("old", now).await.unwrap().is_none());
    assert!(store
        .session_caller("s1", now + Duration::days(2))
        .await
        .unwrap()
        .is_none());
    assert!(store.session_caller("nope", now).await.unwrap().is_none());
    store.delete_session("s1").await.unwrap();
    assert!(store.session_caller("s1", now).await.unwrap().is_none());

    // Removing the password ends every session of the account.
    store
        .create_session("s2", a.id, now + Duration::days(1))
        .await
        .unwrap();
    store.set_password_hash(a.id, None).await.unwrap();
    assert!(store.session_caller("s2", now).await.unwrap().is_none());
    assert_eq!(
        store.password_hash("alice").await.unwrap().unwrap().hash,
        None
    );
}

async fn web_listings_tokens_and_members(store: SqlStore) {
    let alice = user(&store, "alice").await;
    let bob = user(&store, "bob").await;
    let acme = org(&store, "acme").await;
    let (a, b, o) = (alice.account.id, bob.account.id, acme.account.id);
    store.add_member(o, a).await.unwrap();
    store.add_member(o, b).await.unwrap();
    let m1 = model(&store, a, "m1", Visibility::Private).await;
    let m2 = model(&store, o, "m2", Visibility::Public).await;
    model(&store, b, "theirs", Visibility::Public).await;
    let owned = store.models_owned_by(&[a, o], 10).await.unwrap();
    assert_eq!(full_names(&owned), ["acme/m2", "alice/m1"]);
    assert!(store.models_owned_by(&[], 10).await.unwrap().is_empty());

    let v1 = version(&store, m1.id, "d1", "a1").await;
    let v2 = version(&store, m2.id, "d2", "a2").await;
    assert_eq!(store.version_prediction_count(&v1.id).await.unwrap(), 0);
    let p1 = predict(&store, a, &v1.id).await;
    let p2 = predict(&store, a, &v1.id).await;
    predict(&store, b, &v2.id).await;
    predict(&store, a, &v2.id).await;
    assert_eq!(store.version_prediction_count(&v1.id).await.unwrap(), 2);
    assert_eq!(store.version_prediction_count(&v2.id).await.unwrap(), 2);
    // One account's predictions of one model, newest first.
    let jobs: Vec<String> = store
        .model_jobs(m1.id, a, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|j| j.id)
        .collect();
    assert_eq!(jobs, [p2.id, p1.id]);
    assert_eq!(store.model_jobs(m2.id, b, 10).await.unwrap().len(), 1);
    assert!(store.model_jobs(m1.id, b, 10).await.unwrap().is_empty());

    let accounts = store.accounts_by_ids(&[o, b]).await.unwrap();
    let names: Vec<&str> = accounts.iter().map(|x| x.username.as_str()).collect();
    assert_eq!(names, ["acme", "bob"]);
    assert!(store.accounts_by_ids(&[]).await.unwrap().is_empty());

    store.add_token(a, "h-admin").await.unwrap();
    store
        .add_named_token(a, "h-laptop", "laptop")
        .await
        .unwrap();
    let tokens = store.tokens(a).await.unwrap();
    let mut named: Vec<(String, Option<String>)> = tokens
        .into_iter()
        .map(|t| (t.hash, t.name))
        .filter(|(h, _)| h.starts_with("h-"))
        .collect();
    named.sort();
    assert_eq!(
        named,
        [
            ("h-admin".to_string(), None),
            ("h-laptop".to_string(), Some("laptop".to_string()))
        ]
    );
    assert!(store.caller_by_token("h-laptop").await.unwrap().is_some());
    // Only the account's own tokens can be revoked by it.
    assert!(!store.revoke_token(b, "h-laptop").await.unwrap());
    assert!(store.revoke_token(a, "h-laptop").await.unwrap());
    assert!(store.caller_by_token("h-laptop").await.unwrap().is_none());
    assert!(!store.revoke_token(a, "h-laptop").await.unwrap());

    assert_eq!(
        store.remove_member(o, b).await.unwrap(),
        MemberRemoval::Removed
    );
    assert_eq!(
        store.remove_member(o, b).await.unwrap(),
        MemberRemoval::NotAMember
    );
    let members: Vec<String> = member_names(&store, o).await;
    assert_eq!(members, ["alice"]);
    // The last member stays, and the refusal says why.
    let MemberRemoval::Refused(blockers) = store.remove_member(o, a).await.unwrap() else {
        panic!("the last member of an organization was removed");
    };
    assert_eq!(kinds(&blockers), [BlockerKind::LastMember]);
    assert_eq!(blockers[0].account.as_deref(), Some("alice"));
    assert_eq!(store.members(o).await.unwrap().len(), 1);
}

/// Values no code wrote (a CHECK constraint bypassed, a status column without one) are errors
/// when read back, never a default the rules would then decide on.
async fn unknown_stored_values_are_corrupt(store: SqlStore) {
    let alice = user(&store, "alice").await;
    let m = model(&store, alice.account.id, "m", Visibility::Private).await;
    let v = version(&store, m.id, "d", "a").await;
    let job = predict(&store, alice.account.id, &v.id).await;

    write_raw(&["UPDATE jobs SET status = 'paused'"]).await;
    let r = store.job(JobKind::Prediction, &job.id).await;
    assert!(is_corrupt(&r), "{r:?}");

    let drop_check = match store.backend() {
        "postgres" => "ALTER TABLE models DROP CONSTRAINT models_visibility_check",
        _ => "PRAGMA ignore_check_constraints = ON",
    };
    write_raw(&[drop_check, "UPDATE models SET visibility = 'secret'"]).await;
    let r = store.model("alice", "m").await;
    assert!(is_corrupt(&r), "{r:?}");
    // The deletion rules see no guessed visibility either.
    let r = store.delete_model(m.id, &alice, true).await;
    assert!(is_corrupt(&r), "{r:?}");
    let r = store.delete_version(m.id, &v.id, &alice, true).await;
    assert!(is_corrupt(&r), "{r:?}");
}

// Reads of one row, which SQLite keeps in memory while nothing is written.

/// Rows read again and again are current after a write through any store of the database
/// (another server of this process), and gone once deleted.
async fn reads_follow_every_stores_writes(store: SqlStore) {
    let other = second_store().await;
    let alice = user(&store, "alice").await;
    let m = model(&store, alice.account.id, "m", Visibility::Private).await;
    let v = version(&store, m.id, "d1", "a1").await;
    let j = predict(&store, alice.account.id, &v.id).await;
    let read = || async {
        (
            store.model("alice", "m").await.unwrap(),
            store.version(m.id, &v.id).await.unwrap(),
            store.version_by_id(&v.id).await.unwrap(),
            store.model_and_version("alice", "m", &v.id).await.unwrap(),
            store.job(JobKind::Prediction, &j.id).await.unwrap(),
        )
    };
    for _ in 0..2 {
        let (model, version, by_id, both, job) = read().await;
        assert_eq!(model.unwrap().visibility, Visibility::Private);
        assert_eq!(version.unwrap().id, v.id);
        assert_eq!(by_id.unwrap().model.visibility, Visibility::Private);
        assert!(both.unwrap().1.is_some());
        assert_eq!(job.unwrap().status, Status::Starting);
    }

    set_visibility(&other, m.id, Visibility::Public).await;
    other.cancel_job(JobKind::Prediction, &j.id).await.unwrap();
    let (model, _, by_id, both, job) = read().await;
    assert_eq!(model.unwrap().visibility, Visibility::Public);
    assert_eq!(by_id.unwrap().model.visibility, Visibility::Public);
    assert_eq!(both.unwrap().0.visibility, Visibility::Public);
    assert_eq!(job.unwrap().status, Status::Canceled);

    set_visibility(&other, m.id, Visibility::Private).await;
    assert!(remove_version(&other, m.id, &v.id, &alice).await.deleted);
    let (model, version, by_id, both, _) = read().await;
    assert!(model.is_some());
    assert!(
        version.is_none() && by_id.is_none(),
        "a deleted version was read"
    );
    assert!(both.unwrap().1.is_none(), "a deleted version was read");

    let gone = other.delete_model(m.id, &alice, false).await.unwrap();
    assert!(gone.deleted, "{gone:?}");
    assert!(
        store.model("alice", "m").await.unwrap().is_none(),
        "a deleted model was read"
    );
    assert!(store
        .model_and_version("alice", "m", &v.id)
        .await
        .unwrap()
        .is_none());
}

/// A prediction's record, start and end: a model read again shows each prediction in its
/// `run_count` at once (however it reads it), and the prediction's own row each step; a
/// training counts no run.
async fn reads_follow_the_job_path(store: SqlStore) {
    let alice = user(&store, "alice").await;
    let m = model(&store, alice.account.id, "m", Visibility::Private).await;
    let v = version(&store, m.id, "d1", "a1").await;
    let runs = || async {
        let counts = [
            store.model("alice", "m").await.unwrap().unwrap().run_count,
            store
                .version_by_id(&v.id)
                .await
                .unwrap()
                .unwrap()
                .model
                .run_count,
            store
                .model_and_version("alice", "m", &v.id)
                .await
                .unwrap()
                .unwrap()
                .0
                .run_count,
        ];
        assert!(counts.iter().all(|c| *c == counts[0]), "{counts:?}");
        counts[0]
    };
    assert_eq!(runs().await, 0);
    assert_eq!(runs().await, 0);
    let offer = modelyard_domain::worker::Offer::new(vec![], 1);
    let lease = JobLease {
        worker_id: "w".into(),
        until: Utc::now() + Duration::seconds(60),
    };
    for n in 1..=3 {
        let j = predict(&store, alice.account.id, &v.id).await;
        assert_eq!(
            runs().await,
            n,
            "the record of prediction {n} was not counted"
        );
        let status = || async {
            store
                .job(JobKind::Prediction, &j.id)
                .await
                .unwrap()
                .unwrap()
                .status
        };
        assert_eq!(status().await, Status::Starting);
        assert!(store
            .claim_and_start_job(&j.id, &offer, &lease, Utc::now())
            .await
            .unwrap());
        assert_eq!(status().await, Status::Processing);
        let end = JobEnd {
            status: Status::Succeeded,
            output: Some(serde_json::json!("out")),
            error: None,
            logs: String::new(),
            metrics: serde_json::json!({}),
            result_version_id: None,
            completed_at: Utc::now(),
        };
        assert!(store.finish_job(&j.id, end).await.unwrap());
        assert_eq!(status().await, Status::Succeeded);
        assert_eq!(runs().await, n);
    }
    let dest = model(&store, alice.account.id, "tuned", Visibility::Private).await;
    train(&store, alice.account.id, &v.id, dest.id).await;
    assert_eq!(runs().await, 3, "a training counted as a run");
}

/// What `create_job` answers is the record as any later read gives it: a prediction, one of a
/// deployment, a training with its destination, with a webhook and a deadline.
async fn a_created_job_is_answered_as_it_reads_back(store: SqlStore) {
    let alice = user(&store, "alice").await;
    let bob = user(&store, "bob").await;
    let m = model(&store, alice.account.id, "m", Visibility::Public).await;
    let v = version(&store, m.id, "d1", "a1").await;
    let d = store
        .create_deployment(alice.account.id, "prod", release(&v.id, 0, 1), "alice")
        .await
        .unwrap();
    let dest = model(&store, alice.account.id, "tuned", Visibility::Private).await;
    let mut plain = new_job(JobKind::Prediction, bob.account.id, &v.id);
    plain.input = json!({"prompt": "p", "n": 1.5, "list": [1, {"a": null}]});
    plain.webhook = Some("https://example.com/hook".into());
    plain.webhook_events_filter = vec!["start".into(), "completed".into()];
    plain.deadline = Some(Utc::now() + Duration::seconds(30));
    let mut deployed = new_job(JobKind::Prediction, alice.account.id, &v.id);
    deployed.deployment_id = Some(d.id);
    let mut training = new_job(JobKind::Training, alice.account.id, &v.id);
    training.destination_model_id = Some(dest.id);
    for new in [plain, deployed, training] {
        let kind = new.kind;
        let created = store.create_job(new).await.unwrap();
        let read = store.job(kind, &created.id).await.unwrap().unwrap();
        assert_eq!(format!("{created:?}"), format!("{read:?}"));
    }
}
