//! The trash over HTTP: a deletion hides the item everywhere at once, its owner restores it
//! with everything it had, a trashed model keeps its name, purging (by the owner, or by the
//! sweep once the window ends) removes rows and files, a purge racing a restore has exactly one
//! winner, pruning decides per version, and `frees_bytes` is what purging removes from disk.
mod common;

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use common::{start_with, Backend, Server};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

const WEEK: Duration = Duration::from_secs(7 * 24 * 3600);

async fn with_trash(b: Backend, window: Duration) -> Server {
    start_with(b, |c| {
        c.trash = window;
        c.trash_sweep_every = Duration::from_millis(200);
    })
    .await
}

async fn post(s: &Server, who: &str, path: &str, body: Option<Value>) -> common::Reply {
    s.call(who, Method::POST, path, body).await
}

async fn delete(s: &Server, who: &str, path: &str) -> common::Reply {
    s.call(who, Method::DELETE, path, None).await
}

async fn trash_targets(s: &Server, who: &str) -> Vec<String> {
    let r = s.get(who, "/v1/trash").await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    r.body["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| match i["version_id"].as_str() {
            Some(v) => format!(
                "{}/{}:{v}",
                i["owner"].as_str().unwrap(),
                i["name"].as_str().unwrap()
            ),
            None => format!(
                "{}/{}",
                i["owner"].as_str().unwrap(),
                i["name"].as_str().unwrap()
            ),
        })
        .collect()
}

async fn version_ids(s: &Server, who: &str, model: &str) -> Vec<String> {
    let r = s.get(who, &format!("/v1/models/{model}/versions")).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    r.body["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["id"].as_str().unwrap().to_string())
        .collect()
}

async fn audit_actions(s: &Server, who: &str) -> Vec<(String, String, String)> {
    let r = s.get(who, "/v1/audit-log").await;
    r.body["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["actor"].as_str().unwrap().to_string(),
                e["action"].as_str().unwrap().to_string(),
                e["outcome"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

async fn hidden_then_restored(b: Backend) {
    let s = with_trash(b, WEEK).await;
    s.create_model("alice", "acme", "t", "private").await;
    let v1 = s.version("acme/t", "t-1").await;
    let v2 = s.version("acme/t", "t-2").await;
    let p = s.predict("alice", "acme/t", &v1).await;
    assert_eq!(p.status, StatusCode::CREATED, "{:?}", p.body);
    let pid = p.body["id"].as_str().unwrap().to_string();
    let path = format!("/v1/models/acme/t/versions/{v1}");

    let preview = delete(&s, "alice", &format!("{path}?dry_run=true")).await;
    assert_eq!(preview.status, StatusCode::OK, "{:?}", preview.body);
    assert_eq!(preview.body["deletable"], true);
    assert!(preview.body["frees_bytes"].is_i64(), "{:?}", preview.body);

    let r = delete(&s, "alice", &path).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{:?}", r.body);
    // Gone everywhere at once.
    assert_eq!(s.get("alice", &path).await.status, StatusCode::NOT_FOUND);
    assert_eq!(version_ids(&s, "alice", "acme/t").await, vec![v2.clone()]);
    let gone = s.get("alice", &format!("/v1/predictions/{pid}")).await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND, "{:?}", gone.body);
    assert_eq!(
        s.predict("alice", "acme/t", &v1).await.status,
        StatusCode::NOT_FOUND
    );
    let listed = s.get("alice", "/v1/predictions").await;
    assert!(!listed.body.to_string().contains(&pid));

    // In alice's (and acme's) trash for the window; nobody else's.
    let t = s.get("alice", "/v1/trash").await;
    let item = &t.body["results"][0];
    assert_eq!(item["kind"], "version");
    assert_eq!(item["version_id"], v1.as_str());
    let purge_at = chrono::DateTime::parse_from_rfc3339(item["purge_at"].as_str().unwrap())
        .unwrap()
        .with_timezone(&chrono::Utc);
    let left = purge_at - chrono::Utc::now();
    assert!(
        left > chrono::Duration::days(6) && left <= chrono::Duration::days(7),
        "{left}"
    );
    assert_eq!(trash_targets(&s, "acme").await.len(), 1);
    assert!(trash_targets(&s, "bob").await.is_empty());
    let r = s.get("bob", "/v1/trash?owner=acme").await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{:?}", r.body);

    // Only its owners restore it.
    let r = post(&s, "bob", &format!("{path}/restore"), None).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{:?}", r.body);
    let r = post(&s, "alice", &format!("{path}/restore"), None).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["id"], v1.as_str());
    // With its prediction, under the same ids.
    let back = s.get("alice", &format!("/v1/predictions/{pid}")).await;
    assert_eq!(back.status, StatusCode::OK, "{:?}", back.body);
    assert_eq!(back.body["version"], v1.as_str());
    assert_eq!(
        version_ids(&s, "alice", "acme/t").await,
        vec![v2, v1.clone()]
    );
    assert!(trash_targets(&s, "alice").await.is_empty());
    let again = post(&s, "alice", &format!("{path}/restore"), None).await;
    assert_eq!(again.status, StatusCode::NOT_FOUND, "{:?}", again.body);
    let actions = audit_actions(&s, "alice").await;
    assert!(actions.contains(&("alice".into(), "delete_version".into(), "trashed".into())));
    assert!(actions.contains(&("alice".into(), "restore_version".into(), "restored".into())));
}

#[tokio::test]
async fn hidden_then_restored_sqlite() {
    hidden_then_restored(Backend::Sqlite).await;
}

#[tokio::test]
async fn hidden_then_restored_postgres() {
    hidden_then_restored(Backend::Postgres).await;
}

async fn names_and_models(b: Backend) {
    let s = with_trash(b, WEEK).await;
    s.create_model("alice", "alice", "m", "private").await;
    let v = s.version("alice/m", "m-1").await;
    let vpath = format!("/v1/models/alice/m/versions/{v}");
    assert_eq!(
        delete(&s, "alice", &vpath).await.status,
        StatusCode::NO_CONTENT
    );
    // Its only version is in the trash: the model can go too.
    assert_eq!(
        delete(&s, "alice", "/v1/models/alice/m").await.status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        s.get("alice", "/v1/models/alice/m").await.status,
        StatusCode::NOT_FOUND
    );

    // The name stays alice's, and the answer says until when and how to free it.
    let body = json!({"owner": "alice", "name": "m", "visibility": "private", "hardware": "cpu"});
    let r = post(&s, "alice", "/v1/models", Some(body.clone())).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{:?}", r.body);
    let detail = r.body["detail"].as_str().unwrap();
    assert!(detail.contains("in the trash until"), "{detail}");
    assert!(detail.contains("/v1/models/alice/m/restore"), "{detail}");
    assert!(
        detail.contains("modelyard trash restore alice/m"),
        "{detail}"
    );
    assert!(detail.contains("purge=true"), "{detail}");

    // A version waits for its model.
    let r = post(&s, "alice", &format!("{vpath}/restore"), None).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{:?}", r.body);
    assert_eq!(r.kinds(), vec!["model_in_trash"]);
    let r = post(&s, "alice", "/v1/models/alice/m/restore", None).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["name"], "m");
    assert!(version_ids(&s, "alice", "alice/m").await.is_empty());
    let r = post(&s, "alice", &format!("{vpath}/restore"), None).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(version_ids(&s, "alice", "alice/m").await, vec![v.clone()]);

    // Purging a live item keeps to the rules; the version goes for good, then the model.
    let r = delete(&s, "alice", "/v1/models/alice/m?purge=true").await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{:?}", r.body);
    assert_eq!(r.kinds(), vec!["has_versions"]);
    let r = delete(&s, "alice", &format!("{vpath}?purge=true")).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{:?}", r.body);
    assert!(trash_targets(&s, "alice").await.is_empty());
    assert_eq!(
        post(&s, "alice", &format!("{vpath}/restore"), None)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    // A model in the trash, purged: its name is free again.
    assert_eq!(
        delete(&s, "alice", "/v1/models/alice/m").await.status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        trash_targets(&s, "alice").await,
        vec!["alice/m".to_string()]
    );
    let r = delete(&s, "bob", "/v1/models/alice/m?purge=true").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{:?}", r.body);
    let r = delete(&s, "alice", "/v1/models/alice/m?purge=maybe").await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{:?}", r.body);
    assert_eq!(
        trash_targets(&s, "alice").await,
        vec!["alice/m".to_string()]
    );
    let r = delete(&s, "alice", "/v1/models/alice/m?purge=true").await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{:?}", r.body);
    assert!(trash_targets(&s, "alice").await.is_empty());
    let r = post(&s, "alice", "/v1/models", Some(body)).await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let actions = audit_actions(&s, "alice").await;
    assert!(actions.contains(&("alice".into(), "purge_model".into(), "purged".into())));
}

#[tokio::test]
async fn names_and_models_sqlite() {
    names_and_models(Backend::Sqlite).await;
}

#[tokio::test]
async fn names_and_models_postgres() {
    names_and_models(Backend::Postgres).await;
}

/// A purge and a restore of the same item at once: exactly one wins, and what is left agrees.
async fn purge_races_restore(b: Backend) {
    let s = with_trash(b, WEEK).await;
    s.create_model("alice", "alice", "race", "private").await;
    let (mut restored, mut purged) = (0, 0);
    for i in 0..12 {
        let v = s.version("alice/race", &format!("race-{i}")).await;
        let path = format!("/v1/models/alice/race/versions/{v}");
        assert_eq!(
            delete(&s, "alice", &path).await.status,
            StatusCode::NO_CONTENT
        );
        let restore_path = format!("{path}/restore");
        let purge_path = format!("{path}?purge=true");
        let (r, p) = tokio::join!(
            post(&s, "alice", &restore_path, None),
            delete(&s, "alice", &purge_path)
        );
        let now = s.get("alice", &path).await.status;
        match (r.status, p.status) {
            // Restored first, then purged as a live version: gone for good either way.
            (StatusCode::OK, StatusCode::NO_CONTENT) => {
                purged += 1;
                assert_eq!(now, StatusCode::NOT_FOUND);
            }
            (StatusCode::OK, other) => {
                restored += 1;
                assert_eq!(other, StatusCode::NOT_FOUND, "{:?}", p.body);
                assert_eq!(now, StatusCode::OK);
            }
            (StatusCode::NOT_FOUND, StatusCode::NO_CONTENT) => {
                purged += 1;
                assert_eq!(now, StatusCode::NOT_FOUND);
            }
            other => panic!("{other:?}: {:?} {:?}", r.body, p.body),
        }
        assert!(trash_targets(&s, "alice").await.is_empty());
    }
    assert_eq!(restored + purged, 12);
}

#[tokio::test]
async fn purge_races_restore_sqlite() {
    purge_races_restore(Backend::Sqlite).await;
}

#[tokio::test]
async fn purge_races_restore_postgres() {
    purge_races_restore(Backend::Postgres).await;
}

/// With a short window the sweep purges on its own, audited as the sweep.
async fn sweep_purges_expired(b: Backend) {
    let s = with_trash(b, Duration::from_secs(1)).await;
    s.create_model("alice", "alice", "sw", "private").await;
    let v = s.version("alice/sw", "sw-1").await;
    let keep = s.version("alice/sw", "sw-2").await;
    let path = format!("/v1/models/alice/sw/versions/{v}");
    assert_eq!(
        delete(&s, "alice", &path).await.status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(trash_targets(&s, "alice").await.len(), 1);
    let until = std::time::Instant::now() + Duration::from_secs(15);
    while !trash_targets(&s, "alice").await.is_empty() {
        assert!(std::time::Instant::now() < until, "the sweep never purged");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        post(&s, "alice", &format!("{path}/restore"), None)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(version_ids(&s, "alice", "alice/sw").await, vec![keep]);
    let actions = audit_actions(&s, "alice").await;
    assert!(
        actions.contains(&(
            "trash sweep".into(),
            "purge_version".into(),
            "purged".into()
        )),
        "{actions:?}"
    );
}

#[tokio::test]
async fn sweep_purges_expired_sqlite() {
    sweep_purges_expired(Backend::Sqlite).await;
}

#[tokio::test]
async fn sweep_purges_expired_postgres() {
    sweep_purges_expired(Backend::Postgres).await;
}

async fn prune_decides_per_version(b: Backend) {
    let s = with_trash(b, WEEK).await;
    s.create_model("alice", "alice", "p", "public").await;
    let ids: Vec<String> = {
        let mut ids = vec![];
        for i in 1..=5 {
            ids.push(s.version("alice/p", &format!("p-{i}")).await);
        }
        ids
    };
    // bob ran the second oldest: it stays whatever is pruned.
    assert_eq!(
        s.predict("bob", "alice/p", &ids[1]).await.status,
        StatusCode::CREATED
    );
    s.set_visibility("alice", "alice/p", "private").await;
    let path = "/v1/models/alice/p/versions/prune";

    let r = post(&s, "bob", path, Some(json!({"keep": 1}))).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{:?}", r.body);
    for bad in [
        json!({"keep": -1}),
        json!({"keep": "2"}),
        json!({"keep": 1, "x": 1}),
        json!({}),
    ] {
        let r = post(&s, "alice", path, Some(bad.clone())).await;
        assert_eq!(
            r.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{bad}: {:?}",
            r.body
        );
    }

    let dry = post(&s, "alice", path, Some(json!({"keep": 2, "dry_run": true}))).await;
    assert_eq!(dry.status, StatusCode::OK, "{:?}", dry.body);
    let deleted = |r: &common::Reply| -> Vec<String> {
        r.body["deleted"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(deleted(&dry), vec![ids[2].clone(), ids[0].clone()]);
    let kept = dry.body["kept"].as_array().unwrap();
    assert_eq!(kept.len(), 3);
    assert_eq!(kept[0]["id"], ids[4].as_str());
    assert_eq!(kept[0]["reason"], "newest");
    assert_eq!(kept[1]["id"], ids[3].as_str());
    assert_eq!(kept[2]["id"], ids[1].as_str());
    assert_eq!(kept[2]["reason"], "blocked");
    assert_eq!(kept[2]["blockers"][0]["kind"], "predictions_by_others");
    assert!(dry.body["frees_bytes"].is_i64());
    // A dry run changed nothing.
    assert_eq!(version_ids(&s, "alice", "alice/p").await.len(), 5);
    assert!(trash_targets(&s, "alice").await.is_empty());

    let real = post(&s, "alice", path, Some(json!({"keep": 2}))).await;
    assert_eq!(real.status, StatusCode::OK, "{:?}", real.body);
    assert_eq!(deleted(&real), deleted(&dry));
    assert_eq!(real.body["kept"], dry.body["kept"]);
    assert_eq!(
        version_ids(&s, "alice", "alice/p").await,
        vec![ids[4].clone(), ids[3].clone(), ids[1].clone()]
    );
    let mut trashed = trash_targets(&s, "alice").await;
    trashed.sort();
    let mut expected = vec![format!("alice/p:{}", ids[0]), format!("alice/p:{}", ids[2])];
    expected.sort();
    assert_eq!(trashed, expected);
}

#[tokio::test]
async fn prune_decides_per_version_sqlite() {
    prune_decides_per_version(Backend::Sqlite).await;
}

#[tokio::test]
async fn prune_decides_per_version_postgres() {
    prune_decides_per_version(Backend::Postgres).await;
}

/// Bytes of the stored files under the data directory's content folders, each inode once
/// (a tree's files are hard links to its blobs).
fn stored_bytes(data: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut seen: HashMap<(u64, u64), u64> = HashMap::new();
    let mut dirs: Vec<_> = ["artifacts", "blobs", "weights"]
        .iter()
        .map(|d| data.join(d))
        .collect();
    while let Some(d) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let m = std::fs::symlink_metadata(e.path()).unwrap();
            if m.is_dir() {
                dirs.push(e.path());
            } else if m.is_file() {
                seen.insert((m.dev(), m.ino()), m.len());
            }
        }
    }
    seen.values().sum()
}

/// A copy of the echo fixture with extra files of these sizes (content from `seed`).
fn project(root: &Path, name: &str, files: &[(&str, usize, u8)]) -> std::path::PathBuf {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    for f in ["cog.yaml", "predict.py"] {
        std::fs::copy(common::fixture("echo").join(f), dir.join(f)).unwrap();
    }
    for (file, size, seed) in files {
        let bytes: Vec<u8> = (0..*size)
            .map(|i| (i as u8).wrapping_mul(*seed) ^ seed)
            .collect();
        std::fs::write(dir.join(file), bytes).unwrap();
    }
    dir
}

async fn push_dir(s: &Server, model: &str, dir: &Path) -> String {
    let resp = s
        .http
        .post(format!("{}/v1/models/{model}/versions", s.url))
        .bearer_auth(&s.tokens["alice"])
        .header("content-type", "application/gzip")
        .body(common::pack_dir(dir))
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "push: {}", resp.status());
    let v: Value = resp.json().await.unwrap();
    v["id"].as_str().unwrap().to_string()
}

/// What a deletion says it frees is what purging it removes from disk, with content shared
/// with another version counted as kept.
#[tokio::test]
async fn frees_bytes_is_what_purging_removes() {
    let s = with_trash(Backend::Sqlite, WEEK).await;
    let data = s.state.config.data_dir.clone();
    let tmp = tempfile::tempdir().unwrap();
    s.create_model("alice", "alice", "f", "private").await;
    let a = project(
        tmp.path(),
        "a",
        &[("shared.bin", 300_000, 7), ("a.bin", 50_000, 3)],
    );
    let b = project(
        tmp.path(),
        "b",
        &[("shared.bin", 300_000, 7), ("b.bin", 70_000, 5)],
    );
    let va = push_dir(&s, "alice/f", &a).await;
    let vb = push_dir(&s, "alice/f", &b).await;

    // Sizes are recorded at push; owners see them when they ask.
    let ga = s
        .get(
            "alice",
            &format!("/v1/models/alice/f/versions/{va}?storage=true"),
        )
        .await;
    let total_a = ga.body["storage"]["bytes"].as_i64().unwrap();
    assert!(total_a >= 350_000, "{:?}", ga.body);
    assert_eq!(ga.body["storage"]["unique_bytes"].as_i64().unwrap(), 50_000);
    assert!(s
        .get("bob", "/v1/models/alice/f?storage=true")
        .await
        .body
        .get("storage")
        .is_none());
    let plain = s.get("alice", "/v1/models/alice/f").await;
    assert!(plain.body.get("storage").is_none(), "{:?}", plain.body);
    let asked = s.get("alice", "/v1/models/alice/f?storage=true").await;
    assert!(asked.body["storage"]["bytes"].as_i64().unwrap() >= total_a);
    let bad = s.get("alice", "/v1/models/alice/f?storage=maybe").await;
    assert_eq!(
        bad.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{:?}",
        bad.body
    );
    let storage = s.get("alice", "/v1/account/storage").await;
    assert_eq!(storage.status, StatusCode::OK, "{:?}", storage.body);
    assert!(storage.body["bytes"].as_i64().unwrap() >= 420_000);
    assert_eq!(storage.body["trash_bytes"], 0);

    let path = format!("/v1/models/alice/f/versions/{va}");
    let preview = delete(&s, "alice", &format!("{path}?dry_run=true")).await;
    let frees = preview.body["frees_bytes"].as_i64().unwrap();
    assert_eq!(frees, 50_000, "{:?}", preview.body);

    let before = stored_bytes(&data);
    assert_eq!(
        delete(&s, "alice", &path).await.status,
        StatusCode::NO_CONTENT
    );
    // In the trash, nothing leaves the disk yet.
    assert_eq!(stored_bytes(&data), before);
    // The same content pushed again is that version: restore or purge it first.
    let again = s
        .http
        .post(format!("{}/v1/models/alice/f/versions", s.url))
        .bearer_auth(&s.tokens["alice"])
        .header("content-type", "application/gzip")
        .body(common::pack_dir(&a))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::CONFLICT);
    let detail = again.json::<Value>().await.unwrap()["detail"].to_string();
    assert!(detail.contains("trash"), "{detail}");
    assert_eq!(stored_bytes(&data), before);
    let t = s.get("alice", "/v1/trash").await;
    assert_eq!(t.body["results"][0]["frees_bytes"].as_i64(), Some(frees));
    let storage = s.get("alice", "/v1/account/storage").await;
    assert_eq!(storage.body["trash_bytes"].as_i64(), Some(frees));

    assert_eq!(
        delete(&s, "alice", &format!("{path}?purge=true"))
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(before - stored_bytes(&data), frees as u64);

    // The last version frees everything it holds, shared content included.
    let path = format!("/v1/models/alice/f/versions/{vb}");
    let frees = delete(&s, "alice", &format!("{path}?dry_run=true"))
        .await
        .body["frees_bytes"]
        .as_i64()
        .unwrap();
    let before = stored_bytes(&data);
    assert_eq!(before, frees as u64);
    assert_eq!(
        delete(&s, "alice", &path).await.status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        delete(&s, "alice", "/v1/models/alice/f").await.status,
        StatusCode::NO_CONTENT
    );
    // Purging the model takes its trashed version and releases its files.
    assert_eq!(
        delete(&s, "alice", "/v1/models/alice/f?purge=true")
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(stored_bytes(&data), 0);
}

/// Projects stored before sizes were recorded are measured from disk in the background.
#[tokio::test]
async fn sizes_of_older_projects_are_filled_in() {
    let s = with_trash(Backend::Sqlite, WEEK).await;
    let tmp = tempfile::tempdir().unwrap();
    s.create_model("alice", "alice", "old", "private").await;
    let dir = project(tmp.path(), "old", &[("w.bin", 40_000, 9)]);
    let v = push_dir(&s, "alice/old", &dir).await;
    let path = format!("/v1/models/alice/old/versions/{v}?storage=true");
    let measured = s.get("alice", &path).await.body["storage"].clone();
    assert!(measured["bytes"].as_i64().unwrap() > 40_000, "{measured}");

    // As if it had been pushed before sizes existed.
    let artifact = s
        .state
        .store
        .version_by_id(&v)
        .await
        .unwrap()
        .unwrap()
        .version
        .artifact;
    {
        use sqlx::Connection;
        let db = s.state.config.data_dir.join("modelyard.db");
        let mut c = sqlx::AnyConnection::connect(&format!("sqlite://{}", db.display()))
            .await
            .unwrap();
        sqlx::query("DELETE FROM artifact_blobs WHERE artifact = $1")
            .bind(&artifact)
            .execute(&mut c)
            .await
            .unwrap();
    }
    assert_eq!(s.get("alice", &path).await.body["storage"]["bytes"], 0);
    assert_eq!(
        s.state.store.artifacts_without_sizes(10).await.unwrap(),
        vec![artifact]
    );

    modelyard_server::ops::trash::backfill_sizes(s.state.clone());
    let until = std::time::Instant::now() + Duration::from_secs(10);
    while s.get("alice", &path).await.body["storage"] != measured {
        assert!(std::time::Instant::now() < until, "never measured");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(s
        .state
        .store
        .artifacts_without_sizes(10)
        .await
        .unwrap()
        .is_empty());
}

/// Trashing a version stops its owner's prediction that a Cog server is running: the slot
/// frees at once for the next job, and a restore brings the prediction back canceled.
#[tokio::test]
async fn trashing_a_version_stops_its_running_prediction() {
    let s = start_with(Backend::Sqlite, |c| {
        c.trash = WEEK;
        c.run_jobs = true;
        c.max_servers = 1;
        c.setup_timeout = Duration::from_secs(120);
    })
    .await;
    s.create_model("alice", "alice", "slow", "private").await;
    let slow = s.push("alice", "alice/slow", "slow").await;
    s.create_model("alice", "alice", "echo", "private").await;
    let echo = s.push("alice", "alice/echo", "echo").await;
    let body = json!({"version": slow, "input": {"seconds": 120}});
    let r = post(&s, "alice", "/v1/predictions", Some(body)).await;
    let id = r.body["id"].as_str().unwrap().to_string();
    let path = format!("/v1/predictions/{id}");
    s.until_status(
        "alice",
        &path,
        "processing",
        Duration::from_secs(60),
        "never started",
    )
    .await;
    let vpath = format!("/v1/models/alice/slow/versions/{slow}");
    assert_eq!(
        delete(&s, "alice", &vpath).await.status,
        StatusCode::NO_CONTENT
    );
    // The only slot was the slow one's: the next job runs only if it was stopped.
    let t0 = std::time::Instant::now();
    let body = json!({"version": echo, "input": {"prompt": "next"}});
    let next = post(&s, "alice", "/v1/predictions", Some(body)).await;
    let next = format!("/v1/predictions/{}", next.body["id"].as_str().unwrap());
    let done = s.until_done("alice", &next, Duration::from_secs(60)).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert!(t0.elapsed() < Duration::from_secs(60));

    let r = post(&s, "alice", &format!("{vpath}/restore"), None).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let back = s.get("alice", &path).await;
    assert_eq!(back.body["status"], "canceled", "{:?}", back.body);
}
