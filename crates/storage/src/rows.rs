//! Decoding rows into domain types, and the column lists that go with them.
use chrono::{DateTime, TimeZone, Utc};
use modelyard_domain::*;
use sqlx::any::AnyRow;
use sqlx::Row;

use crate::{Result, StoreError};

/// Times are stored as microseconds since the epoch: one integer type on both backends.
pub fn micros(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

pub fn time(us: i64) -> DateTime<Utc> {
    Utc.timestamp_micros(us).single().unwrap_or_default()
}

/// A stored JSON column; text that is not JSON is corrupt, never an empty default.
pub fn json<T: serde::de::DeserializeOwned>(s: &str) -> Result<T> {
    serde_json::from_str(s).map_err(|e| StoreError::Corrupt(format!("bad JSON: {e}")))
}

/// A stored enum's text. One the code does not know is an error: a visibility quietly read as
/// `private` would feed the deletion rules a fact nobody stored.
pub fn known<T>(column: &str, text: &str, parse: impl FnOnce(&str) -> Option<T>) -> Result<T> {
    parse(text).ok_or_else(|| StoreError::Corrupt(format!("unknown {column} {text:?}")))
}

pub fn visibility(r: &AnyRow, column: &str) -> Result<Visibility> {
    known(
        "visibility",
        &r.try_get::<String, _>(column)?,
        Visibility::parse,
    )
}

pub fn status(r: &AnyRow, column: &str) -> Result<Status> {
    known("status", &r.try_get::<String, _>(column)?, Status::parse)
}

pub fn account(r: &AnyRow) -> Result<Account> {
    let kind: String = r.try_get("kind")?;
    Ok(Account {
        id: r.try_get("id")?,
        kind: known("account kind", &kind, AccountKind::parse)?,
        username: r.try_get("username")?,
        name: r.try_get("name")?,
        created_at: time(r.try_get("created_at")?),
    })
}

/// A model's columns with its latest version's (`v_*`).
macro_rules! model_columns {
    () => {
        "SELECT m.id, m.owner_id, a.username AS owner, m.name, m.description, \
    m.visibility, m.hardware, m.github_url, m.paper_url, m.license_url, m.cover_image_url, \
    m.run_count, m.created_at, v.seq AS v_seq, v.id AS v_id, v.cog_version AS v_cog_version, \
    v.openapi_schema AS v_schema, v.artifact AS v_artifact, v.base_version_id AS v_base, v.weights AS v_weights, \
    v.gpu AS v_gpu, v.created_at AS v_created_at"
    };
}

macro_rules! model_from {
    () => {
        " FROM models m JOIN accounts a ON a.id = m.owner_id \
    LEFT JOIN versions v ON v.seq = \
    (SELECT MAX(seq) FROM versions WHERE model_id = m.id AND trashed_at IS NULL)"
    };
}

pub const MODEL_SELECT: &str = concat!(model_columns!(), model_from!());

/// A model and one more version, `r`, which the statement joins (`JOIN versions r ON ...`
/// after this): a model and a version of it in one statement.
pub const MODEL_AND_VERSION_SELECT: &str = concat!(
    model_columns!(),
    ", r.seq AS r_seq, r.id AS r_id, r.cog_version AS r_cog_version, \
    r.openapi_schema AS r_schema, r.artifact AS r_artifact, r.base_version_id AS r_base, \
    r.weights AS r_weights, r.gpu AS r_gpu, r.created_at AS r_created_at",
    model_from!()
);

/// The version in the columns named with `prefix` (`v_` the latest, `r_` a requested one).
fn prefixed_version(r: &AnyRow, prefix: &str, model_id: i64) -> Result<Option<Version>> {
    let col = |c: &str| format!("{prefix}{c}");
    let Some(id) = r.try_get::<Option<String>, _>(col("id").as_str())? else {
        return Ok(None);
    };
    Ok(Some(Version {
        cursor: r.try_get(col("seq").as_str())?,
        id,
        model_id,
        cog_version: r.try_get(col("cog_version").as_str())?,
        openapi_schema: json::<serde_json::Value>(
            &r.try_get::<String, _>(col("schema").as_str())?,
        )?,
        artifact: r.try_get(col("artifact").as_str())?,
        base_version_id: r.try_get(col("base").as_str())?,
        weights: r.try_get(col("weights").as_str())?,
        gpu: r.try_get::<i64, _>(col("gpu").as_str())? != 0,
        created_at: time(r.try_get(col("created_at").as_str())?),
    }))
}

pub fn model(r: &AnyRow) -> Result<Model> {
    let id: i64 = r.try_get("id")?;
    let latest_version = prefixed_version(r, "v_", id)?;
    Ok(Model {
        id,
        owner_id: r.try_get("owner_id")?,
        owner: r.try_get("owner")?,
        name: r.try_get("name")?,
        description: r.try_get("description")?,
        visibility: visibility(r, "visibility")?,
        hardware: r.try_get("hardware")?,
        github_url: r.try_get("github_url")?,
        paper_url: r.try_get("paper_url")?,
        license_url: r.try_get("license_url")?,
        cover_image_url: r.try_get("cover_image_url")?,
        run_count: r.try_get("run_count")?,
        latest_version,
        created_at: time(r.try_get("created_at")?),
    })
}

/// A row of `MODEL_AND_VERSION_SELECT`: the model, and the version `r` if the row has one. The
/// latest version is usually the one asked for: then its JSON is decoded once.
pub fn model_and_version(r: &AnyRow) -> Result<(Model, Option<Version>)> {
    let m = model(r)?;
    let wanted: Option<String> = r.try_get("r_id")?;
    let v = match (&m.latest_version, wanted) {
        (Some(l), Some(w)) if l.id == w => Some(l.clone()),
        _ => prefixed_version(r, "r_", m.id)?,
    };
    Ok((m, v))
}

/// With `purge_at`, set while the version is in the trash (callers that can meet one say so
/// in their WHERE: `v.trashed_at IS NULL` hides it).
pub const VERSION_SELECT: &str =
    "SELECT v.seq, v.id, v.model_id, v.cog_version, v.openapi_schema, \
    v.artifact, v.base_version_id, v.weights, v.gpu, v.created_at, v.purge_at FROM versions v";

pub fn version(r: &AnyRow) -> Result<Version> {
    Ok(Version {
        cursor: r.try_get("seq")?,
        id: r.try_get("id")?,
        model_id: r.try_get("model_id")?,
        cog_version: r.try_get("cog_version")?,
        openapi_schema: json(&r.try_get::<String, _>("openapi_schema")?)?,
        artifact: r.try_get("artifact")?,
        base_version_id: r.try_get("base_version_id")?,
        weights: r.try_get("weights")?,
        gpu: r.try_get::<i64, _>("gpu")? != 0,
        created_at: time(r.try_get("created_at")?),
    })
}

/// Jobs of a version in the trash are kept but hidden: the join leaves them out of every read.
pub const JOB_SELECT: &str = "SELECT j.seq, j.id, j.kind, j.account_id, acc.username AS account, \
    j.version_id, ma.username || '/' || mo.name AS model, \
    da.username || '/' || d.name AS deployment, dma.username || '/' || dm.name AS destination, \
    j.input, j.output, j.logs, j.error, j.status, j.source, j.webhook, j.webhook_events_filter, \
    j.data_removed, j.metrics, j.deadline, j.created_at, j.started_at, j.completed_at \
    FROM jobs j JOIN accounts acc ON acc.id = j.account_id \
    JOIN versions v ON v.id = j.version_id AND v.trashed_at IS NULL \
    JOIN models mo ON mo.id = v.model_id \
    JOIN accounts ma ON ma.id = mo.owner_id \
    LEFT JOIN deployments d ON d.id = j.deployment_id LEFT JOIN accounts da ON da.id = d.owner_id \
    LEFT JOIN models dm ON dm.id = j.destination_model_id \
    LEFT JOIN accounts dma ON dma.id = dm.owner_id";

pub fn job(r: &AnyRow) -> Result<Job> {
    let kind: String = r.try_get("kind")?;
    let output: Option<String> = r.try_get("output")?;
    let filter: String = r.try_get("webhook_events_filter")?;
    Ok(Job {
        cursor: r.try_get("seq")?,
        id: r.try_get("id")?,
        kind: known("job kind", &kind, JobKind::parse)?,
        account_id: r.try_get("account_id")?,
        account: r.try_get("account")?,
        version_id: r.try_get("version_id")?,
        model: r.try_get("model")?,
        deployment: r.try_get("deployment")?,
        destination: r.try_get("destination")?,
        input: json(&r.try_get::<String, _>("input")?)?,
        output: output.as_deref().map(json).transpose()?,
        logs: r.try_get("logs")?,
        error: r.try_get("error")?,
        status: status(r, "status")?,
        source: r.try_get("source")?,
        webhook: r.try_get("webhook")?,
        webhook_events_filter: json(&filter)?,
        data_removed: r.try_get::<i64, _>("data_removed")? != 0,
        metrics: json(&r.try_get::<String, _>("metrics")?)?,
        deadline: r.try_get::<Option<i64>, _>("deadline")?.map(time),
        created_at: time(r.try_get("created_at")?),
        started_at: r.try_get::<Option<i64>, _>("started_at")?.map(time),
        completed_at: r.try_get::<Option<i64>, _>("completed_at")?.map(time),
    })
}

pub const DEPLOYMENT_SELECT: &str = "SELECT d.id, d.owner_id, a.username AS owner, d.name, \
    d.last_used_at, r.number, r.model, r.version_id, r.hardware, r.min_instances, \
    r.max_instances, r.created_by, r.created_at AS r_created_at \
    FROM deployments d JOIN accounts a ON a.id = d.owner_id \
    JOIN deployment_releases r ON r.deployment_id = d.id AND r.number = d.release_number";

pub fn deployment(r: &AnyRow) -> Result<Deployment> {
    Ok(Deployment {
        id: r.try_get("id")?,
        owner_id: r.try_get("owner_id")?,
        owner: r.try_get("owner")?,
        name: r.try_get("name")?,
        last_used_at: time(r.try_get("last_used_at")?),
        release: Release {
            number: r.try_get("number")?,
            model: r.try_get("model")?,
            version_id: r.try_get("version_id")?,
            hardware: r.try_get("hardware")?,
            min_instances: r.try_get("min_instances")?,
            max_instances: r.try_get("max_instances")?,
            created_by: r.try_get("created_by")?,
            created_at: time(r.try_get("r_created_at")?),
        },
    })
}

pub fn audit_event(r: &AnyRow) -> Result<AuditEvent> {
    Ok(AuditEvent {
        id: r.try_get("id")?,
        at: time(r.try_get("at")?),
        actor: r.try_get("actor")?,
        action: r.try_get("action")?,
        target: r.try_get("target")?,
        outcome: r.try_get("outcome")?,
        blockers: json(&r.try_get::<String, _>("blockers")?)?,
    })
}

/// `$first, $first+1, ...` for an IN list of `n` values.
pub fn placeholders(first: usize, n: usize) -> String {
    (first..first + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}
