//! The redb tables and the read paths over them.

use redb::{ReadTransaction, ReadableDatabase, ReadableTable, TableDefinition};
use uuid::Uuid;

use super::LogError;
use super::envelope::{Digest, Event, decode_record, split_record};
use super::merkle::{Frontier, Node, NodeSource, leaf_hash};

/// position → `canonical bytes ‖ hash ‖ signature`.
pub const EVENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("events");
/// (stream, stream version) → position, for every event before the tail index's first.
pub const STREAM_INDEX: TableDefinition<(&str, u64), u64> = TableDefinition::new("stream_index");
/// position → (stream, stream version) of the most recent events. Commits append here,
/// in key order, so a group touches a page or two instead of one index page per stream;
/// the writer moves the entries into `STREAM_INDEX` in bulk, sorted, once there are
/// `TAIL_MERGE_AT` of them.
pub const TAIL_INDEX: TableDefinition<u64, (&str, u64)> = TableDefinition::new("tail_index");
/// Tail index entries that trigger a merge into the stream index.
pub const TAIL_MERGE_AT: u64 = 8192;
/// stream → last stream version.
pub const STREAM_HEADS: TableDefinition<&str, u64> = TableDefinition::new("stream_heads");
/// event id → position.
pub const EVENT_IDS: TableDefinition<u128, u64> = TableDefinition::new("event_ids");
/// `level << 56 | index` → hash of the complete Merkle subtree at that node, for levels
/// `MERKLE_STORED_FROM` and up; a lower node is recomputed from the events it covers.
pub const MERKLE: TableDefinition<u64, [u8; 32]> = TableDefinition::new("merkle");
/// The lowest stored Merkle level. Storing every level cost the commit path one more insert
/// per event; from level 4 it costs one per eight, and a lower node is rebuilt from at most
/// eight event hashes, so a proof reads at most a few dozen records more.
pub const MERKLE_STORED_FROM: u8 = 4;
/// tree size → signed checkpoint note, one per commit.
pub const CHECKPOINTS: TableDefinition<u64, &str> = TableDefinition::new("checkpoints");
/// blake3 hash of a blob's bytes → those bytes zstd-compressed: the small blobs that events
/// name (a scored run's inputs and outputs), written in the transaction of the event that
/// names them, so one flush makes both durable (see `Ledger::append_with_blobs`).
pub const BLOBS: TableDefinition<[u8; 32], &[u8]> = TableDefinition::new("blobs");
/// format version and ledger identity.
pub const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

/// 2 added `TAIL_INDEX`, 3 added `BLOBS`, 4 stopped storing Merkle leaves in `MERKLE`, 5
/// stopped storing its levels below `MERKLE_STORED_FROM`, 6 added the write-ahead log
/// (`wal`), which an older build would not replay; an older data dir is upgraded when the
/// writer opens it.
pub const FORMAT_VERSION: u64 = 6;

/// `MERKLE` keys below this are of levels this format no longer stores.
pub const MERKLE_STORED_START: u64 = merkle_key(MERKLE_STORED_FROM, 0);

pub const fn merkle_key(level: u8, index: u64) -> u64 {
    ((level as u64) << 56) | index
}

/// One stream index entry as redb yields it.
type IndexEntry<'a> = Result<
    (
        redb::AccessGuard<'a, (&'static str, u64)>,
        redb::AccessGuard<'a, u64>,
    ),
    redb::StorageError,
>;

/// Reads against one consistent snapshot.
pub struct Snapshot {
    txn: ReadTransaction,
    /// Set when the snapshot owns its database (read-only opens); dropped after `txn`.
    _db: Option<std::sync::Arc<redb::Database>>,
}

/// Which way a stream read goes from its starting version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Forward,
    Backward,
}

impl Snapshot {
    pub fn new(db: &redb::Database) -> Result<Snapshot, LogError> {
        Ok(Snapshot {
            txn: db.begin_read().map_err(LogError::storage)?,
            _db: None,
        })
    }

    /// A snapshot that keeps `db` open for as long as it lives.
    pub fn owning(db: std::sync::Arc<redb::Database>) -> Result<Snapshot, LogError> {
        let txn = db.begin_read().map_err(LogError::storage)?;
        Ok(Snapshot { txn, _db: Some(db) })
    }

    /// Number of events in this snapshot.
    pub fn size(&self) -> Result<u64, LogError> {
        let t = self.txn.open_table(EVENTS).map_err(LogError::storage)?;
        Ok(t.last()
            .map_err(LogError::storage)?
            .map_or(0, |(k, _)| k.value() + 1))
    }

    pub fn record(&self, position: u64) -> Result<Option<Vec<u8>>, LogError> {
        let t = self.txn.open_table(EVENTS).map_err(LogError::storage)?;
        Ok(t.get(position)
            .map_err(LogError::storage)?
            .map(|v| v.value().to_vec()))
    }

    pub fn event(&self, position: u64) -> Result<Option<Event>, LogError> {
        self.record(position)?
            .map(|r| decode_record(&r).map_err(|e| LogError::Corrupt(position, e.to_string())))
            .transpose()
    }

    pub fn event_hash(&self, position: u64) -> Result<Option<Digest>, LogError> {
        match self.record(position)? {
            None => Ok(None),
            Some(r) => Ok(Some(
                split_record(&r)
                    .map_err(|e| LogError::Corrupt(position, e.to_string()))?
                    .1,
            )),
        }
    }

    /// Up to `limit` events from `from` on, in position order.
    pub fn read_all(&self, from: u64, limit: usize) -> Result<Vec<Event>, LogError> {
        let t = self.txn.open_table(EVENTS).map_err(LogError::storage)?;
        let mut out = Vec::new();
        for item in t.range(from..).map_err(LogError::storage)?.take(limit) {
            let (k, v) = item.map_err(LogError::storage)?;
            out.push(
                decode_record(v.value())
                    .map_err(|e| LogError::Corrupt(k.value(), e.to_string()))?,
            );
        }
        Ok(out)
    }

    /// Raw records `[from, to)` for verification and export.
    pub fn records(&self, from: u64, to: u64) -> Result<Vec<(u64, Vec<u8>)>, LogError> {
        let t = self.txn.open_table(EVENTS).map_err(LogError::storage)?;
        let mut out = Vec::with_capacity((to.saturating_sub(from)).min(1 << 16) as usize);
        for item in t.range(from..to).map_err(LogError::storage)? {
            let (k, v) = item.map_err(LogError::storage)?;
            out.push((k.value(), v.value().to_vec()));
        }
        Ok(out)
    }

    pub fn stream_head(&self, stream: &str) -> Result<Option<u64>, LogError> {
        let t = self
            .txn
            .open_table(STREAM_HEADS)
            .map_err(LogError::storage)?;
        Ok(t.get(stream).map_err(LogError::storage)?.map(|v| v.value()))
    }

    /// Up to `limit` events of `stream` starting at version `from` (inclusive), either way.
    pub fn read_stream(
        &self,
        stream: &str,
        from: u64,
        direction: Direction,
        limit: usize,
    ) -> Result<Vec<Event>, LogError> {
        let Some(head) = self.stream_head(stream)? else {
            return Err(LogError::UnknownStream(stream.to_string()));
        };
        let idx = self
            .txn
            .open_table(STREAM_INDEX)
            .map_err(LogError::storage)?;
        let tail = self.tail_entries(stream)?;
        let position = |r: IndexEntry| r.map(|(_, v)| v.value()).map_err(LogError::storage);
        // Tail versions all follow the indexed ones.
        let positions: Vec<u64> = match direction {
            Direction::Forward => {
                let mut out = idx
                    .range((stream, from)..=(stream, head))
                    .map_err(LogError::storage)?
                    .take(limit)
                    .map(position)
                    .collect::<Result<Vec<_>, _>>()?;
                let rest = limit - out.len();
                out.extend(
                    tail.iter()
                        .filter(|(v, _)| *v >= from)
                        .take(rest)
                        .map(|(_, p)| *p),
                );
                out
            }
            Direction::Backward => {
                let upto = from.min(head);
                let mut out: Vec<u64> = tail
                    .iter()
                    .rev()
                    .filter(|(v, _)| *v <= upto)
                    .take(limit)
                    .map(|(_, p)| *p)
                    .collect();
                let rest = limit - out.len();
                let older = idx
                    .range((stream, 0)..=(stream, upto))
                    .map_err(LogError::storage)?
                    .rev()
                    .take(rest)
                    .map(position)
                    .collect::<Result<Vec<_>, _>>()?;
                out.extend(older);
                out
            }
        };
        positions
            .into_iter()
            .map(|p| {
                self.event(p)?.ok_or(LogError::Corrupt(
                    p,
                    "stream index names a missing event".into(),
                ))
            })
            .collect()
    }

    /// `(version, position)` of `stream`'s events in the tail index, in order; a format 1
    /// data dir (read-only, not yet upgraded) has none.
    fn tail_entries(&self, stream: &str) -> Result<Vec<(u64, u64)>, LogError> {
        let t = match self.txn.open_table(TAIL_INDEX) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(LogError::storage(e)),
        };
        let mut out = Vec::new();
        for item in t.iter().map_err(LogError::storage)? {
            let (k, v) = item.map_err(LogError::storage)?;
            let (s, version) = v.value();
            if s == stream {
                out.push((version, k.value()));
            }
        }
        Ok(out)
    }

    /// A blob's compressed bytes, when the log holds it; a data dir of format 2 or older
    /// (read-only, not yet upgraded) holds none.
    pub fn blob(&self, hash: &Digest) -> Result<Option<Vec<u8>>, LogError> {
        let t = match self.txn.open_table(BLOBS) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(LogError::storage(e)),
        };
        Ok(t.get(hash.0)
            .map_err(LogError::storage)?
            .map(|v| v.value().to_vec()))
    }

    pub fn position_of(&self, id: Uuid) -> Result<Option<u64>, LogError> {
        let t = self.txn.open_table(EVENT_IDS).map_err(LogError::storage)?;
        Ok(t.get(id.as_u128())
            .map_err(LogError::storage)?
            .map(|v| v.value()))
    }

    pub fn checkpoint(&self, size: u64) -> Result<Option<String>, LogError> {
        let t = self
            .txn
            .open_table(CHECKPOINTS)
            .map_err(LogError::storage)?;
        Ok(t.get(size)
            .map_err(LogError::storage)?
            .map(|v| v.value().to_string()))
    }

    /// Every signed checkpoint, by tree size.
    pub fn checkpoints(&self) -> Result<Vec<(u64, String)>, LogError> {
        self.checkpoints_from(0, usize::MAX)
    }

    /// Up to `limit` signed checkpoints of tree sizes `from` and above, by tree size.
    pub fn checkpoints_from(
        &self,
        from: u64,
        limit: usize,
    ) -> Result<Vec<(u64, String)>, LogError> {
        let t = self
            .txn
            .open_table(CHECKPOINTS)
            .map_err(LogError::storage)?;
        let mut out = Vec::new();
        for item in t.range(from..).map_err(LogError::storage)?.take(limit) {
            let (k, v) = item.map_err(LogError::storage)?;
            out.push((k.value(), v.value().to_string()));
        }
        Ok(out)
    }

    pub fn meta(&self, key: &str) -> Result<Option<Vec<u8>>, LogError> {
        let t = self.txn.open_table(META).map_err(LogError::storage)?;
        Ok(t.get(key)
            .map_err(LogError::storage)?
            .map(|v| v.value().to_vec()))
    }

    pub fn nodes(&self) -> Result<Nodes, LogError> {
        Ok(Nodes {
            inner: self.txn.open_table(MERKLE).map_err(LogError::storage)?,
            events: self.txn.open_table(EVENTS).map_err(LogError::storage)?,
        })
    }
}

/// The Merkle tree as a [`NodeSource`]: the lower levels from the events, the rest as stored.
pub struct Nodes {
    inner: redb::ReadOnlyTable<u64, [u8; 32]>,
    events: redb::ReadOnlyTable<u64, &'static [u8]>,
}

impl NodeSource for Nodes {
    type Error = LogError;
    fn node(&self, level: u8, index: u64) -> Result<Node, LogError> {
        if level < MERKLE_STORED_FROM {
            let start = index << level;
            let mut subtree = Frontier::default();
            for item in self
                .events
                .range(start..start + (1 << level))
                .map_err(LogError::storage)?
            {
                let (k, v) = item.map_err(LogError::storage)?;
                let position = start + subtree.size();
                if k.value() != position {
                    return Err(LogError::Corrupt(position, "event is missing".into()));
                }
                let (_, hash, _) = split_record(v.value())
                    .map_err(|e| LogError::Corrupt(position, e.to_string()))?;
                subtree.push(leaf_hash(&hash.0), |_, _, _| {});
            }
            if subtree.size() != 1 << level {
                let missing = start + subtree.size();
                return Err(LogError::Corrupt(missing, "event is missing".into()));
            }
            return Ok(subtree.root());
        }
        self.inner
            .get(merkle_key(level, index))
            .map_err(LogError::storage)?
            .map(|v| v.value())
            .ok_or(LogError::Corrupt(
                index << level,
                format!("Merkle node ({level}, {index}) is missing"),
            ))
    }
}
