//! Holds the published OpenAPI document to the code: every route the router serves is
//! documented, nothing else is, every operation says what it answers, every `$ref` points
//! at something inside the document, and every status the real server answers (probed with
//! good and bad paths, tokens, bodies, queries and headers) is one the document lists.
mod common;

use std::collections::{BTreeMap, BTreeSet};

use modelyard_server::api::{OPENAPI, ROUTES};
use serde_json::Value;

/// The keys of a path item that are operations (OpenAPI 3.2's fixed fields).
const METHODS: &[&str] = &[
    "get", "put", "post", "delete", "options", "head", "patch", "trace", "query",
];

fn doc() -> Value {
    serde_json::from_str(OPENAPI).expect("crates/server/src/openapi.json is not valid JSON")
}

fn paths(doc: &Value) -> &serde_json::Map<String, Value> {
    doc.get("paths")
        .and_then(Value::as_object)
        .expect("the document has no `paths` object")
}

/// Every (method, path, operation) in the document.
fn operations(doc: &Value) -> Vec<(String, String, &Value)> {
    let mut out = Vec::new();
    for (path, item) in paths(doc) {
        let item = item
            .as_object()
            .unwrap_or_else(|| panic!("paths.{path} is not an object"));
        for (key, op) in item {
            if METHODS.contains(&key.as_str()) {
                out.push((key.clone(), path.clone(), op));
            }
        }
    }
    out
}

fn listing(set: &BTreeSet<(String, String)>) -> String {
    set.iter()
        .map(|(m, p)| format!("\n    {} {p}", m.to_uppercase()))
        .collect()
}

#[test]
fn document_covers_exactly_the_routes() {
    let doc = doc();
    let documented: BTreeSet<(String, String)> = operations(&doc)
        .into_iter()
        .map(|(m, p, _)| (m, p))
        .collect();
    let served: BTreeSet<(String, String)> = ROUTES
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    assert_eq!(
        served.len(),
        ROUTES.len(),
        "ROUTES lists a (method, path) twice"
    );

    let undocumented: BTreeSet<_> = served.difference(&documented).cloned().collect();
    let unserved: BTreeSet<_> = documented.difference(&served).cloned().collect();
    assert!(
        undocumented.is_empty() && unserved.is_empty(),
        "crates/server/src/openapi.json and api::ROUTES disagree.\n  \
         Served but not documented (add them under `paths`):{}\n  \
         Documented but not served (remove them, or add the route):{}",
        if undocumented.is_empty() {
            " none".into()
        } else {
            listing(&undocumented)
        },
        if unserved.is_empty() {
            " none".into()
        } else {
            listing(&unserved)
        },
    );
}

#[test]
fn every_operation_has_a_response_and_an_operation_id() {
    let doc = doc();
    let mut ids = BTreeSet::new();
    for (method, path, op) in operations(&doc) {
        let responses = op.get("responses").and_then(Value::as_object);
        assert!(
            responses.is_some_and(|r| !r.is_empty()),
            "{} {path} documents no responses",
            method.to_uppercase()
        );
        for (code, r) in responses.unwrap() {
            let described = r.get("description").is_some() || r.get("$ref").is_some();
            assert!(
                described,
                "{} {path}: response {code} has no description",
                method.to_uppercase()
            );
        }
        let id = op.get("operationId").and_then(Value::as_str);
        let id =
            id.unwrap_or_else(|| panic!("{} {path} has no operationId", method.to_uppercase()));
        assert!(ids.insert(id.to_string()), "operationId {id} is used twice");
    }
}

/// Resolves a local JSON pointer (`#/a/b~1c`) inside the document.
fn resolve<'a>(doc: &'a Value, reference: &str) -> Option<&'a Value> {
    let pointer = reference.strip_prefix('#')?;
    doc.pointer(pointer)
}

fn collect_refs(v: &Value, at: &str, out: &mut Vec<(String, String)>) {
    match v {
        Value::Object(m) => {
            for (k, child) in m {
                if k == "$ref" {
                    if let Value::String(r) = child {
                        out.push((at.to_string(), r.clone()));
                    }
                } else {
                    collect_refs(
                        child,
                        &format!("{at}/{}", k.replace('~', "~0").replace('/', "~1")),
                        out,
                    );
                }
            }
        }
        Value::Array(a) => {
            for (i, child) in a.iter().enumerate() {
                collect_refs(child, &format!("{at}/{i}"), out);
            }
        }
        _ => {}
    }
}

#[test]
fn every_ref_resolves_inside_the_document() {
    let doc = doc();
    let mut refs = Vec::new();
    collect_refs(&doc, "#", &mut refs);
    assert!(
        !refs.is_empty(),
        "the document uses no $ref at all; the check would prove nothing"
    );
    let broken: Vec<String> = refs
        .iter()
        .filter(|(_, r)| resolve(&doc, r).is_none())
        .map(|(at, r)| format!("\n    {r} (at {at})"))
        .collect();
    assert!(
        broken.is_empty(),
        "these $refs do not resolve inside the document:{}",
        broken.concat()
    );
}

#[test]
fn document_header_is_consistent() {
    let doc = doc();
    let version = doc
        .get("openapi")
        .and_then(Value::as_str)
        .unwrap_or_default();
    // `QUERY /v1/models` needs the `query` operation key, which OpenAPI defines from 3.2 on.
    assert!(
        version.starts_with("3.2."),
        "expected an OpenAPI 3.2 document, got {version:?}"
    );
    let servers = doc.get("servers").and_then(Value::as_array);
    assert!(
        servers.is_some_and(|s| !s.is_empty()),
        "the document names no server"
    );
    // Every blocker kind the rules produce is in the enum.
    let kinds: BTreeSet<&str> = doc
        .pointer("/components/schemas/Blocker/properties/kind/enum")
        .and_then(Value::as_array)
        .expect("components.schemas.Blocker.properties.kind.enum")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    use modelyard_domain::BlockerKind::*;
    for k in [
        Public,
        HasVersions,
        PredictionsByOthers,
        FineTuneBase,
        Deployment,
        DeploymentEnabled,
        DeploymentRecentlyUsed,
    ] {
        let name = serde_json::to_value(k).unwrap();
        let name = name.as_str().unwrap();
        assert!(kinds.contains(name), "Blocker.kind does not list {name}");
    }
}

/// The values each path parameter is probed with: one that exists, one that does not, and one
/// that is not even UTF-8 once decoded.
fn param_values(name: &str, fx: &Fixture) -> Vec<String> {
    let good = match name {
        "owner" => "alice".to_string(),
        "name" => fx.name_for_owner.clone(),
        "id" => fx.id.clone(),
        "job" => fx.prediction.clone(),
        "token" => "0".repeat(32),
        _ => "x".to_string(),
    };
    vec![good, "missing0".into(), "%FF".into()]
}

struct Fixture {
    name_for_owner: String,
    id: String,
    prediction: String,
}

/// `/v1/models/{owner}/{name}` with every combination of probe values.
fn expand(path: &str, fx_for: &dyn Fn(&str) -> Fixture) -> Vec<String> {
    let fx = fx_for(path);
    let mut out = vec![String::new()];
    for seg in path.split('/').skip(1) {
        let choices = match seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
            Some(p) => param_values(p, &fx),
            None => vec![seg.to_string()],
        };
        out = out
            .iter()
            .flat_map(|prefix| choices.iter().map(move |c| format!("{prefix}/{c}")))
            .collect();
    }
    out
}

fn documented_statuses(doc: &Value) -> BTreeMap<(String, String), BTreeSet<u16>> {
    operations(doc)
        .into_iter()
        .map(|(m, p, op)| {
            let codes = op["responses"]
                .as_object()
                .map(|r| r.keys().filter_map(|k| k.parse().ok()).collect())
                .unwrap_or_default();
            ((m, p), codes)
        })
        .collect()
}

async fn probe(
    s: &common::Server,
    method: &str,
    url: String,
    who: &str,
    body: Option<&str>,
    extra: Option<(&str, &str)>,
) -> u16 {
    let method = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
    let mut req = s.http.request(method, format!("{}{url}", s.url));
    match who {
        "" => {}
        "bad" => req = req.bearer_auth("r8_not_a_token"),
        w => req = req.bearer_auth(&s.tokens[w]),
    }
    if let Some(b) = body {
        req = req
            .header("content-type", "application/json")
            .body(b.to_string());
    }
    if let Some((k, v)) = extra {
        req = req.header(k, v);
    }
    req.send().await.unwrap().status().as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_status_the_server_answers_is_documented() {
    use reqwest::Method;
    use serde_json::json;
    let s = common::start(common::Backend::Sqlite).await;
    s.create_model("alice", "alice", "m", "private").await;
    let v = s.version("alice/m", "c1").await;
    let p = s.predict("alice", "alice/m", &v).await.body["id"]
        .as_str()
        .unwrap()
        .to_string();
    let d = s
        .call(
            "alice",
            Method::POST,
            "/v1/deployments",
            Some(
                json!({"name": "d", "model": "alice/m", "version": v, "hardware": "cpu",
                        "min_instances": 0, "max_instances": 0}),
            ),
        )
        .await;
    assert_eq!(d.status, 200, "{:?}", d.body);
    // The version's files, as a push would have left them (its build log is asked for).
    let art = s.state.artifacts_dir().join("test-c1");
    std::fs::create_dir_all(&art).unwrap();
    std::fs::write(art.join("cog.yaml"), "predict: \"predict.py:Predictor\"\n").unwrap();
    let fx_for = |path: &str| Fixture {
        name_for_owner: if path.starts_with("/v1/deployments") {
            "d".into()
        } else {
            "m".into()
        },
        id: if path.contains("/versions/") {
            v.clone()
        } else {
            p.clone()
        },
        prediction: p.clone(),
    };
    let doc = doc();
    let documented = documented_statuses(&doc);
    let bodies: &[Option<&str>] = &[
        None,
        Some("{"),
        Some("{}"),
        Some(r#"{"version": 1, "input": [], "name": 5}"#),
        Some(r#"{"version": "alice/m", "input": {"prompt": "hi"}}"#),
    ];
    let queries = [
        "",
        "?cursor=x",
        "?cursor=1&cursor=2",
        "?dry_run=maybe",
        "?dry_run=true",
        "?key=1&key=2",
        "?owner=a&owner=b&expiry=1&signature=x",
    ];
    let mut seen: BTreeMap<(String, String), BTreeSet<u16>> = BTreeMap::new();
    // Deletions last, so everything else meets the things they may remove.
    let mut routes: Vec<_> = ROUTES.iter().collect();
    routes.sort_by_key(|(m, _)| *m == "delete");
    for (method, route) in routes {
        let mut codes = BTreeSet::new();
        for url in expand(route, &fx_for) {
            codes.insert(probe(&s, method, url, "alice", None, None).await);
        }
        let good = expand(route, &fx_for).remove(0);
        for who in ["alice", "bob", "", "bad"] {
            for q in queries {
                codes.insert(probe(&s, method, format!("{good}{q}"), who, None, None).await);
            }
            if matches!(*method, "post" | "patch" | "query") {
                for b in bodies {
                    codes.insert(probe(&s, method, good.clone(), who, *b, None).await);
                }
                for (h, v) in [
                    ("cancel-after", "99999999999999999999h"),
                    ("prefer", "wait=99999999999999999999"),
                    ("content-type", "text/html"),
                ] {
                    codes.insert(
                        probe(&s, method, good.clone(), who, bodies[4], Some((h, v))).await,
                    );
                }
            }
        }
        seen.insert((method.to_string(), route.to_string()), codes);
    }
    let mut missing = Vec::new();
    if std::env::var_os("MODELYARD_PROBE_DEBUG").is_some() {
        eprintln!("{seen:#?}");
    }
    for (op, codes) in &seen {
        let listed = documented.get(op).cloned().unwrap_or_default();
        for c in codes {
            // 405 is the router's, for any path, and documented once for all of them.
            if *c != 405 && !listed.contains(c) {
                missing.push(format!("\n    {} {}: {c}", op.0.to_uppercase(), op.1));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "the server answered statuses crates/server/src/openapi.json does not list:{}",
        missing.concat()
    );
}
