//! What the web UI needs beyond the API: passwords, sessions, token names and a few listings.
use chrono::{DateTime, Utc};
use modelyard_domain::rules::{member_removal_blockers, MembershipFacts};
use modelyard_domain::*;
use sqlx::Row;

use super::{ids_or_none, now, SqlStore};
use crate::rows::{self, placeholders, JOB_SELECT, MODEL_SELECT};
use crate::store::MemberRemoval;
use crate::{Result, StoreError};

impl SqlStore {
    pub(super) async fn set_password_hash_(
        &self,
        account_id: i64,
        hash: Option<&str>,
    ) -> Result<()> {
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

    pub(super) async fn password_hash_(
        &self,
        username: &str,
    ) -> Result<Option<(Account, Option<String>)>> {
        let row = sqlx::query(
            "SELECT id, kind, username, name, created_at, password_hash FROM accounts WHERE username = $1",
        )
        .bind(username)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        Ok(Some((rows::account(&row)?, row.try_get("password_hash")?)))
    }

    pub(super) async fn create_session_(
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

    pub(super) async fn session_caller_(
        &self,
        hash: &str,
        at: DateTime<Utc>,
    ) -> Result<Option<Caller>> {
        let row = sqlx::query(
            "SELECT a.id, a.kind, a.username, a.name, a.created_at FROM web_sessions s \
             JOIN accounts a ON a.id = s.account_id WHERE s.hash = $1 AND s.expires_at > $2",
        )
        .bind(hash)
        .bind(rows::micros(at))
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let account = rows::account(&row)?;
        let org_ids = sqlx::query("SELECT org_id FROM memberships WHERE user_id = $1")
            .bind(account.id)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|r| r.try_get::<i64, _>("org_id"))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Some(Caller { account, org_ids }))
    }

    pub(super) async fn delete_session_(&self, hash: &str) -> Result<()> {
        sqlx::query("DELETE FROM web_sessions WHERE hash = $1")
            .bind(hash)
            .execute(&self.writer)
            .await?;
        Ok(())
    }

    pub(super) async fn models_owned_by_(
        &self,
        owner_ids: &[i64],
        limit: i64,
    ) -> Result<Vec<Model>> {
        let owners = ids_or_none(owner_ids);
        let sql = format!(
            "{MODEL_SELECT} WHERE m.owner_id IN ({}) ORDER BY m.id DESC LIMIT $1",
            placeholders(2, owners.len())
        );
        let mut q = sqlx::query(&sql).bind(limit);
        for id in owners {
            q = q.bind(id);
        }
        q.fetch_all(&self.pool)
            .await?
            .iter()
            .map(rows::model)
            .collect()
    }

    pub(super) async fn model_jobs_(
        &self,
        model_id: i64,
        account_id: i64,
        limit: i64,
    ) -> Result<Vec<Job>> {
        sqlx::query(&format!(
            "{JOB_SELECT} WHERE v.model_id = $1 AND j.account_id = $2 AND j.kind = 'prediction' \
             ORDER BY j.seq DESC LIMIT $3"
        ))
        .bind(model_id)
        .bind(account_id)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(rows::job)
        .collect()
    }

    pub(super) async fn version_prediction_count_(&self, version_id: &str) -> Result<i64> {
        let n: Option<i64> = sqlx::query_scalar(
            "SELECT CAST(SUM(count) AS BIGINT) FROM version_runs WHERE version_id = $1",
        )
        .bind(version_id)
        .fetch_one(&self.pool)
        .await?;
        Ok(n.unwrap_or(0))
    }

    pub(super) async fn accounts_by_ids_(&self, ids: &[i64]) -> Result<Vec<Account>> {
        let ids = ids_or_none(ids);
        let sql = format!(
            "SELECT id, kind, username, name, created_at FROM accounts WHERE id IN ({}) ORDER BY username",
            placeholders(1, ids.len())
        );
        let mut q = sqlx::query(&sql);
        for id in ids {
            q = q.bind(id);
        }
        q.fetch_all(&self.pool)
            .await?
            .iter()
            .map(rows::account)
            .collect()
    }

    pub(super) async fn tokens_(
        &self,
        account_id: i64,
    ) -> Result<Vec<(String, Option<String>, DateTime<Utc>)>> {
        sqlx::query("SELECT hash, name, created_at FROM tokens WHERE account_id = $1 ORDER BY created_at DESC, hash")
            .bind(account_id)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|r| Ok((r.try_get("hash")?, r.try_get("name")?, rows::time(r.try_get("created_at")?))))
            .collect()
    }

    pub(super) async fn add_named_token_(
        &self,
        account_id: i64,
        hash: &str,
        name: &str,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO tokens (hash, account_id, created_at, name) VALUES ($1, $2, $3, $4)",
        )
        .bind(hash)
        .bind(account_id)
        .bind(now())
        .bind(name)
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    pub(super) async fn revoke_token_(&self, account_id: i64, hash: &str) -> Result<bool> {
        let done = sqlx::query("DELETE FROM tokens WHERE account_id = $1 AND hash = $2")
            .bind(account_id)
            .bind(hash)
            .execute(&self.writer)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    pub(super) async fn remove_member_(&self, org_id: i64, user_id: i64) -> Result<MemberRemoval> {
        let mut tx = self.begin_write().await?;
        // Lock the organization's row before counting: a second removal waits here and then
        // counts what the first one left (on SQLite, BEGIN IMMEDIATE already serializes them).
        let Some(organization) = sqlx::query_scalar::<_, String>(&format!(
            "SELECT username FROM accounts WHERE id = $1{}",
            self.lock()
        ))
        .bind(org_id)
        .fetch_optional(&mut *tx)
        .await?
        else {
            return Ok(MemberRemoval::NotAMember);
        };
        let member: Option<String> = sqlx::query_scalar(
            "SELECT a.username FROM memberships m JOIN accounts a ON a.id = m.user_id \
             WHERE m.org_id = $1 AND m.user_id = $2",
        )
        .bind(org_id)
        .bind(user_id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(member) = member else {
            return Ok(MemberRemoval::NotAMember);
        };
        let member_count: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM memberships WHERE org_id = $1")
                .bind(org_id)
                .fetch_one(&mut *tx)
                .await?;
        let blockers = member_removal_blockers(&MembershipFacts {
            organization,
            member,
            member_count,
        });
        if !blockers.is_empty() {
            return Ok(MemberRemoval::Refused(blockers));
        }
        sqlx::query("DELETE FROM memberships WHERE org_id = $1 AND user_id = $2")
            .bind(org_id)
            .bind(user_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(MemberRemoval::Removed)
    }
}
