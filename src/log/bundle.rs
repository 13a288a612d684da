//! Audit bundles: a selection of events that a third party checks offline, with no data dir.
//!
//! A bundle is a zip of `manifest.json` (origin, signed tree head, keys, optional previous
//! head with a consistency proof), `events.txt` (one line per event: position, hash,
//! signature, inclusion proof, canonical bytes) and a README. The ledger's own events
//! (genesis and key rotations) are always included, so the keys are proven by the events
//! themselves. `docs/audit-bundle.md` is the format; `docs/verify_bundle.py` checks it
//! independently.

use std::io::{BufRead, Read, Seek, Write};

use ed25519_dalek::VerifyingKey;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::checkpoint::Checkpoint;
use super::envelope::{Digest, chain_hash, signing_message, split_record};
use super::keys::{key_id, parse_public, rotation_message, verify_strict};
use super::merkle::{self, Node, leaf_hash};
use super::store::Snapshot;
use super::{KeyInfo, LogError};

pub const FORMAT: &str = "provenant-audit-bundle/1";

#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error(transparent)]
    Log(#[from] LogError),
    #[error("bundle I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("bundle zip: {0}")]
    Zip(#[from] zip::result::ZipError),
    #[error("not a valid bundle: {0}")]
    Malformed(String),
}

/// The previous head an auditor exported, to prove the log only grew since.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Previous {
    pub tree_size: u64,
    pub checkpoint: String,
    /// RFC 9162 consistency proof from `tree_size` to the bundle's tree size, hex.
    pub consistency_proof: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub format: String,
    pub origin: String,
    /// What was selected, in words.
    pub selection: String,
    pub tree_size: u64,
    /// The signed checkpoint (C2SP signed note) of `tree_size` events.
    pub checkpoint: String,
    pub keys: Vec<KeyInfo>,
    pub previous: Option<Previous>,
    pub events: u64,
}

const README: &str = "# Provenant audit bundle\n\n\
`manifest.json` names the ledger (origin), the signed checkpoint (tree head) every event is\n\
proven against, and the ledger keys. `events.txt` has one line per event:\n\n\
    <position> <hash hex> <signature hex> <inclusion proof: hex nodes joined by ',' or '-'> <canonical JSON>\n\n\
To check it: `provenant verify-bundle FILE [--key HEX]`, or the independent script\n\
`docs/verify_bundle.py` of the Provenant repository, whose `docs/audit-bundle.md` specifies\n\
every check. Pin the ledger's public key (published out of band) with `--key`.\n";

fn hex_nodes(nodes: &[Node]) -> String {
    if nodes.is_empty() {
        return "-".into();
    }
    nodes.iter().map(hex::encode).collect::<Vec<_>>().join(",")
}

/// Writes a bundle of the events at `positions` (sorted, deduplicated here; the ledger's own
/// events are added) against the head of `snap`; `previous` adds a consistency proof from
/// that earlier tree size. `progress(done, total)` per event.
pub fn write<W: Write + Seek>(
    snap: &Snapshot,
    mut positions: Vec<u64>,
    selection: &str,
    previous: Option<u64>,
    out: W,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<Manifest, BundleError> {
    let size = snap.size()?;
    let checkpoint = snap
        .checkpoint(size)?
        .ok_or_else(|| BundleError::Malformed(format!("no checkpoint of size {size}")))?;
    let ledger_events = snap.read_stream(
        super::LEDGER_STREAM,
        0,
        super::store::Direction::Forward,
        usize::MAX,
    )?;
    let origin = ledger_events
        .first()
        .and_then(|g| g.unsigned.payload["origin"].as_str())
        .ok_or_else(|| BundleError::Malformed("the log has no genesis event".into()))?
        .to_string();
    let keys = super::writer::key_history(snap)?;
    positions.extend(ledger_events.iter().map(|e| e.unsigned.position));
    positions.retain(|&p| p < size);
    positions.sort_unstable();
    positions.dedup();
    let nodes = snap.nodes()?;
    let previous = match previous {
        None => None,
        Some(m) => {
            if m == 0 || m > size {
                return Err(BundleError::Malformed(format!(
                    "the previous tree size {m} is not between 1 and {size}"
                )));
            }
            Some(Previous {
                tree_size: m,
                checkpoint: snap
                    .checkpoint(m)?
                    .ok_or_else(|| {
                        BundleError::Malformed(format!(
                            "no signed checkpoint of size {m}: the previous size must be a head the ledger signed"
                        ))
                    })?,
                consistency_proof: merkle::consistency_proof(&nodes, m, size)?
                    .iter()
                    .map(hex::encode)
                    .collect(),
            })
        }
    };
    let manifest = Manifest {
        format: FORMAT.into(),
        origin,
        selection: selection.into(),
        tree_size: size,
        checkpoint,
        keys,
        previous,
        events: positions.len() as u64,
    };
    let mut zip = zip::ZipWriter::new(out);
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated)
        .compression_level(Some(1));
    zip.start_file("README.md", options)?;
    zip.write_all(README.as_bytes())?;
    zip.start_file("manifest.json", options)?;
    zip.write_all(&serde_json::to_vec_pretty(&manifest).map_err(std::io::Error::other)?)?;
    zip.start_file("events.txt", options)?;
    let total = positions.len() as u64;
    let mut line = Vec::new();
    for (i, &p) in positions.iter().enumerate() {
        let record = snap
            .record(p)?
            .ok_or_else(|| BundleError::Malformed(format!("no event at {p}")))?;
        let (canonical, hash, signature) =
            split_record(&record).map_err(|e| BundleError::Malformed(e.to_string()))?;
        let proof = merkle::inclusion_proof(&nodes, p, size)?;
        line.clear();
        write!(
            line,
            "{p} {} {} {} ",
            hash.to_hex(),
            hex::encode(signature),
            hex_nodes(&proof)
        )?;
        line.extend_from_slice(canonical);
        line.push(b'\n');
        zip.write_all(&line)?;
        if i.is_multiple_of(1024) || i as u64 + 1 == total {
            progress(i as u64 + 1, total);
        }
    }
    zip.finish()?;
    Ok(manifest)
}

/// What an offline check of a bundle found.
#[derive(Debug, Clone, Serialize)]
pub struct BundleReport {
    pub origin: String,
    pub selection: String,
    pub tree_size: u64,
    pub root: String,
    pub events: u64,
    pub keys: usize,
    pub previous_tree_size: Option<u64>,
    /// The first problem found; none when the bundle is intact.
    pub failure: Option<String>,
}

fn node(hex_str: &str) -> Result<Node, String> {
    hex::decode(hex_str)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| format!("{hex_str:?} is not a 32-byte hex node"))
}

/// The key whose range `[valid_from, valid_to)` holds `position`.
fn key_at(keys: &[(KeyInfo, VerifyingKey)], position: u64) -> Option<&(KeyInfo, VerifyingKey)> {
    keys.iter()
        .find(|(k, _)| k.valid_from <= position && k.valid_to.is_none_or(|to| position < to))
}

/// One event line, checked against the tree head and the keys: the canonical bytes are
/// canonical, the hash recomputes, the signature verifies by the key in effect at the
/// position, the inclusion proof leads to the root.
fn check_line(
    line: &str,
    keys: &[(KeyInfo, VerifyingKey)],
    size: u64,
    root: &Node,
) -> Result<(u64, Value), String> {
    let mut parts = line.splitn(5, ' ');
    let mut next = |what: &str| {
        parts
            .next()
            .ok_or_else(|| format!("a line without its {what}"))
    };
    let position: u64 = next("position")?
        .parse()
        .map_err(|_| "a position that is not a number".to_string())?;
    let at = |m: String| format!("event {position}: {m}");
    let hash = Digest::from_hex(next("hash")?).ok_or_else(|| at("bad hash hex".into()))?;
    let signature: [u8; 64] = hex::decode(next("signature")?)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| at("bad signature hex".into()))?;
    let proof = match next("proof")? {
        "-" => Vec::new(),
        p => p
            .split(',')
            .map(node)
            .collect::<Result<Vec<_>, _>>()
            .map_err(at)?,
    };
    let canonical = next("canonical bytes")?;
    let value: Value = serde_json::from_str(canonical).map_err(|e| at(e.to_string()))?;
    if super::canonical::to_vec(&value).map_err(|e| at(e.to_string()))? != canonical.as_bytes() {
        return Err(at("the event bytes are not in canonical form".into()));
    }
    if value["position"].as_u64() != Some(position) {
        return Err(at("the line's position is not the event's".into()));
    }
    let prev = value["prev_hash"]
        .as_str()
        .and_then(Digest::from_hex)
        .ok_or_else(|| at("no prev_hash".into()))?;
    if chain_hash(&prev, canonical.as_bytes()) != hash {
        return Err(at("the hash does not recompute".into()));
    }
    let (info, key) =
        key_at(keys, position).ok_or_else(|| at("no key covers this position".into()))?;
    if value["key_id"].as_str() != Some(info.key_id.as_str()) {
        return Err(at("signed by a key not in effect at its position".into()));
    }
    if !verify_strict(key, &signing_message(&hash), &signature) {
        return Err(at("the signature does not verify".into()));
    }
    merkle::verify_inclusion(position, size, &leaf_hash(&hash.0), &proof, root)
        .map_err(|e| at(format!("the inclusion proof fails: {e}")))?;
    Ok((position, value))
}

/// Checks the keys against the ledger's own events in the bundle: the genesis event
/// announces the first key and is signed by it; each rotation announces the next, with the
/// new key's proof of possession.
fn check_keys(
    keys: &[(KeyInfo, VerifyingKey)],
    ledger_events: &[(u64, Value)],
    trusted: Option<&VerifyingKey>,
) -> Result<(), String> {
    let (first, first_key) = keys.first().ok_or("the bundle lists no key")?;
    if let Some(t) = trusted
        && t != first_key
    {
        return Err("the ledger's first key is not the trusted key".into());
    }
    let genesis = ledger_events
        .iter()
        .find(|(p, _)| *p == 0)
        .ok_or("the genesis event is missing")?;
    if genesis.1["payload"]["public_key"].as_str() != Some(first.public_key.as_str()) {
        return Err("the genesis event does not announce the first key".into());
    }
    let rotations: Vec<&Value> = ledger_events
        .iter()
        .filter(|(_, e)| e["event_type"] == super::ROTATION_EVENT)
        .map(|(_, e)| e)
        .collect();
    if rotations.len() + 1 != keys.len() {
        return Err("the keys are not exactly those the ledger's events announce".into());
    }
    for (window, rotation) in keys.windows(2).zip(rotations) {
        let ((old, _), (new, new_key)) = (&window[0], &window[1]);
        let payload = &rotation["payload"];
        let proof: Option<[u8; 64]> = payload["proof"]
            .as_str()
            .and_then(|p| hex::decode(p).ok())
            .and_then(|b| b.try_into().ok());
        let announced = payload["public_key"].as_str() == Some(new.public_key.as_str())
            && payload["previous_key_id"].as_str() == Some(old.key_id.as_str())
            && rotation["position"].as_u64().map(|p| p + 1) == Some(new.valid_from);
        let proven = proof.is_some_and(|proof| {
            verify_strict(new_key, &rotation_message(&old.key_id, new_key), &proof)
        });
        if !announced || !proven {
            return Err(format!(
                "key {} is not announced by a valid rotation",
                new.key_id
            ));
        }
    }
    Ok(())
}

/// Checks a bundle offline; `trusted` pins the ledger's first public key.
pub fn verify<R: Read + Seek>(
    input: R,
    trusted: Option<&VerifyingKey>,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<BundleReport, BundleError> {
    let mut zip = zip::ZipArchive::new(input)?;
    let mut text = String::new();
    zip.by_name("manifest.json")?.read_to_string(&mut text)?;
    let manifest: Manifest =
        serde_json::from_str(&text).map_err(|e| BundleError::Malformed(e.to_string()))?;
    if manifest.format != FORMAT {
        return Err(BundleError::Malformed(format!(
            "format {:?}",
            manifest.format
        )));
    }
    let mut report = BundleReport {
        origin: manifest.origin.clone(),
        selection: manifest.selection.clone(),
        tree_size: manifest.tree_size,
        root: String::new(),
        events: 0,
        keys: manifest.keys.len(),
        previous_tree_size: manifest.previous.as_ref().map(|p| p.tree_size),
        failure: None,
    };
    let result = (|| -> Result<(), String> {
        let keys = manifest
            .keys
            .iter()
            .map(|k| {
                let key = parse_public(&k.public_key)
                    .ok_or_else(|| format!("key {} is not an Ed25519 public key", k.key_id))?;
                if key_id(&key) != k.key_id {
                    return Err(format!("key id {} does not match its key", k.key_id));
                }
                Ok((k.clone(), key))
            })
            .collect::<Result<Vec<_>, String>>()?;
        let head_key = key_at(&keys, manifest.tree_size)
            .or(keys.last())
            .ok_or("the bundle lists no key")?;
        let head = Checkpoint::verify(&manifest.checkpoint, &head_key.1)
            .map_err(|e| format!("the checkpoint: {e}"))?;
        if head.size != manifest.tree_size || head.origin != manifest.origin {
            return Err("the checkpoint is not of the bundle's tree size and origin".into());
        }
        report.root = hex::encode(head.root);
        if let Some(prev) = &manifest.previous {
            let key = key_at(&keys, prev.tree_size).ok_or("no key for the previous head")?;
            let old = Checkpoint::verify(&prev.checkpoint, &key.1)
                .map_err(|e| format!("the previous checkpoint: {e}"))?;
            let proof = prev
                .consistency_proof
                .iter()
                .map(|h| node(h))
                .collect::<Result<Vec<_>, _>>()?;
            merkle::verify_consistency(old.size, head.size, &proof, &old.root, &head.root)
                .map_err(|e| format!("the log did not only grow since the previous head: {e}"))?;
        }
        let events = zip
            .by_name("events.txt")
            .map_err(|e| format!("events.txt: {e}"))?;
        let mut ledger_events = Vec::new();
        let mut last = None;
        for line in std::io::BufReader::new(events).lines() {
            let line = line.map_err(|e| e.to_string())?;
            let (position, value) = check_line(&line, &keys, head.size, &head.root)?;
            if last.is_some_and(|l| position <= l) {
                return Err(format!("event {position} is out of order"));
            }
            last = Some(position);
            if value["stream"] == super::LEDGER_STREAM {
                ledger_events.push((position, value));
            }
            report.events += 1;
            if report.events.is_multiple_of(1024) {
                progress(report.events, manifest.events);
            }
        }
        if report.events != manifest.events {
            return Err(format!(
                "the manifest lists {} events, the bundle holds {}",
                manifest.events, report.events
            ));
        }
        check_keys(&keys, &ledger_events, trusted)
    })();
    report.failure = result.err();
    Ok(report)
}
