//! The notice bus on SQLite (within the process) and PostgreSQL (`NOTIFY` to every server on
//! the database): what is sent is heard, in order, by the listeners of its topic only; a payload
//! the bus cannot carry is refused; a listener that may have missed notices is told so.
#[macro_use]
mod common;

use std::time::Duration;

use common::*;
use modelyard_storage::prelude::*;
use modelyard_storage::{Listener, Notice, SqlStore, StoreError, NOTICE_MAX};

conformance! {
    notices_reach_listeners_of_their_topic => sqlite_notices_reach_listeners_of_their_topic, postgres_notices_reach_listeners_of_their_topic;
    payloads_over_the_limit_are_refused => sqlite_payloads_over_the_limit_are_refused, postgres_payloads_over_the_limit_are_refused;
    a_listener_that_may_have_missed_notices_hears_so => sqlite_a_listener_that_may_have_missed_notices_hears_so, postgres_a_listener_that_may_have_missed_notices_hears_so;
}

/// On PostgreSQL a store of its own, as another server has; on SQLite (one server) the same.
async fn other_server(store: &SqlStore) -> SqlStore {
    if store.notifies_other_processes() {
        second_store().await
    } else {
        store.clone()
    }
}

async fn next(l: &mut Listener) -> Option<Notice> {
    tokio::time::timeout(Duration::from_secs(10), l.recv())
        .await
        .ok()
        .flatten()
}

fn message(topic: &str, payload: &str) -> Notice {
    Notice::Message {
        topic: topic.into(),
        payload: payload.into(),
    }
}

async fn notices_reach_listeners_of_their_topic(store: SqlStore) {
    let other = other_server(&store).await;
    let mut both = other.listen(&["jobs", "wake"]).await.unwrap();
    let mut wake = other.listen(&["wake"]).await.unwrap();
    let mut here = store.listen(&["jobs"]).await.unwrap();
    for i in 0..50 {
        store.notify("jobs", &format!("event {i}")).await.unwrap();
    }
    store.notify("wake", "").await.unwrap();
    for i in 0..50 {
        let want = message("jobs", &format!("event {i}"));
        assert_eq!(
            next(&mut both).await,
            Some(want.clone()),
            "in order, on the other server"
        );
        assert_eq!(next(&mut here).await, Some(want), "and on the sender's own");
    }
    assert_eq!(next(&mut both).await, Some(message("wake", "")));
    // The listener of `wake` alone heard nothing of `jobs`.
    assert_eq!(next(&mut wake).await, Some(message("wake", "")));
    assert!(
        tokio::time::timeout(Duration::from_millis(300), wake.recv())
            .await
            .is_err(),
        "a listener hears only its topics"
    );
}

async fn payloads_over_the_limit_are_refused(store: SqlStore) {
    let other = other_server(&store).await;
    let mut l = other.listen(&["jobs"]).await.unwrap();
    let over = "x".repeat(NOTICE_MAX + 1);
    match store.notify("jobs", &over).await {
        Err(StoreError::TooLarge(n)) => assert_eq!(n, NOTICE_MAX + 1),
        other => panic!("a payload over the limit was not refused: {other:?}"),
    }
    // Multi-byte text counts in bytes, as PostgreSQL does.
    let wide = "é".repeat(NOTICE_MAX / 2 + 1);
    assert!(matches!(
        store.notify("jobs", &wide).await,
        Err(StoreError::TooLarge(_))
    ));
    let most = "y".repeat(NOTICE_MAX);
    store.notify("jobs", &most).await.unwrap();
    assert_eq!(next(&mut l).await, Some(message("jobs", &most)));
}

async fn a_listener_that_may_have_missed_notices_hears_so(store: SqlStore) {
    let other = other_server(&store).await;
    let mut l = other.listen(&["jobs"]).await.unwrap();
    if store.notifies_other_processes() {
        // The listening connection is cut, as a network failure or a database restart would.
        let pool = raw().await;
        let cut: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = current_database() AND pid <> pg_backend_pid() \
             AND query LIKE 'LISTEN%') t",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        pool.close().await;
        assert!(cut >= 1, "no listening connection found");
        assert_eq!(next(&mut l).await, Some(Notice::Missed));
        // The connection is made again, listening to the same topics.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            store.notify("jobs", "after").await.unwrap();
            match tokio::time::timeout(Duration::from_millis(500), l.recv()).await {
                Ok(Some(n)) if n == message("jobs", "after") => break,
                Ok(Some(Notice::Missed)) | Err(_) => {}
                Ok(other) => panic!("unexpected {other:?}"),
            }
            assert!(
                std::time::Instant::now() < deadline,
                "nothing heard after the connection came back"
            );
        }
    } else {
        // A listener that falls further behind than the bus keeps is told so, then goes on.
        for i in 0..5000 {
            store.notify("jobs", &i.to_string()).await.unwrap();
        }
        assert_eq!(next(&mut l).await, Some(Notice::Missed));
        assert!(matches!(next(&mut l).await, Some(Notice::Message { .. })));
    }
}
