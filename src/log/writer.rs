//! Group commit: one thread owns every redb write transaction.
//!
//! Appenders send requests over a channel; the writer drains what is pending, checks each
//! request's expected version (against the versions earlier requests of the same group will
//! leave), chains and signs the events, writes them with their Merkle nodes and one signed
//! checkpoint, commits with `Durability::Immediate`, and only then answers every request of
//! the group. A request that conflicts fails alone; a failed commit fails the whole group and
//! the writer reloads its state from disk, so nothing acknowledged is ever lost or doubled.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use redb::{Database, Durability, ReadableTable};
use tokio::sync::{mpsc, oneshot, watch};
use uuid::Uuid;

use super::checkpoint::Checkpoint;
use super::envelope::{Digest, Fields, chain_hash, encode_record, format_time};
use super::keys::LedgerKey;
use super::merkle::Frontier;
use super::store::{
    CHECKPOINTS, EVENT_IDS, EVENTS, MERKLE, STREAM_HEADS, STREAM_INDEX, Snapshot, merkle_key,
};
use super::{AppendError, Appended, AppendedEvent, ExpectedVersion, Head, KeyInfo, LogError};

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
    /// Last version of recently written streams; misses fall back to the table.
    pub heads: HashMap<String, u64>,
    pub head_tx: watch::Sender<Head>,
    pub max_group_events: usize,
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

/// Groups smaller than this are signed on the writer thread alone.
const PARALLEL_SIGN_MIN: usize = 48;

impl Writer {
    pub fn run(mut self, mut rx: mpsc::Receiver<Request>) {
        while let Some(first) = rx.blocking_recv() {
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
            self.commit_group(group);
        }
    }

    pub fn commit_group(&mut self, group: Vec<Request>) {
        match self.write(&group) {
            Ok((outcomes, tail, heads)) => {
                self.tail = tail;
                self.heads.extend(heads);
                if self.heads.len() > 100_000 {
                    self.heads.clear();
                }
                self.head_tx.send_replace(Head::of(&self.tail));
                for (req, outcome) in group.into_iter().zip(outcomes) {
                    let _ = req.reply.send(outcome);
                }
            }
            Err(e) => {
                let msg = e.to_string();
                for req in group {
                    let _ = req.reply.send(Err(AppendError::Unavailable(msg.clone())));
                }
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

    #[allow(clippy::type_complexity)]
    fn write(
        &self,
        group: &[Request],
    ) -> Result<
        (
            Vec<Result<Appended, AppendError>>,
            Tail,
            HashMap<String, u64>,
        ),
        LogError,
    > {
        let now = Utc::now().max(self.tail.last_time);
        let recorded_at = format_time(now);
        let mut txn = self.db.begin_write().map_err(LogError::storage)?;
        txn.set_durability(Durability::Immediate)
            .map_err(LogError::storage)?;

        let mut signers = vec![self.tail.key.clone()];
        let mut keys = self.tail.keys.clone();
        let mut staged: Vec<Staged> = Vec::new();
        let mut outcomes: Vec<Option<Result<Appended, AppendError>>> =
            Vec::with_capacity(group.len());
        let mut overlay: HashMap<String, u64> = HashMap::new();
        let mut position = self.tail.size;
        let mut prev = self.tail.last_hash;
        {
            let heads_table = txn.open_table(STREAM_HEADS).map_err(LogError::storage)?;
            for (i, req) in group.iter().enumerate() {
                let current = match overlay
                    .get(&req.stream)
                    .or_else(|| self.heads.get(&req.stream))
                {
                    Some(v) => Some(*v),
                    None => heads_table
                        .get(req.stream.as_str())
                        .map_err(LogError::storage)?
                        .map(|v| v.value()),
                };
                if !req.expected.matches(current) {
                    outcomes.push(Some(Err(AppendError::Conflict {
                        stream: req.stream.clone(),
                        expected: req.expected,
                        actual: current,
                    })));
                    continue;
                }
                outcomes.push(None);
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
        }

        let signatures = sign_all(&staged, &signers);
        let mut frontier = self.tail.frontier.clone();
        {
            let mut events = txn.open_table(EVENTS).map_err(LogError::storage)?;
            let mut index = txn.open_table(STREAM_INDEX).map_err(LogError::storage)?;
            let mut ids = txn.open_table(EVENT_IDS).map_err(LogError::storage)?;
            let mut nodes = txn.open_table(MERKLE).map_err(LogError::storage)?;
            let mut node_err = None;
            for (s, sig) in staged.iter().zip(&signatures) {
                events
                    .insert(
                        s.position,
                        encode_record(&s.canonical, &s.hash, sig).as_slice(),
                    )
                    .map_err(LogError::storage)?;
                index
                    .insert(
                        (group[s.request].stream.as_str(), s.stream_version),
                        s.position,
                    )
                    .map_err(LogError::storage)?;
                ids.insert(s.event_id.as_u128(), s.position)
                    .map_err(LogError::storage)?;
                frontier.push(super::merkle::leaf_hash(&s.hash.0), |level, idx, h| {
                    if let Err(e) = nodes.insert(merkle_key(level, idx), *h) {
                        node_err.get_or_insert(e);
                    }
                });
            }
            if let Some(e) = node_err {
                return Err(LogError::storage(e));
            }
            let mut heads = txn.open_table(STREAM_HEADS).map_err(LogError::storage)?;
            for (stream, v) in &overlay {
                heads
                    .insert(stream.as_str(), *v)
                    .map_err(LogError::storage)?;
            }
        }
        let key = signers
            .last()
            .cloned()
            .unwrap_or_else(|| self.tail.key.clone());
        let checkpoint = if staged.is_empty() {
            self.tail.checkpoint.clone()
        } else {
            let note = Checkpoint {
                origin: self.origin.clone(),
                size: position,
                root: frontier.root(),
            }
            .sign(&key);
            let mut cps = txn.open_table(CHECKPOINTS).map_err(LogError::storage)?;
            cps.insert(position, note.as_str())
                .map_err(LogError::storage)?;
            note
        };
        txn.commit().map_err(LogError::storage)?;

        let mut per_request: Vec<Vec<AppendedEvent>> =
            (0..group.len()).map(|_| Vec::new()).collect();
        for s in &staged {
            per_request[s.request].push(AppendedEvent {
                position: s.position,
                stream_version: s.stream_version,
                event_id: s.event_id,
                hash: s.hash,
            });
        }
        let outcomes = outcomes
            .into_iter()
            .zip(per_request)
            .map(|(o, events)| {
                o.unwrap_or(Ok(Appended {
                    events,
                    checkpoint_size: position,
                }))
            })
            .collect();
        let tail = Tail {
            size: position,
            last_hash: prev,
            last_time: now,
            frontier,
            key,
            keys,
            checkpoint,
        };
        Ok((outcomes, tail, overlay))
    }
}

/// Signs every staged hash, on two threads when the group is large enough to pay for it.
fn sign_all(staged: &[Staged], signers: &[LedgerKey]) -> Vec<[u8; 64]> {
    let sign = |items: &[Staged]| -> Vec<[u8; 64]> {
        items
            .iter()
            .map(|s| signers[s.signer].sign_event(&s.hash))
            .collect()
    };
    if staged.len() < PARALLEL_SIGN_MIN {
        return sign(staged);
    }
    let (a, b) = staged.split_at(staged.len() / 2);
    std::thread::scope(|scope| {
        let other = scope.spawn(|| sign(b));
        let mut out = sign(a);
        match other.join() {
            Ok(rest) => out.extend(rest),
            Err(_) => out.extend(sign(b)),
        }
        out
    })
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
