//! Rows read again and again (a model, a version, a prediction), kept while nothing is written.
//!
//! On SQLite every write of this process goes through one connection, the writer (`conns.rs`),
//! so the process knows when the database may have changed: `Writes` counts the writer's uses,
//! odd while it is held. A row read while the counts stayed even and unchanged is kept under
//! them, and served only while they are still the same: any write at all, committed or not,
//! makes every kept row stale. A deleted or trashed model is therefore never served from here
//! once its deletion has answered.
//!
//! One kind of write is counted apart: a prediction's or training's record, start and end (the
//! job path, `Scope::Jobs`), which write the jobs table, the counts of runs per version and
//! account, a deployment's last use, and a model's `run_count`, nothing else. Those keep rows
//! that cannot show any of that (`Kept::CHANGED_BY_JOBS`): a model or a version stays kept
//! while predictions of it run. The one thing of a model they change, its `run_count`, is
//! counted here per model as each record commits (`Writes::ran`), and added to the count a kept
//! row was read with when it is served.
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
    /// As `count`, for the writes of the job path (`Scope::Jobs`).
    jobs: AtomicU64,
    /// The predictions recorded through the job path, by model: how far each model's
    /// `run_count` has moved since this process opened the file.
    runs: Mutex<HashMap<i64, i64>>,
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

    fn counter(&self, scope: Scope) -> &AtomicU64 {
        match scope {
            Scope::All => &self.count,
            Scope::Jobs => &self.jobs,
        }
    }

    pub(crate) fn taken(&self, scope: Scope) {
        self.counter(scope).fetch_add(1, SeqCst);
    }

    pub(crate) fn given_back(&self, scope: Scope) {
        self.counter(scope).fetch_add(1, SeqCst);
    }

    /// A prediction of `model` was recorded (committed, by a write of the job path not yet
    /// given back): its `run_count` went up by one.
    pub(crate) fn ran(&self, model: i64) {
        *self
            .runs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(model)
            .or_default() += 1;
    }

    fn runs(&self, model: i64) -> i64 {
        let runs = self.runs.lock().unwrap_or_else(|p| p.into_inner());
        runs.get(&model).copied().unwrap_or(0)
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

    /// The counts under which a row read now may be kept, or none while a write may be under
    /// way.
    pub(crate) fn stamp(&self) -> Option<Stamp> {
        let stamp = Stamp {
            count: self.count.load(SeqCst),
            jobs: self.jobs.load(SeqCst),
        };
        (stamp.count.is_multiple_of(2)
            && stamp.jobs.is_multiple_of(2)
            && self.unsettled.load(SeqCst) == 0)
            .then_some(stamp)
    }

    /// Whether a row kept under `at` may be served now: nothing written since, or (for a row
    /// no write of the job path changes) nothing but the job path's writes, even one under way.
    fn serves(&self, at: Stamp, changed_by_jobs: bool) -> bool {
        let count = self.count.load(SeqCst);
        let jobs = self.jobs.load(SeqCst);
        count == at.count
            && self.unsettled.load(SeqCst) == 0
            && (!changed_by_jobs || jobs == at.jobs)
    }
}

/// Which writes a use of the writer may make.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Scope {
    /// Anything.
    All,
    /// The job path's: the `jobs` table, `version_runs`, a deployment's `last_used_at`, and a
    /// model's `run_count` (each raise noted with `Writes::ran` before the writer is given back).
    Jobs,
}

/// The writer's uses when a row was read.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) struct Stamp {
    count: u64,
    jobs: u64,
}

/// What a kept row needs to say of itself.
pub(crate) trait Kept: Clone + Send + Sync + 'static {
    /// Whether a write of the job path (`Scope::Jobs`) can change it, other than a model's
    /// `run_count`.
    const CHANGED_BY_JOBS: bool;

    /// Roughly how many bytes it holds, so the cache stays small whatever rows hold.
    fn weight(&self) -> usize;

    /// The model whose `run_count` it shows, and that count.
    fn run_count(&mut self) -> Option<(i64, &mut i64)> {
        None
    }
}

impl<T: Kept> Kept for Option<T> {
    const CHANGED_BY_JOBS: bool = T::CHANGED_BY_JOBS;
    fn weight(&self) -> usize {
        self.as_ref().map_or(16, T::weight)
    }
    fn run_count(&mut self) -> Option<(i64, &mut i64)> {
        self.as_mut().and_then(T::run_count)
    }
}

impl<B: Kept> Kept for (Model, B) {
    const CHANGED_BY_JOBS: bool = B::CHANGED_BY_JOBS;
    fn weight(&self) -> usize {
        self.0.weight() + self.1.weight()
    }
    fn run_count(&mut self) -> Option<(i64, &mut i64)> {
        self.0.run_count()
    }
}

fn text(s: &Option<String>) -> usize {
    s.as_ref().map_or(0, String::len)
}

impl Kept for Version {
    const CHANGED_BY_JOBS: bool = false;
    // The schema is shared with every other copy of the version (`rows::schema`).
    fn weight(&self) -> usize {
        256 + self.id.len()
            + self.artifact.len()
            + text(&self.base_version_id)
            + text(&self.weights)
    }
}

impl Kept for Model {
    const CHANGED_BY_JOBS: bool = false;
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
    fn run_count(&mut self) -> Option<(i64, &mut i64)> {
        Some((self.id, &mut self.run_count))
    }
}

impl Kept for ModelVersion {
    const CHANGED_BY_JOBS: bool = false;
    fn weight(&self) -> usize {
        self.model.weight() + self.version.weight()
    }
    fn run_count(&mut self) -> Option<(i64, &mut i64)> {
        self.model.run_count()
    }
}

impl Kept for Job {
    const CHANGED_BY_JOBS: bool = true;
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

/// A kept row.
struct Entry {
    /// The writer's uses when it was read.
    at: Stamp,
    /// `Writes::runs` of the model whose `run_count` it shows, when it was read.
    runs: i64,
    weight: usize,
    row: Arc<dyn Any + Send + Sync>,
}

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
    pub(crate) fn get_or_read<T: Kept>(
        &self,
        tag: &'static str,
        args: &[Arg<'_>],
        read: impl FnOnce() -> crate::Result<Option<T>>,
    ) -> crate::Result<Option<T>> {
        let key = key(tag, args);
        let kept = {
            let rows = self.rows.lock().unwrap_or_else(|p| p.into_inner());
            rows.by_key.get(&key).and_then(|e| {
                let row = e.row.downcast_ref::<Option<T>>()?;
                Some((e.at, e.runs, row.clone()))
            })
        };
        if let Some((at, runs, mut row)) = kept {
            if self.writes.serves(at, T::CHANGED_BY_JOBS) {
                if let Some((model, count)) = row.run_count() {
                    *count += self.writes.runs(model) - runs;
                }
                return Ok(row);
            }
        }
        let before = self.writes.stamp();
        let mut row = read()?;
        let runs = row.run_count().map_or(0, |(m, _)| self.writes.runs(m));
        let weight = key.len() + row.weight();
        // Kept only if no write could have happened while it was read: then `runs` is what
        // the row's `run_count` counted.
        if let Some(at) = before.filter(|_| weight <= MAX_ROW) {
            if self.writes.stamp() == Some(at) {
                let mut rows = self.rows.lock().unwrap_or_else(|p| p.into_inner());
                if rows.weight + weight > MAX_WEIGHT {
                    *rows = Rows::default();
                }
                rows.weight += weight;
                let entry = Entry {
                    at,
                    runs,
                    weight,
                    row: Arc::new(row.clone()),
                };
                if let Some(old) = rows.by_key.insert(key, entry) {
                    rows.weight -= old.weight;
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

    impl Kept for Row {
        const CHANGED_BY_JOBS: bool = true;
        fn weight(&self) -> usize {
            self.0
        }
    }

    /// A row that the job path's writes do not change, but for the run count it shows.
    #[derive(Clone, PartialEq, Debug)]
    struct Counted {
        model: i64,
        runs: i64,
    }

    impl Kept for Counted {
        const CHANGED_BY_JOBS: bool = false;
        fn weight(&self) -> usize {
            64
        }
        fn run_count(&mut self) -> Option<(i64, &mut i64)> {
            Some((self.model, &mut self.runs))
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
        w.taken(Scope::All);
        read(&cache, &reads, 3, || w.given_back(Scope::All));
        assert_eq!(read(&cache, &reads, 4, || {}), Row(4));
        assert_eq!(reads.get(), 4);
    }

    #[test]
    fn nothing_is_kept_or_served_while_a_command_may_still_commit() {
        let w = Arc::new(Writes::default());
        let cache = RowCache::new(w.clone());
        let reads = Cell::new(0);
        read(&cache, &reads, 1, || {});
        w.taken(Scope::All);
        w.unsettled();
        w.given_back(Scope::All);
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

    /// The job path's writes: a row they may change is read again after each; a model kept
    /// beside them is served on, its run count raised by the predictions recorded since.
    #[test]
    fn the_job_path_leaves_models_kept_with_their_run_counts_current() {
        let w = Arc::new(Writes::default());
        let cache = RowCache::new(w.clone());
        let reads = Cell::new(0);
        let model = |runs: i64| {
            reads.set(reads.get() + 1);
            Ok(Some(Counted { model: 7, runs }))
        };
        let get = |runs| {
            cache
                .get_or_read("m", &[Arg::Int(7)], || model(runs))
                .unwrap()
                .unwrap()
        };
        assert_eq!(get(10).runs, 10);
        read(&cache, &reads, 1, || {});
        assert_eq!(reads.get(), 2);

        // A prediction of model 7 recorded, and one of model 8.
        w.taken(Scope::Jobs);
        w.ran(7);
        w.ran(8);
        // While the job path's writer is held: the model is served, the job row is not kept.
        assert_eq!(get(99).runs, 11, "served while the job path writes");
        assert_eq!(
            read(&cache, &reads, 2, || {}),
            Row(2),
            "a job row served across a write"
        );
        assert_eq!(
            read(&cache, &reads, 3, || {}),
            Row(3),
            "a job row kept mid-write"
        );
        w.given_back(Scope::Jobs);
        assert_eq!(reads.get(), 4);
        assert_eq!(get(99).runs, 11, "the model was read again");
        assert_eq!(read(&cache, &reads, 4, || {}), Row(4));
        assert_eq!(read(&cache, &reads, 5, || {}), Row(4), "kept again");
        assert_eq!(reads.get(), 5);

        // Any other write: everything is read again.
        w.taken(Scope::All);
        w.given_back(Scope::All);
        assert_eq!(get(42).runs, 42);
        assert_eq!(reads.get(), 6);
        // Kept with the runs counted at its read: only later ones are added.
        w.taken(Scope::Jobs);
        w.ran(7);
        w.given_back(Scope::Jobs);
        assert_eq!(get(99).runs, 43);
        assert_eq!(reads.get(), 6);
    }

    /// A model read while a prediction's record may be committing is not kept: its run count
    /// may or may not hold that prediction.
    #[test]
    fn a_model_read_across_a_job_write_is_not_kept() {
        let w = Arc::new(Writes::default());
        let cache = RowCache::new(w.clone());
        let reads = Cell::new(0);
        let get = |runs, during: &dyn Fn()| {
            cache
                .get_or_read("m", &[Arg::Int(7)], || {
                    reads.set(reads.get() + 1);
                    during();
                    Ok(Some(Counted { model: 7, runs }))
                })
                .unwrap()
                .unwrap()
                .runs
        };
        let record = || {
            w.taken(Scope::Jobs);
            w.ran(7);
            w.given_back(Scope::Jobs);
        };
        assert_eq!(get(5, &record), 5);
        assert_eq!(get(6, &|| {}), 6, "a row read across a record was kept");
        assert_eq!(get(0, &|| {}), 6);
        assert_eq!(reads.get(), 2);
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
