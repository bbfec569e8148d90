//! Large values, kept in files beside sled.
//!
//! sled keeps a value past its page size as a "blob" and holds every blob
//! it has written or read in memory, outside its cache's accounting: a
//! stream's stored blocks and a view's state-log chunks would stay
//! resident for good. So a value of [`FILE_VALUE_BYTES`] or more is written
//! to a file of its own, fsynced before the commit that names it, and sled
//! keeps only a reference (generation, length, checksum). Smaller values
//! stay inline. The operating system's page cache, which it can evict,
//! stands between these files and readers.
//!
//! A file is named by its key (hex) and a generation, unique within the
//! directory, so a new value never overwrites a committed one. Files no
//! committed reference names (a commit that failed or a crash between the
//! file and the commit, or a deleted value's file not yet removed) are
//! removed when the store opens.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::{Result, StorageError};

/// Values of at least this many bytes are kept in files.
pub const FILE_VALUE_BYTES: usize = 64 << 10;

const INLINE: u8 = 0;
const IN_FILE: u8 = 1;
const REFERENCE_LEN: usize = 1 + 8 + 8 + 4;
const TEMP_SUFFIX: &str = ".tmp";

/// A value's stored form in sled: inline, or a reference to its file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FileRef {
    pub generation: u64,
    pub len: u64,
    pub crc: u32,
}

impl FileRef {
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(REFERENCE_LEN);
        out.push(IN_FILE);
        out.extend_from_slice(&self.generation.to_be_bytes());
        out.extend_from_slice(&self.len.to_be_bytes());
        out.extend_from_slice(&self.crc.to_be_bytes());
        out
    }

    /// The reference stored in `value`, if it is one.
    pub fn decode(value: &[u8]) -> Result<Option<FileRef>> {
        match value.first() {
            Some(&INLINE) => Ok(None),
            Some(&IN_FILE) if value.len() == REFERENCE_LEN => Ok(Some(FileRef {
                generation: u64::from_be_bytes(value[1..9].try_into().expect("8 bytes")),
                len: u64::from_be_bytes(value[9..17].try_into().expect("8 bytes")),
                crc: u32::from_be_bytes(value[17..21].try_into().expect("4 bytes")),
            })),
            _ => Err(StorageError::Damaged("a stored value's reference")),
        }
    }
}

/// `value` inline, as sled stores it.
pub(crate) fn inline(value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + value.len());
    out.push(INLINE);
    out.extend_from_slice(value);
    out
}

/// The directory of value files.
#[derive(Debug)]
pub(crate) struct ValueFiles {
    dir: PathBuf,
    next_generation: AtomicU64,
}

/// A value file written for a commit, not yet committed.
#[derive(Debug)]
pub(crate) struct Staged {
    pub key: Vec<u8>,
    pub reference: Vec<u8>,
    pub path: PathBuf,
}

impl ValueFiles {
    /// Opens `dir`, creating it if needed.
    pub fn open(dir: PathBuf) -> std::io::Result<Self> {
        std::fs::create_dir_all(&dir)?;
        let mut newest = 0;
        for entry in std::fs::read_dir(&dir)? {
            let name = entry?.file_name();
            if let Some((_, generation)) = name.to_str().and_then(parse_name) {
                newest = newest.max(generation);
            }
        }
        Ok(ValueFiles {
            dir,
            next_generation: AtomicU64::new(newest + 1),
        })
    }

    fn path(&self, key: &[u8], generation: u64) -> PathBuf {
        self.dir.join(file_name(key, generation))
    }

    /// Writes `value` to a new file for `key` and syncs it.
    pub fn write(&self, key: Vec<u8>, value: &[u8]) -> std::io::Result<Staged> {
        let generation = self.next_generation.fetch_add(1, Ordering::Relaxed);
        let path = self.path(&key, generation);
        let mut temp = path.clone().into_os_string();
        temp.push(TEMP_SUFFIX);
        let temp = PathBuf::from(temp);
        let mut file = File::create(&temp)?;
        file.write_all(value)?;
        file.sync_data()?;
        drop(file);
        std::fs::rename(&temp, &path)?;
        let reference = FileRef {
            generation,
            len: value.len() as u64,
            crc: crc32fast::hash(value),
        };
        Ok(Staged {
            key,
            reference: reference.encode(),
            path,
        })
    }

    /// Makes the files written so far (their names) durable.
    pub fn sync_dir(&self) -> std::io::Result<()> {
        File::open(&self.dir)?.sync_all()
    }

    /// The value `reference` names for `key`; `None` if its file is gone
    /// (a deletion committed since the reference was read).
    pub fn read(&self, key: &[u8], reference: FileRef) -> Result<Option<Vec<u8>>> {
        let bytes = match std::fs::read(self.path(key, reference.generation)) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(StorageError::ValueFile(e)),
        };
        if bytes.len() as u64 != reference.len || crc32fast::hash(&bytes) != reference.crc {
            return Err(StorageError::Damaged("a stored value's file"));
        }
        Ok(Some(bytes))
    }

    /// Removes the file of `key`'s value stored as `reference`.
    pub fn remove(&self, key: &[u8], reference: FileRef) {
        remove_quietly(&self.path(key, reference.generation));
    }

    /// Removes every file that `is_live` does not claim.
    pub fn sweep(&self, is_live: impl Fn(&[u8], u64) -> Result<bool>) -> Result<usize> {
        let mut removed = 0;
        for entry in std::fs::read_dir(&self.dir).map_err(StorageError::ValueFile)? {
            let entry = entry.map_err(StorageError::ValueFile)?;
            let name = entry.file_name();
            let live = match name.to_str().and_then(parse_name) {
                Some((key, generation)) => is_live(&key, generation)?,
                None => false,
            };
            if !live {
                remove_quietly(&entry.path());
                removed += 1;
            }
        }
        Ok(removed)
    }
}

fn remove_quietly(path: &Path) {
    if let Err(e) = std::fs::remove_file(path) {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(path = %path.display(), error = %e, "cannot remove a value file");
        }
    }
}

fn file_name(key: &[u8], generation: u64) -> String {
    let mut name = String::with_capacity(key.len() * 2 + 17);
    for byte in key {
        name.push(char::from_digit((byte >> 4) as u32, 16).expect("a hex digit"));
        name.push(char::from_digit((byte & 15) as u32, 16).expect("a hex digit"));
    }
    name.push('.');
    name.push_str(&format!("{generation:016x}"));
    name
}

/// The key and generation a file name stands for; `None` for anything
/// else (a temporary file among them).
fn parse_name(name: &str) -> Option<(Vec<u8>, u64)> {
    let (hex, generation) = name.split_once('.')?;
    if hex.len() % 2 != 0 || generation.len() != 16 {
        return None;
    }
    let generation = u64::from_str_radix(generation, 16).ok()?;
    let key = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect::<Option<Vec<u8>>>()?;
    Some((key, generation))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_temporary_files_are_not_values() {
        let key = vec![0, 1, 0xab, 0xff];
        let name = file_name(&key, 42);
        assert_eq!(name, "0001abff.000000000000002a");
        assert_eq!(parse_name(&name), Some((key, 42)));
        assert_eq!(parse_name(&format!("{name}{TEMP_SUFFIX}")), None);
        assert_eq!(parse_name("LOCK"), None);
        assert_eq!(parse_name("zz.000000000000002a"), None);
    }

    #[test]
    fn a_damaged_file_is_an_error_and_a_missing_one_is_none() {
        let dir = tempfile::tempdir().unwrap();
        let files = ValueFiles::open(dir.path().join("values")).unwrap();
        let staged = files.write(b"k".to_vec(), b"hello").unwrap();
        let reference = FileRef::decode(&staged.reference).unwrap().unwrap();
        assert_eq!(files.read(b"k", reference).unwrap().unwrap(), b"hello");
        std::fs::write(&staged.path, b"hellO").unwrap();
        assert!(files.read(b"k", reference).is_err());
        files.remove(b"k", reference);
        assert_eq!(files.read(b"k", reference).unwrap(), None);
    }
}
