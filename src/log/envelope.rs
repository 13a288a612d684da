//! The event envelope, its canonical bytes, and the record stored per position.
//!
//! A stored record is `canonical bytes ‖ hash (32) ‖ signature (64)`: the exact bytes the
//! chain hashes, so reading an event never re-serializes what was signed.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use super::canonical::{self, CanonicalError};

/// Domain separation for event signatures: `signature = ed25519(SIG_CONTEXT ‖ hash)`.
pub const SIG_CONTEXT: &[u8] = b"provenant/event/v1";

/// A 32-byte digest, shown as lowercase hex.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Digest(pub [u8; 32]);

impl Digest {
    pub const ZERO: Digest = Digest([0; 32]);

    /// Through a digit table: every event's envelope carries one (`prev_hash`), and
    /// `hex::encode`'s char iterator showed in the writer's profile.
    pub fn to_hex(&self) -> String {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut out = String::with_capacity(64);
        for b in self.0 {
            out.push(char::from(DIGITS[usize::from(b >> 4)]));
            out.push(char::from(DIGITS[usize::from(b & 15)]));
        }
        out
    }

    pub fn from_hex(s: &str) -> Option<Digest> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).ok()?;
        // Canonical form is lowercase; anything else would hash differently.
        (s.bytes().all(|b| !b.is_ascii_uppercase())).then_some(Digest(out))
    }
}

impl std::fmt::Debug for Digest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl std::fmt::Display for Digest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Digest::from_hex(&s)
            .ok_or_else(|| serde::de::Error::custom("expected 64 lowercase hex digits"))
    }
}

/// Everything in an envelope except `hash` and `signature`: exactly what the chain hashes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Unsigned {
    pub actor: String,
    pub event_id: Uuid,
    pub event_type: String,
    pub key_id: String,
    pub payload: Value,
    pub position: u64,
    pub prev_hash: Digest,
    pub recorded_at: String,
    pub schema_version: u32,
    pub stream: String,
    pub stream_version: u64,
}

impl Unsigned {
    pub fn canonical_bytes(&self) -> Result<Vec<u8>, CanonicalError> {
        let payload = canonical::to_vec(&self.payload)?;
        Ok(Fields {
            actor: &self.actor,
            event_id: self.event_id,
            event_type: &self.event_type,
            key_id: &self.key_id,
            payload: &payload,
            position: self.position,
            prev_hash: &self.prev_hash,
            recorded_at: &self.recorded_at,
            schema_version: self.schema_version,
            stream: &self.stream,
            stream_version: self.stream_version,
        }
        .canonical_bytes())
    }
}

/// The envelope's fields with the payload already in canonical form, so the writer can
/// splice a payload canonicalized by the appending task.
pub struct Fields<'a> {
    pub actor: &'a str,
    pub event_id: Uuid,
    pub event_type: &'a str,
    pub key_id: &'a str,
    pub payload: &'a [u8],
    pub position: u64,
    pub prev_hash: &'a Digest,
    pub recorded_at: &'a str,
    pub schema_version: u32,
    pub stream: &'a str,
    pub stream_version: u64,
}

impl Fields<'_> {
    /// RFC 8785 bytes. Keys are written in their sorted order directly; they are ASCII, so
    /// byte order equals the UTF-16 order JCS asks for.
    pub fn canonical_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(320 + self.payload.len());
        let key = |out: &mut Vec<u8>, name: &[u8]| {
            out.push(if out.is_empty() { b'{' } else { b',' });
            out.push(b'"');
            out.extend_from_slice(name);
            out.extend_from_slice(b"\":");
        };
        key(&mut out, b"actor");
        canonical::write_string(&mut out, self.actor);
        key(&mut out, b"event_id");
        canonical::write_string(
            &mut out,
            self.event_id
                .hyphenated()
                .encode_lower(&mut Uuid::encode_buffer()),
        );
        key(&mut out, b"event_type");
        canonical::write_string(&mut out, self.event_type);
        key(&mut out, b"key_id");
        canonical::write_string(&mut out, self.key_id);
        key(&mut out, b"payload");
        out.extend_from_slice(self.payload);
        key(&mut out, b"position");
        out.extend_from_slice(self.position.to_string().as_bytes());
        key(&mut out, b"prev_hash");
        canonical::write_string(&mut out, &self.prev_hash.to_hex());
        key(&mut out, b"recorded_at");
        canonical::write_string(&mut out, self.recorded_at);
        key(&mut out, b"schema_version");
        out.extend_from_slice(self.schema_version.to_string().as_bytes());
        key(&mut out, b"stream");
        canonical::write_string(&mut out, self.stream);
        key(&mut out, b"stream_version");
        out.extend_from_slice(self.stream_version.to_string().as_bytes());
        out.push(b'}');
        out
    }
}

/// `hash = blake3(prev_hash ‖ canonical_bytes)`.
pub fn chain_hash(prev: &Digest, canonical: &[u8]) -> Digest {
    let mut h = blake3::Hasher::new();
    h.update(&prev.0);
    h.update(canonical);
    Digest(*h.finalize().as_bytes())
}

/// The message an event signature covers.
pub fn signing_message(hash: &Digest) -> [u8; 50] {
    let mut m = [0u8; 50];
    m[..18].copy_from_slice(SIG_CONTEXT);
    m[18..].copy_from_slice(&hash.0);
    m
}

/// A stored, signed event.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub unsigned: Unsigned,
    pub hash: Digest,
    pub signature: [u8; 64],
}

/// The full envelope as JSON, the form the API and exports show.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EventJson {
    #[serde(flatten)]
    pub unsigned: Unsigned,
    pub hash: Digest,
    pub signature: String,
}

impl Event {
    pub fn position(&self) -> u64 {
        self.unsigned.position
    }

    pub fn to_json(&self) -> EventJson {
        EventJson {
            unsigned: self.unsigned.clone(),
            hash: self.hash,
            signature: hex::encode(self.signature),
        }
    }
}

/// A record that does not decode: the store or a file was altered or is from elsewhere.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("record is {0} bytes, shorter than hash and signature")]
    TooShort(usize),
    #[error("record's envelope is not valid JSON of the envelope shape: {0}")]
    Envelope(#[from] serde_json::Error),
}

/// Splits a stored record into its canonical bytes, hash and signature.
pub fn split_record(record: &[u8]) -> Result<(&[u8], Digest, [u8; 64]), RecordError> {
    if record.len() < 96 {
        return Err(RecordError::TooShort(record.len()));
    }
    let (canonical, tail) = record.split_at(record.len() - 96);
    let mut hash = [0u8; 32];
    hash.copy_from_slice(&tail[..32]);
    let mut sig = [0u8; 64];
    sig.copy_from_slice(&tail[32..]);
    Ok((canonical, Digest(hash), sig))
}

pub fn encode_record(canonical: &[u8], hash: &Digest, signature: &[u8; 64]) -> Vec<u8> {
    let mut out = Vec::with_capacity(canonical.len() + 96);
    out.extend_from_slice(canonical);
    out.extend_from_slice(&hash.0);
    out.extend_from_slice(signature);
    out
}

pub fn decode_record(record: &[u8]) -> Result<Event, RecordError> {
    let (canonical, hash, signature) = split_record(record)?;
    let unsigned: Unsigned = serde_json::from_slice(canonical)?;
    Ok(Event {
        unsigned,
        hash,
        signature,
    })
}

/// RFC 3339 UTC with microseconds, the one format `recorded_at` takes.
pub fn format_time(t: chrono::DateTime<chrono::Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sample() -> Unsigned {
        Unsigned {
            actor: "system:bootstrap".into(),
            event_id: Uuid::nil(),
            event_type: "Tested".into(),
            key_id: "0123456789abcdef".into(),
            payload: json!({"b": 1, "a": "x"}),
            position: 7,
            prev_hash: Digest::ZERO,
            recorded_at: "2026-11-23T09:00:00.000000Z".into(),
            schema_version: 1,
            stream: "test".into(),
            stream_version: 0,
        }
    }

    #[test]
    fn hand_written_canonical_form_equals_generic_jcs() {
        let u = sample();
        let generic = canonical::to_vec(&serde_json::to_value(&u).unwrap()).unwrap();
        assert_eq!(u.canonical_bytes().unwrap(), generic);
    }

    #[test]
    fn record_round_trips() {
        let u = sample();
        let c = u.canonical_bytes().unwrap();
        let h = chain_hash(&Digest::ZERO, &c);
        let rec = encode_record(&c, &h, &[9; 64]);
        let e = decode_record(&rec).unwrap();
        assert_eq!(e.unsigned, u);
        assert_eq!(e.hash, h);
        assert_eq!(e.signature, [9; 64]);
        assert!(matches!(
            decode_record(&rec[..50]),
            Err(RecordError::TooShort(50))
        ));
    }

    #[test]
    fn uppercase_hex_is_not_a_digest() {
        assert!(Digest::from_hex(&"AB".repeat(32)).is_none());
        assert!(Digest::from_hex(&"ab".repeat(32)).is_some());
        assert!(Digest::from_hex("ab").is_none());
    }
}
