//! The bytes in an S3-compatible object store (`--blob-store s3://bucket/prefix`): every key is
//! named here, under the prefix. Files go up and come down as streams (multipart above a part's
//! size), never whole in memory.
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::stream::BoxStream;
use futures_util::{StreamExt, TryStreamExt};
use object_store::aws::AmazonS3Builder;
use object_store::buffered::BufWriter;
use object_store::path::Path as Key;
use object_store::ObjectStore;
use tokio::io::AsyncWriteExt;

use crate::error::{io, BlobError, Result};

/// An object store and the prefix this platform's keys live under.
#[derive(Clone)]
pub(crate) struct Remote {
    store: Arc<dyn ObjectStore>,
    prefix: Key,
}

/// Bytes coming down from the store, with their size.
pub(crate) struct Download {
    pub size: u64,
    pub body: BoxStream<'static, std::io::Result<Bytes>>,
}

impl Remote {
    /// `s3://bucket/prefix`, with the endpoint, region and credentials of the standard AWS
    /// environment variables; an `http://` endpoint (a store on this network) is allowed.
    pub fn from_url(url: &str) -> Result<Remote> {
        let bad = |m: &str| BlobError::Config(url.to_string(), m.to_string());
        let parsed = url::Url::parse(url).map_err(|e| bad(&e.to_string()))?;
        if parsed.scheme() != "s3" {
            return Err(bad("only s3://bucket/prefix is supported"));
        }
        let bucket = parsed
            .host_str()
            .filter(|b| !b.is_empty())
            .ok_or_else(|| bad("no bucket"))?;
        let mut b = AmazonS3Builder::from_env().with_bucket_name(bucket);
        let plain_http = std::env::var("AWS_ENDPOINT_URL")
            .or_else(|_| std::env::var("AWS_ENDPOINT"))
            .is_ok_and(|e| e.starts_with("http://"));
        if plain_http {
            b = b.with_allow_http(true);
        }
        let store = b.build().map_err(|e| bad(&e.to_string()))?;
        Ok(Remote {
            store: Arc::new(store),
            prefix: Key::from(parsed.path().trim_matches('/')),
        })
    }

    /// `parts` joined under the prefix; each is one path component (checked by the caller).
    pub fn key(&self, parts: &[&str]) -> Key {
        parts.iter().fold(self.prefix.clone(), |k, p| k.child(*p))
    }

    pub async fn exists(&self, key: &Key) -> Result<bool> {
        match self.store.head(key).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Uploads the file at `file` as `key`, streamed; the object appears only whole.
    pub async fn put_file(&self, key: &Key, file: &Path) -> Result<u64> {
        let mut f = tokio::fs::File::open(file)
            .await
            .map_err(io("read", file))?;
        // A part is 10 MiB: an upload holds at most a few of them, whatever the file's size.
        let mut w = BufWriter::new(self.store.clone(), key.clone()).with_max_concurrency(2);
        let copied = tokio::io::copy(&mut f, &mut w).await;
        let n = match copied {
            Ok(n) => n,
            Err(e) => {
                let _ = w.abort().await;
                return Err(io("upload", file)(e));
            }
        };
        w.shutdown().await.map_err(io("upload", file))?;
        Ok(n)
    }

    pub async fn put_bytes(&self, key: &Key, bytes: Vec<u8>) -> Result<()> {
        self.store.put(key, bytes.into()).await?;
        Ok(())
    }

    pub async fn get_bytes(&self, key: &Key) -> Result<Option<Bytes>> {
        match self.store.get(key).await {
            Ok(r) => Ok(Some(r.bytes().await?)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// The object's bytes as they arrive, or `None` when it is not stored.
    pub async fn get(&self, key: &Key) -> Result<Option<Download>> {
        match self.store.get(key).await {
            Ok(r) => Ok(Some(Download {
                size: r.meta.size,
                body: r.into_stream().map_err(std::io::Error::other).boxed(),
            })),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Writes the object to a new file at `dest`, streamed. `false` when it is not stored.
    pub async fn get_to_file(&self, key: &Key, dest: &Path) -> Result<bool> {
        let Some(d) = self.get(key).await? else {
            return Ok(false);
        };
        let mut out = tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(dest)
            .await
            .map_err(io("create", dest))?;
        let mut r = tokio_util::io::StreamReader::new(d.body);
        tokio::io::copy(&mut r, &mut out)
            .await
            .map_err(io("download to", dest))?;
        out.flush().await.map_err(io("write", dest))?;
        Ok(true)
    }

    /// Removes the object; one already gone is no error.
    pub async fn delete(&self, key: &Key) -> Result<()> {
        match self.store.delete(key).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Removes every object under `key/`.
    pub async fn delete_under(&self, key: &Key) -> Result<()> {
        let keys: Vec<Key> = self
            .store
            .list(Some(key))
            .map_ok(|m| m.location)
            .try_collect()
            .await?;
        for k in keys {
            self.delete(&k).await?;
        }
        Ok(())
    }

    /// The names directly under `key/` that hold objects (a listing's common prefixes).
    pub async fn children(&self, key: &Key) -> Result<Vec<String>> {
        let l = self.store.list_with_delimiter(Some(key)).await?;
        Ok(l.common_prefixes
            .iter()
            .filter_map(|p| p.filename().map(str::to_string))
            .collect())
    }

    /// Every key under `key/`, for tests and audits.
    pub async fn list(&self, key: &Key) -> Result<Vec<String>> {
        let prefix = self.prefix.as_ref().len();
        Ok(self
            .store
            .list(Some(key))
            .map_ok(|m| {
                let k = m.location.as_ref();
                k.get(prefix..)
                    .unwrap_or(k)
                    .trim_start_matches('/')
                    .to_string()
            })
            .try_collect()
            .await?)
    }
}
