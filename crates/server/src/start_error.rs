//! Why the server could not start, or stopped serving: what `modelyard serve` and `admin`
//! report. The sandbox's errors are still sentences; they are carried as they are.
use std::net::SocketAddr;
use std::path::PathBuf;

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
    /// The sandbox could not be set up (the runner's words).
    Sandbox(String),
    /// Model code cannot be confined on this host; the runner's words name the fix.
    Unconfined(String),
    /// The runner did not start.
    Runner(modelyard_runner::StartError),
    /// Serving failed after it began.
    Serve(std::io::Error),
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
            StartError::Sandbox(m) => f.write_str(m),
            StartError::Runner(e) => write!(f, "{e}"),
            StartError::Unconfined(m) => write!(f, "cannot run model code safely: {m}"),
            StartError::Serve(e) => write!(f, "server error: {e}"),
        }
    }
}

impl std::error::Error for StartError {}
