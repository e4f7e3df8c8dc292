//! The wire JSON, as Replicate (and modelyard) send it.
//!
//! Deserializing is tolerant: every struct takes defaults for what is missing, and keeps keys it
//! does not know in `extra`, so serializing a value again gives back what the server said.
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};

/// Keys this client does not name, kept so nothing is lost when a value is serialized again.
pub type Extra = Map<String, Value>;

/// One page of a list: `next` is an absolute URL to GET as given, or `None` on the last page.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Page<T> {
    pub previous: Option<String>,
    pub next: Option<String>,
    pub results: Vec<T>,
}

impl<T> Default for Page<T> {
    fn default() -> Self {
        Page {
            previous: None,
            next: None,
            results: Vec::new(),
        }
    }
}

/// `GET /v1/account`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Account {
    /// "user" or "organization".
    #[serde(rename = "type")]
    pub kind: String,
    pub username: String,
    pub name: String,
    pub github_url: Option<String>,
    pub avatar_url: Option<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// One entry of `GET /v1/hardware`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Hardware {
    pub name: String,
    pub sku: String,
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Model {
    pub url: String,
    pub owner: String,
    pub name: String,
    pub description: Option<String>,
    /// "public" or "private".
    pub visibility: String,
    /// modelyard's extension: the hardware the model runs on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hardware: Option<String>,
    pub github_url: Option<String>,
    pub paper_url: Option<String>,
    pub license_url: Option<String>,
    pub cover_image_url: Option<String>,
    pub default_example: Option<Value>,
    pub latest_version: Option<Version>,
    pub run_count: i64,
    pub created_at: Option<String>,
    pub is_official: bool,
    /// modelyard's extension: the bytes its versions store.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub storage: Option<Storage>,
    #[serde(flatten)]
    pub extra: Extra,
}

impl Model {
    /// "owner/name".
    pub fn full_name(&self) -> String {
        format!("{}/{}", self.owner, self.name)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Version {
    pub id: String,
    pub created_at: Option<String>,
    pub cog_version: Option<String>,
    pub openapi_schema: Option<Value>,
    /// modelyard's extension: the bytes of its artifact and weights.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub storage: Option<Storage>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// modelyard's extension: stored bytes, and those no other version (of another model, for a
/// model) keeps.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Storage {
    pub bytes: i64,
    pub unique_bytes: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Urls {
    pub get: Option<String>,
    pub cancel: Option<String>,
    pub web: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream: Option<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// A prediction or a training: Replicate gives both the same shape.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Prediction {
    pub id: String,
    /// "owner/name".
    pub model: String,
    pub version: String,
    pub input: Value,
    pub output: Value,
    pub logs: Option<String>,
    pub error: Option<Value>,
    /// starting, processing, succeeded, failed or canceled.
    pub status: String,
    pub created_at: Option<String>,
    pub started_at: Option<String>,
    pub completed_at: Option<String>,
    pub data_removed: bool,
    pub source: Option<String>,
    pub urls: Urls,
    pub metrics: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deployment: Option<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

pub type Training = Prediction;

impl Prediction {
    /// Succeeded, failed or canceled: the status will not change any more.
    pub fn is_terminal(&self) -> bool {
        matches!(
            self.status.as_str(),
            "succeeded" | "failed" | "canceled" | "aborted"
        )
    }

    /// The error as text, whether the server sent a string or something else.
    pub fn error_text(&self) -> Option<String> {
        match &self.error {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(v) => Some(v.to_string()),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Deployment {
    pub owner: String,
    pub name: String,
    pub current_release: Release,
    #[serde(flatten)]
    pub extra: Extra,
}

impl Deployment {
    /// "owner/name".
    pub fn full_name(&self) -> String {
        format!("{}/{}", self.owner, self.name)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Release {
    pub number: i64,
    /// "owner/name".
    pub model: String,
    pub version: String,
    pub created_at: Option<String>,
    pub created_by: Account,
    pub configuration: Configuration,
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Configuration {
    pub hardware: String,
    pub min_instances: i64,
    pub max_instances: i64,
    #[serde(flatten)]
    pub extra: Extra,
}

/// Something that stands in the way of a deletion, with a sentence a person can act on and the
/// names involved.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Blocker {
    /// public, has_versions, predictions_by_others, fine_tune_base, deployment,
    /// deployment_enabled, deployment_recently_used (and whatever a newer server adds).
    pub kind: String,
    pub detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prediction_count: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub training: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub versions: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version_count: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deployment: Option<String>,
}

impl Blocker {
    /// The names involved, for a person: "deployment acme/prod", "account bob (3 predictions)"...
    pub fn names(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(m) = &self.model {
            out.push(format!("model {m}"));
        }
        if let Some(a) = &self.account {
            match self.prediction_count {
                Some(n) => out.push(format!(
                    "account {a}, {n} prediction{}",
                    if n == 1 { "" } else { "s" }
                )),
                None => out.push(format!("account {a}")),
            }
        } else if let Some(n) = self.prediction_count {
            out.push(format!("{n} prediction{}", if n == 1 { "" } else { "s" }));
        }
        if let Some(t) = &self.training {
            out.push(format!("training {t}"));
        }
        if let Some(v) = &self.version {
            out.push(format!("version {v}"));
        }
        match (&self.versions, self.version_count) {
            (Some(vs), count) if !vs.is_empty() => {
                let more = count.map_or(0, |c| c - vs.len() as i64);
                let mut s = format!("versions {}", vs.join(", "));
                if more > 0 {
                    s.push_str(&format!(" and {more} more"));
                }
                out.push(s);
            }
            (_, Some(c)) => out.push(format!("{c} version{}", if c == 1 { "" } else { "s" })),
            _ => {}
        }
        if let Some(d) = &self.deployment {
            out.push(format!("deployment {d}"));
        }
        out
    }
}

impl std::fmt::Display for Blocker {
    /// "deployment: The deployment acme/prod runs version ... (deployment acme/prod)".
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.kind, self.detail)?;
        let names = self.names();
        if !names.is_empty() {
            write!(f, " ({})", names.join("; "))?;
        }
        Ok(())
    }
}

/// What `DELETE ...?dry_run=true` answers: whether the deletion would go through, and if not,
/// everything that stands in the way.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DeletionPreview {
    pub deletable: bool,
    pub blockers: Vec<Blocker>,
    /// What the deletion frees once purged (servers with the trash say so).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub frees_bytes: Option<i64>,
}

/// One item of `GET /v1/trash` (modelyard's extension).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TrashItem {
    /// "model" or "version".
    pub kind: String,
    pub owner: String,
    pub name: String,
    pub version_id: Option<String>,
    pub trashed_at: String,
    pub purge_at: String,
    pub frees_bytes: i64,
    #[serde(flatten)]
    pub extra: Extra,
}

impl TrashItem {
    /// "owner/name", or "owner/name:id" for a version.
    pub fn target(&self) -> String {
        match &self.version_id {
            Some(v) => format!("{}/{}:{v}", self.owner, self.name),
            None => format!("{}/{}", self.owner, self.name),
        }
    }
}

/// `POST /v1/models/{owner}/{name}/versions/prune` (modelyard's extension).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct PruneRequest {
    pub keep: u64,
    pub dry_run: bool,
}

/// What a prune did (or, for a dry run, would do).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PruneResult {
    pub deleted: Vec<String>,
    pub kept: Vec<KeptVersion>,
    pub frees_bytes: i64,
    #[serde(flatten)]
    pub extra: Extra,
}

/// A version a prune kept, and why: "newest", or "blocked" with the blockers.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct KeptVersion {
    pub id: String,
    pub reason: String,
    pub blockers: Vec<Blocker>,
}

/// `GET /v1/account/storage` (modelyard's extension).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct AccountStorage {
    pub bytes: i64,
    pub unique_bytes: i64,
    pub trash_bytes: i64,
}

/// One field that failed input validation (in a 422 answer).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct InvalidField {
    #[serde(rename = "type")]
    pub kind: String,
    pub field: String,
    pub description: String,
}

/// One line of the audit log (modelyard's extension): a deletion, or a refusal.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct AuditEvent {
    #[serde(deserialize_with = "string_or_number")]
    pub id: String,
    pub at: String,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub outcome: String,
    pub blockers: Vec<Blocker>,
    #[serde(flatten)]
    pub extra: Extra,
}

fn string_or_number<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::String(s) => s,
        Value::Null => String::new(),
        v => v.to_string(),
    })
}

// Requests.

/// `POST /v1/models`. `visibility` is "public" or "private"; `hardware` an `sku` from
/// `GET /v1/hardware`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct NewModel {
    pub owner: String,
    pub name: String,
    pub visibility: String,
    pub hardware: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub github_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub paper_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub license_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cover_image_url: Option<String>,
}

impl NewModel {
    pub fn new(owner: &str, name: &str, visibility: &str, hardware: &str) -> Self {
        NewModel {
            owner: owner.into(),
            name: name.into(),
            visibility: visibility.into(),
            hardware: hardware.into(),
            ..Default::default()
        }
    }
}

/// `PATCH /v1/models/{owner}/{name}`. `None` leaves a field alone; `Some(None)` clears it.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ModelUpdate {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub visibility: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hardware: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<Option<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub github_url: Option<Option<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub paper_url: Option<Option<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub license_url: Option<Option<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cover_image_url: Option<Option<String>>,
}

/// How long a create request may hold on for the prediction to finish (`Prefer: wait`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Wait {
    /// Answer at once.
    #[default]
    No,
    /// `Prefer: wait`: the server's longest wait.
    Yes,
    /// `Prefer: wait=N` (1 to 60 seconds).
    Seconds(u32),
}

/// The body of a prediction or training request, and the headers that go with it.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct NewPrediction {
    pub input: Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub webhook: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub webhook_events_filter: Option<Vec<String>>,
    /// Sent as `Prefer: wait`.
    #[serde(skip)]
    pub wait: Wait,
    /// Sent as `Cancel-After` ("30s", "5m", "1h30m").
    #[serde(skip)]
    pub cancel_after: Option<String>,
}

impl NewPrediction {
    pub fn new(input: Value) -> Self {
        NewPrediction {
            input,
            ..Default::default()
        }
    }

    pub fn wait(mut self, wait: Wait) -> Self {
        self.wait = wait;
        self
    }

    pub fn webhook(mut self, url: &str, events: Option<Vec<String>>) -> Self {
        self.webhook = Some(url.into());
        self.webhook_events_filter = events;
        self
    }
}

/// `POST /v1/models/{owner}/{name}/versions/{id}/trainings`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct NewTraining {
    /// "owner/name" of the model that receives the trained version.
    pub destination: String,
    pub input: Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub webhook: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub webhook_events_filter: Option<Vec<String>>,
}

/// `POST /v1/deployments`: the deployment belongs to the token's account.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct NewDeployment {
    pub name: String,
    /// "owner/name".
    pub model: String,
    /// The version id.
    pub version: String,
    pub hardware: String,
    pub min_instances: i64,
    pub max_instances: i64,
}

/// `PATCH /v1/deployments/{owner}/{name}`: every change makes a new release.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct DeploymentUpdate {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hardware: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_instances: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_instances: Option<i64>,
}

impl DeploymentUpdate {
    pub fn is_empty(&self) -> bool {
        self == &DeploymentUpdate::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tolerant_and_round_trips_unknown_keys() {
        let v = json!({"id": "p1", "status": "starting", "new_field": 3, "urls": {"get": "u"}});
        let p: Prediction = serde_json::from_value(v).unwrap();
        assert_eq!(p.id, "p1");
        assert!(!p.is_terminal());
        assert_eq!(p.urls.get.as_deref(), Some("u"));
        let back = serde_json::to_value(&p).unwrap();
        assert_eq!(back["new_field"], 3);
    }

    #[test]
    fn model_with_nulls() {
        let m: Model = serde_json::from_value(json!({
            "url": "http://x/a/b", "owner": "a", "name": "b", "visibility": "private",
            "description": null, "latest_version": null, "run_count": 0, "default_example": null
        }))
        .unwrap();
        assert_eq!(m.full_name(), "a/b");
        assert!(m.latest_version.is_none());
    }

    #[test]
    fn audit_ids_as_numbers_or_strings() {
        let e: AuditEvent = serde_json::from_value(json!({"id": 7, "blockers": []})).unwrap();
        assert_eq!(e.id, "7");
        let e: AuditEvent = serde_json::from_value(json!({"id": "x"})).unwrap();
        assert_eq!(e.id, "x");
    }

    #[test]
    fn blockers_print_kind_detail_and_names() {
        let b: Blocker = serde_json::from_value(json!({
            "kind": "deployment",
            "detail": "The deployment acme/prod runs version abc.",
            "deployment": "acme/prod"
        }))
        .unwrap();
        assert_eq!(
            b.to_string(),
            "deployment: The deployment acme/prod runs version abc. (deployment acme/prod)"
        );
        let b: Blocker = serde_json::from_value(json!({
            "kind": "has_versions", "detail": "d", "model": "a/m",
            "version_count": 3, "versions": ["v1", "v2"]
        }))
        .unwrap();
        assert_eq!(
            b.to_string(),
            "has_versions: d (model a/m; versions v1, v2 and 1 more)"
        );
    }

    #[test]
    fn trash_items_and_prunes_read_the_extension() {
        let t: TrashItem = serde_json::from_value(json!({
            "kind": "version", "owner": "a", "name": "m", "version_id": "abc",
            "trashed_at": "2026-01-01T00:00:00Z", "purge_at": "2026-01-08T00:00:00Z",
            "frees_bytes": 12
        }))
        .unwrap();
        assert_eq!(t.target(), "a/m:abc");
        let t: TrashItem = serde_json::from_value(
            json!({"kind": "model", "owner": "a", "name": "m", "version_id": null}),
        )
        .unwrap();
        assert_eq!(t.target(), "a/m");
        let p: PruneResult = serde_json::from_value(json!({
            "deleted": ["v1"], "frees_bytes": 5,
            "kept": [{"id": "v3", "reason": "newest"},
                     {"id": "v2", "reason": "blocked", "blockers": [{"kind": "public", "detail": "d"}]}]
        }))
        .unwrap();
        assert_eq!(p.kept[1].blockers[0].kind, "public");
        assert!(p.kept[0].blockers.is_empty());
        // An older server's preview has no frees_bytes, and says so by leaving it out.
        let d: DeletionPreview = serde_json::from_value(json!({"deletable": true})).unwrap();
        assert_eq!(d.frees_bytes, None);
        assert_eq!(
            serde_json::to_value(PruneRequest {
                keep: 2,
                dry_run: true
            })
            .unwrap(),
            json!({"keep": 2, "dry_run": true})
        );
    }

    #[test]
    fn updates_skip_what_is_unset_and_clear_with_null() {
        let u = ModelUpdate {
            visibility: Some("private".into()),
            description: Some(None),
            ..Default::default()
        };
        assert_eq!(
            serde_json::to_value(&u).unwrap(),
            json!({"visibility": "private", "description": null})
        );
        let n = NewModel::new("a", "b", "private", "cpu");
        assert_eq!(
            serde_json::to_value(&n).unwrap(),
            json!({"owner": "a", "name": "b", "visibility": "private", "hardware": "cpu"})
        );
    }
}
