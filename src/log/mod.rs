//! The event log: a signed, hash-chained, append-only ledger on redb.
//!
//! See `docs/ledger-format.md` for the byte-level rules an independent verifier follows.

pub mod bundle;
pub mod canonical;
pub mod checkpoint;
pub mod envelope;
pub mod keys;
pub mod merkle;
pub mod nonces;
pub mod store;
pub mod subscribe;
pub mod verify;
pub mod wal;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use redb::Database;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot, watch};
use uuid::Uuid;

use envelope::{Digest, Event};
use keys::{KeyError, LedgerKey};
use merkle::{Frontier, Node};
use store::{Direction, META, Snapshot};
pub use writer::Prepared;
use writer::{Request, Tail, Writer};

/// The stream holding the ledger's own events: genesis and key rotations.
pub const LEDGER_STREAM: &str = "ledger";
pub const GENESIS_EVENT: &str = "LedgerInitialized";
pub const ROTATION_EVENT: &str = "LedgerKeyRotated";
pub const DB_FILE: &str = "ledger.redb";
pub const KEYS_DIR: &str = "keys";

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("no ledger in {0}: run `provenant init --data {0}` first")]
    NotInitialized(PathBuf),
    #[error("a ledger already exists in {0}")]
    AlreadyInitialized(PathBuf),
    #[error("the data dir {0} is in use by another process")]
    Locked(PathBuf),
    #[error("the data dir has ledger format version {found}; this build reads version {supported}")]
    UnsupportedFormat { found: String, supported: u64 },
    #[error("unknown stream {0:?}")]
    UnknownStream(String),
    #[error("storage error: {0}")]
    Storage(String),
    #[error("event at position {0} is unreadable: {1}")]
    Corrupt(u64, String),
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error("{0}")]
    Io(String),
    #[error("position {position} is not below tree size {size}")]
    OutOfRange { position: u64, size: u64 },
    #[error("tree size {requested} is beyond the log's size {size}")]
    BeyondHead { requested: u64, size: u64 },
    #[error("the ledger writer has stopped")]
    Stopped,
}

impl LogError {
    pub fn storage(e: impl std::fmt::Display) -> LogError {
        LogError::Storage(e.to_string())
    }
}

/// The stream version an append expects to find (optimistic concurrency).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExpectedVersion {
    /// Append whatever the stream's version.
    Any,
    /// The stream must not exist yet.
    NoStream,
    /// The stream's last version must be exactly this.
    Exact(u64),
}

impl ExpectedVersion {
    /// What a decision made on a stream read at `version` expects: that version still, or
    /// no stream when there was none.
    pub fn after(version: Option<u64>) -> ExpectedVersion {
        version.map_or(ExpectedVersion::NoStream, ExpectedVersion::Exact)
    }

    pub fn matches(&self, current: Option<u64>) -> bool {
        match self {
            ExpectedVersion::Any => true,
            ExpectedVersion::NoStream => current.is_none(),
            ExpectedVersion::Exact(v) => current == Some(*v),
        }
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AppendError {
    #[error("an append needs at least one event")]
    Empty,
    #[error("stream name {0:?} is invalid: 1 to 256 bytes, no control characters")]
    InvalidStream(String),
    #[error("event type {0:?} is invalid: 1 to 128 ASCII letters, digits, '.', '_' or '-'")]
    InvalidEventType(String),
    #[error("event {index}: payload must be a JSON object")]
    PayloadNotObject { index: usize },
    #[error(
        "event {index}: payload is {size} bytes in canonical form, over the {limit}-byte limit"
    )]
    PayloadTooLarge {
        index: usize,
        size: usize,
        limit: usize,
    },
    #[error("event {index}: {reason}")]
    PayloadNotCanonicalizable { index: usize, reason: String },
    #[error("stream {stream:?} is at version {actual:?}, the append expected {expected:?}")]
    Conflict {
        stream: String,
        expected: ExpectedVersion,
        actual: Option<u64>,
    },
    #[error("the ledger cannot accept writes: {0}")]
    Unavailable(String),
}

/// Blobs an append stores in or deletes from the log's own blob table, by blake3 hash of
/// their uncompressed bytes; `put` holds the compressed bytes (see `crate::blobs`).
#[derive(Debug, Clone, Default)]
pub struct BlobChanges {
    pub put: Vec<(Digest, Vec<u8>)>,
    pub delete: Vec<Digest>,
}

/// An event to append.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub event_type: String,
    pub schema_version: u32,
    pub actor: String,
    pub payload: Value,
}

#[derive(Debug, Clone, Serialize)]
pub struct AppendedEvent {
    pub position: u64,
    pub stream_version: u64,
    pub event_id: Uuid,
    pub hash: Digest,
    /// What a receipt needs besides the hash, so no caller reads the event back for it.
    #[serde(skip)]
    pub signature: [u8; 64],
    #[serde(skip)]
    pub key_id: String,
}

/// The acknowledgement of a durable append.
#[derive(Debug, Clone, Serialize)]
pub struct Appended {
    pub events: Vec<AppendedEvent>,
    /// The size of the signed checkpoint that covers these events.
    pub checkpoint_size: u64,
}

/// A ledger key and the positions whose events it signs, `[valid_from, valid_to)`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyInfo {
    pub key_id: String,
    pub public_key: String,
    pub valid_from: u64,
    pub valid_to: Option<u64>,
}

/// The committed end of the log.
#[derive(Debug, Clone, Serialize)]
pub struct Head {
    pub size: u64,
    pub last_hash: Option<Digest>,
    pub root: String,
    pub key_id: String,
    pub checkpoint: String,
}

impl Head {
    fn of(t: &Tail) -> Head {
        Head {
            size: t.size,
            last_hash: (t.size > 0).then_some(t.last_hash),
            root: hex::encode(t.frontier.root()),
            key_id: t.key.id.clone(),
            checkpoint: t.checkpoint.clone(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    pub max_payload_bytes: usize,
    pub max_group_events: usize,
    pub queue_depth: usize,
    /// Bytes of write-ahead log between redb's own durable commits (see `wal`).
    pub wal_capacity: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_payload_bytes: 1 << 20,
            max_group_events: 4096,
            queue_depth: 16_384,
            wal_capacity: wal::DEFAULT_CAPACITY,
        }
    }
}

/// A handle on an open ledger; cheap to clone.
#[derive(Clone)]
pub struct Ledger {
    inner: Arc<Inner>,
}

struct Inner {
    db: Arc<Database>,
    dir: PathBuf,
    origin: String,
    config: Config,
    tx: mpsc::Sender<Request>,
    head: watch::Receiver<Head>,
    writer: std::sync::Mutex<Option<std::thread::JoinHandle<()>>>,
    failpoint: Arc<std::sync::atomic::AtomicBool>,
}

fn open_db(dir: &Path, create: bool) -> Result<Database, LogError> {
    let path = dir.join(DB_FILE);
    let res = if create {
        Database::create(&path)
    } else {
        Database::open(&path)
    };
    res.map_err(|e| match e {
        redb::DatabaseError::DatabaseAlreadyOpen => LogError::Locked(dir.to_path_buf()),
        redb::DatabaseError::UpgradeRequired(v) => LogError::UnsupportedFormat {
            found: format!("redb file format {v}"),
            supported: store::FORMAT_VERSION,
        },
        other => LogError::storage(other),
    })
}

fn load_tail(db: &Database, keys_dir: &Path) -> Result<Tail, LogError> {
    let snap = Snapshot::new(db)?;
    let size = snap.size()?;
    let last = match size {
        0 => None,
        n => snap.event(n - 1)?,
    };
    let keys = writer::key_history(&snap)?;
    let current = keys
        .last()
        .ok_or_else(|| LogError::Corrupt(0, "the log has no genesis key".into()))?;
    let key = LedgerKey::load(keys_dir, &current.key_id)?;
    let frontier = Frontier::load(size, &snap.nodes()?)?;
    let checkpoint = snap.checkpoint(size)?.unwrap_or_default();
    let last_time = match &last {
        Some(e) => chrono::DateTime::parse_from_rfc3339(&e.unsigned.recorded_at)
            .map_err(|err| LogError::Corrupt(e.position(), err.to_string()))?
            .with_timezone(&chrono::Utc),
        None => chrono::DateTime::<chrono::Utc>::MIN_UTC,
    };
    Ok(Tail {
        size,
        last_hash: last.map_or(Digest::ZERO, |e| e.hash),
        last_time,
        frontier,
        key,
        keys,
        checkpoint,
    })
}

/// A snapshot of a data dir in a format this build reads (1 or the current one), and that format.
fn checked_snapshot(db: &Database) -> Result<(Snapshot, u64), LogError> {
    let snap = Snapshot::new(db)?;
    let found = snap
        .meta("format_version")?
        .map(|v| String::from_utf8_lossy(&v).into_owned());
    match found.as_deref().and_then(|v| v.parse::<u64>().ok()) {
        Some(v @ 1..=store::FORMAT_VERSION) => Ok((snap, v)),
        _ => Err(LogError::UnsupportedFormat {
            found: found.unwrap_or_else(|| "none".into()),
            supported: store::FORMAT_VERSION,
        }),
    }
}

/// Format 1 → … → 6: the tables later formats added, empty (format 1 indexed every event
/// directly; format 2 kept every blob in files), and the Merkle levels this format rebuilds
/// from the events dropped (format 3 stored every leaf, format 4 every level from 1); the
/// write-ahead log of format 6 starts empty.
fn upgrade(db: &Database) -> Result<(), LogError> {
    let txn = db.begin_write().map_err(LogError::storage)?;
    txn.open_table(store::TAIL_INDEX)
        .map_err(LogError::storage)?;
    txn.open_table(store::BLOBS).map_err(LogError::storage)?;
    txn.open_table(store::MERKLE)
        .map_err(LogError::storage)?
        .retain_in(..store::MERKLE_STORED_START, |_, _| false)
        .map_err(LogError::storage)?;
    txn.open_table(META)
        .map_err(LogError::storage)?
        .insert(
            "format_version",
            store::FORMAT_VERSION.to_string().as_bytes(),
        )
        .map_err(LogError::storage)?;
    txn.commit().map_err(LogError::storage)
}

/// A read-only snapshot of a data dir's log, without the writer or any secret key: what an
/// auditor holding a copy of the data dir runs `verify` on.
pub fn read_only(dir: &Path) -> Result<Snapshot, LogError> {
    if !dir.join(DB_FILE).exists() {
        return Err(LogError::NotInitialized(dir.to_path_buf()));
    }
    let db = Arc::new(open_db(dir, false)?);
    checked_snapshot(&db)?;
    wal::recover(&db, dir)?;
    Snapshot::owning(db)
}

/// Validates and canonicalizes events in the appending task, off the writer thread.
pub fn prepare(
    config: &Config,
    stream: &str,
    events: Vec<NewEvent>,
) -> Result<Vec<Prepared>, AppendError> {
    if events.is_empty() {
        return Err(AppendError::Empty);
    }
    if stream.is_empty() || stream.len() > 256 || stream.chars().any(char::is_control) {
        return Err(AppendError::InvalidStream(stream.to_string()));
    }
    events
        .into_iter()
        .enumerate()
        .map(|(index, e)| {
            let valid_type = !e.event_type.is_empty()
                && e.event_type.len() <= 128
                && e.event_type
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
            if !valid_type {
                return Err(AppendError::InvalidEventType(e.event_type));
            }
            if !e.payload.is_object() {
                return Err(AppendError::PayloadNotObject { index });
            }
            let payload = canonical::to_vec(&e.payload).map_err(|err| {
                AppendError::PayloadNotCanonicalizable {
                    index,
                    reason: err.to_string(),
                }
            })?;
            if payload.len() > config.max_payload_bytes {
                return Err(AppendError::PayloadTooLarge {
                    index,
                    size: payload.len(),
                    limit: config.max_payload_bytes,
                });
            }
            Ok(Prepared {
                event_id: Uuid::now_v7(),
                event_type: e.event_type,
                schema_version: e.schema_version,
                actor: e.actor,
                payload,
            })
        })
        .collect()
}

impl Ledger {
    /// Creates a data dir with a fresh ledger key and the genesis event.
    pub fn init(dir: &Path) -> Result<LedgerKey, LogError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| LogError::Io(format!("{}: {e}", dir.display())))?;
        if dir.join(DB_FILE).exists() {
            return Err(LogError::AlreadyInitialized(dir.to_path_buf()));
        }
        let db = Arc::new(open_db(dir, true)?);
        let key = LedgerKey::generate()?;
        key.save(&dir.join(KEYS_DIR))?;
        let ledger_id = Uuid::now_v7();
        let origin = format!("provenant/{ledger_id}");
        let txn = db.begin_write().map_err(LogError::storage)?;
        {
            let mut meta = txn.open_table(META).map_err(LogError::storage)?;
            meta.insert(
                "format_version",
                store::FORMAT_VERSION.to_string().as_bytes(),
            )
            .map_err(LogError::storage)?;
            meta.insert("origin", origin.as_bytes())
                .map_err(LogError::storage)?;
        }
        // Create every table so readers of an empty ledger find them.
        txn.open_table(store::EVENTS).map_err(LogError::storage)?;
        txn.open_table(store::STREAM_INDEX)
            .map_err(LogError::storage)?;
        txn.open_table(store::TAIL_INDEX)
            .map_err(LogError::storage)?;
        txn.open_table(store::STREAM_HEADS)
            .map_err(LogError::storage)?;
        txn.open_table(store::EVENT_IDS)
            .map_err(LogError::storage)?;
        txn.open_table(store::MERKLE).map_err(LogError::storage)?;
        txn.open_table(store::CHECKPOINTS)
            .map_err(LogError::storage)?;
        txn.open_table(store::BLOBS).map_err(LogError::storage)?;
        txn.commit().map_err(LogError::storage)?;

        let genesis = NewEvent {
            event_type: GENESIS_EVENT.into(),
            schema_version: 1,
            actor: "system:bootstrap".into(),
            payload: json!({
                "ledger_id": ledger_id.to_string(),
                "origin": origin,
                "key_id": key.id,
                "public_key": key.public_hex(),
                "format_version": store::FORMAT_VERSION,
            }),
        };
        let tail = Tail {
            size: 0,
            last_hash: Digest::ZERO,
            last_time: chrono::DateTime::<chrono::Utc>::MIN_UTC,
            frontier: Frontier::default(),
            key: key.clone(),
            keys: vec![KeyInfo {
                key_id: key.id.clone(),
                public_key: key.public_hex(),
                valid_from: 0,
                valid_to: None,
            }],
            checkpoint: String::new(),
        };
        let (head_tx, _) = watch::channel(Head::of(&tail));
        let mut w = Writer {
            db,
            keys_dir: dir.join(KEYS_DIR),
            origin,
            tail,
            heads: Default::default(),
            head_tx,
            max_group_events: 1,
            signer: None,
            nonces: None,
            failpoint: Arc::default(),
        };
        let prepared = prepare(&Config::default(), LEDGER_STREAM, vec![genesis])
            .map_err(|e| LogError::Io(e.to_string()))?;
        let (reply, mut rx) = oneshot::channel();
        w.commit_group(vec![Request {
            stream: LEDGER_STREAM.into(),
            expected: ExpectedVersion::NoStream,
            events: prepared,
            rotate_to: None,
            blobs: BlobChanges::default(),
            reply,
        }]);
        match rx.try_recv() {
            Ok(Ok(_)) => Ok(key),
            Ok(Err(e)) => Err(LogError::Io(format!("writing the genesis event: {e}"))),
            Err(_) => Err(LogError::Stopped),
        }
    }

    /// Opens an initialized data dir and starts its writer thread.
    pub fn open(dir: &Path, config: Config) -> Result<Ledger, LogError> {
        if !dir.join(DB_FILE).exists() {
            return Err(LogError::NotInitialized(dir.to_path_buf()));
        }
        let db = Arc::new(open_db(dir, false)?);
        let (snap, format) = checked_snapshot(&db)?;
        if format < store::FORMAT_VERSION {
            upgrade(&db)?;
        }
        let origin = snap
            .meta("origin")?
            .map(|v| String::from_utf8_lossy(&v).into_owned())
            .ok_or_else(|| LogError::Corrupt(0, "no origin recorded".into()))?;
        drop(snap);
        wal::recover(&db, dir)?;
        let wal = wal::Wal::open(dir, config.wal_capacity)?;
        let keys_dir = dir.join(KEYS_DIR);
        let tail = load_tail(&db, &keys_dir)?;
        let (head_tx, head) = watch::channel(Head::of(&tail));
        let (tx, rx) = mpsc::channel(config.queue_depth);
        let failpoint: Arc<std::sync::atomic::AtomicBool> = Arc::default();
        let writer = Writer {
            db: db.clone(),
            keys_dir,
            origin: origin.clone(),
            tail,
            heads: Default::default(),
            head_tx,
            max_group_events: config.max_group_events,
            signer: None,
            nonces: None,
            failpoint: failpoint.clone(),
        };
        let handle = std::thread::Builder::new()
            .name("ledger-writer".into())
            .spawn(move || writer.run(rx, wal))
            .map_err(|e| LogError::Io(format!("starting the writer thread: {e}")))?;
        let writer = std::sync::Mutex::new(Some(handle));
        Ok(Ledger {
            inner: Arc::new(Inner {
                db,
                dir: dir.to_path_buf(),
                origin,
                config,
                tx,
                head,
                writer,
                failpoint,
            }),
        })
    }

    /// Stops the writer after the requests already queued and releases the data dir.
    /// Fails if other handles to this ledger are still alive.
    pub fn close(self) -> Result<(), Ledger> {
        let inner = Arc::try_unwrap(self.inner).map_err(|inner| Ledger { inner })?;
        let handle = inner.writer.lock().ok().and_then(|mut h| h.take());
        drop(inner.tx);
        if let Some(h) = handle {
            let _ = h.join();
        }
        Ok(())
    }

    /// Makes every commit fail while `on` (appends answer `Unavailable`; nothing is
    /// written), then recover when cleared: the writer reloads its state from disk. For
    /// proving that nothing depending on a durable event goes ahead without one.
    pub fn fail_commits(&self, on: bool) {
        self.inner
            .failpoint
            .store(on, std::sync::atomic::Ordering::Release);
    }

    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    pub fn origin(&self) -> &str {
        &self.inner.origin
    }

    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// Appends `events` to `stream` if its version matches; resolves once durable.
    pub async fn append(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<Appended, AppendError> {
        self.append_with_blobs(stream, expected, events, BlobChanges::default())
            .await
    }

    /// Appends events and, in the same transaction, stores or deletes the blobs they name:
    /// a blob stored this way is durable exactly when its event is, with one flush for both.
    /// A refused append changes no blob.
    pub async fn append_with_blobs(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
        blobs: BlobChanges,
    ) -> Result<Appended, AppendError> {
        let prepared = prepare(&self.inner.config, stream, events)?;
        self.submit(stream, expected, prepared, None, blobs).await
    }

    async fn submit(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        events: Vec<Prepared>,
        rotate_to: Option<LedgerKey>,
        blobs: BlobChanges,
    ) -> Result<Appended, AppendError> {
        let (reply, rx) = oneshot::channel();
        let req = Request {
            stream: stream.to_string(),
            expected,
            events,
            rotate_to,
            blobs,
            reply,
        };
        self.inner
            .tx
            .send(req)
            .await
            .map_err(|_| AppendError::Unavailable("the ledger writer has stopped".into()))?;
        rx.await
            .map_err(|_| AppendError::Unavailable("the ledger writer has stopped".into()))?
    }

    /// Generates a new ledger key and announces it in an event signed by the current key.
    pub async fn rotate_key(&self, actor: &str) -> Result<(KeyInfo, Appended), LogError> {
        let next = LedgerKey::generate()?;
        next.save(&self.inner.dir.join(KEYS_DIR))?;
        let previous = self.head().key_id;
        let proof = next.sign_raw(&keys::rotation_message(&previous, &next.public()));
        let event = NewEvent {
            event_type: ROTATION_EVENT.into(),
            schema_version: 1,
            actor: actor.to_string(),
            payload: json!({
                "previous_key_id": previous,
                "key_id": next.id,
                "public_key": next.public_hex(),
                "proof": hex::encode(proof),
            }),
        };
        let prepared = prepare(&self.inner.config, LEDGER_STREAM, vec![event])
            .map_err(|e| LogError::Io(e.to_string()))?;
        let appended = self
            .submit(
                LEDGER_STREAM,
                ExpectedVersion::Any,
                prepared,
                Some(next.clone()),
                BlobChanges::default(),
            )
            .await
            .map_err(|e| LogError::Io(e.to_string()))?;
        let from = appended.events.last().map_or(0, |e| e.position + 1);
        let info = KeyInfo {
            key_id: next.id.clone(),
            public_key: next.public_hex(),
            valid_from: from,
            valid_to: None,
        };
        Ok((info, appended))
    }

    pub fn head(&self) -> Head {
        self.inner.head.borrow().clone()
    }

    pub fn head_watch(&self) -> watch::Receiver<Head> {
        self.inner.head.clone()
    }

    /// Every ledger key with the positions it signs.
    pub fn keys(&self) -> Result<Vec<KeyInfo>, LogError> {
        writer::key_history(&self.snapshot()?)
    }

    pub fn snapshot(&self) -> Result<Snapshot, LogError> {
        Snapshot::new(&self.inner.db)
    }

    pub fn read_all(&self, from: u64, limit: usize) -> Result<Vec<Event>, LogError> {
        self.snapshot()?.read_all(from, limit)
    }

    pub fn read_stream(
        &self,
        stream: &str,
        from: u64,
        dir: Direction,
        limit: usize,
    ) -> Result<Vec<Event>, LogError> {
        self.snapshot()?.read_stream(stream, from, dir, limit)
    }

    pub fn event(&self, position: u64) -> Result<Option<Event>, LogError> {
        self.snapshot()?.event(position)
    }

    pub fn event_by_id(&self, id: Uuid) -> Result<Option<Event>, LogError> {
        let snap = self.snapshot()?;
        match snap.position_of(id)? {
            Some(p) => snap.event(p),
            None => Ok(None),
        }
    }

    /// The signed checkpoint of exactly `size` events (one exists per commit).
    pub fn checkpoint(&self, size: u64) -> Result<Option<String>, LogError> {
        self.snapshot()?.checkpoint(size)
    }

    /// Inclusion proof of `position` in the tree of `size` events, with the leaf hash.
    pub fn inclusion_proof(&self, position: u64, size: u64) -> Result<(Node, Vec<Node>), LogError> {
        let snap = self.snapshot()?;
        let head = snap.size()?;
        if size > head {
            return Err(LogError::BeyondHead {
                requested: size,
                size: head,
            });
        }
        if position >= size {
            return Err(LogError::OutOfRange { position, size });
        }
        let nodes = snap.nodes()?;
        let leaf = merkle::NodeSource::node(&nodes, 0, position)?;
        Ok((leaf, merkle::inclusion_proof(&nodes, position, size)?))
    }

    /// Consistency proof between trees of `size1` and `size2` events.
    pub fn consistency_proof(&self, size1: u64, size2: u64) -> Result<Vec<Node>, LogError> {
        let snap = self.snapshot()?;
        let head = snap.size()?;
        if size2 > head {
            return Err(LogError::BeyondHead {
                requested: size2,
                size: head,
            });
        }
        if size1 == 0 || size1 > size2 {
            return Err(LogError::OutOfRange {
                position: size1,
                size: size2 + 1,
            });
        }
        merkle::consistency_proof(&snap.nodes()?, size1, size2)
    }

    /// Root of the tree of the first `size` events.
    pub fn root_at(&self, size: u64) -> Result<Node, LogError> {
        let snap = self.snapshot()?;
        let head = snap.size()?;
        if size > head {
            return Err(LogError::BeyondHead {
                requested: size,
                size: head,
            });
        }
        if size == 0 {
            return Ok(merkle::empty_root());
        }
        merkle::range_hash(&snap.nodes()?, 0, size)
    }

    /// Catch-up from `from`, then live, without gaps or repeats.
    pub fn subscribe(&self, from: u64) -> subscribe::Subscription {
        subscribe::Subscription::new(self.clone(), from)
    }
}
