//! Accounts (users and organizations), memberships, API tokens and webhook signing secrets.
use async_trait::async_trait;
use modelyard_domain::rules::{member_removal_blockers, MembershipFacts};
use modelyard_domain::*;
use sqlx::Row;

use super::{ids_or_none, now, Arg, SqlStore};
use crate::rows::{self, placeholders};
use crate::store::{AccountStore, MemberRemoval, TokenRecord};
use crate::{Result, StoreError};

impl SqlStore {
    /// The caller an account row stands for: the account and the organizations it belongs to.
    /// Every credential (an API token, a web session) resolves through this one lookup.
    pub(super) async fn caller_of(&self, account: Option<Account>) -> Result<Option<Caller>> {
        let Some(account) = account else {
            return Ok(None);
        };
        let org_ids = self
            .read_rows(
                "SELECT org_id FROM memberships WHERE user_id = $1",
                &[Arg::Int(account.id)],
                |r| rows::get(r, "org_id"),
            )
            .await?;
        Ok(Some(Caller { account, org_ids }))
    }
}

#[async_trait]
impl AccountStore for SqlStore {
    async fn create_account(
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

    async fn account(&self, username: &str) -> Result<Option<Account>> {
        sqlx::query("SELECT id, kind, username, name, created_at FROM accounts WHERE username = $1")
            .bind(username)
            .fetch_optional(&mut *self.reader().await?)
            .await?
            .as_ref()
            .map(rows::account)
            .transpose()
    }

    async fn accounts_by_ids(&self, ids: &[i64]) -> Result<Vec<Account>> {
        let ids = ids_or_none(ids);
        let sql = format!(
            "SELECT id, kind, username, name, created_at FROM accounts WHERE id IN ({}) ORDER BY username",
            placeholders(1, ids.len())
        );
        let mut q = sqlx::query(&sql);
        for id in ids {
            q = q.bind(id);
        }
        q.fetch_all(&mut *self.reader().await?)
            .await?
            .iter()
            .map(rows::account)
            .collect()
    }

    async fn add_member(&self, org_id: i64, user_id: i64) -> Result<()> {
        sqlx::query(
            "INSERT INTO memberships (org_id, user_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        )
        .bind(org_id)
        .bind(user_id)
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    async fn members(&self, org_id: i64) -> Result<Vec<Account>> {
        sqlx::query(
            "SELECT a.id, a.kind, a.username, a.name, a.created_at FROM accounts a \
             JOIN memberships m ON m.user_id = a.id WHERE m.org_id = $1 ORDER BY a.username",
        )
        .bind(org_id)
        .fetch_all(&mut *self.reader().await?)
        .await?
        .iter()
        .map(rows::account)
        .collect()
    }

    async fn remove_member(&self, org_id: i64, user_id: i64) -> Result<MemberRemoval> {
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

    async fn add_token(&self, account_id: i64, token_hash: &str) -> Result<()> {
        sqlx::query("INSERT INTO tokens (hash, account_id, created_at) VALUES ($1, $2, $3)")
            .bind(token_hash)
            .bind(account_id)
            .bind(now())
            .execute(&self.writer)
            .await?;
        Ok(())
    }

    async fn add_named_token(&self, account_id: i64, hash: &str, name: &str) -> Result<()> {
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

    async fn tokens(&self, account_id: i64) -> Result<Vec<TokenRecord>> {
        sqlx::query(
            "SELECT hash, name, created_at FROM tokens WHERE account_id = $1 \
             ORDER BY created_at DESC, hash",
        )
        .bind(account_id)
        .fetch_all(&mut *self.reader().await?)
        .await?
        .iter()
        .map(|r| {
            Ok(TokenRecord {
                hash: r.try_get("hash")?,
                name: r.try_get("name")?,
                created_at: rows::time(r.try_get("created_at")?),
            })
        })
        .collect()
    }

    async fn revoke_token(&self, account_id: i64, hash: &str) -> Result<bool> {
        let done = sqlx::query("DELETE FROM tokens WHERE account_id = $1 AND hash = $2")
            .bind(account_id)
            .bind(hash)
            .execute(&self.writer)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn caller_by_token(&self, token_hash: &str) -> Result<Option<Caller>> {
        let account = self
            .read_row(
                "SELECT a.id, a.kind, a.username, a.name, a.created_at FROM tokens t \
                 JOIN accounts a ON a.id = t.account_id WHERE t.hash = $1",
                &[Arg::Text(token_hash)],
                |r| rows::account(r),
            )
            .await?;
        self.caller_of(account).await
    }

    async fn webhook_secret(&self, account_id: i64, candidate: &str) -> Result<String> {
        // Two first uses racing: one insert wins, both read the winner.
        sqlx::query(
            "INSERT INTO webhook_secrets (account_id, secret) VALUES ($1, $2) \
             ON CONFLICT (account_id) DO NOTHING",
        )
        .bind(account_id)
        .bind(candidate)
        .execute(&self.writer)
        .await?;
        let row = sqlx::query("SELECT secret FROM webhook_secrets WHERE account_id = $1")
            .bind(account_id)
            .fetch_one(&mut *self.reader().await?)
            .await?;
        Ok(row.try_get("secret")?)
    }
}
