//! Uploaded files (the Files API). The bytes of a file live in the data directory; the table
//! holds what the API reports about them.
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use modelyard_domain::PageReq;
use sqlx::any::AnyRow;
use sqlx::Row;

use super::SqlStore;
use crate::rows::{micros, time};
use crate::store::FileStore;
use crate::{Result, StoreError};

/// An uploaded file, as the Files API reports it.
#[derive(Debug, Clone)]
pub struct FileRecord {
    /// For pagination.
    pub cursor: i64,
    pub id: String,
    pub account_id: i64,
    pub name: String,
    pub content_type: String,
    pub size: i64,
    pub sha256: String,
    pub metadata: serde_json::Value,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
}

/// A file to record; its bytes are already stored.
#[derive(Debug, Clone)]
pub struct NewFile {
    pub id: String,
    pub account_id: i64,
    pub name: String,
    pub content_type: String,
    pub size: i64,
    pub sha256: String,
    pub metadata: serde_json::Value,
    pub expires_at: Option<DateTime<Utc>>,
}

const FILE_SELECT: &str =
    "SELECT seq, id, account_id, name, content_type, size, sha256, metadata, \
                           created_at, expires_at FROM files";

fn file(r: &AnyRow) -> Result<FileRecord> {
    let metadata: String = r.try_get("metadata")?;
    let expires: Option<i64> = r.try_get("expires_at")?;
    Ok(FileRecord {
        cursor: r.try_get("seq")?,
        id: r.try_get("id")?,
        account_id: r.try_get("account_id")?,
        name: r.try_get("name")?,
        content_type: r.try_get("content_type")?,
        size: r.try_get("size")?,
        sha256: r.try_get("sha256")?,
        metadata: crate::rows::json(&metadata)?,
        created_at: time(r.try_get("created_at")?),
        expires_at: expires.map(time),
    })
}

#[async_trait]
impl FileStore for SqlStore {
    async fn create_file(&self, f: NewFile) -> Result<FileRecord> {
        sqlx::query(
            "INSERT INTO files (id, account_id, name, content_type, size, sha256, metadata, \
             created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(&f.id)
        .bind(f.account_id)
        .bind(&f.name)
        .bind(&f.content_type)
        .bind(f.size)
        .bind(&f.sha256)
        .bind(f.metadata.to_string())
        .bind(micros(Utc::now()))
        .bind(f.expires_at.map(micros))
        .execute(&self.writer)
        .await?;
        self.file(&f.id).await?.ok_or(StoreError::NotFound("file"))
    }

    async fn file(&self, id: &str) -> Result<Option<FileRecord>> {
        sqlx::query(&format!("{FILE_SELECT} WHERE id = $1"))
            .bind(id)
            .fetch_optional(&mut *self.reader().await?)
            .await?
            .as_ref()
            .map(file)
            .transpose()
    }

    async fn list_files(&self, account_id: i64, page: PageReq) -> Result<Vec<FileRecord>> {
        sqlx::query(&format!(
            "{FILE_SELECT} WHERE account_id = $1 AND seq < $2 ORDER BY seq DESC LIMIT $3"
        ))
        .bind(account_id)
        .bind(page.after.unwrap_or(i64::MAX))
        .bind(page.limit)
        .fetch_all(&mut *self.reader().await?)
        .await?
        .iter()
        .map(file)
        .collect()
    }

    async fn delete_file(&self, account_id: i64, id: &str) -> Result<bool> {
        let r = sqlx::query("DELETE FROM files WHERE id = $1 AND account_id = $2")
            .bind(id)
            .bind(account_id)
            .execute(&self.writer)
            .await?;
        Ok(r.rows_affected() == 1)
    }

    async fn remove_expired_files(&self, now: DateTime<Utc>) -> Result<Vec<String>> {
        let rows = sqlx::query(
            "DELETE FROM files WHERE expires_at IS NOT NULL AND expires_at < $1 RETURNING id",
        )
        .bind(micros(now))
        // A write: through the writer, like every other, so it queues instead of meeting
        // SQLite's busy handler.
        .fetch_all(&self.writer)
        .await?;
        rows.iter().map(|r| Ok(r.try_get("id")?)).collect()
    }
}
