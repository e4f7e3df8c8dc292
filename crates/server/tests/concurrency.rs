//! A deletion and the things that would block it, racing. Whatever the interleaving, either
//! the deletion wins and nothing points at the deleted version, or a blocker committed first
//! and the deletion is refused naming it. Never both, and never a 500.
mod common;

use common::{start, Backend, Server};
use reqwest::{Method, StatusCode};
use serde_json::json;
use std::sync::Arc;

const ROUNDS: usize = 12;
const RACERS: usize = 6;

async fn race(s: Arc<Server>, round: usize, deployments: bool) {
    let name = format!("race{round}");
    let model = format!("acme/{name}");
    s.create_model("alice", "acme", &name, "private").await;
    let v = s.version(&model, &name).await;
    let path = format!("/v1/models/{model}/versions/{v}");

    let mut racers = Vec::new();
    for i in 0..RACERS {
        let (s, model, v) = (s.clone(), model.clone(), v.clone());
        racers.push(tokio::spawn(async move {
            if deployments {
                let body = json!({"name": format!("{}-{i}", model.replace('/', "-")), "model": model,
                    "version": v, "hardware": "cpu", "min_instances": 0, "max_instances": 1});
                s.call("bob", Method::POST, "/v1/deployments", Some(body)).await
            } else {
                s.predict("bob", &model, &v).await
            }
        }));
    }
    let deleter = {
        let (s, path) = (s.clone(), path.clone());
        tokio::spawn(async move { s.call("alice", Method::DELETE, &path, None).await })
    };
    let deletion = deleter.await.unwrap();
    let mut won = 0;
    for r in racers {
        let r = r.await.unwrap();
        match r.status {
            StatusCode::OK | StatusCode::CREATED => won += 1,
            StatusCode::NOT_FOUND => {}
            other => panic!("a racer got {other}: {:?}", r.body),
        }
    }
    match deletion.status {
        StatusCode::NO_CONTENT => {
            assert_eq!(
                won, 0,
                "round {round}: deleted, yet {won} racers committed against it"
            );
            assert_eq!(s.get("alice", &path).await.status, StatusCode::NOT_FOUND);
        }
        StatusCode::CONFLICT => {
            assert!(won > 0, "round {round}: refused with no blocker committed");
            let kind = if deployments {
                "deployment"
            } else {
                "predictions_by_others"
            };
            assert!(
                deletion.kinds().iter().all(|k| k == kind),
                "{:?}",
                deletion.body
            );
            assert_eq!(s.get("alice", &path).await.status, StatusCode::OK);
            // Racers that lost to nothing may also have committed after the refusal; the
            // refusal named at least one, and now every one of them is counted.
            let named = if deployments {
                deletion.kinds().len()
            } else {
                deletion.body["blockers"][0]["prediction_count"]
                    .as_u64()
                    .unwrap() as usize
            };
            assert!((1..=won).contains(&named), "named {named} of {won}");
            let now = s
                .call(
                    "alice",
                    Method::DELETE,
                    &format!("{path}?dry_run=true"),
                    None,
                )
                .await;
            let counted = if deployments {
                now.kinds().len()
            } else {
                now.body["blockers"][0]["prediction_count"]
                    .as_u64()
                    .unwrap() as usize
            };
            assert_eq!(counted, won, "{:?}", now.body);
        }
        other => panic!("deletion got {other}: {:?}", deletion.body),
    }
}

async fn deletion_races(b: Backend, deployments: bool) {
    let s = start(b).await;
    // bob is a member too, so he can see the private model; his runs are still another
    // account's and block alice's deletion.
    let acme = s.state.store.account("acme").await.unwrap().unwrap();
    let bob = s.state.store.account("bob").await.unwrap().unwrap();
    s.state.store.add_member(acme.id, bob.id).await.unwrap();
    let s = Arc::new(s);
    for round in 0..ROUNDS {
        race(s.clone(), round, deployments).await;
    }
}

async fn deletion_races_predictions(b: Backend) {
    deletion_races(b, false).await
}

async fn deletion_races_deployments(b: Backend) {
    deletion_races(b, true).await
}

both_backends!(deletion_races_predictions, deletion_races_deployments);
