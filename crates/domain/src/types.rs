//! The records of the platform, in the shape every layer uses.
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AccountKind {
    User,
    Organization,
}

impl AccountKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AccountKind::User => "user",
            AccountKind::Organization => "organization",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "user" => Some(AccountKind::User),
            "organization" => Some(AccountKind::Organization),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub id: i64,
    pub kind: AccountKind,
    pub username: String,
    pub name: String,
    pub created_at: DateTime<Utc>,
}

/// Who is calling: the token's account and, for a user, the organizations it belongs to.
#[derive(Debug, Clone)]
pub struct Caller {
    pub account: Account,
    pub org_ids: Vec<i64>,
}

impl Caller {
    /// The caller acts for `owner` when it is that account or a member of that organization.
    pub fn acts_for(&self, owner_id: i64) -> bool {
        self.account.id == owner_id || self.org_ids.contains(&owner_id)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Visibility {
    Public,
    Private,
}

impl Visibility {
    pub fn as_str(self) -> &'static str {
        match self {
            Visibility::Public => "public",
            Visibility::Private => "private",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "public" => Some(Visibility::Public),
            "private" => Some(Visibility::Private),
            _ => None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Model {
    pub id: i64,
    pub owner_id: i64,
    pub owner: String,
    pub name: String,
    pub description: Option<String>,
    pub visibility: Visibility,
    pub hardware: String,
    pub github_url: Option<String>,
    pub paper_url: Option<String>,
    pub license_url: Option<String>,
    pub cover_image_url: Option<String>,
    pub run_count: i64,
    pub latest_version: Option<Version>,
    pub created_at: DateTime<Utc>,
}

impl Model {
    pub fn full_name(&self) -> String {
        format!("{}/{}", self.owner, self.name)
    }
}

#[derive(Debug, Clone, Default)]
pub struct NewModel {
    pub owner_id: i64,
    pub name: String,
    pub description: Option<String>,
    pub visibility: Option<Visibility>,
    pub hardware: String,
    pub github_url: Option<String>,
    pub paper_url: Option<String>,
    pub license_url: Option<String>,
    pub cover_image_url: Option<String>,
}

/// A change to a model; `None` leaves a field alone, `Some(None)` clears it.
#[derive(Debug, Clone, Default)]
pub struct ModelPatch {
    pub description: Option<Option<String>>,
    pub visibility: Option<Visibility>,
    pub hardware: Option<String>,
    pub github_url: Option<Option<String>>,
    pub paper_url: Option<Option<String>>,
    pub license_url: Option<Option<String>>,
    pub cover_image_url: Option<Option<String>>,
}

#[derive(Debug, Clone)]
pub struct Version {
    /// Position in listings, newest highest: the cursor of pagination.
    pub cursor: i64,
    pub id: String,
    pub model_id: i64,
    pub cog_version: String,
    /// Shared: a version never changes, and its schema is read on every request that
    /// names it (see `storage::rows::schema`).
    pub openapi_schema: std::sync::Arc<Value>,
    pub artifact: String,
    /// For a fine-tuned version: the version it was trained from.
    pub base_version_id: Option<String>,
    /// For a fine-tuned version: the stored weights its predictor is set up with.
    pub weights: Option<String>,
    /// cog.yaml's `build.gpu`: it runs only on a worker that offers a GPU.
    pub gpu: bool,
    pub created_at: DateTime<Utc>,
}

/// A version with the model it belongs to.
#[derive(Debug, Clone)]
pub struct ModelVersion {
    pub model: Model,
    pub version: Version,
}

#[derive(Debug, Clone)]
pub struct NewVersion {
    pub model_id: i64,
    pub content_digest: String,
    pub cog_version: String,
    pub openapi_schema: Value,
    pub artifact: String,
    pub base_version_id: Option<String>,
    pub training_id: Option<String>,
    pub weights: Option<String>,
    pub gpu: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Starting,
    Processing,
    Succeeded,
    Failed,
    Canceled,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Starting => "starting",
            Status::Processing => "processing",
            Status::Succeeded => "succeeded",
            Status::Failed => "failed",
            Status::Canceled => "canceled",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "starting" => Status::Starting,
            "processing" => Status::Processing,
            "succeeded" => Status::Succeeded,
            "failed" => Status::Failed,
            "canceled" => Status::Canceled,
            _ => return None,
        })
    }
    pub fn is_terminal(self) -> bool {
        matches!(self, Status::Succeeded | Status::Failed | Status::Canceled)
    }
}

/// A prediction or a training: Replicate gives both the same shape.
#[derive(Debug, Clone)]
pub struct Job {
    /// Position in listings, newest highest: the cursor of pagination.
    pub cursor: i64,
    pub id: String,
    pub kind: JobKind,
    pub account_id: i64,
    pub account: String,
    pub version_id: String,
    pub model: String,
    pub deployment: Option<String>,
    pub destination: Option<String>,
    pub input: Value,
    pub output: Option<Value>,
    pub logs: String,
    pub error: Option<String>,
    pub status: Status,
    pub source: String,
    pub webhook: Option<String>,
    pub webhook_events_filter: Vec<String>,
    pub data_removed: bool,
    pub metrics: Value,
    pub deadline: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobKind {
    Prediction,
    Training,
}

impl JobKind {
    pub fn as_str(self) -> &'static str {
        match self {
            JobKind::Prediction => "prediction",
            JobKind::Training => "training",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "prediction" => Some(JobKind::Prediction),
            "training" => Some(JobKind::Training),
            _ => None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct NewJob {
    pub kind: JobKind,
    pub account_id: i64,
    pub version_id: String,
    pub deployment_id: Option<i64>,
    pub destination_model_id: Option<i64>,
    pub input: Value,
    pub source: String,
    pub webhook: Option<String>,
    pub webhook_events_filter: Vec<String>,
    pub deadline: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Release {
    pub number: i64,
    pub model: String,
    pub version_id: String,
    pub hardware: String,
    pub min_instances: i64,
    pub max_instances: i64,
    pub created_at: DateTime<Utc>,
    pub created_by: String,
}

#[derive(Debug, Clone)]
pub struct Deployment {
    pub id: i64,
    pub owner_id: i64,
    pub owner: String,
    pub name: String,
    pub release: Release,
    pub last_used_at: DateTime<Utc>,
}

impl Deployment {
    pub fn full_name(&self) -> String {
        format!("{}/{}", self.owner, self.name)
    }
}

#[derive(Debug, Clone)]
pub struct NewRelease {
    pub version_id: String,
    pub hardware: String,
    pub min_instances: i64,
    pub max_instances: i64,
}

/// One line of the audit log: a deletion or a refusal, kept after the object is gone.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuditEvent {
    pub id: i64,
    pub at: DateTime<Utc>,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub outcome: String,
    pub blockers: Vec<crate::Blocker>,
}

#[derive(Debug, Clone)]
pub struct NewAuditEvent {
    pub actor_id: Option<i64>,
    pub actor: String,
    pub owner_id: i64,
    pub action: String,
    pub target: String,
    pub outcome: String,
    pub blockers: Vec<crate::Blocker>,
}

/// A page request: items after the cursor (an opaque position), newest first.
#[derive(Debug, Clone, Copy)]
pub struct PageReq {
    pub after: Option<i64>,
    pub limit: i64,
}
