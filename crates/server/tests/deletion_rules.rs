//! The deletion rules through the HTTP API: every rule alone and combined, for an owner, an
//! organization member, the organization itself, another account and an anonymous caller.
mod common;

use common::{start, start_with, Backend, Server};
use reqwest::{Method, StatusCode};
use serde_json::json;

fn assert_problem(r: &common::Reply, status: StatusCode) {
    assert_eq!(r.status, status, "{:?}", r.body);
    assert_eq!(
        r.headers["content-type"], "application/problem+json",
        "{:?}",
        r.body
    );
    assert_eq!(r.body["status"], status.as_u16(), "{:?}", r.body);
    assert!(
        r.body["detail"].as_str().is_some_and(|d| !d.is_empty()),
        "{:?}",
        r.body
    );
}

async fn delete(s: &Server, who: &str, path: &str, dry_run: bool) -> common::Reply {
    let path = if dry_run {
        format!("{path}?dry_run=true")
    } else {
        path.to_string()
    };
    s.call(who, Method::DELETE, &path, None).await
}

/// Sets up a version of `acme/{name}` with the blockers asked for; returns the version id and
/// the ids of the training and alice's own prediction.
async fn blocked_version(
    s: &Server,
    name: &str,
    public: bool,
    others: bool,
    fine_tune: bool,
    deployed: bool,
) -> (String, String, String) {
    let model = format!("acme/{name}");
    s.create_model("alice", "acme", name, "public").await;
    let v = s.version(&model, &format!("{name}-a")).await;
    s.version(&model, &format!("{name}-b")).await;
    let own = s.predict("alice", &model, &v).await;
    assert_eq!(own.status, StatusCode::CREATED, "{:?}", own.body);
    if others {
        let r = s.predict("bob", &model, &v).await;
        assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    }
    let mut training = String::new();
    if fine_tune {
        s.create_model("alice", "alice", &format!("{name}-ft"), "private")
            .await;
        let r = s
            .call(
                "alice",
                Method::POST,
                &format!("/v1/models/{model}/versions/{v}/trainings"),
                Some(json!({"destination": format!("alice/{name}-ft"), "input": {"word": "x"}})),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
        training = r.body["id"].as_str().unwrap().to_string();
    }
    if deployed {
        let body = json!({"name": format!("{name}-d"), "model": model, "version": v,
            "hardware": "cpu", "min_instances": 0, "max_instances": 1});
        let r = s
            .call("alice", Method::POST, "/v1/deployments", Some(body))
            .await;
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    }
    if !public {
        s.set_visibility("alice", &model, "private").await;
    }
    (v, training, own.body["id"].as_str().unwrap().to_string())
}

async fn version_rules_every_combination(b: Backend) {
    let s = start(b).await;
    for mask in 0..16u32 {
        let (public, others, fine_tune, deployed) =
            (mask & 1 != 0, mask & 2 != 0, mask & 4 != 0, mask & 8 != 0);
        let name = format!("m{mask}");
        let (v, training, own_prediction) =
            blocked_version(&s, &name, public, others, fine_tune, deployed).await;
        let path = format!("/v1/models/acme/{name}/versions/{v}");
        let mut expected = vec![];
        if public {
            expected.push("public");
        }
        if others {
            expected.push("predictions_by_others");
        }
        if fine_tune {
            expected.push("fine_tune_base");
        }
        if deployed {
            expected.push("deployment");
        }

        for dry in [true, false] {
            assert_problem(&delete(&s, "", &path, dry).await, StatusCode::UNAUTHORIZED);
            let outsider = if public {
                StatusCode::FORBIDDEN
            } else {
                StatusCode::NOT_FOUND
            };
            assert_problem(&delete(&s, "bob", &path, dry).await, outsider);
        }
        let p = delete(&s, "alice", &path, true).await;
        assert_eq!(p.status, StatusCode::OK, "{:?}", p.body);
        assert_eq!(p.kinds(), expected, "mask {mask}");
        assert_eq!(p.body["deletable"], expected.is_empty());
        // The organization's own token is another account than alice, who ran a prediction:
        // "no account other than the caller" means her run blocks the organization.
        let p = delete(&s, "acme", &path, true).await;
        assert_eq!(p.body["deletable"], false);
        let by_alice = p.body["blockers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|b| b["kind"] == "predictions_by_others" && b["account"] == "alice");
        assert!(by_alice, "{:?}", p.body);

        let r = delete(&s, "alice", &path, false).await;
        if expected.is_empty() {
            assert_eq!(r.status, StatusCode::NO_CONTENT, "{:?}", r.body);
            assert_eq!(s.get("alice", &path).await.status, StatusCode::NOT_FOUND);
            let p = s
                .get("alice", &format!("/v1/predictions/{own_prediction}"))
                .await;
            assert_eq!(
                p.status,
                StatusCode::NOT_FOUND,
                "own predictions go with the version"
            );
            continue;
        }
        assert_problem(&r, StatusCode::CONFLICT);
        assert_eq!(r.headers["x-should-retry"], "false");
        assert_eq!(r.kinds(), expected, "mask {mask}");
        for blocker in r.body["blockers"].as_array().unwrap() {
            assert!(blocker["detail"].as_str().unwrap().len() > 20, "{blocker}");
            match blocker["kind"].as_str().unwrap() {
                "predictions_by_others" => {
                    assert_eq!(blocker["account"], "bob");
                    assert_eq!(blocker["prediction_count"], 1);
                }
                "fine_tune_base" => assert_eq!(blocker["training"], training.as_str()),
                "deployment" => assert_eq!(blocker["deployment"], format!("alice/{name}-d")),
                "public" => assert_eq!(blocker["model"], format!("acme/{name}")),
                k => panic!("unexpected blocker {k}"),
            }
        }
        // Refused means untouched.
        assert_eq!(s.get("alice", &path).await.status, StatusCode::OK);
        let p = s
            .get("alice", &format!("/v1/predictions/{own_prediction}"))
            .await;
        assert_eq!(p.status, StatusCode::OK);
    }
}

async fn model_rules_every_combination(b: Backend) {
    let s = start(b).await;
    for (owner, owner_callers) in [("alice", vec!["alice"]), ("acme", vec!["alice", "acme"])] {
        for mask in 0..4u32 {
            let (public, has_versions) = (mask & 1 != 0, mask & 2 != 0);
            let name = format!("mm{mask}");
            let model = format!("{owner}/{name}");
            s.create_model(
                "alice",
                owner,
                &name,
                if public { "public" } else { "private" },
            )
            .await;
            let v = if has_versions {
                Some(s.version(&model, &name).await)
            } else {
                None
            };
            let path = format!("/v1/models/{model}");
            let mut expected = vec![];
            if public {
                expected.push("public");
            }
            if has_versions {
                expected.push("has_versions");
            }
            for dry in [true, false] {
                assert_problem(&delete(&s, "", &path, dry).await, StatusCode::UNAUTHORIZED);
                let outsider = if public {
                    StatusCode::FORBIDDEN
                } else {
                    StatusCode::NOT_FOUND
                };
                assert_problem(&delete(&s, "bob", &path, dry).await, outsider);
            }
            for who in &owner_callers {
                let p = delete(&s, who, &path, true).await;
                assert_eq!(p.status, StatusCode::OK, "{:?}", p.body);
                assert_eq!(p.kinds(), expected, "{model} as {who}");
            }
            let r = delete(&s, owner_callers[0], &path, false).await;
            if expected.is_empty() {
                assert_eq!(r.status, StatusCode::NO_CONTENT, "{:?}", r.body);
                assert!(r.body.is_null(), "204 has an empty body");
                assert_problem(&s.get(owner_callers[0], &path).await, StatusCode::NOT_FOUND);
                continue;
            }
            assert_problem(&r, StatusCode::CONFLICT);
            assert_eq!(r.kinds(), expected);
            if let Some(v) = v {
                let hv = &r.body["blockers"][expected.len() - 1];
                assert_eq!(hv["version_count"], 1);
                assert_eq!(hv["versions"], json!([v]));
            }
            assert_eq!(s.get(owner_callers[0], &path).await.status, StatusCode::OK);
        }
    }
}

/// A person clears every blocker that can be cleared, then deletes the version and the model;
/// the audit log keeps the story after the model is gone.
async fn clearing_blockers_then_deleting(b: Backend) {
    let s = start(b).await;
    let (v, training, _) = blocked_version(&s, "flow", true, false, true, true).await;
    let path = format!("/v1/models/acme/flow/versions/{v}");
    let kinds = delete(&s, "alice", &path, false).await.kinds();
    assert_eq!(kinds, ["public", "fine_tune_base", "deployment"]);

    s.set_visibility("alice", "acme/flow", "private").await;
    let r = s
        .call(
            "alice",
            Method::POST,
            &format!("/v1/trainings/{training}/cancel"),
            None,
        )
        .await;
    assert_eq!(r.body["status"], "canceled", "{:?}", r.body);
    let other = s.get("alice", "/v1/models/acme/flow/versions").await.body["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["id"].as_str().unwrap().to_string())
        .find(|id| *id != v)
        .unwrap();
    let r = s
        .call(
            "alice",
            Method::PATCH,
            "/v1/deployments/alice/flow-d",
            Some(json!({"version": other})),
        )
        .await;
    assert_eq!(r.body["current_release"]["number"], 2, "{:?}", r.body);
    assert_eq!(
        delete(&s, "alice", &path, true).await.body["deletable"],
        true
    );
    assert_eq!(
        delete(&s, "alice", &path, false).await.status,
        StatusCode::NO_CONTENT
    );

    // The other version is still deployed; the deployment goes once disabled.
    let d = delete(&s, "alice", "/v1/deployments/alice/flow-d", false).await;
    assert_problem(&d, StatusCode::CONFLICT);
    assert_eq!(d.kinds(), ["deployment_enabled"]);
    let r = s
        .call(
            "alice",
            Method::PATCH,
            "/v1/deployments/alice/flow-d",
            Some(json!({"max_instances": 0})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let d = delete(&s, "alice", "/v1/deployments/alice/flow-d", false).await;
    assert_eq!(d.status, StatusCode::NO_CONTENT, "{:?}", d.body);

    let other_path = format!("/v1/models/acme/flow/versions/{other}");
    assert_eq!(
        delete(&s, "alice", &other_path, false).await.status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        delete(&s, "alice", "/v1/models/acme/flow", false)
            .await
            .status,
        StatusCode::NO_CONTENT
    );

    let log = s.get("alice", "/v1/audit-log").await;
    let events = log.body["results"].as_array().unwrap();
    let summary: Vec<(String, String)> = events
        .iter()
        .map(|e| {
            (
                e["action"].as_str().unwrap().into(),
                e["outcome"].as_str().unwrap().into(),
            )
        })
        .collect();
    let want = [
        ("delete_model", "deleted"),
        ("delete_version", "deleted"),
        ("delete_deployment", "deleted"),
        ("delete_deployment", "refused"),
        ("delete_version", "deleted"),
        ("delete_version", "refused"),
    ];
    let want: Vec<(String, String)> = want
        .iter()
        .map(|(a, o)| (a.to_string(), o.to_string()))
        .collect();
    assert_eq!(summary, want);
    assert_eq!(events[5]["actor"], "alice");
    assert_eq!(events[5]["blockers"].as_array().unwrap().len(), 3);
    // Bob owns none of it and sees none of it.
    let bobs = s.get("bob", "/v1/audit-log").await;
    assert_eq!(bobs.body["results"], json!([]));
}

async fn deployments_wait_until_unused(b: Backend) {
    let s = start_with(b, |c| {
        c.deployment_idle = std::time::Duration::from_secs(900)
    })
    .await;
    s.create_model("alice", "alice", "dm", "private").await;
    let v = s.version("alice/dm", "dm").await;
    let body = json!({"name": "dd", "model": "alice/dm", "version": v, "hardware": "cpu",
        "min_instances": 0, "max_instances": 0});
    assert_eq!(
        s.call("alice", Method::POST, "/v1/deployments", Some(body))
            .await
            .status,
        StatusCode::OK
    );
    let r = delete(&s, "alice", "/v1/deployments/alice/dd", false).await;
    assert_problem(&r, StatusCode::CONFLICT);
    assert_eq!(r.kinds(), ["deployment_recently_used"]);
    assert_problem(
        &delete(&s, "bob", "/v1/deployments/alice/dd", false).await,
        StatusCode::NOT_FOUND,
    );
    assert_eq!(
        s.get("alice", "/v1/deployments/alice/dd").await.status,
        StatusCode::OK
    );
}

both_backends!(
    version_rules_every_combination,
    model_rules_every_combination,
    clearing_blockers_then_deleting,
    deployments_wait_until_unused,
);
