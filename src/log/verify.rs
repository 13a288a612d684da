//! Full re-verification of a log: every hash, signature, link, stream version, Merkle node
//! and signed checkpoint.
//!
//! Signatures are checked in batches on every core (ed25519-dalek `verify_batch`); a batch
//! that fails is re-checked one signature at a time with `verify_strict` to name the first
//! bad position. Batch verification uses the cofactorless equation with random weights, so
//! it accepts exactly what `verify_strict` accepts except signatures whose R point has a
//! small-order component or a non-canonical encoding; only the holder of the ledger's secret
//! key can make such signatures. `strict` checks each signature with `verify_strict` instead.

use std::collections::{BTreeMap, HashMap};

use ed25519_dalek::{Signature, VerifyingKey};
use serde::Serialize;

use super::checkpoint::Checkpoint;
use super::envelope::{Digest, Unsigned, chain_hash, signing_message, split_record};
use super::keys::{self, key_id, verify_strict};
use super::merkle::{Frontier, NodeSource, leaf_hash};
use super::store::{MERKLE_STORED_FROM, Snapshot};
use super::{GENESIS_EVENT, LEDGER_STREAM, LogError, ROTATION_EVENT};

#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Check each signature with `verify_strict` rather than in batches.
    pub strict: bool,
    /// The public key the auditor trusts for the genesis event; any key is taken if unset.
    pub trusted_key: Option<VerifyingKey>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Failure {
    pub position: u64,
    pub reason: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub events: u64,
    pub streams: usize,
    pub keys: usize,
    pub checkpoints: u64,
    pub root: String,
    pub failure: Option<Failure>,
}

impl Report {
    pub fn intact(&self) -> bool {
        self.failure.is_none()
    }
}

const CHUNK: u64 = 8192;

struct Pending {
    position: u64,
    message: Vec<u8>,
    signature: [u8; 64],
    key: VerifyingKey,
}

struct State {
    prev: Digest,
    last_time: String,
    streams: HashMap<String, u64>,
    key: Option<(String, VerifyingKey)>,
    keys: usize,
    frontier: Frontier,
    checkpoints: BTreeMap<u64, String>,
    checked: u64,
    trusted: Option<VerifyingKey>,
}

fn fail(position: u64, reason: impl Into<String>) -> Failure {
    Failure {
        position,
        reason: reason.into(),
    }
}

/// Verifies the whole log in `snap`; `progress(done, total)` is called after each chunk.
pub fn verify(
    snap: &Snapshot,
    opts: &Options,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<Report, LogError> {
    let size = snap.size()?;
    let nodes = snap.nodes()?;
    let mut st = State {
        prev: Digest::ZERO,
        last_time: String::new(),
        streams: HashMap::new(),
        key: None,
        keys: 0,
        frontier: Frontier::default(),
        checkpoints: snap.checkpoints()?.into_iter().collect(),
        checked: 0,
        trusted: opts.trusted_key,
    };
    let mut failure = None;
    // The signature batch of one chunk runs while the next chunk is checked structurally.
    std::thread::scope(|scope| {
        let mut inflight: Option<std::thread::ScopedJoinHandle<'_, Option<Failure>>> = None;
        let mut from = 0;
        while from < size && failure.is_none() {
            let to = (from + CHUNK).min(size);
            let (pending, structural) = match check_chunk(snap, &mut st, &nodes, from, to) {
                Ok(r) => r,
                Err(e) => {
                    failure = Some(fail(from, e.to_string()));
                    break;
                }
            };
            if let Some(earlier) = inflight.take().and_then(join) {
                failure = Some(earlier);
                break;
            }
            if let Some(f) = structural {
                failure = Some(match check_signatures(&pending, opts.strict) {
                    Some(s) if s.position <= f.position => s,
                    _ => f,
                });
                break;
            }
            let strict = opts.strict;
            inflight = Some(scope.spawn(move || check_signatures(&pending, strict)));
            from = to;
            progress(from, size);
        }
        if failure.is_none() {
            failure = inflight.take().and_then(join);
        }
    });
    if failure.is_none() && size > 0 {
        match st.checkpoints.keys().next_back() {
            Some(&latest) if latest == size => {}
            _ => {
                failure = Some(fail(
                    size - 1,
                    "the latest events are not covered by a signed checkpoint",
                ))
            }
        }
    }
    Ok(Report {
        events: size,
        streams: st.streams.len(),
        keys: st.keys,
        checkpoints: st.checked,
        root: hex::encode(st.frontier.root()),
        failure,
    })
}

fn check_event(
    st: &mut State,
    pos: u64,
    record: &[u8],
    nodes: &impl NodeSource<Error = LogError>,
    pending: &mut Vec<Pending>,
) -> Result<(), Failure> {
    let (canon, hash, signature) = split_record(record).map_err(|e| fail(pos, e.to_string()))?;
    let u: Unsigned = serde_json::from_slice(canon)
        .map_err(|e| fail(pos, format!("envelope does not parse: {e}")))?;
    let recanon = u.canonical_bytes().map_err(|e| fail(pos, e.to_string()))?;
    if recanon != canon {
        return Err(fail(
            pos,
            "envelope bytes are not in RFC 8785 canonical form",
        ));
    }
    if u.position != pos {
        return Err(fail(
            pos,
            format!("envelope says position {}, stored at {pos}", u.position),
        ));
    }
    if u.prev_hash != st.prev {
        return Err(fail(
            pos,
            format!(
                "prev_hash {} does not link to the previous event's hash {}",
                u.prev_hash, st.prev
            ),
        ));
    }
    let computed = chain_hash(&st.prev, canon);
    if computed != hash {
        return Err(fail(
            pos,
            format!("stored hash {hash} differs from the computed {computed}"),
        ));
    }
    if u.recorded_at < st.last_time {
        return Err(fail(
            pos,
            format!(
                "recorded_at {} goes back before {}",
                u.recorded_at, st.last_time
            ),
        ));
    }
    let next_version = st.streams.get(&u.stream).map_or(0, |v| v + 1);
    if u.stream_version != next_version {
        return Err(fail(
            pos,
            format!(
                "stream {:?} jumps to version {}, {next_version} expected",
                u.stream, u.stream_version
            ),
        ));
    }
    let signer = signer_for(st, pos, &u)?;
    if signer.0 != u.key_id {
        return Err(fail(
            pos,
            format!(
                "signed by key {}, but key {} is in effect",
                u.key_id, signer.0
            ),
        ));
    }
    pending.push(Pending {
        position: pos,
        message: signing_message(&hash).to_vec(),
        signature,
        key: signer.1,
    });
    if u.event_type == ROTATION_EVENT && u.stream == LEDGER_STREAM {
        st.key = Some(rotation_key(pos, &u, &signer.0)?);
        st.keys += 1;
    }
    st.streams.insert(u.stream, u.stream_version);
    st.last_time = u.recorded_at;
    st.prev = hash;

    let mut bad_node = None;
    st.frontier.push(leaf_hash(&hash.0), |level, index, h| {
        // A lower node is rebuilt from these same events, so only stored ones can differ.
        if bad_node.is_none() && level >= MERKLE_STORED_FROM {
            match nodes.node(level, index) {
                Ok(stored) if &stored == h => {}
                Ok(_) => {
                    bad_node = Some(format!(
                        "stored Merkle node ({level}, {index}) differs from the events"
                    ))
                }
                Err(e) => bad_node = Some(e.to_string()),
            }
        }
    });
    if let Some(reason) = bad_node {
        return Err(fail(pos, reason));
    }
    let size = pos + 1;
    if let Some(note) = st.checkpoints.get(&size) {
        let key = st
            .key
            .as_ref()
            .map(|k| k.1)
            .ok_or_else(|| fail(pos, "no key in effect"))?;
        let cp = Checkpoint::verify(note, &key)
            .map_err(|e| fail(pos, format!("checkpoint at size {size}: {e}")))?;
        if cp.size != size || cp.root != st.frontier.root() {
            return Err(fail(
                pos,
                format!("checkpoint at size {size} signs a different tree"),
            ));
        }
        st.checked += 1;
    }
    Ok(())
}

fn join(h: std::thread::ScopedJoinHandle<'_, Option<Failure>>) -> Option<Failure> {
    h.join()
        .unwrap_or_else(|_| Some(fail(0, "signature checking thread panicked")))
}

/// Checks `[from, to)` in order; returns the signatures to verify and the first structural
/// failure, if any (signatures are collected only up to it).
fn check_chunk(
    snap: &Snapshot,
    st: &mut State,
    nodes: &impl NodeSource<Error = LogError>,
    from: u64,
    to: u64,
) -> Result<(Vec<Pending>, Option<Failure>), LogError> {
    let records = snap.records(from, to)?;
    let mut pending = Vec::with_capacity(records.len());
    let mut expect = from;
    for (pos, record) in &records {
        if *pos != expect {
            return Ok((pending, Some(fail(expect, "event is missing from the log"))));
        }
        expect += 1;
        if let Err(f) = check_event(st, *pos, record, nodes, &mut pending) {
            return Ok((pending, Some(f)));
        }
    }
    if expect < to {
        return Ok((pending, Some(fail(expect, "event is missing from the log"))));
    }
    Ok((pending, None))
}

/// The key that must have signed event `pos`; the genesis event introduces the first.
fn signer_for(st: &mut State, pos: u64, u: &Unsigned) -> Result<(String, VerifyingKey), Failure> {
    if let Some(k) = &st.key {
        return Ok(k.clone());
    }
    if pos != 0 || u.event_type != GENESIS_EVENT || u.stream != LEDGER_STREAM {
        return Err(fail(
            pos,
            "the log does not start with a LedgerInitialized event",
        ));
    }
    let public = u
        .payload
        .get("public_key")
        .and_then(|v| v.as_str())
        .and_then(keys::parse_public)
        .ok_or_else(|| fail(pos, "genesis event has no valid public_key"))?;
    if st.trusted.is_some_and(|t| t != public) {
        return Err(fail(pos, "the genesis key is not the trusted key given"));
    }
    let id = key_id(&public);
    if u.payload.get("key_id").and_then(|v| v.as_str()) != Some(id.as_str()) {
        return Err(fail(
            pos,
            "genesis key_id is not derived from its public key",
        ));
    }
    st.key = Some((id.clone(), public));
    st.keys = 1;
    Ok((id, public))
}

fn rotation_key(pos: u64, u: &Unsigned, previous: &str) -> Result<(String, VerifyingKey), Failure> {
    let field = |name: &str| u.payload.get(name).and_then(|v| v.as_str());
    let public = field("public_key")
        .and_then(keys::parse_public)
        .ok_or_else(|| fail(pos, "key rotation without a valid public_key"))?;
    let id = key_id(&public);
    if field("key_id") != Some(id.as_str()) || field("previous_key_id") != Some(previous) {
        return Err(fail(pos, "key rotation names the wrong key ids"));
    }
    let mut proof = [0u8; 64];
    let ok = field("proof").is_some_and(|p| hex::decode_to_slice(p, &mut proof).is_ok())
        && verify_strict(&public, &keys::rotation_message(previous, &public), &proof);
    if !ok {
        return Err(fail(
            pos,
            "the new key's proof of possession does not verify",
        ));
    }
    Ok((id, public))
}

/// The first position whose signature fails, checking on both cores.
fn check_signatures(pending: &[Pending], strict: bool) -> Option<Failure> {
    let (a, b) = pending.split_at(pending.len() / 2);
    let check = |part: &[Pending]| -> Option<Failure> {
        if !strict && batch_ok(part) {
            return None;
        }
        part.iter()
            .find(|p| !verify_strict(&p.key, &p.message, &p.signature))
            .map(|p| fail(p.position, "signature does not verify"))
    };
    std::thread::scope(|s| {
        let second = s.spawn(|| check(b));
        let first = check(a);
        first.or_else(|| second.join().unwrap_or_else(|_| check(b)))
    })
}

fn batch_ok(part: &[Pending]) -> bool {
    if part.is_empty() {
        return true;
    }
    let messages: Vec<&[u8]> = part.iter().map(|p| p.message.as_slice()).collect();
    let sigs: Vec<Signature> = part
        .iter()
        .map(|p| Signature::from_bytes(&p.signature))
        .collect();
    let keys: Vec<VerifyingKey> = part.iter().map(|p| p.key).collect();
    part.iter().all(|p| !p.key.is_weak())
        && ed25519_dalek::verify_batch(&messages, &sigs, &keys).is_ok()
}
