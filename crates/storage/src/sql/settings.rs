//! Values shared by every node of one database (see migration 0006).
use async_trait::async_trait;
use sqlx::Row;

use super::SqlStore;
use crate::store::SettingStore;
use crate::Result;

#[async_trait]
impl SettingStore for SqlStore {
    async fn shared_setting(&self, name: &str, candidate: &str) -> Result<String> {
        // Nodes starting at once each offer their own candidate; the first one written is the
        // one everybody reads back.
        sqlx::query(
            "INSERT INTO settings (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
        )
        .bind(name)
        .bind(candidate)
        .execute(&self.writer)
        .await?;
        let row = sqlx::query("SELECT value FROM settings WHERE name = $1")
            .bind(name)
            .fetch_one(&self.writer)
            .await?;
        Ok(row.try_get("value")?)
    }
}
