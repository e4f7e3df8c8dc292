use modelyard_domain::*;
use sqlx::Row;

use super::{now, SqlStore};
use crate::rows;
use crate::{Result, StoreError};

impl SqlStore {
    pub(super) async fn create_account_(
        &self,
        kind: AccountKind,
        username: &str,
        name: &str,
    ) -> Result<Account> {
        let row = sqlx::query(
            "INSERT INTO accounts (kind, username, name, created_at) VALUES ($1, $2, $3, $4) \
             RETURNING id, kind, username, name, created_at",
        )
        .bind(kind.as_str())
        .bind(username)
        .bind(name)
        .bind(now())
        .fetch_one(&self.writer)
        .await
        .map_err(|e| match StoreError::from(e) {
            StoreError::Conflict(_) => {
                StoreError::Conflict(format!("the account name {username:?} is taken"))
            }
            e => e,
        })?;
        rows::account(&row)
    }

    pub(super) async fn account_(&self, username: &str) -> Result<Option<Account>> {
        sqlx::query("SELECT id, kind, username, name, created_at FROM accounts WHERE username = $1")
            .bind(username)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(rows::account)
            .transpose()
    }

    pub(super) async fn add_member_(&self, org_id: i64, user_id: i64) -> Result<()> {
        sqlx::query(
            "INSERT INTO memberships (org_id, user_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        )
        .bind(org_id)
        .bind(user_id)
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    pub(super) async fn members_(&self, org_id: i64) -> Result<Vec<Account>> {
        sqlx::query(
            "SELECT a.id, a.kind, a.username, a.name, a.created_at FROM accounts a \
             JOIN memberships m ON m.user_id = a.id WHERE m.org_id = $1 ORDER BY a.username",
        )
        .bind(org_id)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(rows::account)
        .collect()
    }

    pub(super) async fn add_token_(&self, account_id: i64, token_hash: &str) -> Result<()> {
        sqlx::query("INSERT INTO tokens (hash, account_id, created_at) VALUES ($1, $2, $3)")
            .bind(token_hash)
            .bind(account_id)
            .bind(now())
            .execute(&self.writer)
            .await?;
        Ok(())
    }

    pub(super) async fn caller_by_token_(&self, token_hash: &str) -> Result<Option<Caller>> {
        let row = sqlx::query(
            "SELECT a.id, a.kind, a.username, a.name, a.created_at FROM tokens t \
             JOIN accounts a ON a.id = t.account_id WHERE t.hash = $1",
        )
        .bind(token_hash)
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
}
