use std::path::PathBuf;

use modelyard_storage::StoreError;

/// Why the data directory could not do what it was asked. Every failure is named; none is text
/// made up on the way, so the server and the runner decide what their callers hear.
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    /// A name from the database or a request that cannot name stored content (empty, `..`, a
    /// slash, or not the digest it should be): nothing is touched.
    #[error("{what} {name:?} does not name stored content")]
    BadName { what: &'static str, name: String },
    /// The file system refused.
    #[error("could not {op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Whether the content is still used could not be read: it is kept.
    #[error("could not check whether stored content is still used: {0}")]
    Store(#[from] StoreError),
    /// The object store refused, or could not be reached.
    #[error("object store: {0}")]
    Remote(#[from] object_store::Error),
    /// Stored content that should be there is not (a tree's manifest, weights, a blob).
    #[error("{what} {name:?} is not stored")]
    Missing { what: &'static str, name: String },
    /// A tree's manifest does not parse.
    #[error("the manifest of tree {digest} does not parse: {source}")]
    Manifest {
        digest: String,
        #[source]
        source: serde_json::Error,
    },
    /// `--blob-store` is not an object store this build speaks.
    #[error("blob store {0:?}: {1}")]
    Config(String, String),
    /// A blocking file task did not finish (it panicked, or the runtime stops).
    #[error("a file task stopped: {0}")]
    Task(#[from] tokio::task::JoinError),
}

pub type Result<T, E = BlobError> = std::result::Result<T, E>;

/// Names the operation and path of an I/O error.
pub(crate) fn io(
    op: &'static str,
    path: impl Into<PathBuf>,
) -> impl FnOnce(std::io::Error) -> BlobError {
    let path = path.into();
    move |source| BlobError::Io { op, path, source }
}
