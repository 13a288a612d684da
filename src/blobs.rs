//! Content-addressed blob store: model artifacts, scoring inputs and outputs.
//!
//! A blob is named by the blake3 hash of its uncompressed bytes and stored zstd-compressed
//! at `<dir>/<first two hex digits>/<hash>.zst`. Writes stream through a temporary file that
//! is hashed and size-checked as it goes, synced, then renamed into place, so a blob either
//! exists whole under its true hash or not at all.
//!
//! Small blobs that an event names (a scored run's inputs and outputs) can instead live in the
//! ledger's own blob table, written in the transaction of that event, so one flush makes the
//! record and its data durable together; [`BlobStore::with_ledger`] lets reads find them.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use crate::log::envelope::Digest;

#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    #[error("blob is larger than the {limit}-byte limit")]
    TooLarge { limit: u64 },
    #[error("no blob {0}")]
    NotFound(Digest),
    #[error("blob {0} is damaged: its content no longer hashes to its name")]
    Corrupt(Digest),
    #[error("blob store I/O at {0}: {1}")]
    Io(PathBuf, std::io::Error),
    #[error("the ledger's blob table could not be read: {0}")]
    Ledger(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct BlobInfo {
    pub hash: Digest,
    pub size: u64,
    /// False when the store held these bytes already.
    pub created: bool,
}

#[derive(Clone)]
pub struct BlobStore {
    /// Shared: the API state that holds the store is cloned for every request.
    dir: std::sync::Arc<Path>,
    max_bytes: u64,
    syncs: std::sync::Arc<GroupSync>,
    /// Where blobs not in `dir` may be: the ledger's blob table.
    ledger: Option<crate::log::Ledger>,
}

/// The zstd level of blobs written by streaming (artifacts and uploads, stored once and kept
/// long). Hashes are of the uncompressed bytes, so no level changes a record.
const LEVEL: i32 = 1;

/// Runs' tables (typed inputs, canonical JSON outputs) are compressed on the request path, at
/// zstd's fast level −3 with its literals still Huffman-coded (negative levels leave them raw
/// by default, which saved only a fifth of number text's bytes). On canonical JSON tables of
/// 1000 rows of distinct numbers (inputs were stored so then), timed alone against level 1: full-precision floats (267 KB) 1.6× faster (0.54 against 0.86 ms) to
/// 0.454 of the input against 0.450; four decimals 1.3× faster, 0.408 against 0.394;
/// repeated values 1.1×, 0.084 against 0.081. Artifacts keep level 1: −3 saved them little
/// time and left them 4–16% larger.
const RUN_LEVEL: i32 = -3;

fn run_compressor() -> std::io::Result<zstd::bulk::Compressor<'static>> {
    let mut c = zstd::bulk::Compressor::new(RUN_LEVEL)?;
    c.set_parameter(zstd::zstd_safe::CParameter::LiteralCompressionMode(
        zstd::zstd_safe::ParamSwitch::Enable,
    ))?;
    Ok(c)
}

/// The most compressed bytes a run keeps in the ledger's blob table rather than in files:
/// more would make the writer's transaction carry bulk data.
pub const INLINE_MAX_BYTES: usize = 256 << 10;

/// Group sync: callers that wrote blobs without syncing them wait for one `syncfs` that
/// started after their writes, so concurrent writers share one flush instead of an fsync
/// per file and directory.
#[derive(Debug, Default)]
struct GroupSync {
    /// (tickets issued, tickets covered by a finished sync, a sync is running)
    state: std::sync::Mutex<(u64, u64, bool)>,
    done: std::sync::Condvar,
}

/// Default upload limit: 512 MiB.
pub const DEFAULT_MAX_BYTES: u64 = 512 << 20;

impl BlobStore {
    pub fn new(dir: &Path, max_bytes: u64) -> BlobStore {
        BlobStore {
            dir: dir.into(),
            max_bytes,
            syncs: Default::default(),
            ledger: None,
        }
    }

    /// The same store, reading blobs it has no file for from `ledger`'s blob table.
    pub fn with_ledger(self, ledger: crate::log::Ledger) -> BlobStore {
        BlobStore {
            ledger: Some(ledger),
            ..self
        }
    }

    /// A run's table's name and its bytes compressed as the store keeps runs' tables, for the
    /// ledger's blob table or a file. One compression context per thread: creating one costs
    /// more than compressing a small run.
    pub fn encode(bytes: &[u8]) -> Result<(Digest, Vec<u8>), BlobError> {
        thread_local! {
            static COMPRESSOR: std::cell::RefCell<Option<zstd::bulk::Compressor<'static>>> =
                const { std::cell::RefCell::new(None) };
        }
        let failed = |e| BlobError::Io(PathBuf::from("<memory>"), e);
        let compressed = COMPRESSOR.with(|c| {
            let mut c = c.borrow_mut();
            let compressor = match c.as_mut() {
                Some(compressor) => compressor,
                None => c.insert(run_compressor().map_err(failed)?),
            };
            compressor.compress(bytes).map_err(failed)
        })?;
        Ok((Digest(*blake3::hash(bytes).as_bytes()), compressed))
    }

    /// A blob's compressed bytes in the ledger's blob table, if it is there.
    fn in_ledger(&self, hash: &Digest) -> Result<Option<Vec<u8>>, BlobError> {
        match &self.ledger {
            None => Ok(None),
            Some(l) => l
                .snapshot()
                .and_then(|snap| snap.blob(hash))
                .map_err(|e| BlobError::Ledger(e.to_string())),
        }
    }

    fn path(&self, hash: &Digest) -> PathBuf {
        let hex = hash.to_hex();
        self.dir.join(&hex[..2]).join(format!("{hex}.zst"))
    }

    /// The largest blob (and upload) this store takes.
    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    pub fn contains(&self, hash: &Digest) -> bool {
        self.path(hash).exists() || matches!(self.in_ledger(hash), Ok(Some(_)))
    }

    /// Starts a streaming write.
    pub fn writer(&self) -> Result<BlobWriter, BlobError> {
        let tmp = self.tmp_path()?;
        let file = File::create(&tmp).map_err(|e| BlobError::Io(tmp.clone(), e))?;
        let encoder = zstd::Encoder::new(file, LEVEL).map_err(|e| BlobError::Io(tmp.clone(), e))?;
        Ok(BlobWriter {
            store: self.clone(),
            tmp,
            encoder: Some(encoder),
            hasher: blake3::Hasher::new(),
            size: 0,
            sync: true,
        })
    }

    pub fn put(&self, bytes: &[u8]) -> Result<BlobInfo, BlobError> {
        let mut w = self.writer()?;
        w.write(bytes)?;
        w.finish()
    }

    /// Writes a blob without syncing it: it is durable only once `sync` returns.
    pub fn put_unsynced(&self, bytes: &[u8]) -> Result<BlobInfo, BlobError> {
        let mut w = self.writer()?;
        w.sync = false;
        w.write(bytes)?;
        w.finish()
    }

    /// Stores a blob `encode` made, as its file, not yet synced (see `put_unsynced`).
    pub fn put_encoded_unsynced(
        &self,
        hash: &Digest,
        compressed: &[u8],
        size: u64,
    ) -> Result<BlobInfo, BlobError> {
        if size > self.max_bytes {
            return Err(BlobError::TooLarge {
                limit: self.max_bytes,
            });
        }
        let tmp = self.tmp_path()?;
        let placed = fs::write(&tmp, compressed)
            .map_err(|e| BlobError::Io(tmp.clone(), e))
            .and_then(|()| self.place(&tmp, hash, false));
        if placed.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        Ok(BlobInfo {
            hash: *hash,
            size,
            created: placed?,
        })
    }

    fn tmp_path(&self) -> Result<PathBuf, BlobError> {
        let tmp_dir = self.dir.join("tmp");
        fs::create_dir_all(&tmp_dir).map_err(|e| BlobError::Io(tmp_dir.clone(), e))?;
        Ok(tmp_dir.join(uuid::Uuid::now_v7().to_string()))
    }

    /// Moves a finished temporary file to its blob's name (dropping it when the blob is
    /// there already); with `sync`, makes the name durable. Answers whether it was new.
    fn place(&self, tmp: &Path, hash: &Digest, sync: bool) -> Result<bool, BlobError> {
        let io = |p: &Path| {
            let p = p.to_path_buf();
            move |e| BlobError::Io(p, e)
        };
        let dest = self.path(hash);
        let parent = dest.parent().unwrap_or(&self.dir).to_path_buf();
        fs::create_dir_all(&parent).map_err(io(&parent))?;
        if dest.exists() {
            fs::remove_file(tmp).map_err(io(tmp))?;
            return Ok(false);
        }
        fs::rename(tmp, &dest).map_err(io(&dest))?;
        if sync {
            File::open(&parent)
                .and_then(|d| d.sync_all())
                .map_err(io(&parent))?;
        }
        Ok(true)
    }

    /// Makes every blob written before this call durable, sharing one `syncfs` of the store's
    /// file system with the callers that arrive while it runs.
    pub fn sync(&self) -> Result<(), BlobError> {
        let g = &self.syncs;
        let lock = || g.state.lock().unwrap_or_else(|p| p.into_inner());
        let mine = {
            let mut st = lock();
            st.0 += 1;
            st.0
        };
        let mut st = lock();
        loop {
            if st.1 >= mine {
                return Ok(());
            }
            if !st.2 {
                st.2 = true;
                let covers = st.0;
                drop(st);
                let result = syncfs(&self.dir);
                let mut after = lock();
                after.2 = false;
                if result.is_ok() {
                    after.1 = after.1.max(covers);
                }
                g.done.notify_all();
                return result;
            }
            st = g.done.wait(st).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Reads a blob whole, from its file or the ledger's blob table, and checks that it still
    /// hashes to its name.
    pub fn get(&self, hash: &Digest) -> Result<Vec<u8>, BlobError> {
        let path = self.path(hash);
        let mut out = Vec::new();
        let decoded = match File::open(&path) {
            Ok(file) => zstd::Decoder::new(file).and_then(|mut d| d.read_to_end(&mut out)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let compressed = self.in_ledger(hash)?.ok_or(BlobError::NotFound(*hash))?;
                zstd::Decoder::new(compressed.as_slice()).and_then(|mut d| d.read_to_end(&mut out))
            }
            Err(e) => return Err(BlobError::Io(path, e)),
        };
        decoded.map_err(|_| BlobError::Corrupt(*hash))?;
        if blake3::hash(&out).as_bytes() != &hash.0 {
            return Err(BlobError::Corrupt(*hash));
        }
        Ok(out)
    }

    /// Removes a blob's file; the caller records the deletion as an event first, and that
    /// event's append deletes the blob from the ledger's blob table.
    pub fn remove(&self, hash: &Digest) -> Result<bool, BlobError> {
        let path = self.path(hash);
        match fs::remove_file(&path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(BlobError::Io(path, e)),
        }
    }
}

/// A blob being written; dropped unfinished, it leaves nothing behind.
pub struct BlobWriter {
    store: BlobStore,
    tmp: PathBuf,
    encoder: Option<zstd::Encoder<'static, File>>,
    hasher: blake3::Hasher,
    size: u64,
    /// Whether `finish` syncs the file and its directory (see `BlobStore::put_unsynced`).
    sync: bool,
}

/// Flushes the file system holding `dir` (Linux `syncfs`).
fn syncfs(dir: &Path) -> Result<(), BlobError> {
    use std::os::fd::AsRawFd;
    let d = File::open(dir).map_err(|e| BlobError::Io(dir.to_path_buf(), e))?;
    // SAFETY: `d` is an open file descriptor for the duration of the call.
    if unsafe { libc::syncfs(d.as_raw_fd()) } != 0 {
        return Err(BlobError::Io(
            dir.to_path_buf(),
            std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}

impl BlobWriter {
    pub fn write(&mut self, chunk: &[u8]) -> Result<(), BlobError> {
        self.size += chunk.len() as u64;
        if self.size > self.store.max_bytes {
            return Err(BlobError::TooLarge {
                limit: self.store.max_bytes,
            });
        }
        self.hasher.update(chunk);
        let Some(enc) = self.encoder.as_mut() else {
            return Err(BlobError::Io(
                self.tmp.clone(),
                std::io::Error::other("writer already finished"),
            ));
        };
        enc.write_all(chunk)
            .map_err(|e| BlobError::Io(self.tmp.clone(), e))
    }

    pub fn finish(mut self) -> Result<BlobInfo, BlobError> {
        let hash = Digest(*self.hasher.finalize().as_bytes());
        let io = |p: &Path| {
            let p = p.to_path_buf();
            move |e| BlobError::Io(p, e)
        };
        let enc = self
            .encoder
            .take()
            .ok_or_else(|| io(&self.tmp)(std::io::Error::other("writer already finished")))?;
        let file = enc.finish().map_err(io(&self.tmp))?;
        if self.sync {
            file.sync_all().map_err(io(&self.tmp))?;
        }
        let created = self.store.place(&self.tmp, &hash, self.sync)?;
        Ok(BlobInfo {
            hash,
            size: self.size,
            created,
        })
    }
}

impl Drop for BlobWriter {
    fn drop(&mut self) {
        if self.encoder.is_some() {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsynced_writes_become_durable_through_a_shared_sync() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::new(dir.path(), DEFAULT_MAX_BYTES);
        std::thread::scope(|s| {
            for t in 0..8u8 {
                let store = &store;
                s.spawn(move || {
                    let bytes = vec![t; 1000 + usize::from(t)];
                    let info = store.put_unsynced(&bytes).unwrap();
                    store.sync().unwrap();
                    assert_eq!(store.get(&info.hash).unwrap(), bytes);
                });
            }
        });
        let (issued, covered, running) = *store.syncs.state.lock().unwrap();
        assert_eq!((issued, running), (8, false));
        assert!(covered >= 8, "every ticket was covered by a finished sync");
    }

    #[test]
    fn round_trip_dedup_and_damage_detection() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::new(dir.path(), 1 << 20);
        let data: Vec<u8> = (0..100_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        let mut w = store.writer().unwrap();
        for chunk in data.chunks(7777) {
            w.write(chunk).unwrap();
        }
        let info = w.finish().unwrap();
        assert_eq!(info.hash.0, *blake3::hash(&data).as_bytes());
        assert_eq!(info.size, data.len() as u64);
        assert_eq!(store.get(&info.hash).unwrap(), data);
        assert!(info.created);
        let again = store.put(&data).unwrap();
        assert_eq!(
            (again.hash, again.created),
            (info.hash, false),
            "same content, same blob"
        );
        let stored = fs::metadata(store.path(&info.hash)).unwrap().len();
        assert!(stored < data.len() as u64 / 4, "compressed: {stored} bytes");

        fs::write(
            store.path(&info.hash),
            zstd::encode_all(&b"other bytes"[..], 3).unwrap(),
        )
        .unwrap();
        assert!(matches!(store.get(&info.hash), Err(BlobError::Corrupt(_))));
        assert!(store.remove(&info.hash).unwrap());
        assert!(matches!(store.get(&info.hash), Err(BlobError::NotFound(_))));
    }

    #[test]
    fn size_limit_is_enforced_while_streaming_and_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::new(dir.path(), 10);
        let mut w = store.writer().unwrap();
        w.write(b"12345").unwrap();
        assert!(matches!(
            w.write(b"678901"),
            Err(BlobError::TooLarge { limit: 10 })
        ));
        drop(w);
        assert_eq!(fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0);
    }
}
