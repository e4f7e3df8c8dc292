use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use std::time::{Duration, Instant};

use modelyard_blobs::{Blobs, Layout};
use modelyard_domain::Caller;
use modelyard_runner::sandbox::Sandbox;
use modelyard_runner::{Live, Runner};
use modelyard_storage::{Store, StoreError};
use sha2::{Digest, Sha256};

use crate::Config;

/// Compiled input validators, by version id and schema name (`Input`, `TrainingInput`).
pub type Validators = HashMap<(String, &'static str), Arc<jsonschema::Validator>>;

/// What every handler shares: one allocation, so a handler's copy is one reference count
/// (axum clones the state for every extractor of every request).
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl std::ops::Deref for AppState {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}

pub struct Shared {
    pub store: Arc<dyn Store>,
    pub config: Arc<Config>,
    /// The base of absolute URLs, without a trailing slash.
    pub public_url: Arc<str>,
    /// The data directory, shared with the runner: where things live, content stored by
    /// digest, and the lock under which pushes, trainings and deletions place and remove it.
    pub blobs: Arc<Blobs>,
    /// Compiled input validators, by version id and schema name.
    pub validators: Arc<Mutex<Validators>>,
    /// Runs queued jobs; absent on an API-only node.
    pub runner: Option<Runner>,
    /// Jobs' events, ends and cancels, wherever they run: what server-sent events and
    /// `Prefer: wait` follow, on every node.
    pub live: Arc<Live>,
    /// Where pushed code runs (the schema reader here, model servers in the runner).
    pub sandbox: Arc<Sandbox>,
    /// The server's persistent key: capability URLs (streams) are derived from it.
    pub key: Arc<str>,
    /// Callers by token hash, for a moment: a token lookup is two queries on every request.
    callers: Arc<Mutex<HashMap<String, (Caller, Instant)>>>,
    /// Failed web sign-ins, per account and per address.
    pub(crate) sign_in: Arc<crate::throttle::Throttle>,
}

/// How long a token lookup is reused. A token revoked, or a membership changed, through any
/// node takes effect at once (every node's cache is cleared); through `modelyard admin`, within
/// this.
const CALLER_TTL: Duration = Duration::from_secs(1);

/// The notice topic on which a node tells the others to forget remembered token lookups.
const CALLERS_TOPIC: &str = "callers";

impl AppState {
    pub fn new(
        store: Arc<dyn Store>,
        blobs: Arc<Blobs>,
        config: Config,
        public_url: String,
        key: String,
        sandbox: Arc<Sandbox>,
    ) -> Self {
        AppState(Arc::new(Shared {
            sandbox,
            live: Live::new(store.clone()),
            store,
            public_url: public_url.trim_end_matches('/').into(),
            config: Arc::new(config),
            blobs,
            validators: Default::default(),
            runner: None,
            key: key.into(),
            callers: Default::default(),
            sign_in: Default::default(),
        }))
    }

    /// Gives the state its runner; only while nothing else holds the state (at start).
    pub fn set_runner(&mut self, runner: Runner) {
        Arc::get_mut(&mut self.0)
            .expect("the runner is set before the state is shared")
            .runner = Some(runner);
    }

    /// The caller behind a token hash, from the store or a lookup made within the last second.
    pub async fn caller(&self, token_hash: &str) -> Result<Option<Caller>, StoreError> {
        if let Some((c, at)) = self
            .callers
            .lock()
            .ok()
            .and_then(|m| m.get(token_hash).cloned())
        {
            if at.elapsed() < CALLER_TTL {
                return Ok(Some(c));
            }
        }
        let found = self.store.caller_by_token(token_hash).await?;
        if let (Some(c), Ok(mut m)) = (&found, self.callers.lock()) {
            if m.len() > 10_000 {
                m.clear();
            }
            m.insert(token_hash.to_string(), (c.clone(), Instant::now()));
        }
        Ok(found)
    }

    /// Whether jobs' events reach this node: it runs jobs, or other servers on the database may
    /// (on SQLite without a runner, a queued job waits for a server that runs them).
    pub fn follows_jobs(&self) -> bool {
        self.runner.is_some() || self.store.notifies_other_processes()
    }

    /// Forgets every remembered token lookup (a token was revoked, a membership changed), here
    /// and, through the database's notices, on every other node of a cluster.
    pub async fn forget_callers(&self) {
        self.forget_callers_here();
        if self.store.notifies_other_processes() {
            if let Err(e) = self.store.notify(CALLERS_TOPIC, "").await {
                // The other nodes' lookups still lapse within CALLER_TTL.
                tracing::warn!(error = %e, "could not tell the other nodes to forget callers");
            }
        }
    }

    fn forget_callers_here(&self) {
        if let Ok(mut m) = self.callers.lock() {
            m.clear();
        }
    }

    /// Forgets remembered token lookups whenever another node changes tokens or memberships
    /// (or its notices may have been missed). Only where notices cross processes.
    pub fn follow_caller_changes(&self) {
        if !self.store.notifies_other_processes() {
            return;
        }
        let state = self.clone();
        tokio::spawn(async move {
            let mut listener = match state.store.listen(&[CALLERS_TOPIC]).await {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot hear other nodes' token changes");
                    return;
                }
            };
            while listener.recv().await.is_some() {
                state.forget_callers_here();
            }
        });
    }

    /// Where stored project trees live (tests look there).
    pub fn artifacts_dir(&self) -> PathBuf {
        self.blobs.layout().artifacts()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.public_url)
    }

    /// A capability for `purpose` on `id`: whoever holds the URL may read it, nobody can guess it.
    pub fn capability(&self, purpose: &str, id: &str) -> String {
        let mut h = Sha256::new();
        h.update(self.key.as_bytes());
        h.update(b"\0");
        h.update(purpose.as_bytes());
        h.update(b"\0");
        h.update(id.as_bytes());
        hex::encode(&h.finalize()[..16])
    }
}

/// The key in the data dir, made on first start and readable only by its owner.
pub fn server_key(layout: &Layout) -> Result<String, crate::StartError> {
    let path = layout.server_key();
    if let Ok(k) = std::fs::read_to_string(&path) {
        if k.trim().len() >= 32 {
            return Ok(k.trim().to_string());
        }
    }
    let mut bytes = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut bytes);
    let key = hex::encode(bytes);
    if let Err(source) = std::fs::write(&path, &key) {
        return Err(crate::StartError::Key { path, source });
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600));
    }
    Ok(key)
}
