use thiserror::Error;

/// Storage errors in domain terms; the backend's own error stays inside as text for the log.
#[derive(Debug, Error)]
pub enum StoreError {
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("{0}")]
    Conflict(String),
    #[error("database error: {0}")]
    Internal(String),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        if let sqlx::Error::Database(db) = &e {
            if db.is_unique_violation() {
                return StoreError::Conflict("already exists".into());
            }
            if db.is_foreign_key_violation() {
                return StoreError::Conflict(
                    "a record it refers to is gone, or something still refers to it".into(),
                );
            }
        }
        if let sqlx::Error::RowNotFound = e {
            return StoreError::NotFound("record");
        }
        StoreError::Internal(e.to_string())
    }
}
