//! What an operation can answer besides its result. No HTTP here: `crate::error` maps these to
//! problem+json statuses for the API, and `web::error` to pages.
use modelyard_blobs::BlobError;
use modelyard_domain::Blocker;
use modelyard_storage::StoreError;
use serde::Serialize;

/// One field of the input that was refused, and why (the API's `invalid_fields`).
#[derive(Debug, Clone, Serialize)]
pub struct InvalidField {
    #[serde(rename = "type")]
    pub kind: String,
    pub field: String,
    pub description: String,
}

#[derive(Debug)]
pub enum OpError {
    /// Does not exist, or the caller may not see it (the same answer, on purpose).
    NotFound(String),
    /// Visible to the caller, but not theirs to change.
    Forbidden(String),
    /// Refused by the state of things, not by the request: the same request will fail again.
    Conflict(String),
    /// A deletion refused by the rules, with every blocker.
    Blocked {
        detail: String,
        blockers: Vec<Blocker>,
    },
    /// The request's values are wrong; nothing was changed.
    Invalid {
        detail: String,
        fields: Vec<InvalidField>,
    },
    /// Our fault: logged with this context, never shown.
    Internal(String),
}

pub type OpResult<T> = Result<T, OpError>;

impl OpError {
    pub fn invalid(field: &str, description: impl Into<String>) -> Self {
        let description = description.into();
        OpError::Invalid {
            detail: format!("{field}: {description}"),
            fields: vec![InvalidField {
                kind: "invalid".into(),
                field: field.into(),
                description,
            }],
        }
    }

    pub fn internal(context: impl std::fmt::Display) -> Self {
        OpError::Internal(context.to_string())
    }
}

impl From<StoreError> for OpError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(what) => OpError::NotFound(format!("The {what} was not found.")),
            StoreError::Conflict(m) => OpError::Conflict(m),
            // The rules' backstop refused a write: the same answer as any conflict.
            e @ StoreError::ForeignKey => OpError::Conflict(e.to_string()),
            // Logged as an internal error; the client learns nothing of the stored value.
            e @ (StoreError::Corrupt(_) | StoreError::TooLarge(_)) => {
                OpError::Internal(e.to_string())
            }
            StoreError::Internal(m) => OpError::Internal(m),
        }
    }
}

/// Stored content is the server's own business: a failure is logged, the client hears a 500.
impl From<BlobError> for OpError {
    fn from(e: BlobError) -> Self {
        match e {
            BlobError::Store(e) => e.into(),
            e => OpError::Internal(format!("data directory: {e}")),
        }
    }
}
