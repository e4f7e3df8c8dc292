//! Files jobs returned (`outputs/<job>/<token>/<name>`) and `/v1/files` uploads (`files/<id>`):
//! written to the data directory as they arrive, then, with an object store, moved into it, so
//! any node serves them.
use std::path::{Path, PathBuf};

use bytes::Bytes;
use futures_util::stream::BoxStream;

use crate::error::{io, Result};
use crate::layout::part;
use crate::remote::Remote;
use crate::Blobs;

/// A stored file's bytes: a local file, or a stream from the object store.
pub enum Content {
    Local(PathBuf),
    Stream {
        size: u64,
        body: BoxStream<'static, std::io::Result<Bytes>>,
    },
}

/// A stored file as a local path; a downloaded copy goes when this is dropped.
pub struct LocalCopy {
    path: PathBuf,
    _tmp: Option<tempfile::TempDir>,
}

impl LocalCopy {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn output_key(r: &Remote, job: &str, token: &str, name: &str) -> Result<object_store::path::Path> {
    Ok(r.key(&[
        "outputs",
        part("job id", job)?,
        part("output token", token)?,
        part("output name", name)?,
    ]))
}

fn file_key(r: &Remote, id: &str) -> Result<object_store::path::Path> {
    Ok(r.key(&["files", part("file id", id)?]))
}

impl Blobs {
    fn local_output(&self, job: &str, token: &str, name: &str) -> Result<PathBuf> {
        Ok(self
            .layout
            .job_outputs(job)?
            .join(part("output token", token)?)
            .join(part("output name", name)?))
    }

    /// Makes the output file written at `outputs/<job>/<token>/<name>` in the data directory
    /// servable by every node: with an object store it is uploaded and the local copy goes.
    pub async fn publish_output(&self, job: &str, token: &str, name: &str) -> Result<()> {
        let Some(sh) = &self.shared else {
            return Ok(());
        };
        let local = self.local_output(job, token, name)?;
        let up = sh
            .remote
            .put_file(&output_key(&sh.remote, job, token, name)?, &local)
            .await;
        if let Some(dir) = local.parent() {
            let _ = tokio::fs::remove_dir_all(dir).await;
        }
        let _ = tokio::fs::remove_dir(self.layout.job_outputs(job)?).await;
        up.map(drop)
    }

    /// An output file's bytes, or `None` when there is none by that name.
    pub async fn output(&self, job: &str, token: &str, name: &str) -> Result<Option<Content>> {
        match &self.shared {
            None => {
                let p = self.local_output(job, token, name)?;
                Ok(p.is_file().then_some(Content::Local(p)))
            }
            Some(sh) => Ok(sh
                .remote
                .get(&output_key(&sh.remote, job, token, name)?)
                .await?
                .map(|d| Content::Stream {
                    size: d.size,
                    body: d.body,
                })),
        }
    }

    /// An output file as a local path (a training's weights, to be hashed and stored), or
    /// `None` when there is none by that name.
    pub async fn output_copy(
        &self,
        job: &str,
        token: &str,
        name: &str,
    ) -> Result<Option<LocalCopy>> {
        let Some(sh) = &self.shared else {
            let p = self.local_output(job, token, name)?;
            return Ok(p.is_file().then_some(LocalCopy {
                path: p,
                _tmp: None,
            }));
        };
        let tmp = self.stage()?;
        let path = tmp.path().join(part("output name", name)?);
        let key = output_key(&sh.remote, job, token, name)?;
        Ok(sh
            .remote
            .get_to_file(&key, &path)
            .await?
            .then_some(LocalCopy {
                path,
                _tmp: Some(tmp),
            }))
    }

    /// Removes every output file of a job.
    pub async fn remove_outputs(&self, job: &str) -> Result<()> {
        let dir = self.layout.job_outputs(job)?;
        match tokio::fs::remove_dir_all(&dir).await {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(io("remove", &dir)(e))
            }
            _ => {}
        }
        if let Some(sh) = &self.shared {
            sh.remote
                .delete_under(&sh.remote.key(&["outputs", part("job id", job)?]))
                .await?;
        }
        Ok(())
    }

    /// The jobs that have output files stored.
    pub async fn output_jobs(&self) -> Result<Vec<String>> {
        if let Some(sh) = &self.shared {
            return sh.remote.children(&sh.remote.key(&["outputs"])).await;
        }
        let dir = self.layout.outputs();
        let mut jobs = vec![];
        let mut entries = match tokio::fs::read_dir(&dir).await {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(jobs),
            Err(e) => return Err(io("list", &dir)(e)),
        };
        while let Ok(Some(e)) = entries.next_entry().await {
            if let Some(id) = e.file_name().to_str() {
                jobs.push(id.to_string());
            }
        }
        Ok(jobs)
    }
}

impl Blobs {
    /// Where uploads are written while they arrive (`files/`).
    pub fn uploads_dir(&self) -> PathBuf {
        self.layout.files()
    }

    /// Keeps the upload written at `part` (under [`Blobs::uploads_dir`]) as the file `id`.
    pub async fn put_file(&self, id: &str, written: &Path) -> Result<()> {
        match &self.shared {
            None => {
                let dest = self.layout.files().join(part("file id", id)?);
                tokio::fs::rename(written, &dest)
                    .await
                    .map_err(io("keep an upload at", &dest))
            }
            Some(sh) => {
                let up = sh
                    .remote
                    .put_file(&file_key(&sh.remote, id)?, written)
                    .await;
                let _ = tokio::fs::remove_file(written).await;
                up.map(drop)
            }
        }
    }

    /// An uploaded file's bytes, or `None` when they are not stored.
    pub async fn file(&self, id: &str) -> Result<Option<Content>> {
        match &self.shared {
            None => {
                let p = self.layout.files().join(part("file id", id)?);
                Ok(p.is_file().then_some(Content::Local(p)))
            }
            Some(sh) => {
                Ok(sh
                    .remote
                    .get(&file_key(&sh.remote, id)?)
                    .await?
                    .map(|d| Content::Stream {
                        size: d.size,
                        body: d.body,
                    }))
            }
        }
    }

    /// Removes an uploaded file's bytes; ones already gone are no error.
    pub async fn remove_file(&self, id: &str) -> Result<()> {
        match &self.shared {
            None => {
                let p = self.layout.files().join(part("file id", id)?);
                match tokio::fs::remove_file(&p).await {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io("remove", &p)(e)),
                    _ => Ok(()),
                }
            }
            Some(sh) => sh.remote.delete(&file_key(&sh.remote, id)?).await,
        }
    }
}
