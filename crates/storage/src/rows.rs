//! Decoding rows into domain types, and the column lists that go with them.
use chrono::{DateTime, TimeZone, Utc};
use modelyard_domain::*;
use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};

use sqlx::any::AnyRow;
use sqlx::Row;

use crate::{Result, StoreError};

/// A row, as either driver gives it: the decoders below read sqlx's rows and, on SQLite's
/// direct connections (`sql/direct.rs`), rusqlite's, with the same column names.
pub trait Cols {
    fn text(&self, column: &str) -> Result<Option<String>>;
    fn int(&self, column: &str) -> Result<Option<i64>>;
}

/// A value one column holds.
pub trait Col: Sized {
    fn read<R: Cols + ?Sized>(r: &R, column: &str) -> Result<Self>;
}

fn null(column: &str) -> StoreError {
    StoreError::Corrupt(format!("{column} is NULL"))
}

impl Col for String {
    fn read<R: Cols + ?Sized>(r: &R, column: &str) -> Result<Self> {
        r.text(column)?.ok_or_else(|| null(column))
    }
}

impl Col for Option<String> {
    fn read<R: Cols + ?Sized>(r: &R, column: &str) -> Result<Self> {
        r.text(column)
    }
}

impl Col for i64 {
    fn read<R: Cols + ?Sized>(r: &R, column: &str) -> Result<Self> {
        r.int(column)?.ok_or_else(|| null(column))
    }
}

impl Col for Option<i64> {
    fn read<R: Cols + ?Sized>(r: &R, column: &str) -> Result<Self> {
        r.int(column)
    }
}

pub fn get<T: Col, R: Cols + ?Sized>(r: &R, column: &str) -> Result<T> {
    T::read(r, column)
}

impl Cols for AnyRow {
    fn text(&self, column: &str) -> Result<Option<String>> {
        Ok(self.try_get(column)?)
    }
    fn int(&self, column: &str) -> Result<Option<i64>> {
        Ok(self.try_get(column)?)
    }
}

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

/// Parsed schemas, by version row, with the text each was parsed from. Parsing a version's
/// schema was a tenth of a model read's CPU; the text is still read with the row and compared,
/// so an entry only ever stands for the very text it was parsed from (whatever database or
/// row it came from), and a deleted version is never served from here: its row is not read.
static SCHEMAS: LazyLock<Mutex<Schemas>> = LazyLock::new(Default::default);

/// At most this much schema text is kept; past it the cache starts again empty.
const SCHEMA_CACHE_BYTES: usize = 4 << 20;

#[derive(Default)]
struct Schemas {
    by_seq: HashMap<i64, (String, Arc<serde_json::Value>)>,
    bytes: usize,
}

pub fn schema(seq: i64, text: String) -> Result<Arc<serde_json::Value>> {
    let mut cache = SCHEMAS.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((t, v)) = cache.by_seq.get(&seq) {
        if *t == text {
            return Ok(v.clone());
        }
    }
    let parsed = Arc::new(json::<serde_json::Value>(&text)?);
    if cache.bytes + text.len() > SCHEMA_CACHE_BYTES {
        *cache = Schemas::default();
    }
    cache.bytes += text.len();
    if let Some((old, _)) = cache.by_seq.insert(seq, (text, parsed.clone())) {
        cache.bytes -= old.len();
    }
    Ok(parsed)
}

/// A stored enum's text. One the code does not know is an error: a visibility quietly read as
/// `private` would feed the deletion rules a fact nobody stored.
pub fn known<T>(column: &str, text: &str, parse: impl FnOnce(&str) -> Option<T>) -> Result<T> {
    parse(text).ok_or_else(|| StoreError::Corrupt(format!("unknown {column} {text:?}")))
}

pub fn visibility<R: Cols + ?Sized>(r: &R, column: &str) -> Result<Visibility> {
    known(
        "visibility",
        &get::<String, _>(r, column)?,
        Visibility::parse,
    )
}

pub fn status<R: Cols + ?Sized>(r: &R, column: &str) -> Result<Status> {
    known("status", &get::<String, _>(r, column)?, Status::parse)
}

pub fn account<R: Cols + ?Sized>(r: &R) -> Result<Account> {
    let kind: String = get(r, "kind")?;
    Ok(Account {
        id: get(r, "id")?,
        kind: known("account kind", &kind, AccountKind::parse)?,
        username: get(r, "username")?,
        name: get(r, "name")?,
        created_at: time(get(r, "created_at")?),
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
fn prefixed_version<R: Cols + ?Sized>(
    r: &R,
    prefix: &str,
    model_id: i64,
) -> Result<Option<Version>> {
    let col = |c: &str| format!("{prefix}{c}");
    let Some(id) = get::<Option<String>, _>(r, col("id").as_str())? else {
        return Ok(None);
    };
    Ok(Some(Version {
        cursor: get(r, col("seq").as_str())?,
        id,
        model_id,
        cog_version: get(r, col("cog_version").as_str())?,
        openapi_schema: schema(
            get(r, col("seq").as_str())?,
            get(r, col("schema").as_str())?,
        )?,
        artifact: get(r, col("artifact").as_str())?,
        base_version_id: get(r, col("base").as_str())?,
        weights: get(r, col("weights").as_str())?,
        gpu: get::<i64, _>(r, col("gpu").as_str())? != 0,
        created_at: time(get(r, col("created_at").as_str())?),
    }))
}

pub fn model<R: Cols + ?Sized>(r: &R) -> Result<Model> {
    let id: i64 = get(r, "id")?;
    let latest_version = prefixed_version(r, "v_", id)?;
    Ok(Model {
        id,
        owner_id: get(r, "owner_id")?,
        owner: get(r, "owner")?,
        name: get(r, "name")?,
        description: get(r, "description")?,
        visibility: visibility(r, "visibility")?,
        hardware: get(r, "hardware")?,
        github_url: get(r, "github_url")?,
        paper_url: get(r, "paper_url")?,
        license_url: get(r, "license_url")?,
        cover_image_url: get(r, "cover_image_url")?,
        run_count: get(r, "run_count")?,
        latest_version,
        created_at: time(get(r, "created_at")?),
    })
}

/// A row of `MODEL_AND_VERSION_SELECT`: the model, and the version `r` if the row has one. The
/// latest version is usually the one asked for: then its JSON is decoded once.
pub fn model_and_version<R: Cols + ?Sized>(r: &R) -> Result<(Model, Option<Version>)> {
    let m = model(r)?;
    let wanted: Option<String> = get(r, "r_id")?;
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

pub fn version<R: Cols + ?Sized>(r: &R) -> Result<Version> {
    Ok(Version {
        cursor: get(r, "seq")?,
        id: get(r, "id")?,
        model_id: get(r, "model_id")?,
        cog_version: get(r, "cog_version")?,
        openapi_schema: schema(get(r, "seq")?, get(r, "openapi_schema")?)?,
        artifact: get(r, "artifact")?,
        base_version_id: get(r, "base_version_id")?,
        weights: get(r, "weights")?,
        gpu: get::<i64, _>(r, "gpu")? != 0,
        created_at: time(get(r, "created_at")?),
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

pub fn job<R: Cols + ?Sized>(r: &R) -> Result<Job> {
    let kind: String = get(r, "kind")?;
    let output: Option<String> = get(r, "output")?;
    let filter: String = get(r, "webhook_events_filter")?;
    Ok(Job {
        cursor: get(r, "seq")?,
        id: get(r, "id")?,
        kind: known("job kind", &kind, JobKind::parse)?,
        account_id: get(r, "account_id")?,
        account: get(r, "account")?,
        version_id: get(r, "version_id")?,
        model: get(r, "model")?,
        deployment: get(r, "deployment")?,
        destination: get(r, "destination")?,
        input: json(&get::<String, _>(r, "input")?)?,
        output: output.as_deref().map(json).transpose()?,
        logs: get(r, "logs")?,
        error: get(r, "error")?,
        status: status(r, "status")?,
        source: get(r, "source")?,
        webhook: get(r, "webhook")?,
        webhook_events_filter: json(&filter)?,
        data_removed: get::<i64, _>(r, "data_removed")? != 0,
        metrics: json(&get::<String, _>(r, "metrics")?)?,
        deadline: get::<Option<i64>, _>(r, "deadline")?.map(time),
        created_at: time(get(r, "created_at")?),
        started_at: get::<Option<i64>, _>(r, "started_at")?.map(time),
        completed_at: get::<Option<i64>, _>(r, "completed_at")?.map(time),
    })
}

pub const DEPLOYMENT_SELECT: &str = "SELECT d.id, d.owner_id, a.username AS owner, d.name, \
    d.last_used_at, r.number, r.model, r.version_id, r.hardware, r.min_instances, \
    r.max_instances, r.created_by, r.created_at AS r_created_at \
    FROM deployments d JOIN accounts a ON a.id = d.owner_id \
    JOIN deployment_releases r ON r.deployment_id = d.id AND r.number = d.release_number";

pub fn deployment<R: Cols + ?Sized>(r: &R) -> Result<Deployment> {
    Ok(Deployment {
        id: get(r, "id")?,
        owner_id: get(r, "owner_id")?,
        owner: get(r, "owner")?,
        name: get(r, "name")?,
        last_used_at: time(get(r, "last_used_at")?),
        release: Release {
            number: get(r, "number")?,
            model: get(r, "model")?,
            version_id: get(r, "version_id")?,
            hardware: get(r, "hardware")?,
            min_instances: get(r, "min_instances")?,
            max_instances: get(r, "max_instances")?,
            created_by: get(r, "created_by")?,
            created_at: time(get(r, "r_created_at")?),
        },
    })
}

pub fn audit_event<R: Cols + ?Sized>(r: &R) -> Result<AuditEvent> {
    Ok(AuditEvent {
        id: get(r, "id")?,
        at: time(get(r, "at")?),
        actor: get(r, "actor")?,
        action: get(r, "action")?,
        target: get(r, "target")?,
        outcome: get(r, "outcome")?,
        blockers: json(&get::<String, _>(r, "blockers")?)?,
    })
}

/// `$first, $first+1, ...` for an IN list of `n` values.
pub fn placeholders(first: usize, n: usize) -> String {
    (first..first + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}
