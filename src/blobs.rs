//! Content-addressed blob store: model artifacts, scoring inputs and outputs.
//!
//! A blob is named by the blake3 hash of its uncompressed bytes and stored zstd-compressed
//! at `<dir>/<first two hex digits>/<hash>.zst`. Writes stream through a temporary file that
//! is hashed and size-checked as it goes, synced, then renamed into place, so a blob either
//! exists whole under its true hash or not at all.

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
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct BlobInfo {
    pub hash: Digest,
    pub size: u64,
    /// False when the store held these bytes already.
    pub created: bool,
}

#[derive(Debug, Clone)]
pub struct BlobStore {
    dir: PathBuf,
    max_bytes: u64,
}

/// Default upload limit: 512 MiB.
pub const DEFAULT_MAX_BYTES: u64 = 512 << 20;

impl BlobStore {
    pub fn new(dir: &Path, max_bytes: u64) -> BlobStore {
        BlobStore {
            dir: dir.to_path_buf(),
            max_bytes,
        }
    }

    fn path(&self, hash: &Digest) -> PathBuf {
        let hex = hash.to_hex();
        self.dir.join(&hex[..2]).join(format!("{hex}.zst"))
    }

    pub fn contains(&self, hash: &Digest) -> bool {
        self.path(hash).exists()
    }

    /// Starts a streaming write.
    pub fn writer(&self) -> Result<BlobWriter, BlobError> {
        let tmp_dir = self.dir.join("tmp");
        fs::create_dir_all(&tmp_dir).map_err(|e| BlobError::Io(tmp_dir.clone(), e))?;
        let tmp = tmp_dir.join(uuid::Uuid::now_v7().to_string());
        let file = File::create(&tmp).map_err(|e| BlobError::Io(tmp.clone(), e))?;
        let encoder = zstd::Encoder::new(file, 3).map_err(|e| BlobError::Io(tmp.clone(), e))?;
        Ok(BlobWriter {
            store: self.clone(),
            tmp,
            encoder: Some(encoder),
            hasher: blake3::Hasher::new(),
            size: 0,
        })
    }

    pub fn put(&self, bytes: &[u8]) -> Result<BlobInfo, BlobError> {
        let mut w = self.writer()?;
        w.write(bytes)?;
        w.finish()
    }

    /// Reads a blob whole and checks that it still hashes to its name.
    pub fn get(&self, hash: &Digest) -> Result<Vec<u8>, BlobError> {
        let path = self.path(hash);
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(BlobError::NotFound(*hash));
            }
            Err(e) => return Err(BlobError::Io(path, e)),
        };
        let mut out = Vec::new();
        zstd::Decoder::new(file)
            .and_then(|mut d| d.read_to_end(&mut out))
            .map_err(|_| BlobError::Corrupt(*hash))?;
        if blake3::hash(&out).as_bytes() != &hash.0 {
            return Err(BlobError::Corrupt(*hash));
        }
        Ok(out)
    }

    /// Removes a blob; the caller records the deletion as an event first.
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
        file.sync_all().map_err(io(&self.tmp))?;
        let dest = self.store.path(&hash);
        let parent = dest.parent().unwrap_or(&self.store.dir).to_path_buf();
        fs::create_dir_all(&parent).map_err(io(&parent))?;
        let created = !dest.exists();
        if !created {
            fs::remove_file(&self.tmp).map_err(io(&self.tmp))?;
        } else {
            fs::rename(&self.tmp, &dest).map_err(io(&dest))?;
            File::open(&parent)
                .and_then(|d| d.sync_all())
                .map_err(io(&parent))?;
        }
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
