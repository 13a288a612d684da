//! The redb tables and the read paths over them.

use redb::{ReadTransaction, ReadableDatabase, ReadableTable, TableDefinition};
use uuid::Uuid;

use super::LogError;
use super::envelope::{Digest, Event, decode_record, split_record};
use super::merkle::{Node, NodeSource};

/// position → `canonical bytes ‖ hash ‖ signature`.
pub const EVENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("events");
/// (stream, stream version) → position.
pub const STREAM_INDEX: TableDefinition<(&str, u64), u64> = TableDefinition::new("stream_index");
/// stream → last stream version.
pub const STREAM_HEADS: TableDefinition<&str, u64> = TableDefinition::new("stream_heads");
/// event id → position.
pub const EVENT_IDS: TableDefinition<u128, u64> = TableDefinition::new("event_ids");
/// `level << 56 | index` → hash of the complete Merkle subtree at that node.
pub const MERKLE: TableDefinition<u64, [u8; 32]> = TableDefinition::new("merkle");
/// tree size → signed checkpoint note, one per commit.
pub const CHECKPOINTS: TableDefinition<u64, &str> = TableDefinition::new("checkpoints");
/// format version and ledger identity.
pub const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

pub const FORMAT_VERSION: u64 = 1;

pub fn merkle_key(level: u8, index: u64) -> u64 {
    (u64::from(level) << 56) | index
}

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
        let positions: Vec<u64> = match direction {
            Direction::Forward => idx
                .range((stream, from)..=(stream, head))
                .map_err(LogError::storage)?
                .take(limit)
                .map(|r| r.map(|(_, v)| v.value()))
                .collect::<Result<_, _>>()
                .map_err(LogError::storage)?,
            Direction::Backward => idx
                .range((stream, 0)..=(stream, from.min(head)))
                .map_err(LogError::storage)?
                .rev()
                .take(limit)
                .map(|r| r.map(|(_, v)| v.value()))
                .collect::<Result<_, _>>()
                .map_err(LogError::storage)?,
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
        let t = self
            .txn
            .open_table(CHECKPOINTS)
            .map_err(LogError::storage)?;
        let mut out = Vec::new();
        for item in t.iter().map_err(LogError::storage)? {
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
        Ok(Nodes(
            self.txn.open_table(MERKLE).map_err(LogError::storage)?,
        ))
    }
}

/// Stored Merkle nodes as a [`NodeSource`].
pub struct Nodes(redb::ReadOnlyTable<u64, [u8; 32]>);

impl NodeSource for Nodes {
    type Error = LogError;
    fn node(&self, level: u8, index: u64) -> Result<Node, LogError> {
        self.0
            .get(merkle_key(level, index))
            .map_err(LogError::storage)?
            .map(|v| v.value())
            .ok_or(LogError::Corrupt(
                index << level,
                format!("Merkle node ({level}, {index}) is missing"),
            ))
    }
}
