//! Private staging folders for pushes, and what a crash left of them.
use std::os::unix::ffi::OsStrExt;

use crate::error::{io, Result};
use crate::{private_dir, Blobs};

const PREFIX: &str = "push-";

impl Blobs {
    /// A new private staging folder (`tmp/push-*`, 0700), removed when dropped, so a refused or
    /// broken-off push leaves nothing behind.
    pub fn stage(&self) -> Result<tempfile::TempDir> {
        let root = self.layout().staging();
        private_dir(&root).map_err(io("create", &root))?;
        tempfile::Builder::new()
            .prefix(PREFIX)
            .tempdir_in(&root)
            .map_err(io("create a staging folder in", &root))
    }

    /// Removes the staging folders of pushes a crash interrupted; run at start, before serving.
    pub fn clean_staging(&self) {
        let root = self.layout().staging();
        let Ok(dir) = std::fs::read_dir(&root) else {
            return;
        };
        for e in dir.flatten() {
            if !e.file_name().as_bytes().starts_with(PREFIX.as_bytes()) {
                continue;
            }
            let path = e.path();
            // remove_dir_all does not follow links inside the tree it removes.
            let res = match e.file_type() {
                Ok(t) if t.is_dir() => std::fs::remove_dir_all(&path),
                _ => std::fs::remove_file(&path),
            };
            if let Err(err) = res {
                tracing::warn!(error = %err, path = %path.display(), "could not remove an old push staging folder");
            }
        }
    }
}
