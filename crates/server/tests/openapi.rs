//! Holds the published OpenAPI document to the code: every route the router serves is
//! documented, nothing else is, every operation says what it answers, and every `$ref` points
//! at something inside the document.
use std::collections::BTreeSet;

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
