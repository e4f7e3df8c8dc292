//! Why the server could not start, or stopped serving: what `modelyard serve` and `admin`
//! report.
use std::net::SocketAddr;
use std::path::PathBuf;

use modelyard_runner::sandbox::SandboxError;
use modelyard_storage::StoreError;

#[derive(Debug)]
pub enum StartError {
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The SQLite file could not be made.
    DatabaseFile {
        path: PathBuf,
        source: std::io::Error,
    },
    Database(StoreError),
    /// The server's key could not be written.
    Key {
        path: PathBuf,
        source: std::io::Error,
    },
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    /// The sandbox could not be set up.
    Sandbox(SandboxError),
    /// Model code cannot be confined on this host; the error names the fix.
    Unconfined(SandboxError),
    /// The runner did not start.
    Runner(modelyard_runner::StartError),
    /// Serving failed after it began.
    Serve(std::io::Error),
    /// Options that cannot work together (a cluster node without what a cluster shares, an
    /// unknown hardware name): the sentence names the fix.
    Config(String),
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartError::DataDir { path, source } => write!(
                f,
                "cannot create the data directory {}: {source}",
                path.display()
            ),
            StartError::DatabaseFile { path, source } => {
                write!(f, "cannot create {}: {source}", path.display())
            }
            StartError::Database(e) => write!(f, "cannot open the database: {e}"),
            StartError::Key { path, source } => {
                write!(f, "cannot write {}: {source}", path.display())
            }
            StartError::Listen { addr, source } => write!(f, "cannot listen on {addr}: {source}"),
            StartError::Sandbox(e) => write!(f, "{e}"),
            StartError::Runner(e) => write!(f, "{e}"),
            StartError::Unconfined(m) => write!(f, "cannot run model code safely: {m}"),
            StartError::Serve(e) => write!(f, "server error: {e}"),
            StartError::Config(m) => write!(f, "{m}"),
        }
    }
}

impl std::error::Error for StartError {}
