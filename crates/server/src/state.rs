use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use modelyard_storage::Store;

use crate::Config;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn Store>,
    pub config: Arc<Config>,
    /// The base of absolute URLs, without a trailing slash.
    pub public_url: Arc<str>,
    /// Serializes placing and removing artifact trees, so a push of content that a deletion is
    /// freeing at the same moment can never lose its files.
    pub artifacts: Arc<tokio::sync::Mutex<()>>,
    /// Compiled input validators, by version id and schema name.
    pub validators: Arc<Mutex<HashMap<(String, &'static str), Arc<jsonschema::Validator>>>>,
}

impl AppState {
    pub fn new(store: Arc<dyn Store>, config: Config, public_url: String) -> Self {
        AppState {
            store,
            public_url: public_url.trim_end_matches('/').into(),
            config: Arc::new(config),
            artifacts: Default::default(),
            validators: Default::default(),
        }
    }

    pub fn artifacts_dir(&self) -> PathBuf {
        self.config.data_dir.join("artifacts")
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.public_url)
    }
}
