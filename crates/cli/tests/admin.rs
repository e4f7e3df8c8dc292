//! `modelyard admin` against a fresh SQLite data directory: no server needed.
use std::path::Path;
use std::process::{Command, Output};

use modelyard_domain::ids::token_hash;
use modelyard_domain::AccountKind;
use modelyard_storage::prelude::*;
use modelyard_storage::SqlStore;

fn admin(data_dir: &Path, args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_modelyard"));
    for (k, _) in std::env::vars() {
        if k.starts_with("MODELYARD_") {
            cmd.env_remove(k);
        }
    }
    cmd.arg("admin").args(args).arg("--data-dir").arg(data_dir);
    cmd.output().expect("the binary runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The last line of stdout, which must be a token.
fn token(o: &Output) -> String {
    assert!(o.status.success(), "failed: {}", stderr(o));
    let out = stdout(o);
    let last = out.lines().last().expect("some output").to_string();
    assert!(
        last.starts_with("r8_") && last.len() == 43,
        "not a token: {last:?}"
    );
    last
}

/// A refusal: non-zero, one clear line on stderr, nothing that looks like a crash.
fn refused(o: &Output, expect: &str) {
    assert!(!o.status.success(), "should have failed: {}", stdout(o));
    let err = stderr(o);
    assert!(err.starts_with("error: "), "{err:?}");
    assert!(
        err.to_lowercase().contains(&expect.to_lowercase()),
        "{err:?} lacks {expect:?}"
    );
    assert!(
        !err.contains("panicked") && !err.contains("backtrace"),
        "{err:?}"
    );
    assert!(!stdout(o).contains("r8_"), "a refusal printed a token");
}

async fn store(dir: &Path) -> SqlStore {
    let url = format!("sqlite://{}", dir.join("modelyard.db").display());
    SqlStore::connect(&url).await.unwrap()
}

#[tokio::test]
async fn users_orgs_and_tokens() {
    let tmp = tempfile::tempdir().unwrap();
    // A data directory that does not exist yet is made.
    let dir = tmp.path().join("nested/data");

    let alice = token(&admin(
        &dir,
        &["user", "create", "alice", "--display-name", "Alice A."],
    ));
    let bob = token(&admin(&dir, &["user", "create", "bob"]));
    assert_ne!(alice, bob);

    refused(&admin(&dir, &["user", "create", "alice"]), "taken");
    refused(&admin(&dir, &["user", "create", "Bad Name"]), "name");
    refused(&admin(&dir, &["user", "create", ""]), "empty");

    let o = admin(&dir, &["org", "create", "acme", "--member", "alice"]);
    assert!(o.status.success(), "{}", stderr(&o));
    refused(
        &admin(&dir, &["org", "create", "acme", "--member", "bob"]),
        "taken",
    );
    refused(
        &admin(&dir, &["org", "create", "alice", "--member", "bob"]),
        "taken",
    );
    refused(
        &admin(&dir, &["org", "create", "ghosts", "--member", "nobody"]),
        "no user named",
    );
    refused(
        &admin(&dir, &["org", "create", "meta", "--member", "acme"]),
        "organization",
    );
    // A refused org is not left half made.
    refused(
        &admin(&dir, &["token", "create", "ghosts"]),
        "no user or organization",
    );

    let o = admin(&dir, &["org", "add-member", "acme", "bob"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = admin(&dir, &["org", "add-member", "acme", "bob"]);
    assert!(
        o.status.success() && stdout(&o).contains("already"),
        "{}",
        stdout(&o)
    );
    refused(
        &admin(&dir, &["org", "add-member", "alice", "bob"]),
        "not an organization",
    );
    refused(
        &admin(&dir, &["org", "add-member", "nowhere", "bob"]),
        "no organization",
    );
    refused(
        &admin(&dir, &["org", "add-member", "acme", "nobody"]),
        "no user named",
    );

    let acme = token(&admin(&dir, &["token", "create", "acme"]));
    let alice2 = token(&admin(&dir, &["token", "create", "alice"]));
    refused(
        &admin(&dir, &["token", "create", "nobody"]),
        "no user or organization",
    );

    // The tokens authenticate as their accounts, with the memberships.
    let s = store(&dir).await;
    let c = s
        .caller_by_token(&token_hash(&alice))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(c.account.username, "alice");
    assert_eq!(c.account.name, "Alice A.");
    let acme_id = s.account("acme").await.unwrap().unwrap().id;
    assert_eq!(c.org_ids, [acme_id]);
    let c = s
        .caller_by_token(&token_hash(&alice2))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(c.account.username, "alice");
    let c = s.caller_by_token(&token_hash(&bob)).await.unwrap().unwrap();
    assert_eq!(c.org_ids, [acme_id]);
    let c = s
        .caller_by_token(&token_hash(&acme))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(c.account.kind, AccountKind::Organization);
    let members: Vec<String> = s
        .members(acme_id)
        .await
        .unwrap()
        .into_iter()
        .map(|a| a.username)
        .collect();
    assert_eq!(members, ["alice", "bob"]);
    assert!(s.account("ghosts").await.unwrap().is_none());
}

#[test]
fn a_bad_database_url_is_one_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let o = admin(
        tmp.path(),
        &["user", "create", "x", "--database-url", "mysql://nope"],
    );
    refused(&o, "database");
    assert_eq!(stderr(&o).trim().lines().count(), 1, "{}", stderr(&o));
}
