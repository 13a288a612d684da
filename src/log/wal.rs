//! The write-ahead log: what makes a group commit durable before redb does.
//!
//! A durable redb commit flushes every page its transaction touched: for a small group,
//! some twenty 4 KiB pages spread over the file (each table's path from root to leaf, the
//! allocator's state). This machine's disk flushes twenty scattered pages in ~0.9 ms and the
//! same bytes written in one run in ~0.15 ms. So each group's writes go here first, as one
//! record in one sequential durable write, and only then does redb commit them, without
//! durability: visible to readers at once, flushed to its file later. When the next record
//! would not fit in the file's capacity, the committer makes redb durable instead and starts
//! the file again from its beginning. Opening a data dir replays what redb lacks.
//!
//! A record is `magic (4) ‖ body length (u32 LE) ‖ blake3(magic ‖ length ‖ body) (32) ‖
//! body`, the body being one group's [`Writes`], and starts on a 4 KiB boundary. Reading
//! stops at the first record that does not check; a record is replayed only when its events
//! continue the log's chain at its end, so what an earlier pass through the file left behind
//! is never replayed twice.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::Path;

use redb::{Database, Durability};

use super::LogError;
use super::envelope::{Digest, chain_hash, split_record};
use super::store::Snapshot;
use super::writer::{EventWrite, Writes, apply};

pub const WAL_FILE: &str = "ledger.wal";

/// Bytes of log before the committer makes redb durable and starts the file again.
pub const DEFAULT_CAPACITY: u64 = 16 << 20;

const MAGIC: &[u8; 4] = b"PVWL";
const HEADER: usize = 4 + 4 + 32;

/// Records start on block boundaries: the log is written with `O_DIRECT`, in whole blocks.
const BLOCK: usize = 4096;

fn padded(bytes: usize) -> usize {
    bytes.div_ceil(BLOCK) * BLOCK
}

pub struct Wal {
    file: File,
    /// Opened with `O_DIRECT | O_DSYNC`: each write goes to the disk, and is durable, as it
    /// is. Without (a file system that refuses it, such as tmpfs), writes go through the page
    /// cache and `fdatasync` follows each. Direct writes also keep the page cache out: a
    /// buffered small write into a large cached folio made `fdatasync` write the whole folio
    /// (1 MiB per commit, seen here).
    direct: bool,
    /// Where the next record goes.
    cursor: u64,
    capacity: u64,
    /// Written up to here: past it the file grows, zero-filled a chunk ahead of the records
    /// (a direct write that extends the file also commits its new size, which took several
    /// times as long as overwriting here).
    filled: u64,
    /// Room for one block-aligned copy of a record.
    aligned: Vec<u8>,
}

/// How far ahead of the records the file is zero-filled.
const GROWTH: u64 = 1 << 20;

fn io(what: &str, e: std::io::Error) -> LogError {
    LogError::Io(format!("write-ahead log: {what}: {e}"))
}

impl Wal {
    /// Opens (or creates) the log for writing from its beginning. Call after [`recover`].
    pub fn open(dir: &Path, capacity: u64) -> Result<Wal, LogError> {
        use std::os::unix::fs::OpenOptionsExt;
        let path = dir.join(WAL_FILE);
        let open = |flags: i32| {
            OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .custom_flags(flags)
                .open(&path)
        };
        let (file, direct) = match open(libc::O_DIRECT | libc::O_DSYNC) {
            Ok(f) => (f, true),
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                (open(0).map_err(|e| io("open", e))?, false)
            }
            Err(e) => return Err(io("open", e)),
        };
        let len = file.metadata().map_err(|e| io("stat", e))?.len();
        Ok(Wal {
            file,
            direct,
            cursor: 0,
            capacity,
            filled: len / BLOCK as u64 * BLOCK as u64,
            aligned: Vec::new(),
        })
    }

    /// Whether a record of `bytes` fits before the capacity.
    pub fn has_room(&self, bytes: usize) -> bool {
        self.cursor + padded(bytes) as u64 <= self.capacity
    }

    /// Writes one record at the cursor: durable when this returns. On an error it may be
    /// partly on disk; the caller erases it.
    pub fn append(&mut self, record: &[u8]) -> Result<(), LogError> {
        self.write_at(self.cursor, record)?;
        self.cursor += padded(record.len()) as u64;
        Ok(())
    }

    fn write_at(&mut self, at: u64, bytes: &[u8]) -> Result<(), LogError> {
        if !self.direct {
            self.file
                .write_all_at(bytes, at)
                .map_err(|e| io("write", e))?;
            return self.file.sync_data().map_err(|e| io("flush", e));
        }
        let end = at + padded(bytes.len()) as u64;
        if end > self.filled {
            let to = end.max(self.filled + GROWTH);
            let filled = self.filled;
            let zeros = aligned(&mut self.aligned, (to - filled) as usize);
            zeros.fill(0);
            self.file
                .write_all_at(zeros, filled)
                .map_err(|e| io("grow", e))?;
            self.filled = to;
        }
        let block = aligned(&mut self.aligned, padded(bytes.len()));
        block[..bytes.len()].copy_from_slice(bytes);
        block[bytes.len()..].fill(0);
        self.file
            .write_all_at(block, at)
            .map_err(|e| io("write", e))
    }

    /// Makes the record at `at` unreadable, so a group that did not commit is never
    /// replayed, and puts the cursor there.
    pub fn erase(&mut self, at: u64) -> Result<(), LogError> {
        self.cursor = at;
        self.write_at(at, &[0u8; HEADER])
    }

    pub fn cursor(&self) -> u64 {
        self.cursor
    }

    /// Starts again from the beginning, after redb has made everything durable; the first
    /// record is erased so a later replay finds nothing to do.
    pub fn restart(&mut self) -> Result<(), LogError> {
        if self.cursor == 0 {
            return Ok(());
        }
        self.erase(0)
    }
}

/// `n` bytes (a multiple of the block) of `buf`, starting on a block boundary in memory, as
/// direct writes need.
fn aligned(buf: &mut Vec<u8>, n: usize) -> &mut [u8] {
    if buf.len() < n + BLOCK {
        *buf = vec![0; n + BLOCK];
    }
    let start = buf.as_ptr().align_offset(BLOCK);
    &mut buf[start..start + n]
}

/// A record's buffer with room for its header: append the body, then [`seal`] it.
pub fn start() -> Vec<u8> {
    let mut out = Vec::with_capacity(4096);
    out.resize(HEADER, 0);
    out
}

/// Fills in the header of a record begun by [`start`].
pub fn seal(mut record: Vec<u8>) -> Vec<u8> {
    let len = (record.len() - HEADER) as u32;
    record[..4].copy_from_slice(MAGIC);
    record[4..8].copy_from_slice(&len.to_le_bytes());
    let sum = checksum(&record[..8], &record[HEADER..]);
    record[8..HEADER].copy_from_slice(&sum);
    record
}

fn checksum(head: &[u8], body: &[u8]) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.update(head);
    h.update(body);
    *h.finalize().as_bytes()
}

/// The bodies of the records that check, in file order, up to the first that does not.
fn records(bytes: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut at = 0usize;
    while let Some(header) = bytes.get(at..at + HEADER) {
        if &header[..4] != MAGIC {
            break;
        }
        let len = u32::from_le_bytes([header[4], header[5], header[6], header[7]]) as usize;
        let Some(body) = bytes.get(at + HEADER..at + HEADER + len) else {
            break;
        };
        if checksum(&header[..8], body) != header[8..HEADER] {
            break;
        }
        out.push(body);
        at += padded(HEADER + len);
    }
    out
}

/// Whether `events` continue the chain at (`size`, `last`): the next position, each hash
/// over the one before it. On success (`size`, `last`) move past them.
fn continues(events: &[EventWrite], size: &mut u64, last: &mut Digest) -> bool {
    let (mut s, mut l) = (*size, *last);
    for e in events {
        let Ok((canonical, hash, _)) = split_record(&e.record) else {
            return false;
        };
        if e.position != s || chain_hash(&l, canonical) != hash {
            return false;
        }
        s += 1;
        l = hash;
    }
    *size = s;
    *last = l;
    true
}

/// Replays into redb, durably, every logged group it does not hold yet: the groups a crash
/// (or a process that stopped without closing the ledger) left only in the log. Answers the
/// number of events replayed.
pub fn recover(db: &Database, dir: &Path) -> Result<u64, LogError> {
    let path = dir.join(WAL_FILE);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(io("read", e)),
    };
    let snap = Snapshot::new(db)?;
    let start = snap.size()?;
    let mut size = start;
    let mut last = match size {
        0 => Digest::ZERO,
        n => snap
            .event_hash(n - 1)?
            .ok_or_else(|| LogError::Corrupt(n - 1, "missing".into()))?,
    };
    drop(snap);
    let mut replay = Vec::new();
    for body in records(&bytes) {
        let Some(writes) = Writes::decode(body) else {
            break;
        };
        let Some(first) = writes.events.first().map(|e| e.position) else {
            break;
        };
        if first < size {
            // Already in redb: an earlier pass through the file, or a group redb made
            // durable itself.
            continue;
        }
        if !continues(&writes.events, &mut size, &mut last) {
            break;
        }
        replay.push(writes);
    }
    if !replay.is_empty() {
        let mut txn = db.begin_write().map_err(LogError::storage)?;
        txn.set_durability(Durability::Immediate)
            .map_err(LogError::storage)?;
        for w in &replay {
            apply(&txn, w)?;
        }
        txn.commit().map_err(LogError::storage)?;
    }
    // Everything is in redb now: a later replay has nothing to do.
    let file = OpenOptions::new()
        .write(true)
        .open(&path)
        .map_err(|e| io("open", e))?;
    if file.metadata().map_err(|e| io("stat", e))?.len() >= HEADER as u64 {
        file.write_all_at(&[0u8; HEADER], 0)
            .map_err(|e| io("erase", e))?;
        file.sync_data().map_err(|e| io("flush", e))?;
    }
    Ok(size - start)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(body: &[u8]) -> Vec<u8> {
        let mut r = start();
        r.extend_from_slice(body);
        seal(r)
    }

    /// A record as the log lays it out: padded to its block.
    fn block(body: &[u8]) -> Vec<u8> {
        let mut r = frame(body);
        r.resize(padded(r.len()), 0xee);
        r
    }

    #[test]
    fn records_read_up_to_the_first_that_does_not_check() {
        let (a, b, c) = (block(b"first"), block(b""), block(&[7; 5000]));
        let mut file = [a.clone(), b.clone(), c.clone()].concat();
        assert_eq!(records(&file), [&b"first"[..], b"", &[7; 5000]]);
        // A torn last record ends the log.
        file.truncate(a.len() + b.len() + 4200);
        assert_eq!(records(&file), [&b"first"[..], b""]);
        let mut flipped = [a.clone(), c.clone(), b.clone()].concat();
        flipped[a.len() + HEADER + 2] ^= 1;
        assert_eq!(records(&flipped), [&b"first"[..]]);
        let mut erased = [a, c].concat();
        erased[..HEADER].fill(0);
        assert!(records(&erased).is_empty());
        assert!(records(&[]).is_empty());
    }

    #[test]
    fn writes_read_back_as_written_and_a_cut_body_is_refused() {
        let w = Writes {
            events: vec![EventWrite {
                position: 7,
                stream: "deployment-é".into(),
                stream_version: 3,
                event_id: u128::MAX - 5,
                record: vec![1, 2, 3],
            }],
            nodes: vec![(1 << 58, [9; 32])],
            heads: vec![("a".into(), 1), ("a".into(), 2)],
            blobs: vec![([1; 32], Some(vec![5; 10])), ([1; 32], None)],
            checkpoints: vec![(8, "origin\n8\nroot\n".into())],
        };
        let record = w.record();
        let bodies = records(&record);
        assert_eq!(bodies.len(), 1);
        assert_eq!(Writes::decode(bodies[0]).as_ref(), Some(&w));
        for cut in 0..bodies[0].len() {
            assert_eq!(Writes::decode(&bodies[0][..cut]), None, "cut at {cut}");
        }
        assert_eq!(
            Writes::decode(&[bodies[0], &[0]].concat()),
            None,
            "trailing byte"
        );
    }
}
