//! Eddy's embedded store, on sled.
//!
//! One sled tree holds every keyspace, each under a one-byte prefix (see
//! [`Keyspace`]). Keeping them in one tree is what makes a commit atomic: a
//! [`WriteBatch`] may touch the catalog, table rows, view rows, operator state
//! and source offsets at once, and it lands whole or not at all. A commit is
//! fsynced before it returns, so an acknowledged write survives `kill -9`.
//!
//! The data directory is guarded by an exclusive lock file, so a second server
//! on the same directory fails fast instead of corrupting it.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use fs2::FileExt;

use crate::files::{FileRef, ValueFiles};
use crate::snapshot::{ReadFrom, Snapshot, Snapshots};

mod files;
pub mod fuzz;
pub mod snapshot;
pub mod state_log;

pub use files::FILE_VALUE_BYTES;

/// Bumped whenever the on-disk encoding of keys or values changes.
pub const FORMAT_VERSION: u32 = 7;

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("cannot create data directory {path}: {source}")]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("data directory {path} is not usable: {source}")]
    DirNotUsable {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("data directory {path} is in use by another eddy process (lock file {lock} is held)")]
    Locked { path: PathBuf, lock: PathBuf },
    #[error("data directory {path} was written by an incompatible version of eddy (format {found}, expected {expected})")]
    IncompatibleFormat {
        path: PathBuf,
        found: u32,
        expected: u32,
    },
    #[error("storage error: {0}")]
    Sled(#[from] sled::Error),
    #[error("the commit was refused (fault injected for a test)")]
    CommitRefused,
    #[error("{0} is damaged")]
    Damaged(&'static str),
    #[error("cannot use a stored value's file: {0}")]
    ValueFile(std::io::Error),
}

pub type Result<T, E = StorageError> = std::result::Result<T, E>;

/// The keyspaces of the store. Each key starts with the keyspace's byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Keyspace {
    /// Store-wide metadata, such as the format version.
    Meta = b'm',
    /// Catalog objects, keyed by object id.
    Catalog = b'c',
    /// Rows of tables, keyed by table id: a local table's state log (see
    /// [`state_log`]), a Kafka table's rows by key, a stream's blocks.
    TableRows = b'r',
    /// Each view's state log: its operators' state and its rows, keyed by
    /// view id then segment.
    OperatorState = b's',
    /// Source offsets of running dataflows.
    SourceOffsets = b'o',
    /// Changes to local tables that views have yet to absorb, keyed by
    /// sequence number.
    ChangeLog = b'l',
    /// Records persistent queries have yet to write to Kafka, keyed by
    /// query id then epoch sequence number.
    Outbox = b'x',
    /// Each epoch's input changes to the views since the last checkpoint,
    /// keyed by epoch sequence number then chunk.
    Journal = b'j',
    /// Roles, keyed by role oid, and the privileges granted on each
    /// object, keyed by object id.
    Security = b'a',
}

impl Keyspace {
    /// The key of `suffix` within this keyspace.
    pub fn key(self, suffix: &[u8]) -> Vec<u8> {
        let mut key = Vec::with_capacity(1 + suffix.len());
        key.push(self as u8);
        key.extend_from_slice(suffix);
        key
    }

    /// The key prefix of an object (table, view, ...) within this keyspace.
    pub fn object_prefix(self, object_id: u64) -> Vec<u8> {
        self.key(&object_id.to_be_bytes())
    }
}

/// A set of writes that commit atomically.
///
/// Blobs (`put_blob`) are values that may be large: those of
/// [`FILE_VALUE_BYTES`] or more are kept in files beside sled (see
/// [`files`]). They are read with [`Store::get_blob`] and
/// [`Store::scan_blobs`], and deleted with `delete_blob`, which removes
/// the file once the deletion is committed.
#[derive(Debug, Default)]
pub struct WriteBatch {
    /// Each key's new value, or `None` to delete it, in order.
    writes: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    /// Large blobs, written to files at commit.
    files: Vec<(Vec<u8>, Vec<u8>)>,
    /// Keys whose earlier value's file, if any, goes once this commits.
    replaced: Vec<Vec<u8>>,
}

impl WriteBatch {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn put(&mut self, key: Vec<u8>, value: Vec<u8>) {
        self.writes.push((key, Some(value)));
    }

    pub fn delete(&mut self, key: Vec<u8>) {
        self.writes.push((key, None));
    }

    /// Puts a value that may be large.
    pub fn put_blob(&mut self, key: Vec<u8>, value: Vec<u8>) {
        self.replaced.push(key.clone());
        if value.len() >= FILE_VALUE_BYTES {
            self.files.push((key, value));
        } else {
            self.writes.push((key, Some(files::inline(&value))));
        }
    }

    /// Deletes a blob, and its file.
    pub fn delete_blob(&mut self, key: Vec<u8>) {
        self.replaced.push(key.clone());
        self.delete(key);
    }

    pub fn is_empty(&self) -> bool {
        self.writes.is_empty() && self.files.is_empty()
    }
}

/// Keys and values under a prefix as of one commit, read a range at a
/// time while later commits go on; see [`Store::snapshot`].
pub struct PrefixSnapshot {
    store: Store,
    snapshot: std::sync::Arc<Snapshot>,
}

impl PrefixSnapshot {
    /// The next keys and values as of the snapshot's point, about `n` of
    /// them; none once every one has been read.
    pub fn next_rows(&self, n: usize) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let prefix = self.snapshot.prefix();
        self.snapshot
            .next_rows(n, |from, n| self.store.scan_after(prefix, from, n))
    }
}

/// The embedded store. Cheap to clone; clones share the database.
#[derive(Clone)]
pub struct Store {
    db: sled::Db,
    tree: sled::Tree,
    dir: std::sync::Arc<PathBuf>,
    files: std::sync::Arc<ValueFiles>,
    _lock: std::sync::Arc<File>,
    /// Commits to refuse before the next one succeeds: a fault for tests,
    /// which stands for a full disk.
    refused_commits: std::sync::Arc<AtomicU32>,
    /// Scans reading a point while commits go on.
    snapshots: std::sync::Arc<Snapshots>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").finish_non_exhaustive()
    }
}

/// How a store is opened.
#[derive(Debug, Clone, Copy)]
pub struct StoreOptions {
    /// Bytes of sled's page cache: pages read or written recently that
    /// stay in memory. The operating system's page cache sits below it.
    pub cache_bytes: u64,
}

impl StoreOptions {
    /// sled's own default is 1 GiB; Eddy keeps views and operator state in
    /// memory and reads the store mostly at restart and in scans of stored
    /// streams, so a smaller cache serves it as well.
    pub const DEFAULT_CACHE_BYTES: u64 = 256 << 20;
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            cache_bytes: Self::DEFAULT_CACHE_BYTES,
        }
    }
}

impl Store {
    /// Opens (creating if needed) the store in `dir`, with default options.
    pub fn open(dir: &Path) -> Result<Self> {
        Self::open_with(dir, StoreOptions::default())
    }

    /// Opens (creating if needed) the store in `dir`.
    pub fn open_with(dir: &Path, options: StoreOptions) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|source| StorageError::CreateDir {
            path: dir.to_owned(),
            source,
        })?;
        let lock_path = dir.join("LOCK");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|source| StorageError::DirNotUsable {
                path: dir.to_owned(),
                source,
            })?;
        if lock.try_lock_exclusive().is_err() {
            return Err(StorageError::Locked {
                path: dir.to_owned(),
                lock: lock_path,
            });
        }
        let db = open_sled(&dir.join("db"), options)?;
        let tree = db.open_tree("eddy")?;
        let files =
            ValueFiles::open(dir.join("values")).map_err(|source| StorageError::DirNotUsable {
                path: dir.to_owned(),
                source,
            })?;
        let store = Store {
            db,
            tree,
            dir: std::sync::Arc::new(dir.to_owned()),
            files: std::sync::Arc::new(files),
            _lock: std::sync::Arc::new(lock),
            refused_commits: Default::default(),
            snapshots: Default::default(),
        };
        store.check_format(dir)?;
        let removed = store.files.sweep(|key, generation| {
            Ok(match store.tree.get(key)? {
                Some(value) => FileRef::decode(&value)
                    .ok()
                    .flatten()
                    .is_some_and(|r| r.generation == generation),
                None => false,
            })
        })?;
        if removed > 0 {
            tracing::info!(removed, "removed value files no commit names");
        }
        Ok(store)
    }

    fn check_format(&self, dir: &Path) -> Result<()> {
        let key = Keyspace::Meta.key(b"format_version");
        match self.tree.get(&key)? {
            Some(value) => {
                let found = value
                    .as_ref()
                    .try_into()
                    .map(u32::from_be_bytes)
                    .unwrap_or(0);
                if found != FORMAT_VERSION {
                    return Err(StorageError::IncompatibleFormat {
                        path: dir.to_owned(),
                        found,
                        expected: FORMAT_VERSION,
                    });
                }
            }
            None => {
                let mut batch = WriteBatch::new();
                batch.put(key, FORMAT_VERSION.to_be_bytes().to_vec());
                self.commit(batch)?;
            }
        }
        Ok(())
    }

    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.tree.get(key)?.map(|v| v.to_vec()))
    }

    pub fn contains(&self, key: &[u8]) -> Result<bool> {
        Ok(self.tree.contains_key(key)?)
    }

    /// Every key and value under `prefix`, in key order.
    pub fn scan_prefix(
        &self,
        prefix: &[u8],
    ) -> impl Iterator<Item = Result<(Vec<u8>, Vec<u8>)>> + Send + 'static {
        self.tree.scan_prefix(prefix).map(|item| {
            item.map(|(k, v)| (k.to_vec(), v.to_vec()))
                .map_err(Into::into)
        })
    }

    /// Every key under `prefix`, in key order.
    pub fn scan_keys(
        &self,
        prefix: &[u8],
    ) -> impl Iterator<Item = Result<Vec<u8>>> + Send + 'static {
        self.tree
            .scan_prefix(prefix)
            .keys()
            .map(|item| item.map(|k| k.to_vec()).map_err(Into::into))
    }

    /// A blob (see [`WriteBatch::put_blob`]).
    pub fn get_blob(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        match self.tree.get(key)? {
            Some(value) => resolve_blob(&self.files, key, &value),
            None => Ok(None),
        }
    }

    /// Every blob under `prefix`, in key order. A blob deleted while the
    /// scan runs may be left out.
    pub fn scan_blobs(
        &self,
        prefix: &[u8],
    ) -> impl Iterator<Item = Result<(Vec<u8>, Vec<u8>)>> + Send + 'static {
        let files = self.files.clone();
        self.tree.scan_prefix(prefix).filter_map(move |item| {
            let (key, value) = match item {
                Ok(item) => item,
                Err(e) => return Some(Err(e.into())),
            };
            resolve_blob(&files, &key, &value)
                .transpose()
                .map(|value| value.map(|value| (key.to_vec(), value)))
        })
    }

    /// Bytes stored under `prefix`: keys and values, a value in a file by
    /// its file's length.
    pub fn bytes_under(&self, prefix: &[u8]) -> Result<u64> {
        let mut bytes = 0;
        for item in self.tree.scan_prefix(prefix) {
            let (key, value) = item?;
            let value_bytes = match FileRef::decode(&value) {
                Ok(Some(reference)) => reference.len,
                _ => value.len() as u64,
            };
            bytes += key.len() as u64 + value_bytes;
        }
        Ok(bytes)
    }

    /// Bytes the data directory's files take on disk.
    pub fn disk_bytes(&self) -> u64 {
        fn walk(dir: &Path) -> u64 {
            let Ok(entries) = std::fs::read_dir(dir) else {
                return 0;
            };
            entries
                .flatten()
                .map(|entry| match entry.metadata() {
                    Ok(meta) if meta.is_dir() => walk(&entry.path()),
                    Ok(meta) => meta.len(),
                    Err(_) => 0,
                })
                .sum()
        }
        walk(&self.dir)
    }

    /// The greatest key under `prefix`, if any.
    pub fn last_key(&self, prefix: &[u8]) -> Result<Option<Vec<u8>>> {
        match self.tree.scan_prefix(prefix).next_back() {
            Some(item) => Ok(Some(item?.0.to_vec())),
            None => Ok(None),
        }
    }

    /// Applies `batch` atomically and makes it durable before returning.
    pub fn commit(&self, batch: WriteBatch) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let refused = self
            .refused_commits
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
        if refused.is_ok() {
            return Err(StorageError::CommitRefused);
        }
        let WriteBatch {
            writes,
            files,
            replaced,
        } = batch;
        // Snapshots keep what this commit changes; none is taken until it
        // has landed.
        let writing = self.snapshots.writing();
        if writing.any() {
            let keys = writes.iter().map(|(key, _)| key);
            for key in keys.chain(files.iter().map(|(key, _)| key)) {
                writing.before_change(key, || self.get(key))?;
            }
        }
        let mut batch = sled::Batch::default();
        for (key, value) in writes {
            match value {
                Some(value) => batch.insert(key, value),
                None => batch.remove(key),
            }
        }
        let mut old = Vec::new();
        for key in replaced {
            if let Some(value) = self.tree.get(&key)? {
                if let Ok(Some(reference)) = FileRef::decode(&value) {
                    old.push((key, reference));
                }
            }
        }
        let mut written = Vec::with_capacity(files.len());
        let wrote = files
            .into_iter()
            .try_for_each(|(key, value)| {
                written.push(self.files.write(key, &value)?);
                Ok(())
            })
            .and_then(|()| match written.is_empty() {
                true => Ok(()),
                false => self.files.sync_dir(),
            });
        for file in &written {
            batch.insert(file.key.clone(), file.reference.clone());
        }
        let committed = wrote
            .map_err(StorageError::ValueFile)
            .and_then(|()| Ok(self.tree.apply_batch(batch)?))
            .and_then(|()| Ok(self.db.flush().map(drop)?));
        if let Err(e) = committed {
            for file in written {
                let _ = std::fs::remove_file(file.path);
            }
            return Err(e);
        }
        for (key, reference) in old {
            self.files.remove(&key, reference);
        }
        Ok(())
    }

    /// A snapshot of the keys under `prefix` as of the last commit, read
    /// in key order while commits go on (see [`snapshot`]). Values are
    /// read as stored: blobs are not resolved.
    pub fn snapshot(&self, prefix: Vec<u8>) -> PrefixSnapshot {
        PrefixSnapshot {
            store: self.clone(),
            snapshot: self.snapshots.take(prefix),
        }
    }

    /// Up to `n` keys and values under `prefix`, from `from`, in key order.
    fn scan_after(
        &self,
        prefix: &[u8],
        from: &ReadFrom,
        n: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let start = match from {
            ReadFrom::Start => std::ops::Bound::Included(prefix),
            ReadFrom::After(_) => from.bound(),
        };
        let mut rows = Vec::new();
        for item in self
            .tree
            .range::<&[u8], _>((start, std::ops::Bound::Unbounded))
        {
            let (key, value) = item?;
            if !key.starts_with(prefix) || rows.len() == n {
                break;
            }
            rows.push((key.to_vec(), value.to_vec()));
        }
        Ok(rows)
    }

    /// Makes the next `n` commits fail, as a full disk would: for tests of
    /// what happens after a failed commit.
    pub fn refuse_commits(&self, n: u32) {
        self.refused_commits.store(n, Ordering::SeqCst);
    }

    /// How many commits are still to be refused.
    pub fn commits_to_refuse(&self) -> u32 {
        self.refused_commits.load(Ordering::SeqCst)
    }

    /// Flushes everything to disk; used at shutdown.
    pub fn flush(&self) -> Result<()> {
        self.db.flush()?;
        Ok(())
    }
}

/// A blob's value as stored in sled: inline, or read from its file.
fn resolve_blob(files: &ValueFiles, key: &[u8], value: &[u8]) -> Result<Option<Vec<u8>>> {
    match FileRef::decode(value)? {
        Some(reference) => files.read(key, reference),
        None => Ok(Some(value[1..].to_vec())),
    }
}

/// How long opening waits for sled's own file lock.
const SLED_LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Opens sled's database at `path`. Once the store's LOCK is held, no
/// other store has the directory, but a store this process just dropped
/// may still be closing (sled's flusher thread holds the database until
/// its next tick): sled's lock is waited for, briefly.
fn open_sled(path: &Path, options: StoreOptions) -> Result<sled::Db> {
    let started = std::time::Instant::now();
    loop {
        let opened = sled::Config::new()
            .path(path)
            .cache_capacity(options.cache_bytes)
            .mode(sled::Mode::HighThroughput)
            .open();
        match opened {
            Err(sled::Error::Io(e))
                if e.to_string().contains("could not acquire lock")
                    && started.elapsed() < SLED_LOCK_WAIT =>
            {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            opened => return Ok(opened?),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_commits_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            let mut batch = WriteBatch::new();
            batch.put(Keyspace::TableRows.key(b"a"), b"1".to_vec());
            batch.put(Keyspace::Catalog.key(b"t"), b"def".to_vec());
            store.commit(batch).unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(
            store.get(&Keyspace::TableRows.key(b"a")).unwrap(),
            Some(b"1".to_vec())
        );
        assert_eq!(
            store.get(&Keyspace::Catalog.key(b"t")).unwrap(),
            Some(b"def".to_vec())
        );
    }

    #[test]
    fn scan_prefix_stays_within_the_object() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut batch = WriteBatch::new();
        for object in [1u64, 2] {
            for row in 0u8..3 {
                let mut key = Keyspace::TableRows.object_prefix(object);
                key.push(row);
                batch.put(key, vec![row]);
            }
        }
        store.commit(batch).unwrap();
        let rows: Vec<_> = store
            .scan_prefix(&Keyspace::TableRows.object_prefix(2))
            .map(|r| r.unwrap().1)
            .collect();
        assert_eq!(rows, vec![vec![0], vec![1], vec![2]]);
        let last = store
            .last_key(&Keyspace::TableRows.object_prefix(1))
            .unwrap()
            .unwrap();
        assert_eq!(*last.last().unwrap(), 2);
    }

    #[test]
    fn a_prefix_snapshot_reads_its_commit_while_later_commits_land() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let key = |object: u64, row: u16| {
            let mut key = Keyspace::TableRows.object_prefix(object);
            key.extend_from_slice(&row.to_be_bytes());
            key
        };
        let mut batch = WriteBatch::new();
        for row in 0..100 {
            batch.put(key(1, row * 2), vec![row as u8]);
            batch.put(key(2, row), vec![1]);
        }
        store.commit(batch).unwrap();
        let point: Vec<_> = store
            .scan_prefix(&Keyspace::TableRows.object_prefix(1))
            .map(Result::unwrap)
            .collect();
        let snapshot = store.snapshot(Keyspace::TableRows.object_prefix(1));
        let mut read = snapshot.next_rows(30).unwrap();
        assert_eq!(read.len(), 30);
        // Behind the reader, ahead of it, past its last key, and in
        // another object; then every row ahead deleted.
        let mut batch = WriteBatch::new();
        batch.put(key(1, 0), vec![77]);
        batch.put(key(1, 100), vec![77]);
        batch.put(key(1, 101), vec![77]);
        batch.put(key(1, 999), vec![77]);
        batch.delete(key(2, 5));
        store.commit(batch).unwrap();
        let mut batch = WriteBatch::new();
        for row in 30..100 {
            batch.delete(key(1, row * 2));
        }
        store.commit(batch).unwrap();
        loop {
            let rows = snapshot.next_rows(30).unwrap();
            if rows.is_empty() {
                break;
            }
            read.extend(rows);
        }
        assert_eq!(read, point);
        // A snapshot taken now sees the commits.
        let later = store.snapshot(Keyspace::TableRows.object_prefix(1));
        let rows = later.next_rows(1000).unwrap();
        assert_eq!(rows.len(), 32);
        assert!(later.next_rows(1000).unwrap().is_empty());
    }

    fn value_files(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir.join("values"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn blobs_large_and_small_survive_reopen_and_deletion_removes_files() {
        let dir = tempfile::tempdir().unwrap();
        let large: Vec<u8> = (0..FILE_VALUE_BYTES * 2).map(|i| i as u8).collect();
        let key = |k: &[u8]| Keyspace::TableRows.key(k);
        {
            let store = Store::open(dir.path()).unwrap();
            let mut batch = WriteBatch::new();
            batch.put_blob(key(b"small"), b"tiny".to_vec());
            batch.put_blob(key(b"large"), large.clone());
            batch.put_blob(key(b"other"), large[1..].to_vec());
            store.commit(batch).unwrap();
            assert_eq!(value_files(dir.path()).len(), 2);
            // A large value over a large value leaves one file.
            let mut batch = WriteBatch::new();
            batch.put_blob(key(b"other"), large[2..].to_vec());
            store.commit(batch).unwrap();
            assert_eq!(value_files(dir.path()).len(), 2);
        }
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.get_blob(&key(b"small")).unwrap().unwrap(), b"tiny");
        assert_eq!(store.get_blob(&key(b"large")).unwrap().unwrap(), large);
        let scanned: Vec<_> = store
            .scan_blobs(&key(b""))
            .map(|item| item.unwrap())
            .collect();
        assert_eq!(scanned.len(), 3);
        assert_eq!(scanned[1], (key(b"other"), large[2..].to_vec()));
        let mut batch = WriteBatch::new();
        batch.delete_blob(key(b"large"));
        batch.delete_blob(key(b"small"));
        store.commit(batch).unwrap();
        assert_eq!(store.get_blob(&key(b"large")).unwrap(), None);
        assert_eq!(value_files(dir.path()).len(), 1);
        // The file's bytes count as the value's.
        let under = store.bytes_under(&key(b"")).unwrap();
        assert_eq!(under, (key(b"other").len() + large.len() - 2) as u64);
        assert!(store.disk_bytes() > under);
    }

    #[test]
    fn files_no_commit_names_are_removed_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let large = vec![7u8; FILE_VALUE_BYTES];
        {
            let store = Store::open(dir.path()).unwrap();
            let mut batch = WriteBatch::new();
            batch.put_blob(Keyspace::TableRows.key(b"kept"), large.clone());
            store.commit(batch).unwrap();
            // A refused commit writes no file.
            store.refuse_commits(1);
            let mut batch = WriteBatch::new();
            batch.put_blob(Keyspace::TableRows.key(b"refused"), large.clone());
            assert!(store.commit(batch).is_err());
            assert_eq!(value_files(dir.path()).len(), 1);
        }
        // As a crash leaves them: a file written but never committed, and
        // a half-written temporary file.
        let kept = value_files(dir.path()).remove(0);
        let orphan = kept.replace(".0", ".f");
        std::fs::write(dir.path().join("values").join(&orphan), &large).unwrap();
        std::fs::write(
            dir.path().join("values").join("7a.0000000000000009.tmp"),
            b"x",
        )
        .unwrap();
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(value_files(dir.path()), vec![kept]);
        assert_eq!(
            store.get_blob(&Keyspace::TableRows.key(b"kept")).unwrap(),
            Some(large)
        );
    }

    #[test]
    fn second_open_fails_fast_with_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let _first = Store::open(dir.path()).unwrap();
        let err = Store::open(dir.path()).unwrap_err();
        assert!(matches!(err, StorageError::Locked { .. }), "{err}");
        assert!(err.to_string().contains("in use by another eddy process"));
    }

    #[test]
    fn unusable_dir_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("file");
        std::fs::write(&file, b"x").unwrap();
        let err = Store::open(&file.join("sub")).unwrap_err();
        assert!(matches!(err, StorageError::CreateDir { .. }), "{err}");
    }
}
