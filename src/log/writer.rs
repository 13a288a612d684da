//! Group commit: one thread owns every redb write transaction.
//!
//! Appenders send requests over a channel; the writer drains what is pending, checks each
//! request's expected version (against the versions earlier requests of the same group will
//! leave), chains and signs the events, makes them durable with their Merkle nodes and one
//! signed checkpoint (in the write-ahead log, see `wal`, then in redb), and only then answers
//! every request of the group. A request that conflicts fails alone; a failed commit fails
//! the whole group and the writer reloads its state from disk, so nothing acknowledged is
//! ever lost or doubled.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use chrono::{DateTime, Utc};
use redb::{Database, Durability, ReadableDatabase, ReadableTable, ReadableTableMetadata};
use tokio::sync::{mpsc, oneshot, watch};
use uuid::Uuid;

use super::checkpoint::Checkpoint;
use super::envelope::{Digest, Fields, chain_hash, encode_record, format_time};
use super::keys::LedgerKey;
use super::merkle::Frontier;
use super::nonces::NoncePool;
use super::store::{
    BLOBS, CHECKPOINTS, EVENT_IDS, EVENTS, MERKLE, MERKLE_STORED_FROM, STREAM_HEADS, STREAM_INDEX,
    Snapshot, TAIL_INDEX, TAIL_MERGE_AT, merkle_key,
};
use super::wal::Wal;
use super::{
    AppendError, Appended, AppendedEvent, BlobChanges, ExpectedVersion, Head, KeyInfo, LogError,
};

/// An event whose payload the appending task already put in canonical form.
pub struct Prepared {
    pub event_id: Uuid,
    pub event_type: String,
    pub schema_version: u32,
    pub actor: String,
    pub payload: Vec<u8>,
}

pub struct Request {
    pub stream: String,
    pub expected: ExpectedVersion,
    pub events: Vec<Prepared>,
    /// Set on a key rotation: the request's events are signed by the old key, everything
    /// after them by this one.
    pub rotate_to: Option<LedgerKey>,
    pub blobs: BlobChanges,
    pub reply: oneshot::Sender<Result<Appended, AppendError>>,
}

/// The writer's view of the log tail, replaced only after a successful commit.
#[derive(Clone)]
pub struct Tail {
    pub size: u64,
    pub last_hash: Digest,
    pub last_time: DateTime<Utc>,
    pub frontier: Frontier,
    pub key: LedgerKey,
    pub keys: Vec<KeyInfo>,
    pub checkpoint: String,
}

pub struct Writer {
    pub db: Arc<Database>,
    pub keys_dir: PathBuf,
    pub origin: String,
    pub tail: Tail,
    /// Last version of every stream sequenced lately, committed or in flight; misses fall
    /// back to the table.
    pub heads: HashMap<String, u64>,
    pub head_tx: watch::Sender<Head>,
    pub max_group_events: usize,
    /// While set, every commit fails (see `Ledger::fail_commits`).
    pub failpoint: Arc<AtomicBool>,
    /// Started by `run`; until then (the genesis commit) the writer signs alone.
    pub signer: Option<SignHelper>,
    /// Nonces drawn ahead (see `nonces`), from `run` on.
    pub nonces: Option<Arc<NoncePool>>,
}

struct Staged {
    position: u64,
    request: usize,
    stream_version: u64,
    event_id: Uuid,
    canonical: Vec<u8>,
    hash: Digest,
    signer: usize,
}

/// A group's events chained (not yet signed), with the versions and keys they leave.
struct Staging {
    now: DateTime<Utc>,
    refused: Vec<Option<AppendError>>,
    staged: Vec<Staged>,
    heads: HashMap<String, u64>,
    signers: Vec<LedgerKey>,
    keys: Vec<KeyInfo>,
}

/// A group chained, signed and encoded: everything but the write transaction.
struct Batch {
    group: Vec<Request>,
    /// Per request: the conflict that refused it, or `None` when its events are in the batch.
    refused: Vec<Option<AppendError>>,
    staged: Vec<Staged>,
    /// Per staged event, its signature (also inside its record) and the id of its key.
    signatures: Vec<[u8; 64]>,
    key_ids: Vec<String>,
    records: Vec<Vec<u8>>,
    nodes: Vec<(u64, [u8; 32])>,
    heads: HashMap<String, u64>,
    checkpoint: Option<String>,
    /// The tail once this batch is durable.
    tail: Tail,
    /// Batches sequenced after a failed commit belong to a later epoch (see `run`).
    epoch: u64,
}

/// Most batches sequenced ahead of the committer, and so most one commit writes. With one,
/// the sequencer waited on every commit and the committer on every signing; letting batches
/// queue and share a transaction took 256 appenders from 32,000 to 40,000 events/s.
const QUEUED_MAX_BATCHES: usize = 16;

/// Groups smaller than this are signed on the writer thread alone.
const PARALLEL_SIGN_MIN: usize = 48;

/// What the committer tells the sequencer.
#[derive(Default)]
struct Progress {
    /// Batches made durable so far.
    committed: AtomicU64,
    /// The epoch of the last batch whose commit failed (0: none).
    failed_epoch: AtomicU64,
}

impl Writer {
    /// Runs the writer as a two-stage pipeline: this thread sequences groups (versions,
    /// chain, signatures, Merkle nodes, checkpoint) while a committer thread writes and
    /// commits the ones before, then answers their requests. A batch is chained on the one
    /// before it, so when a commit fails every batch sequenced on top of it fails too: the
    /// committer records the failed epoch, refuses that epoch's remaining batches, and the
    /// sequencer reloads the tail from disk and starts a new epoch.
    pub fn run(mut self, mut rx: mpsc::Receiver<Request>, wal: Wal) {
        self.nonces = NoncePool::start();
        self.signer = SignHelper::start(self.nonces.clone());
        let progress = Arc::new(Progress::default());
        let (batches, inbox) = std::sync::mpsc::sync_channel::<Batch>(QUEUED_MAX_BATCHES);
        let committer = {
            let (db, head_tx, progress) = (self.db.clone(), self.head_tx.clone(), progress.clone());
            let failpoint = self.failpoint.clone();
            std::thread::Builder::new()
                .name("ledger-committer".into())
                .spawn(move || commit_loop(&db, &head_tx, &progress, &failpoint, wal, inbox))
        };
        let committer = match committer {
            Ok(handle) => handle,
            Err(e) => {
                eprintln!("ledger writer: cannot start the committer thread: {e}");
                return;
            }
        };
        let (mut epoch, mut sequenced) = (1u64, 0u64);
        while let Some(group) = self.gather(&mut rx) {
            if progress.failed_epoch.load(Ordering::Acquire) >= epoch {
                // Every batch before the failed one is durable and none after it will be
                // written: start again from what is on disk.
                epoch = progress.failed_epoch.load(Ordering::Acquire) + 1;
                self.heads.clear();
                if let Err(e) = self.reload() {
                    eprintln!("ledger writer: cannot reload state after a failed commit: {e}");
                }
            }
            if self.heads.len() > 100_000 && progress.committed.load(Ordering::Acquire) == sequenced
            {
                self.heads.clear();
            }
            match self.sequence(group, epoch) {
                Ok(batch) => {
                    self.tail = batch.tail.clone();
                    self.heads
                        .extend(batch.heads.iter().map(|(k, v)| (k.clone(), *v)));
                    sequenced += 1;
                    if let Err(std::sync::mpsc::SendError(batch)) = batches.send(batch) {
                        fail(batch.group, "the ledger committer has stopped");
                        break;
                    }
                }
                Err((group, e)) => fail(group, &e.to_string()),
            }
        }
        drop(batches);
        let _ = committer.join();
    }

    /// Waits for a request, then takes whatever else is pending, up to the group limit.
    fn gather(&self, rx: &mut mpsc::Receiver<Request>) -> Option<Vec<Request>> {
        let first = rx.blocking_recv()?;
        let mut count = first.events.len();
        let mut group = vec![first];
        while count < self.max_group_events {
            match rx.try_recv() {
                Ok(r) => {
                    count += r.events.len();
                    group.push(r);
                }
                Err(_) => break,
            }
        }
        Some(group)
    }

    /// Sequences and commits one group on the calling thread (used for the genesis event).
    pub fn commit_group(&mut self, group: Vec<Request>) {
        let mut batch = match self.sequence(group, 1) {
            Ok(b) => b,
            Err((group, e)) => return fail(group, &e.to_string()),
        };
        let writes = Writes::take(std::slice::from_mut(&mut batch));
        match persist(&self.db, &writes, Durability::Immediate) {
            Ok(()) => {
                self.tail = batch.tail.clone();
                self.heads
                    .extend(batch.heads.iter().map(|(k, v)| (k.clone(), *v)));
                answer(batch, &self.head_tx);
            }
            Err(e) => {
                fail(batch.group, &e.to_string());
                self.heads.clear();
                if let Err(e) = self.reload() {
                    eprintln!("ledger writer: cannot reload state after a failed commit: {e}");
                }
            }
        }
    }

    /// Re-reads the tail from disk after a failed commit.
    fn reload(&mut self) -> Result<(), LogError> {
        self.tail = super::load_tail(&self.db, &self.keys_dir)?;
        Ok(())
    }

    fn current_version(
        &self,
        stream: &str,
        overlay: &HashMap<String, u64>,
        table: &mut Option<redb::ReadOnlyTable<&'static str, u64>>,
    ) -> Result<Option<u64>, LogError> {
        if let Some(v) = overlay.get(stream).or_else(|| self.heads.get(stream)) {
            return Ok(Some(*v));
        }
        if table.is_none() {
            let txn = self.db.begin_read().map_err(LogError::storage)?;
            *table = Some(txn.open_table(STREAM_HEADS).map_err(LogError::storage)?);
        }
        match table {
            Some(t) => Ok(t.get(stream).map_err(LogError::storage)?.map(|v| v.value())),
            None => Ok(None),
        }
    }

    /// Checks versions, chains, signs and encodes a group on top of the current tail.
    #[allow(clippy::result_large_err)]
    fn sequence(&self, group: Vec<Request>, epoch: u64) -> Result<Batch, (Vec<Request>, LogError)> {
        match self.stage(&group) {
            Ok(staging) => Ok(self.seal(group, staging, epoch)),
            Err(e) => Err((group, e)),
        }
    }

    fn stage(&self, group: &[Request]) -> Result<Staging, LogError> {
        let now = Utc::now().max(self.tail.last_time);
        let recorded_at = format_time(now);
        let mut signers = vec![self.tail.key.clone()];
        let mut keys = self.tail.keys.clone();
        let mut staged: Vec<Staged> = Vec::new();
        let mut refused = Vec::with_capacity(group.len());
        let mut overlay: HashMap<String, u64> = HashMap::new();
        let mut table = None;
        let mut position = self.tail.size;
        let mut prev = self.tail.last_hash;
        for (i, req) in group.iter().enumerate() {
            let current = self.current_version(&req.stream, &overlay, &mut table)?;
            if !req.expected.matches(current) {
                refused.push(Some(AppendError::Conflict {
                    stream: req.stream.clone(),
                    expected: req.expected,
                    actual: current,
                }));
                continue;
            }
            refused.push(None);
            let signer = signers.len() - 1;
            let key_id = signers[signer].id.clone();
            let mut version = current.map_or(0, |v| v + 1);
            for ev in &req.events {
                let canonical = Fields {
                    actor: &ev.actor,
                    event_id: ev.event_id,
                    event_type: &ev.event_type,
                    key_id: &key_id,
                    payload: &ev.payload,
                    position,
                    prev_hash: &prev,
                    recorded_at: &recorded_at,
                    schema_version: ev.schema_version,
                    stream: &req.stream,
                    stream_version: version,
                }
                .canonical_bytes();
                let hash = chain_hash(&prev, &canonical);
                staged.push(Staged {
                    position,
                    request: i,
                    stream_version: version,
                    event_id: ev.event_id,
                    canonical,
                    hash,
                    signer,
                });
                prev = hash;
                position += 1;
                version += 1;
            }
            overlay.insert(req.stream.clone(), version - 1);
            if let Some(next) = &req.rotate_to {
                if let Some(last) = keys.last_mut() {
                    last.valid_to = Some(position);
                }
                keys.push(KeyInfo {
                    key_id: next.id.clone(),
                    public_key: next.public_hex(),
                    valid_from: position,
                    valid_to: None,
                });
                signers.push(next.clone());
            }
        }
        Ok(Staging {
            now,
            refused,
            staged,
            heads: overlay,
            signers,
            keys,
        })
    }

    fn seal(&self, group: Vec<Request>, staging: Staging, epoch: u64) -> Batch {
        let Staging {
            now,
            refused,
            staged,
            heads,
            signers,
            keys,
        } = staging;
        let signatures = sign_all(
            &staged,
            &signers,
            self.signer.as_ref(),
            self.nonces.as_deref(),
        );
        let records = staged
            .iter()
            .zip(&signatures)
            .map(|(s, sig)| encode_record(&s.canonical, &s.hash, sig))
            .collect();
        let key_ids = signers.iter().map(|k| k.id.clone()).collect();
        let mut frontier = self.tail.frontier.clone();
        let mut nodes = Vec::new();
        for s in &staged {
            frontier.push(super::merkle::leaf_hash(&s.hash.0), |level, idx, h| {
                if level >= MERKLE_STORED_FROM {
                    nodes.push((merkle_key(level, idx), *h));
                }
            });
        }
        let key = signers
            .last()
            .cloned()
            .unwrap_or_else(|| self.tail.key.clone());
        let (size, last_hash, last_time) = match staged.last() {
            Some(s) => (s.position + 1, s.hash, now),
            None => (self.tail.size, self.tail.last_hash, self.tail.last_time),
        };
        let checkpoint = (!staged.is_empty()).then(|| {
            Checkpoint {
                origin: self.origin.clone(),
                size,
                root: frontier.root(),
            }
            .sign(&key, self.nonces.as_deref())
        });
        let tail = Tail {
            size,
            last_hash,
            last_time,
            frontier,
            key,
            keys,
            checkpoint: checkpoint
                .clone()
                .unwrap_or_else(|| self.tail.checkpoint.clone()),
        };
        Batch {
            group,
            refused,
            staged,
            signatures,
            key_ids,
            records,
            nodes,
            heads,
            checkpoint,
            tail,
            epoch,
        }
    }
}

/// The committer: persists batches in order and answers their requests. Batches that queued
/// up while it was committing share its next transaction, so one flush serves them all.
fn commit_loop(
    db: &Database,
    head_tx: &watch::Sender<Head>,
    progress: &Progress,
    failpoint: &AtomicBool,
    mut wal: Wal,
    inbox: std::sync::mpsc::Receiver<Batch>,
) {
    let mut durable = Durable::Yes;
    while let Ok(first) = inbox.recv() {
        let mut ready = vec![first];
        while ready.len() < QUEUED_MAX_BATCHES {
            match inbox.try_recv() {
                Ok(batch) => ready.push(batch),
                Err(_) => break,
            }
        }
        let failed = progress.failed_epoch.load(Ordering::Acquire);
        let (stale, mut live): (Vec<Batch>, Vec<Batch>) =
            ready.into_iter().partition(|b| b.epoch <= failed);
        let count = (stale.len() + live.len()) as u64;
        for batch in stale {
            fail(batch.group, "an earlier commit failed; retry");
        }
        if let Some(epoch) = live.first().map(|b| b.epoch) {
            let written = if failpoint.load(Ordering::Acquire) {
                Err(LogError::Storage(
                    "commit failure injected by Ledger::fail_commits".into(),
                ))
            } else {
                commit(db, &mut wal, &mut durable, &Writes::take(&mut live))
            };
            match written {
                Ok(()) => live.into_iter().for_each(|b| answer(b, head_tx)),
                Err(e) => {
                    // Every live batch is of one epoch: a later epoch starts only after
                    // this one failed, which makes its queued batches stale.
                    progress.failed_epoch.store(epoch, Ordering::Release);
                    let msg = e.to_string();
                    live.into_iter().for_each(|b| fail(b.group, &msg));
                }
            }
        }
        progress.committed.fetch_add(count, Ordering::AcqRel);
    }
    // Closing: redb durable, the log empty, so the data dir needs no replay.
    if durable != Durable::Yes {
        let synced = persist(db, &Writes::default(), Durability::Immediate);
        if let Err(e) = synced.and_then(|()| wal.restart()) {
            eprintln!("ledger committer: closing: {e} (the next open replays the log)");
        }
    }
}

/// Whether redb holds every acknowledged group durably itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Durable {
    Yes,
    /// Some only in the write-ahead log.
    InLog,
    /// A write to the log failed: the next commit goes through redb's own flush.
    LogFailed,
}

/// Makes one commit's writes durable and visible: logged, then committed to redb without
/// durability; or, when the log is full (or failed), committed durably by redb, after which
/// the log starts again.
fn commit(
    db: &Database,
    wal: &mut Wal,
    durable: &mut Durable,
    writes: &Writes,
) -> Result<(), LogError> {
    let record = writes.record();
    if *durable != Durable::LogFailed && wal.has_room(record.len()) {
        let at = wal.cursor();
        let logged = wal
            .append(&record)
            .and_then(|()| persist(db, writes, Durability::None));
        return match logged {
            Ok(()) => {
                *durable = Durable::InLog;
                Ok(())
            }
            Err(e) => {
                // Never replay a group that was not acknowledged.
                let _ = wal.erase(at);
                *durable = Durable::LogFailed;
                Err(e)
            }
        };
    }
    persist(db, writes, Durability::Immediate)?;
    *durable = match wal.restart() {
        Ok(()) => Durable::Yes,
        Err(_) => Durable::LogFailed,
    };
    Ok(())
}

/// One commit's writes, as redb takes them and as the write-ahead log holds them.
#[derive(Debug, Default, PartialEq)]
pub struct Writes {
    pub events: Vec<EventWrite>,
    pub nodes: Vec<(u64, [u8; 32])>,
    /// Stream heads, later entries overriding earlier ones.
    pub heads: Vec<(String, u64)>,
    /// Blob changes in order: compressed bytes to store, or `None` to delete.
    pub blobs: Vec<([u8; 32], Option<Vec<u8>>)>,
    pub checkpoints: Vec<(u64, String)>,
}

#[derive(Debug, PartialEq)]
pub struct EventWrite {
    pub position: u64,
    pub stream: String,
    pub stream_version: u64,
    pub event_id: u128,
    pub record: Vec<u8>,
}

impl Writes {
    /// The writes of sealed batches, in order; their records and blobs are moved out.
    fn take(batches: &mut [Batch]) -> Writes {
        let mut w = Writes::default();
        for batch in batches {
            let records = std::mem::take(&mut batch.records);
            for (s, record) in batch.staged.iter().zip(records) {
                w.events.push(EventWrite {
                    position: s.position,
                    stream: batch.group[s.request].stream.clone(),
                    stream_version: s.stream_version,
                    event_id: s.event_id.as_u128(),
                    record,
                });
            }
            w.nodes.extend_from_slice(&batch.nodes);
            w.heads
                .extend(batch.heads.iter().map(|(k, v)| (k.clone(), *v)));
            let accepted = batch.group.iter_mut().zip(&batch.refused);
            for (req, _) in accepted.filter(|(_, refused)| refused.is_none()) {
                let changes = std::mem::take(&mut req.blobs);
                w.blobs
                    .extend(changes.put.into_iter().map(|(h, b)| (h.0, Some(b))));
                w.blobs
                    .extend(changes.delete.into_iter().map(|h| (h.0, None)));
            }
            if let Some(note) = &batch.checkpoint {
                w.checkpoints.push((batch.tail.size, note.clone()));
            }
        }
        w
    }

    /// The write-ahead log record of these writes.
    pub(super) fn record(&self) -> Vec<u8> {
        let mut out = super::wal::start();
        let put = |out: &mut Vec<u8>, bytes: &[u8]| {
            out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
            out.extend_from_slice(bytes);
        };
        let count = |out: &mut Vec<u8>, n: usize| out.extend_from_slice(&(n as u32).to_le_bytes());
        count(&mut out, self.events.len());
        for e in &self.events {
            out.extend_from_slice(&e.position.to_le_bytes());
            out.extend_from_slice(&e.stream_version.to_le_bytes());
            out.extend_from_slice(&e.event_id.to_le_bytes());
            put(&mut out, e.stream.as_bytes());
            put(&mut out, &e.record);
        }
        count(&mut out, self.nodes.len());
        for (k, h) in &self.nodes {
            out.extend_from_slice(&k.to_le_bytes());
            out.extend_from_slice(h);
        }
        count(&mut out, self.heads.len());
        for (stream, v) in &self.heads {
            put(&mut out, stream.as_bytes());
            out.extend_from_slice(&v.to_le_bytes());
        }
        count(&mut out, self.blobs.len());
        for (hash, bytes) in &self.blobs {
            out.extend_from_slice(hash);
            match bytes {
                Some(b) => {
                    out.push(1);
                    put(&mut out, b);
                }
                None => out.push(0),
            }
        }
        count(&mut out, self.checkpoints.len());
        for (size, note) in &self.checkpoints {
            out.extend_from_slice(&size.to_le_bytes());
            put(&mut out, note.as_bytes());
        }
        super::wal::seal(out)
    }

    /// Reads a record's body back; `None` when it is not one.
    pub fn decode(body: &[u8]) -> Option<Writes> {
        let mut r = Reader(body);
        let mut w = Writes::default();
        for _ in 0..r.u32()? {
            w.events.push(EventWrite {
                position: r.u64()?,
                stream_version: r.u64()?,
                event_id: u128::from_le_bytes(r.array()?),
                stream: r.text()?,
                record: r.bytes()?.to_vec(),
            });
        }
        for _ in 0..r.u32()? {
            w.nodes.push((r.u64()?, r.array()?));
        }
        for _ in 0..r.u32()? {
            w.heads.push((r.text()?, r.u64()?));
        }
        for _ in 0..r.u32()? {
            let hash = r.array()?;
            let bytes = match r.array::<1>()? {
                [0] => None,
                [1] => Some(r.bytes()?.to_vec()),
                _ => return None,
            };
            w.blobs.push((hash, bytes));
        }
        for _ in 0..r.u32()? {
            w.checkpoints.push((r.u64()?, r.text()?));
        }
        r.0.is_empty().then_some(w)
    }
}

/// Reads a record body front to back; every read is `None` past its end.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (head, rest) = self.0.split_first_chunk::<N>()?;
        self.0 = rest;
        Some(*head)
    }

    fn u32(&mut self) -> Option<u32> {
        self.array().map(u32::from_le_bytes)
    }

    fn u64(&mut self) -> Option<u64> {
        self.array().map(u64::from_le_bytes)
    }

    fn bytes(&mut self) -> Option<&'a [u8]> {
        let n = self.u32()? as usize;
        let (head, rest) = (self.0.get(..n)?, self.0.get(n..)?);
        self.0 = rest;
        Some(head)
    }

    fn text(&mut self) -> Option<String> {
        String::from_utf8(self.bytes()?.to_vec()).ok()
    }
}

/// Commits writes in one transaction with the given durability.
fn persist(db: &Database, writes: &Writes, durability: Durability) -> Result<(), LogError> {
    let mut txn = db.begin_write().map_err(LogError::storage)?;
    txn.set_durability(durability).map_err(LogError::storage)?;
    apply(&txn, writes)?;
    txn.commit().map_err(LogError::storage)
}

/// Writes into a transaction, each table opened once.
pub fn apply(txn: &redb::WriteTransaction, w: &Writes) -> Result<(), LogError> {
    let mut events = txn.open_table(EVENTS).map_err(LogError::storage)?;
    let mut tail = txn.open_table(TAIL_INDEX).map_err(LogError::storage)?;
    let mut ids = txn.open_table(EVENT_IDS).map_err(LogError::storage)?;
    for e in &w.events {
        events
            .insert(e.position, e.record.as_slice())
            .map_err(LogError::storage)?;
        tail.insert(e.position, (e.stream.as_str(), e.stream_version))
            .map_err(LogError::storage)?;
        ids.insert(e.event_id, e.position)
            .map_err(LogError::storage)?;
    }
    if tail.len().map_err(LogError::storage)? >= TAIL_MERGE_AT {
        merge_tail(txn, &mut tail)?;
    }
    let mut nodes = txn.open_table(MERKLE).map_err(LogError::storage)?;
    for (k, h) in &w.nodes {
        nodes.insert(*k, *h).map_err(LogError::storage)?;
    }
    let mut heads = txn.open_table(STREAM_HEADS).map_err(LogError::storage)?;
    for (stream, v) in &w.heads {
        heads
            .insert(stream.as_str(), *v)
            .map_err(LogError::storage)?;
    }
    let mut blobs = txn.open_table(BLOBS).map_err(LogError::storage)?;
    for (hash, bytes) in &w.blobs {
        match bytes {
            Some(b) => blobs.insert(*hash, b.as_slice()).map(drop),
            None => blobs.remove(*hash).map(drop),
        }
        .map_err(LogError::storage)?;
    }
    let mut cps = txn.open_table(CHECKPOINTS).map_err(LogError::storage)?;
    for (size, note) in &w.checkpoints {
        cps.insert(*size, note.as_str())
            .map_err(LogError::storage)?;
    }
    Ok(())
}

/// Moves the tail index into the stream index, sorted, so each index page is written once.
fn merge_tail(
    txn: &redb::WriteTransaction,
    tail: &mut redb::Table<u64, (&'static str, u64)>,
) -> Result<(), LogError> {
    let mut entries: Vec<(String, u64, u64)> = Vec::new();
    for item in tail.iter().map_err(LogError::storage)? {
        let (k, v) = item.map_err(LogError::storage)?;
        let (stream, version) = v.value();
        entries.push((stream.to_string(), version, k.value()));
    }
    entries.sort_unstable();
    let mut index = txn.open_table(STREAM_INDEX).map_err(LogError::storage)?;
    for (stream, version, position) in &entries {
        index
            .insert((stream.as_str(), *version), *position)
            .map_err(LogError::storage)?;
    }
    tail.retain(|_, _| false).map_err(LogError::storage)
}

/// Publishes a durable batch's head and answers its requests.
fn answer(batch: Batch, head_tx: &watch::Sender<Head>) {
    head_tx.send_replace(Head::of(&batch.tail));
    let mut per_request: Vec<Vec<AppendedEvent>> =
        (0..batch.group.len()).map(|_| Vec::new()).collect();
    for (s, signature) in batch.staged.iter().zip(&batch.signatures) {
        per_request[s.request].push(AppendedEvent {
            position: s.position,
            stream_version: s.stream_version,
            event_id: s.event_id,
            hash: s.hash,
            signature: *signature,
            key_id: batch.key_ids[s.signer].clone(),
        });
    }
    let size = batch.tail.size;
    for ((req, refused), events) in batch.group.into_iter().zip(batch.refused).zip(per_request) {
        let outcome = match refused {
            Some(e) => Err(e),
            None => Ok(Appended {
                events,
                checkpoint_size: size,
            }),
        };
        let _ = req.reply.send(outcome);
    }
}

fn fail(group: Vec<Request>, msg: &str) {
    for req in group {
        let _ = req
            .reply
            .send(Err(AppendError::Unavailable(msg.to_string())));
    }
}

/// Signs every staged hash; a large group's second half goes to the helper thread, when
/// there is one, while this thread signs the first.
fn sign_all(
    staged: &[Staged],
    signers: &[LedgerKey],
    helper: Option<&SignHelper>,
    pool: Option<&NoncePool>,
) -> Vec<[u8; 64]> {
    let hashes: Vec<(usize, Digest)> = staged.iter().map(|s| (s.signer, s.hash)).collect();
    match helper {
        Some(h) if staged.len() >= PARALLEL_SIGN_MIN => {
            let (a, b) = hashes.split_at(hashes.len() / 2);
            let job = (b.to_vec(), signers.to_vec());
            let sent = h.jobs.send(job).is_ok();
            let mut out = sign_runs(a, signers, pool);
            match sent.then(|| h.done.recv().ok()).flatten() {
                Some(rest) => out.extend(rest),
                None => out.extend(sign_runs(b, signers, pool)),
            }
            out
        }
        _ => sign_runs(&hashes, signers, pool),
    }
}

/// A group has one signer except at a key rotation: each run of one key is signed together.
fn sign_runs(
    items: &[(usize, Digest)],
    signers: &[LedgerKey],
    pool: Option<&NoncePool>,
) -> Vec<[u8; 64]> {
    items
        .chunk_by(|a, b| a.0 == b.0)
        .flat_map(|run| signers[run[0].0].sign_events(run.iter().map(|(_, h)| h), pool))
        .collect()
}

/// Hashes to sign, each with the index of its key among the keys that come along.
type SignJob = (Vec<(usize, Digest)>, Vec<LedgerKey>);

/// A thread that lives as long as the writer and signs half of each large group: spawning
/// one per group cost a thread creation and its first scheduling on every commit.
pub struct SignHelper {
    jobs: std::sync::mpsc::Sender<SignJob>,
    done: std::sync::mpsc::Receiver<Vec<[u8; 64]>>,
}

impl SignHelper {
    /// None when the thread cannot be started: the writer then signs alone.
    fn start(pool: Option<Arc<NoncePool>>) -> Option<SignHelper> {
        let (jobs, inbox) = std::sync::mpsc::channel::<SignJob>();
        let (results, done) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("ledger-signer".into())
            .spawn(move || {
                for (items, signers) in inbox {
                    if results
                        .send(sign_runs(&items, &signers, pool.as_deref()))
                        .is_err()
                    {
                        break;
                    }
                }
            })
            .ok()?;
        Some(SignHelper { jobs, done })
    }
}

/// Reads the ledger's stream to list every key with its validity range.
pub fn key_history(snap: &Snapshot) -> Result<Vec<KeyInfo>, LogError> {
    let mut keys: Vec<KeyInfo> = Vec::new();
    let events = match snap.read_stream(
        super::LEDGER_STREAM,
        0,
        super::store::Direction::Forward,
        usize::MAX,
    ) {
        Ok(e) => e,
        Err(LogError::UnknownStream(_)) => return Ok(keys),
        Err(e) => return Err(e),
    };
    for e in events {
        let p = &e.unsigned.payload;
        let field = |name: &str| p.get(name).and_then(|v| v.as_str()).map(str::to_string);
        match e.unsigned.event_type.as_str() {
            super::GENESIS_EVENT | super::ROTATION_EVENT => {
                let (Some(key_id), Some(public_key)) = (field("key_id"), field("public_key"))
                else {
                    return Err(LogError::Corrupt(
                        e.position(),
                        "key event without key_id/public_key".into(),
                    ));
                };
                let from = e.position() + u64::from(e.unsigned.event_type == super::ROTATION_EVENT);
                if let Some(last) = keys.last_mut() {
                    last.valid_to = Some(from);
                }
                keys.push(KeyInfo {
                    key_id,
                    public_key,
                    valid_from: from,
                    valid_to: None,
                });
            }
            _ => {}
        }
    }
    Ok(keys)
}
