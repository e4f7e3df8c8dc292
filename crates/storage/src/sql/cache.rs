//! Rows read again and again (a model, a version, a prediction), kept while nothing is written.
//!
//! On SQLite every write of this process goes through one connection, the writer (`conns.rs`),
//! so the process knows when the database may have changed: `Writes` counts the writer's uses,
//! odd while it is held. A row read while the count stayed even and unchanged is kept under that
//! count, and served only while the count is still the same: any write at all, committed or
//! not, makes every kept row stale. A deleted or trashed model is therefore never served from
//! here once its deletion has answered.
//!
//! Other processes do not write these rows: a second server on the same data directory is
//! refused at start, and `modelyard admin` writes accounts, organizations and tokens only,
//! which no kept row holds. PostgreSQL, where the nodes of a cluster write, keeps nothing.
use std::any::Any;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex, Weak};

use modelyard_domain::{Job, Model, ModelVersion, Version};
use serde_json::Value;

use super::Arg;

/// The writer's uses, shared by every store of this process on one database file.
#[derive(Default)]
pub(crate) struct Writes {
    /// Incremented when a writer is taken and when it is given back: odd while one store's
    /// writer is held. With two stores of the process writing at once it can be even mid-write,
    /// which is still safe: a row kept then is served only until the next give-back, and each
    /// write gives its writer back after its commit and before it answers.
    count: AtomicU64,
    /// Commands that were in flight when their writer was given back and may still commit.
    unsettled: AtomicU64,
    /// The lock file beside the database, held while a server of this process serves it.
    claim: Mutex<Option<std::fs::File>>,
}

impl Writes {
    /// The `Writes` of the database file at `path`, one per file in this process, so stores
    /// opened twice on one file see each other's writes.
    pub(crate) fn of_file(path: &Path) -> Arc<Writes> {
        static FILES: Mutex<Vec<(PathBuf, Weak<Writes>)>> = Mutex::new(Vec::new());
        let path = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        let mut files = FILES.lock().unwrap_or_else(|p| p.into_inner());
        files.retain(|(_, w)| w.strong_count() > 0);
        if let Some(w) = files
            .iter()
            .find(|(p, _)| *p == path)
            .and_then(|(_, w)| w.upgrade())
        {
            return w;
        }
        let w = Arc::new(Writes::default());
        files.push((path, Arc::downgrade(&w)));
        w
    }

    /// Claims the database at `path` for this process's servers: another process that
    /// claimed it first, still running, is named in the error.
    pub(crate) fn claim(&self, path: &Path) -> crate::Result<()> {
        use std::io::{Read, Seek, Write};
        use std::os::unix::fs::OpenOptionsExt;
        let mut claim = self.claim.lock().unwrap_or_else(|p| p.into_inner());
        if claim.is_some() {
            return Ok(());
        }
        let mut lock_path = path.as_os_str().to_owned();
        lock_path.push("-server.lock");
        let internal = |e: std::io::Error| {
            crate::StoreError::Internal(format!("{}: {e}", Path::new(&lock_path).display()))
        };
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&lock_path)
            .map_err(internal)?;
        match file.try_lock() {
            Ok(()) => {
                file.set_len(0).map_err(internal)?;
                file.rewind().map_err(internal)?;
                write!(file, "{}", std::process::id()).map_err(internal)?;
                *claim = Some(file);
                Ok(())
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut pid = String::new();
                let _ = file.read_to_string(&mut pid);
                Err(crate::StoreError::Conflict(format!(
                    "another modelyard server (process {}) is serving {}; one server serves a \
                     SQLite database (several need PostgreSQL)",
                    pid.trim(),
                    path.display()
                )))
            }
            Err(std::fs::TryLockError::Error(e)) => Err(internal(e)),
        }
    }

    pub(crate) fn taken(&self) {
        self.count.fetch_add(1, SeqCst);
    }

    pub(crate) fn given_back(&self) {
        self.count.fetch_add(1, SeqCst);
    }

    /// A write happened that no writer of this process made: every kept row is stale.
    pub(crate) fn written_around(&self) {
        self.count.fetch_add(2, SeqCst);
    }

    pub(crate) fn unsettled(&self) {
        self.unsettled.fetch_add(1, SeqCst);
    }

    pub(crate) fn settled(&self) {
        self.unsettled.fetch_sub(1, SeqCst);
    }

    /// The count under which a row read now may be kept, or none while a write may be under way.
    pub(crate) fn stamp(&self) -> Option<u64> {
        let count = self.count.load(SeqCst);
        (count.is_multiple_of(2) && self.unsettled.load(SeqCst) == 0).then_some(count)
    }
}

/// Roughly how many bytes a kept row holds, so the cache stays small whatever rows hold.
pub(crate) trait Weigh {
    fn weight(&self) -> usize;
}

impl<T: Weigh> Weigh for Option<T> {
    fn weight(&self) -> usize {
        self.as_ref().map_or(16, T::weight)
    }
}

impl<A: Weigh, B: Weigh> Weigh for (A, B) {
    fn weight(&self) -> usize {
        self.0.weight() + self.1.weight()
    }
}

fn text(s: &Option<String>) -> usize {
    s.as_ref().map_or(0, String::len)
}

impl Weigh for Version {
    // The schema is shared with every other copy of the version (`rows::schema`).
    fn weight(&self) -> usize {
        256 + self.id.len()
            + self.artifact.len()
            + text(&self.base_version_id)
            + text(&self.weights)
    }
}

impl Weigh for Model {
    fn weight(&self) -> usize {
        256 + self.owner.len()
            + self.name.len()
            + text(&self.description)
            + text(&self.github_url)
            + text(&self.paper_url)
            + text(&self.license_url)
            + text(&self.cover_image_url)
            + self.latest_version.weight()
    }
}

impl Weigh for ModelVersion {
    fn weight(&self) -> usize {
        self.model.weight() + self.version.weight()
    }
}

impl Weigh for Job {
    fn weight(&self) -> usize {
        512 + self.logs.len()
            + json(&self.input, MAX_ROW)
            + self.output.as_ref().map_or(0, |o| json(o, MAX_ROW))
            + json(&self.metrics, MAX_ROW)
    }
}

/// About the bytes of `v`, counted no further than `cap`.
fn json(v: &Value, cap: usize) -> usize {
    match v {
        Value::String(s) => 32 + s.len(),
        Value::Array(a) => {
            let mut n = 32;
            for e in a {
                if n > cap {
                    break;
                }
                n += json(e, cap - n);
            }
            n
        }
        Value::Object(o) => {
            let mut n = 32;
            for (k, e) in o {
                if n > cap {
                    break;
                }
                n += 32 + k.len() + json(e, cap - n);
            }
            n
        }
        _ => 32,
    }
}

/// A row, the count it was read at, and its weight.
type Entry = (u64, usize, Arc<dyn Any + Send + Sync>);

/// Kept rows by query and arguments, each under the count it was read at.
pub(crate) struct RowCache {
    writes: Arc<Writes>,
    rows: Mutex<Rows>,
}

#[derive(Default)]
struct Rows {
    by_key: HashMap<String, Entry>,
    /// The rows' weight, about their bytes.
    weight: usize,
}

/// A row heavier than this (a prediction with a large output) is read each time.
const MAX_ROW: usize = 64 * 1024;
/// Past this weight in all, the cache starts over.
const MAX_WEIGHT: usize = 2 * 1024 * 1024;

impl RowCache {
    pub(crate) fn new(writes: Arc<Writes>) -> Self {
        RowCache {
            writes,
            rows: Mutex::new(Rows::default()),
        }
    }

    /// The row kept for `tag` and `args`, or `read`'s, which is kept if no write could have
    /// happened while it was read.
    pub(crate) fn get_or_read<T: Weigh + Clone + Send + Sync + 'static>(
        &self,
        tag: &'static str,
        args: &[Arg<'_>],
        read: impl FnOnce() -> crate::Result<Option<T>>,
    ) -> crate::Result<Option<T>> {
        let key = key(tag, args);
        let before = self.writes.stamp();
        if let Some(stamp) = before {
            let rows = self.rows.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((at, _, row)) = rows.by_key.get(&key) {
                if *at == stamp {
                    if let Some(row) = row.downcast_ref::<Option<T>>() {
                        return Ok(row.clone());
                    }
                }
            }
        }
        let row = read()?;
        let weight = key.len() + row.weight();
        if let Some(stamp) = before.filter(|_| weight <= MAX_ROW) {
            if self.writes.stamp() == Some(stamp) {
                let mut rows = self.rows.lock().unwrap_or_else(|p| p.into_inner());
                if rows.weight + weight > MAX_WEIGHT {
                    *rows = Rows::default();
                }
                rows.weight += weight;
                if let Some((_, old, _)) = rows
                    .by_key
                    .insert(key, (stamp, weight, Arc::new(row.clone())))
                {
                    rows.weight -= old;
                }
            }
        }
        Ok(row)
    }
}

/// `tag` and the arguments, each marked with its kind so no two lists spell the same key.
fn key(tag: &'static str, args: &[Arg<'_>]) -> String {
    use std::fmt::Write;
    let mut k = String::with_capacity(64);
    k.push_str(tag);
    for a in args {
        let _ = match a {
            Arg::Int(v) => write!(k, "\0i{v}"),
            Arg::Text(v) => write!(k, "\0t{}:{v}", v.len()),
            Arg::OptInt(Some(v)) => write!(k, "\0i{v}"),
            Arg::OptText(Some(v)) => write!(k, "\0t{}:{v}", v.len()),
            Arg::OptInt(None) | Arg::OptText(None) => write!(k, "\0n"),
        };
    }
    k
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    #[derive(Clone, PartialEq, Debug)]
    struct Row(usize);

    impl Weigh for Row {
        fn weight(&self) -> usize {
            self.0
        }
    }

    /// Reads `tag` through `cache`, counting the reads that reached the "database".
    fn read(cache: &RowCache, reads: &Cell<u32>, row: usize, during: impl FnOnce()) -> Row {
        cache
            .get_or_read("t", &[Arg::Text("k"), Arg::Int(1)], || {
                reads.set(reads.get() + 1);
                during();
                Ok(Some(Row(row)))
            })
            .unwrap()
            .unwrap()
    }

    fn write(w: &Writes) {
        w.written_around();
    }

    #[test]
    fn a_row_is_kept_until_anything_is_written() {
        let w = Arc::new(Writes::default());
        let cache = RowCache::new(w.clone());
        let reads = Cell::new(0);
        assert_eq!(read(&cache, &reads, 1, || {}), Row(1));
        assert_eq!(read(&cache, &reads, 2, || {}), Row(1), "kept");
        assert_eq!(reads.get(), 1);
        write(&w);
        assert_eq!(
            read(&cache, &reads, 2, || {}),
            Row(2),
            "stale after a write"
        );
        assert_eq!(reads.get(), 2);
    }

    #[test]
    fn a_row_read_while_a_write_happened_is_not_kept() {
        let w = Arc::new(Writes::default());
        let cache = RowCache::new(w.clone());
        let reads = Cell::new(0);
        read(&cache, &reads, 1, || write(&w));
        read(&cache, &reads, 2, || {});
        assert_eq!(reads.get(), 2, "the row read across a write was kept");
        // Nor while the writer is held, even if given back before the read ends.
        w.taken();
        read(&cache, &reads, 3, || w.given_back());
        assert_eq!(read(&cache, &reads, 4, || {}), Row(4));
        assert_eq!(reads.get(), 4);
    }

    #[test]
    fn nothing_is_kept_or_served_while_a_command_may_still_commit() {
        let w = Arc::new(Writes::default());
        let cache = RowCache::new(w.clone());
        let reads = Cell::new(0);
        read(&cache, &reads, 1, || {});
        w.taken();
        w.unsettled();
        w.given_back();
        assert_eq!(read(&cache, &reads, 2, || {}), Row(2));
        assert_eq!(
            read(&cache, &reads, 3, || {}),
            Row(3),
            "kept while unsettled"
        );
        w.settled();
        read(&cache, &reads, 4, || {});
        assert_eq!(
            read(&cache, &reads, 5, || {}),
            Row(4),
            "settled: kept again"
        );
        assert_eq!(reads.get(), 4);
    }

    #[test]
    fn heavy_rows_are_read_each_time_and_the_whole_stays_bounded() {
        let w = Arc::new(Writes::default());
        let cache = RowCache::new(w.clone());
        let reads = Cell::new(0);
        read(&cache, &reads, MAX_ROW + 1, || {});
        read(&cache, &reads, MAX_ROW + 1, || {});
        assert_eq!(reads.get(), 2);
        for i in 0..(2 * MAX_WEIGHT / MAX_ROW) {
            let key = format!("k{i}");
            cache
                .get_or_read("t", &[Arg::Text(&key)], || Ok(Some(Row(MAX_ROW - 64))))
                .unwrap();
            assert!(cache.rows.lock().unwrap().weight <= MAX_WEIGHT);
        }
    }

    #[test]
    fn keys_of_different_arguments_differ() {
        assert_ne!(
            key("t", &[Arg::Text("a\0tb"), Arg::Text("")]),
            key("t", &[Arg::Text("a"), Arg::Text("b")])
        );
        assert_ne!(key("t", &[Arg::Int(1)]), key("t", &[Arg::Text("1")]));
        assert_ne!(key("a", &[]), key("b", &[]));
    }
}
