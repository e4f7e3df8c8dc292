//! Models, and their final deletion. Reads leave out what is in the trash.
use async_trait::async_trait;
use modelyard_domain::rules::{model_deletion_blockers, ModelFacts, VERSIONS_NAMED};
use modelyard_domain::*;
use sqlx::Row;

use super::{ids_or_none, now, Arg, SqlStore, Tx};
use crate::rows::{self, placeholders, MODEL_SELECT};
use crate::store::{Deletion, ModelStore, NameInTrash, Unreferenced};
use crate::{Result, StoreError};

#[async_trait]
impl ModelStore for SqlStore {
    async fn create_model(&self, m: NewModel) -> Result<Model> {
        self.create_model_checked(m)
            .await?
            .map_err(|t| StoreError::Conflict(t.to_string()))
    }

    async fn create_model_checked(&self, m: NewModel) -> Result<Result<Model, NameInTrash>> {
        let inserted = sqlx::query_scalar(
            "INSERT INTO models (owner_id, name, description, visibility, hardware, github_url, \
             paper_url, license_url, cover_image_url, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING id",
        )
        .bind(m.owner_id)
        .bind(&m.name)
        .bind(&m.description)
        .bind(m.visibility.unwrap_or(Visibility::Private).as_str())
        .bind(&m.hardware)
        .bind(&m.github_url)
        .bind(&m.paper_url)
        .bind(&m.license_url)
        .bind(&m.cover_image_url)
        .bind(now())
        .fetch_one(&self.writer)
        .await;
        let id: i64 = match inserted.map_err(StoreError::from) {
            Ok(id) => id,
            Err(StoreError::Conflict(_)) => {
                // The unique key keeps a trashed model's name: say until when.
                let trashed = sqlx::query(
                    "SELECT a.username, m.purge_at FROM models m JOIN accounts a ON a.id = m.owner_id \
                     WHERE m.owner_id = $1 AND m.name = $2 AND m.trashed_at IS NOT NULL",
                )
                .bind(m.owner_id)
                .bind(&m.name)
                .fetch_optional(&self.pool)
                .await?;
                return match trashed {
                    Some(r) => Ok(Err(NameInTrash {
                        owner: r.try_get("username")?,
                        name: m.name.clone(),
                        purge_at: rows::time(r.try_get("purge_at")?),
                    })),
                    None => Err(StoreError::Conflict(format!(
                        "a model named {:?} already exists",
                        m.name
                    ))),
                };
            }
            Err(e) => return Err(e),
        };
        Ok(Ok(self.model_by_id(id).await?))
    }

    async fn model(&self, owner: &str, name: &str) -> Result<Option<Model>> {
        self.read_row_kept(
            "model",
            || {
                format!(
                    "{MODEL_SELECT} WHERE a.username = $1 AND m.name = $2 AND m.trashed_at IS NULL"
                )
            },
            &[Arg::Text(owner), Arg::Text(name)],
            |r| rows::model(r),
        )
        .await
    }

    async fn list_models(
        &self,
        viewer: Option<&Caller>,
        query: Option<&str>,
        page: PageReq,
    ) -> Result<Vec<Model>> {
        let mut own = viewer.map(|c| c.org_ids.clone()).unwrap_or_default();
        own.extend(viewer.map(|c| c.account.id));
        let own = ids_or_none(&own);
        let search = query.map(|q| {
            let escaped = q
                .to_lowercase()
                .replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_");
            format!("%{escaped}%")
        });
        let sql = format!(
            "{MODEL_SELECT} WHERE (m.visibility = 'public' OR m.owner_id IN ({})) AND m.id < $1 \
             AND m.trashed_at IS NULL \
             AND ($2 = '' OR LOWER(m.name) LIKE $2 ESCAPE '\\' OR LOWER(a.username) LIKE $2 ESCAPE '\\' \
             OR LOWER(COALESCE(m.description, '')) LIKE $2 ESCAPE '\\') \
             ORDER BY m.id DESC LIMIT $3",
            placeholders(4, own.len())
        );
        let mut q = sqlx::query(&sql)
            .bind(page.after.unwrap_or(i64::MAX))
            .bind(search.unwrap_or_default())
            .bind(page.limit);
        for id in own {
            q = q.bind(id);
        }
        q.fetch_all(&mut *self.reader().await?)
            .await?
            .iter()
            .map(rows::model)
            .collect()
    }

    async fn models_owned_by(&self, owner_ids: &[i64], limit: i64) -> Result<Vec<Model>> {
        let owners = ids_or_none(owner_ids);
        let sql = format!(
            "{MODEL_SELECT} WHERE m.owner_id IN ({}) AND m.trashed_at IS NULL \
             ORDER BY m.id DESC LIMIT $1",
            placeholders(2, owners.len())
        );
        let mut q = sqlx::query(&sql).bind(limit);
        for id in owners {
            q = q.bind(id);
        }
        q.fetch_all(&mut *self.reader().await?)
            .await?
            .iter()
            .map(rows::model)
            .collect()
    }

    async fn update_model(&self, id: i64, p: ModelPatch) -> Result<Model> {
        let mut tx = self.begin_write().await?;
        let row = sqlx::query(&format!(
            "SELECT description, visibility, hardware, github_url, paper_url, license_url, \
             cover_image_url FROM models WHERE id = $1 AND trashed_at IS NULL{}",
            self.lock()
        ))
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(StoreError::NotFound("model"))?;
        let get = |col: &str| row.try_get::<Option<String>, _>(col);
        let description = p.description.unwrap_or(get("description")?);
        let visibility = match p.visibility {
            Some(v) => v.as_str().to_string(),
            None => row.try_get("visibility")?,
        };
        let hardware = match p.hardware {
            Some(h) => h,
            None => row.try_get("hardware")?,
        };
        let github_url = p.github_url.unwrap_or(get("github_url")?);
        let paper_url = p.paper_url.unwrap_or(get("paper_url")?);
        let license_url = p.license_url.unwrap_or(get("license_url")?);
        let cover_image_url = p.cover_image_url.unwrap_or(get("cover_image_url")?);
        sqlx::query(
            "UPDATE models SET description = $1, visibility = $2, hardware = $3, github_url = $4, \
             paper_url = $5, license_url = $6, cover_image_url = $7 WHERE id = $8",
        )
        .bind(description)
        .bind(visibility)
        .bind(hardware)
        .bind(github_url)
        .bind(paper_url)
        .bind(license_url)
        .bind(cover_image_url)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        self.model_by_id(id).await
    }

    async fn delete_model(
        &self,
        model_id: i64,
        caller: &Caller,
        dry_run: bool,
    ) -> Result<Deletion> {
        let (mut tx, lock) = self.begin_deletion(dry_run).await?;
        let d = decide(&mut tx, lock, model_id).await?;
        if dry_run {
            return Ok(d.preview());
        }
        let mut unreferenced = Unreferenced::default();
        if d.blockers.is_empty() {
            // Only versions in the trash are left: they go with the model.
            unreferenced = remove_trashed_versions(&mut tx, lock, model_id).await?;
            sqlx::query("DELETE FROM models WHERE id = $1")
                .bind(model_id)
                .execute(&mut *tx)
                .await?;
        }
        let done = Deletion {
            unreferenced_artifact: unreferenced.artifacts.first().cloned(),
            unreferenced,
            frees_bytes: d.frees_bytes,
            ..Default::default()
        };
        super::conclude(
            tx,
            caller,
            d.owner_id,
            "delete_model",
            d.target,
            d.blockers,
            "deleted",
            done,
        )
        .await
    }
}

/// A model deletion's facts, read in its transaction, and what the rules made of them.
pub(super) struct Decision {
    pub owner_id: i64,
    /// "owner/name"
    pub target: String,
    pub blockers: Vec<Blocker>,
    pub frees_bytes: i64,
}

impl Decision {
    pub fn preview(self) -> Deletion {
        Deletion {
            blockers: self.blockers,
            frees_bytes: self.frees_bytes,
            ..Default::default()
        }
    }
}

/// Locks the model (outside the trash: else `NotFound`) and applies
/// `rules::model_deletion_blockers`, counting the versions outside the trash: those in it go
/// with the model. A push references the model row, so none can slip in meanwhile.
pub(super) async fn decide(tx: &mut Tx, lock: &str, model_id: i64) -> Result<Decision> {
    let row = sqlx::query(&format!(
        "SELECT owner_id, visibility, name FROM models WHERE id = $1 AND trashed_at IS NULL{lock}"
    ))
    .bind(model_id)
    .fetch_optional(&mut **tx)
    .await?
    .ok_or(StoreError::NotFound("model"))?;
    let owner_id: i64 = row.try_get("owner_id")?;
    let owner = super::username(tx, owner_id).await?;
    let full_name = format!("{owner}/{}", row.try_get::<String, _>("name")?);
    let version_count: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM versions WHERE model_id = $1 AND trashed_at IS NULL",
    )
    .bind(model_id)
    .fetch_one(&mut **tx)
    .await?;
    let newest_versions: Vec<String> = sqlx::query_scalar(
        "SELECT id FROM versions WHERE model_id = $1 AND trashed_at IS NULL \
         ORDER BY seq DESC LIMIT $2",
    )
    .bind(model_id)
    .bind(VERSIONS_NAMED as i64)
    .fetch_all(&mut **tx)
    .await?;
    let facts = ModelFacts {
        model: full_name.clone(),
        visibility: rows::visibility(&row, "visibility")?,
        version_count,
        newest_versions,
    };
    let blockers = model_deletion_blockers(&facts);
    let frees_bytes = super::sizes::frees_of_model(tx, model_id).await?;
    Ok(Decision {
        owner_id,
        target: full_name,
        blockers,
        frees_bytes,
    })
}

/// Deletes for good every version of the model in the trash (each with the predictions of the
/// account that deleted it), locking them first; returns the files left unreferenced.
pub(super) async fn remove_trashed_versions(
    tx: &mut Tx,
    lock: &str,
    model_id: i64,
) -> Result<Unreferenced> {
    let rows = sqlx::query(&format!(
        "SELECT id, artifact, weights, trashed_by FROM versions \
         WHERE model_id = $1 AND trashed_at IS NOT NULL ORDER BY seq DESC{lock}"
    ))
    .bind(model_id)
    .fetch_all(&mut **tx)
    .await?;
    let (mut artifacts, mut weights) = (Vec::new(), Vec::new());
    for r in &rows {
        let id: String = r.try_get("id")?;
        let by: Option<i64> = r.try_get("trashed_by")?;
        super::versions::remove_rows(tx, &id, by.unwrap_or(-1)).await?;
        artifacts.push(r.try_get::<String, _>("artifact")?);
        weights.extend(r.try_get::<Option<String>, _>("weights")?);
    }
    super::unreferenced(tx, &artifacts, &weights).await
}

impl SqlStore {
    pub(super) async fn model_by_id(&self, id: i64) -> Result<Model> {
        self.read_row(
            &format!("{MODEL_SELECT} WHERE m.id = $1"),
            &[Arg::Int(id)],
            |r| rows::model(r),
        )
        .await?
        .ok_or(StoreError::NotFound("model"))
    }
}
