//! A Rust client for modelyard's HTTP API, which is Replicate's.
//!
//! ```no_run
//! # async fn run() -> Result<(), modelyard_client::Error> {
//! use modelyard_client::{Client, NewPrediction, Wait};
//! let client = Client::new("http://127.0.0.1:5080", Some("r8_...".into()));
//! let version = client.push("alice", "hello", std::path::Path::new("./hello")).await?;
//! let req = NewPrediction::new(serde_json::json!({"text": "world"})).wait(Wait::Yes);
//! let p = client.predictions().create(&format!("alice/hello:{}", version.id), &req).await?;
//! println!("{}", p.output);
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]

mod error;
mod pack;
mod types;

use std::path::Path;

use reqwest::header::{HeaderValue, CONTENT_TYPE};
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Value};

pub use error::{ApiError, Error, Result};
pub use pack::{pack_dir, pack_into, packed_size, SKIPPED};
pub use types::*;

/// A client for one server, with or without a token. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    /// The base URL without `/v1` and without a trailing slash.
    base: String,
    token: Option<String>,
}

impl Client {
    /// `base_url` is the server's address without `/v1` (a trailing `/v1` is dropped), e.g.
    /// `http://127.0.0.1:5080`. A URL that cannot be parsed makes every request fail.
    pub fn new(base_url: &str, token: Option<String>) -> Client {
        let http = reqwest::Client::builder()
            .user_agent(concat!("modelyard-client/", env!("CARGO_PKG_VERSION")))
            .build()
            .unwrap_or_default();
        Client::with_http(http, base_url, token)
    }

    /// The same, with a reqwest client of your own (timeouts, proxies...).
    pub fn with_http(http: reqwest::Client, base_url: &str, token: Option<String>) -> Client {
        let mut base = base_url.trim().trim_end_matches('/').to_string();
        if let Some(stripped) = base.strip_suffix("/v1") {
            base = stripped.to_string();
        }
        Client {
            http,
            base,
            token: token.filter(|t| !t.is_empty()),
        }
    }

    /// The base URL, without `/v1`.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    pub fn has_token(&self) -> bool {
        self.token.is_some()
    }

    /// `{base}/v1/{segments...}`, each segment percent-encoded.
    fn url(&self, segments: &[&str]) -> Result<url::Url> {
        let mut u = url::Url::parse(&self.base).map_err(|e| {
            Error::Invalid(format!("the server URL {:?} is not valid: {e}", self.base))
        })?;
        if u.cannot_be_a_base() {
            return Err(Error::Invalid(format!(
                "the server URL {:?} is not valid",
                self.base
            )));
        }
        u.set_query(None);
        u.set_fragment(None);
        {
            let mut path = u.path_segments_mut().expect("checked above");
            path.pop_if_empty().push("v1");
            for s in segments {
                path.push(s);
            }
        }
        Ok(u)
    }

    fn request(&self, method: Method, url: url::Url) -> RequestBuilder {
        let req = self.http.request(method, url);
        match &self.token {
            Some(t) => req.bearer_auth(t),
            None => req,
        }
    }

    /// Sends the request; a non-2xx answer becomes [`Error::Api`].
    async fn send(&self, req: RequestBuilder) -> Result<Response> {
        let resp = req.send().await?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let body = resp.text().await.unwrap_or_default();
        Err(Error::Api(Box::new(ApiError::from_body(
            status.as_u16(),
            status.canonical_reason(),
            &body,
        ))))
    }

    async fn read<T: DeserializeOwned>(resp: Response) -> Result<T> {
        let bytes = resp.bytes().await?;
        serde_json::from_slice(&bytes).map_err(|e| Error::Decode {
            message: e.to_string(),
            body: String::from_utf8_lossy(&bytes[..bytes.len().min(2000)]).into_owned(),
        })
    }

    async fn get_json<T: DeserializeOwned>(&self, segments: &[&str]) -> Result<T> {
        let url = self.url(segments)?;
        Self::read(self.send(self.request(Method::GET, url)).await?).await
    }

    async fn send_json<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        method: Method,
        segments: &[&str],
        body: &B,
    ) -> Result<T> {
        let url = self.url(segments)?;
        Self::read(self.send(self.request(method, url).json(body)).await?).await
    }

    async fn delete_at(&self, segments: &[&str]) -> Result<()> {
        let url = self.url(segments)?;
        self.send(self.request(Method::DELETE, url)).await?;
        Ok(())
    }

    /// DELETE with `?purge=true`: for good at once, whether the item is live or in the trash.
    async fn purge_at(&self, segments: &[&str]) -> Result<()> {
        let mut url = self.url(segments)?;
        url.set_query(Some("purge=true"));
        self.send(self.request(Method::DELETE, url)).await?;
        Ok(())
    }

    async fn delete_preview_at(&self, segments: &[&str]) -> Result<DeletionPreview> {
        let mut url = self.url(segments)?;
        url.set_query(Some("dry_run=true"));
        match self.send(self.request(Method::DELETE, url)).await {
            Ok(resp) => Self::read(resp).await,
            // A server that answers a preview with the refusal itself still told us the blockers.
            Err(Error::Api(e)) if e.status == 409 && !e.blockers.is_empty() => {
                Ok(DeletionPreview {
                    deletable: false,
                    blockers: e.blockers,
                    frees_bytes: None,
                })
            }
            Err(e) => Err(e),
        }
    }

    /// GETs a page by its absolute URL (a `next` or `previous` link), exactly as given.
    pub async fn page<T: DeserializeOwned>(&self, url: &str) -> Result<Page<T>> {
        let url = match url::Url::parse(url) {
            Ok(u) => u,
            // Be forgiving with a relative link: resolve it against the server.
            Err(_) => url::Url::parse(&format!("{}/", self.base))
                .and_then(|b| b.join(url))
                .map_err(|e| Error::Invalid(format!("the page link {url:?} is not valid: {e}")))?,
        };
        Self::read(self.send(self.request(Method::GET, url)).await?).await
    }

    /// The page after `page`, if there is one.
    pub async fn next_page<T: DeserializeOwned>(&self, page: &Page<T>) -> Result<Option<Page<T>>> {
        match &page.next {
            Some(next) => Ok(Some(self.page(next).await?)),
            None => Ok(None),
        }
    }

    /// Every result from `first` on, following `next` links to the end.
    pub async fn all<T: DeserializeOwned>(&self, first: Page<T>) -> Result<Vec<T>> {
        let mut out = first.results;
        let mut next = first.next;
        let mut seen = std::collections::HashSet::new();
        while let Some(url) = next {
            if !seen.insert(url.clone()) {
                break; // A server that links a page to itself must not loop us forever.
            }
            let page: Page<T> = self.page(&url).await?;
            out.extend(page.results);
            next = page.next;
        }
        Ok(out)
    }

    /// `GET /v1/account`: the token's account.
    pub async fn account(&self) -> Result<Account> {
        self.get_json(&["account"]).await
    }

    /// `GET /v1/hardware`.
    pub async fn hardware(&self) -> Result<Vec<Hardware>> {
        self.get_json(&["hardware"]).await
    }

    /// `GET /v1/audit-log` (modelyard's extension): deletions and refusals on the accounts the
    /// token acts for, newest first.
    pub async fn audit_log(&self) -> Result<Page<AuditEvent>> {
        self.get_json(&["audit-log"]).await
    }

    /// `GET /v1/trash` (modelyard's extension): the trashes of the accounts the token acts
    /// for, or only `owner`'s.
    pub async fn trash(&self, owner: Option<&str>) -> Result<Page<TrashItem>> {
        let mut url = self.url(&["trash"])?;
        if let Some(o) = owner {
            url.query_pairs_mut().append_pair("owner", o);
        }
        Self::read(self.send(self.request(Method::GET, url)).await?).await
    }

    /// `GET /v1/account/storage` (modelyard's extension).
    pub async fn storage(&self) -> Result<AccountStorage> {
        self.get_json(&["account", "storage"]).await
    }

    pub fn models(&self) -> Models<'_> {
        Models { c: self }
    }

    pub fn versions(&self) -> Versions<'_> {
        Versions { c: self }
    }

    pub fn predictions(&self) -> Predictions<'_> {
        Predictions { c: self }
    }

    pub fn trainings(&self) -> Trainings<'_> {
        Trainings { c: self }
    }

    pub fn deployments(&self) -> Deployments<'_> {
        Deployments { c: self }
    }

    /// Packs `dir` (see [`pack_dir`]) and pushes it as a new version of `owner/name`. Pushing
    /// content identical to an existing version returns that version.
    pub async fn push(&self, owner: &str, name: &str, dir: &Path) -> Result<Version> {
        self.versions().push(owner, name, dir).await
    }

    /// Pushes an already packed project (a gzip'd tar). Returns the version and whether it is
    /// new (201) rather than an existing identical one (200).
    pub async fn push_archive(
        &self,
        owner: &str,
        name: &str,
        archive: Vec<u8>,
    ) -> Result<(Version, bool)> {
        self.versions().push_archive(owner, name, archive).await
    }
}

/// Splits "owner/name".
pub fn split_model(s: &str) -> Option<(&str, &str)> {
    let (owner, name) = s.split_once('/')?;
    (!owner.is_empty() && !name.is_empty() && !name.contains('/')).then_some((owner, name))
}

/// Splits "owner/name:version".
pub fn split_version(s: &str) -> Option<(&str, &str, &str)> {
    let (model, id) = s.split_once(':')?;
    let (owner, name) = split_model(model)?;
    (!id.is_empty()).then_some((owner, name, id))
}

pub struct Models<'a> {
    c: &'a Client,
}

impl Models<'_> {
    /// `POST /v1/models`.
    pub async fn create(&self, m: &NewModel) -> Result<Model> {
        self.c.send_json(Method::POST, &["models"], m).await
    }

    /// `GET /v1/models/{owner}/{name}`.
    pub async fn get(&self, owner: &str, name: &str) -> Result<Model> {
        self.c.get_json(&["models", owner, name]).await
    }

    /// `GET /v1/models`: the first page of the models the token may see.
    pub async fn list(&self) -> Result<Page<Model>> {
        self.c.get_json(&["models"]).await
    }

    /// Every model the token may see.
    pub async fn list_all(&self) -> Result<Vec<Model>> {
        self.c.all(self.list().await?).await
    }

    /// `QUERY /v1/models` with the query as text: models matching it in name, owner or
    /// description.
    pub async fn search(&self, query: &str) -> Result<Page<Model>> {
        let url = self.c.url(&["models"])?;
        let method = Method::from_bytes(b"QUERY").expect("a valid method name");
        let req = self
            .c
            .request(method, url)
            .header(CONTENT_TYPE, HeaderValue::from_static("text/plain"))
            .body(query.to_string());
        Client::read(self.c.send(req).await?).await
    }

    /// `PATCH /v1/models/{owner}/{name}`.
    pub async fn update(&self, owner: &str, name: &str, u: &ModelUpdate) -> Result<Model> {
        self.c
            .send_json(Method::PATCH, &["models", owner, name], u)
            .await
    }

    /// `DELETE /v1/models/{owner}/{name}`. A refusal is an [`Error::Api`] (409) whose
    /// `blockers` say everything that stands in the way.
    pub async fn delete(&self, owner: &str, name: &str) -> Result<()> {
        self.c.delete_at(&["models", owner, name]).await
    }

    /// `DELETE /v1/models/{owner}/{name}?dry_run=true`: would the deletion go through?
    pub async fn delete_preview(&self, owner: &str, name: &str) -> Result<DeletionPreview> {
        self.c.delete_preview_at(&["models", owner, name]).await
    }

    /// `DELETE /v1/models/{owner}/{name}?purge=true`: for good at once, live or in the trash.
    pub async fn purge(&self, owner: &str, name: &str) -> Result<()> {
        self.c.purge_at(&["models", owner, name]).await
    }

    /// `POST /v1/models/{owner}/{name}/restore`: back from the trash (its versions stay there).
    pub async fn restore(&self, owner: &str, name: &str) -> Result<Model> {
        self.c
            .send_json(
                Method::POST,
                &["models", owner, name, "restore"],
                &json!({}),
            )
            .await
    }
}

pub struct Versions<'a> {
    c: &'a Client,
}

impl Versions<'_> {
    /// `GET /v1/models/{owner}/{name}/versions`, newest first.
    pub async fn list(&self, owner: &str, name: &str) -> Result<Page<Version>> {
        self.c.get_json(&["models", owner, name, "versions"]).await
    }

    pub async fn list_all(&self, owner: &str, name: &str) -> Result<Vec<Version>> {
        self.c.all(self.list(owner, name).await?).await
    }

    /// `GET /v1/models/{owner}/{name}/versions/{id}`.
    pub async fn get(&self, owner: &str, name: &str, id: &str) -> Result<Version> {
        self.c
            .get_json(&["models", owner, name, "versions", id])
            .await
    }

    /// `DELETE /v1/models/{owner}/{name}/versions/{id}`; a refusal carries its blockers.
    pub async fn delete(&self, owner: &str, name: &str, id: &str) -> Result<()> {
        self.c
            .delete_at(&["models", owner, name, "versions", id])
            .await
    }

    pub async fn delete_preview(
        &self,
        owner: &str,
        name: &str,
        id: &str,
    ) -> Result<DeletionPreview> {
        self.c
            .delete_preview_at(&["models", owner, name, "versions", id])
            .await
    }

    /// `DELETE .../versions/{id}?purge=true`: for good at once, live or in the trash.
    pub async fn purge(&self, owner: &str, name: &str, id: &str) -> Result<()> {
        self.c
            .purge_at(&["models", owner, name, "versions", id])
            .await
    }

    /// `POST .../versions/{id}/restore`: back from the trash, with its predictions. Refused
    /// (409, `model_in_trash`) while its model is in the trash.
    pub async fn restore(&self, owner: &str, name: &str, id: &str) -> Result<Version> {
        self.c
            .send_json(
                Method::POST,
                &["models", owner, name, "versions", id, "restore"],
                &json!({}),
            )
            .await
    }

    /// `POST .../versions/prune`: deletes every version the rules let go but the `keep`
    /// newest (with `dry_run`, only says which).
    pub async fn prune(&self, owner: &str, name: &str, req: &PruneRequest) -> Result<PruneResult> {
        self.c
            .send_json(
                Method::POST,
                &["models", owner, name, "versions", "prune"],
                req,
            )
            .await
    }

    /// Packs `dir` and pushes it: see [`Client::push`].
    pub async fn push(&self, owner: &str, name: &str, dir: &Path) -> Result<Version> {
        Ok(self.push_streaming(owner, name, dir, None).await?.0)
    }

    /// Packs `dir` while it is sent: nothing the size of the project is held in memory or on
    /// disk. `progress`, if given, hears (bytes of the tar stream packed so far, about how many
    /// there are in all) as the upload goes. Answers the version and whether it is new.
    pub async fn push_streaming(
        &self,
        owner: &str,
        name: &str,
        dir: &Path,
        progress: Option<Progress>,
    ) -> Result<(Version, bool)> {
        let shown = dir.display().to_string();
        let pack_err = |source: std::io::Error| Error::Pack {
            path: shown.clone(),
            source,
        };
        let total = {
            let d = dir.to_path_buf();
            tokio::task::spawn_blocking(move || packed_size(&d))
                .await
                .map_err(|e| pack_err(std::io::Error::other(e)))?
                .map_err(pack_err)?
        };
        let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Vec<u8>>>(4);
        let d = dir.to_path_buf();
        let packer = tokio::task::spawn_blocking(move || {
            let out = ChannelWriter {
                tx: tx.clone(),
                buf: Vec::with_capacity(CHUNK),
            };
            let packed = pack_into(&d, out, |n| {
                if let Some(p) = &progress {
                    p(n, total);
                }
            })
            .and_then(ChannelWriter::finish);
            if let Err(e) = &packed {
                let _ = tx.blocking_send(Err(std::io::Error::new(e.kind(), e.to_string())));
            }
            packed
        });
        let stream = futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|chunk| (chunk, rx))
        });
        let url = self.c.url(&["models", owner, name, "versions"])?;
        let req = self
            .c
            .request(Method::POST, url)
            .header(CONTENT_TYPE, HeaderValue::from_static("application/gzip"))
            .body(reqwest::Body::wrap_stream(stream));
        let sent = self.c.send(req).await;
        // A packing failure is the reason the upload broke off: say that, not the broken body.
        match packer.await {
            Ok(Err(e)) if sent.is_err() || e.kind() != std::io::ErrorKind::BrokenPipe => {
                return Err(pack_err(e))
            }
            Err(e) => return Err(pack_err(std::io::Error::other(e))),
            _ => {}
        }
        let resp = sent?;
        let created = resp.status() == StatusCode::CREATED;
        Ok((Client::read(resp).await?, created))
    }

    /// `POST /v1/models/{owner}/{name}/versions` with a gzip'd tar.
    pub async fn push_archive(
        &self,
        owner: &str,
        name: &str,
        archive: Vec<u8>,
    ) -> Result<(Version, bool)> {
        let url = self.c.url(&["models", owner, name, "versions"])?;
        let req = self
            .c
            .request(Method::POST, url)
            .header(CONTENT_TYPE, HeaderValue::from_static("application/gzip"))
            .body(archive);
        let resp = self.c.send(req).await?;
        let created = resp.status() == StatusCode::CREATED;
        Ok((Client::read(resp).await?, created))
    }
}

/// Hears (bytes packed so far, about how many in all) while a push goes.
pub type Progress = std::sync::Arc<dyn Fn(u64, u64) + Send + Sync>;

/// The size of the pieces a push is sent in: a few of them are in flight at most.
const CHUNK: usize = 256 * 1024;

/// Hands the packed stream to the request, a chunk at a time, waiting while it is sent.
struct ChannelWriter {
    tx: tokio::sync::mpsc::Sender<std::io::Result<Vec<u8>>>,
    buf: Vec<u8>,
}

impl ChannelWriter {
    fn send(&mut self) -> std::io::Result<()> {
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
        self.tx.blocking_send(Ok(chunk)).map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::BrokenPipe,
                "the upload stopped before the project was sent",
            )
        })
    }

    fn finish(mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            self.send()
        }
    }
}

impl std::io::Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            self.send()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn with_version(version: &str, body: &impl Serialize) -> Result<Value> {
    let mut v = serde_json::to_value(body).map_err(|e| Error::Invalid(e.to_string()))?;
    if let Value::Object(o) = &mut v {
        o.insert("version".into(), json!(version));
    }
    Ok(v)
}

fn prediction_headers(mut req: RequestBuilder, p: &NewPrediction) -> RequestBuilder {
    match p.wait {
        Wait::No => {}
        Wait::Yes => req = req.header("Prefer", "wait"),
        Wait::Seconds(n) => req = req.header("Prefer", format!("wait={n}")),
    }
    if let Some(c) = &p.cancel_after {
        req = req.header("Cancel-After", c.as_str());
    }
    req
}

pub struct Predictions<'a> {
    c: &'a Client,
}

impl Predictions<'_> {
    async fn create_at(
        &self,
        segments: &[&str],
        body: &Value,
        p: &NewPrediction,
    ) -> Result<Prediction> {
        let url = self.c.url(segments)?;
        let req = prediction_headers(self.c.request(Method::POST, url).json(body), p);
        Client::read(self.c.send(req).await?).await
    }

    /// `POST /v1/predictions`. `version` is "owner/name:id", a bare version id, or
    /// "owner/name" for the model's latest version (modelyard accepts all three).
    pub async fn create(&self, version: &str, p: &NewPrediction) -> Result<Prediction> {
        self.create_at(&["predictions"], &with_version(version, p)?, p)
            .await
    }

    /// `POST /v1/models/{owner}/{name}/predictions`: runs the model's latest version.
    pub async fn create_for_model(
        &self,
        owner: &str,
        name: &str,
        p: &NewPrediction,
    ) -> Result<Prediction> {
        let body = serde_json::to_value(p).map_err(|e| Error::Invalid(e.to_string()))?;
        self.create_at(&["models", owner, name, "predictions"], &body, p)
            .await
    }

    /// `POST /v1/deployments/{owner}/{name}/predictions`.
    pub async fn create_for_deployment(
        &self,
        owner: &str,
        name: &str,
        p: &NewPrediction,
    ) -> Result<Prediction> {
        let body = serde_json::to_value(p).map_err(|e| Error::Invalid(e.to_string()))?;
        self.create_at(&["deployments", owner, name, "predictions"], &body, p)
            .await
    }

    /// `GET /v1/predictions/{id}`.
    pub async fn get(&self, id: &str) -> Result<Prediction> {
        self.c.get_json(&["predictions", id]).await
    }

    /// `GET /v1/predictions`: the token's predictions, newest first.
    pub async fn list(&self) -> Result<Page<Prediction>> {
        self.c.get_json(&["predictions"]).await
    }

    pub async fn list_all(&self) -> Result<Vec<Prediction>> {
        self.c.all(self.list().await?).await
    }

    /// `POST /v1/predictions/{id}/cancel`.
    pub async fn cancel(&self, id: &str) -> Result<Prediction> {
        self.c
            .send_json(Method::POST, &["predictions", id, "cancel"], &json!({}))
            .await
    }

    /// Polls every `interval` until the prediction has finished.
    pub async fn wait(&self, id: &str, interval: std::time::Duration) -> Result<Prediction> {
        loop {
            let p = self.get(id).await?;
            if p.is_terminal() {
                return Ok(p);
            }
            tokio::time::sleep(interval).await;
        }
    }
}

pub struct Trainings<'a> {
    c: &'a Client,
}

impl Trainings<'_> {
    /// `POST /v1/models/{owner}/{name}/versions/{version_id}/trainings`: fine-tunes the version
    /// into the `destination` model ("owner/name").
    pub async fn create(
        &self,
        owner: &str,
        name: &str,
        version_id: &str,
        destination: &str,
        input: Value,
    ) -> Result<Training> {
        let t = NewTraining {
            destination: destination.into(),
            input,
            ..Default::default()
        };
        self.create_with(owner, name, version_id, &t).await
    }

    /// The same, with webhooks.
    pub async fn create_with(
        &self,
        owner: &str,
        name: &str,
        version_id: &str,
        t: &NewTraining,
    ) -> Result<Training> {
        self.c
            .send_json(
                Method::POST,
                &["models", owner, name, "versions", version_id, "trainings"],
                t,
            )
            .await
    }

    /// `GET /v1/trainings/{id}`.
    pub async fn get(&self, id: &str) -> Result<Training> {
        self.c.get_json(&["trainings", id]).await
    }

    /// `GET /v1/trainings`.
    pub async fn list(&self) -> Result<Page<Training>> {
        self.c.get_json(&["trainings"]).await
    }

    pub async fn list_all(&self) -> Result<Vec<Training>> {
        self.c.all(self.list().await?).await
    }

    /// `POST /v1/trainings/{id}/cancel`.
    pub async fn cancel(&self, id: &str) -> Result<Training> {
        self.c
            .send_json(Method::POST, &["trainings", id, "cancel"], &json!({}))
            .await
    }

    /// Polls every `interval` until the training has finished.
    pub async fn wait(&self, id: &str, interval: std::time::Duration) -> Result<Training> {
        loop {
            let t = self.get(id).await?;
            if t.is_terminal() {
                return Ok(t);
            }
            tokio::time::sleep(interval).await;
        }
    }
}

pub struct Deployments<'a> {
    c: &'a Client,
}

impl Deployments<'_> {
    /// `POST /v1/deployments`: a deployment of the token's account.
    pub async fn create(&self, d: &NewDeployment) -> Result<Deployment> {
        self.c.send_json(Method::POST, &["deployments"], d).await
    }

    /// `GET /v1/deployments/{owner}/{name}`.
    pub async fn get(&self, owner: &str, name: &str) -> Result<Deployment> {
        self.c.get_json(&["deployments", owner, name]).await
    }

    /// `GET /v1/deployments`.
    pub async fn list(&self) -> Result<Page<Deployment>> {
        self.c.get_json(&["deployments"]).await
    }

    pub async fn list_all(&self) -> Result<Vec<Deployment>> {
        self.c.all(self.list().await?).await
    }

    /// `PATCH /v1/deployments/{owner}/{name}`: a new release with the changes.
    pub async fn update(
        &self,
        owner: &str,
        name: &str,
        u: &DeploymentUpdate,
    ) -> Result<Deployment> {
        self.c
            .send_json(Method::PATCH, &["deployments", owner, name], u)
            .await
    }

    /// `DELETE /v1/deployments/{owner}/{name}`; a refusal carries its blockers.
    pub async fn delete(&self, owner: &str, name: &str) -> Result<()> {
        self.c.delete_at(&["deployments", owner, name]).await
    }

    pub async fn delete_preview(&self, owner: &str, name: &str) -> Result<DeletionPreview> {
        self.c
            .delete_preview_at(&["deployments", owner, name])
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_built_under_v1_and_encoded() {
        for base in [
            "http://h:1",
            "http://h:1/",
            "http://h:1/v1",
            "http://h:1/v1/",
        ] {
            let c = Client::new(base, None);
            assert_eq!(
                c.url(&["models", "a", "b"]).unwrap().as_str(),
                "http://h:1/v1/models/a/b"
            );
        }
        let c = Client::new("http://h/prefix", None);
        assert_eq!(
            c.url(&["models", "a b", "c/d"]).unwrap().as_str(),
            "http://h/prefix/v1/models/a%20b/c%2Fd"
        );
        assert!(matches!(
            Client::new("not a url", None).url(&["x"]),
            Err(Error::Invalid(_))
        ));
    }

    #[test]
    fn splits_names() {
        assert_eq!(split_model("a/b"), Some(("a", "b")));
        assert_eq!(split_model("a/b/c"), None);
        assert_eq!(split_model("/b"), None);
        assert_eq!(split_version("a/b:123"), Some(("a", "b", "123")));
        assert_eq!(split_version("a/b"), None);
        assert_eq!(split_version("a/b:"), None);
    }

    #[test]
    fn prediction_bodies() {
        let p = NewPrediction::new(json!({"x": 1})).wait(Wait::Yes);
        assert_eq!(
            with_version("a/b:v", &p).unwrap(),
            json!({"input": {"x": 1}, "version": "a/b:v"})
        );
    }
}
