//! Signing in to the web UI: password hashes and sessions.
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use modelyard_domain::Caller;
use sqlx::Row;

use super::{now, Arg, SqlStore};
use crate::rows;
use crate::store::{PasswordRecord, SessionStore};
use crate::{Result, StoreError};

#[async_trait]
impl SessionStore for SqlStore {
    async fn set_password_hash(&self, account_id: i64, hash: Option<&str>) -> Result<()> {
        let done = sqlx::query("UPDATE accounts SET password_hash = $1 WHERE id = $2")
            .bind(hash)
            .bind(account_id)
            .execute(&self.writer)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound("account"));
        }
        if hash.is_none() {
            // No password, no way in: end the account's sessions too.
            sqlx::query("DELETE FROM web_sessions WHERE account_id = $1")
                .bind(account_id)
                .execute(&self.writer)
                .await?;
        }
        Ok(())
    }

    async fn password_hash(&self, username: &str) -> Result<Option<PasswordRecord>> {
        let row = sqlx::query(
            "SELECT id, kind, username, name, created_at, password_hash FROM accounts WHERE username = $1",
        )
        .bind(username)
        .fetch_optional(&mut *self.reader().await?)
        .await?;
        let Some(row) = row else { return Ok(None) };
        Ok(Some(PasswordRecord {
            account: rows::account(&row)?,
            hash: row.try_get("password_hash")?,
        }))
    }

    async fn create_session(
        &self,
        hash: &str,
        account_id: i64,
        expires_at: DateTime<Utc>,
    ) -> Result<()> {
        // Expired sessions are swept whenever someone signs in.
        sqlx::query("DELETE FROM web_sessions WHERE expires_at < $1")
            .bind(now())
            .execute(&self.writer)
            .await?;
        sqlx::query(
            "INSERT INTO web_sessions (hash, account_id, created_at, expires_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(hash)
        .bind(account_id)
        .bind(now())
        .bind(rows::micros(expires_at))
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    async fn session_caller(&self, hash: &str, at: DateTime<Utc>) -> Result<Option<Caller>> {
        let account = self
            .read_row(
                "SELECT a.id, a.kind, a.username, a.name, a.created_at FROM web_sessions s \
                 JOIN accounts a ON a.id = s.account_id WHERE s.hash = $1 AND s.expires_at > $2",
                &[Arg::Text(hash), Arg::Int(rows::micros(at))],
                |r| rows::account(r),
            )
            .await?;
        self.caller_of(account).await
    }

    async fn delete_session(&self, hash: &str) -> Result<()> {
        sqlx::query("DELETE FROM web_sessions WHERE hash = $1")
            .bind(hash)
            .execute(&self.writer)
            .await?;
        Ok(())
    }
}
