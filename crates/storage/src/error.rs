use thiserror::Error;

/// Storage errors in domain terms; the backend's own error stays inside as text for the log.
#[derive(Debug, Error)]
pub enum StoreError {
    #[error("{0} not found")]
    NotFound(&'static str),
    /// A unique key is taken (or a rule refused, with the reason).
    #[error("{0}")]
    Conflict(String),
    /// A foreign key refused the write: the row it refers to is gone, or a row being deleted is
    /// still referred to. The rules' backstop; callers that expect it name what is gone.
    #[error("a record it refers to is gone, or something still refers to it")]
    ForeignKey,
    /// A stored value the code does not know (an enum's text, a JSON column). Never defaulted:
    /// a rule deciding on a guessed value is worse than a refusal.
    #[error("corrupt data in the database: {0}")]
    Corrupt(String),
    #[error("database error: {0}")]
    Internal(String),
    /// A notice longer than the bus carries ([`crate::NOTICE_MAX`] bytes): send a pointer to
    /// the record instead.
    #[error("a notice of {0} bytes is longer than the bus carries")]
    TooLarge(usize),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        if let sqlx::Error::Database(db) = &e {
            // sqlx's `Any` driver keeps the backend's error, so these read SQLite's extended
            // codes (2067/1555, 787) and PostgreSQL's SQLSTATE (23505, 23503).
            if db.is_unique_violation() {
                return StoreError::Conflict("already exists".into());
            }
            if db.is_foreign_key_violation() {
                return StoreError::ForeignKey;
            }
        }
        if let sqlx::Error::RowNotFound = e {
            return StoreError::NotFound("record");
        }
        StoreError::Internal(e.to_string())
    }
}
