//! Signed tree heads in the C2SP `tlog-checkpoint` signed-note format.
//!
//! ```text
//! <origin>
//! <tree size>
//! <base64 root hash>
//!
//! — <key name> <base64(key hash[4] ‖ ed25519 signature[64])>
//! ```
//! The key hash is SHA-256(key name ‖ "\n" ‖ 0x01 ‖ public key)[..4] (C2SP `signed-note`).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::VerifyingKey;
use sha2::{Digest as _, Sha256};

use super::keys::{LedgerKey, verify_strict};
use super::merkle::Node;
use super::nonces::NoncePool;

/// Ed25519's signature type byte in the signed-note key hash.
const ALG_ED25519: u8 = 0x01;

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Checkpoint {
    pub origin: String,
    pub size: u64,
    #[serde(serialize_with = "ser_b64")]
    pub root: Node,
}

fn ser_b64<S: serde::Serializer>(root: &Node, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&B64.encode(root))
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum CheckpointError {
    #[error("checkpoint note is malformed: {0}")]
    Malformed(&'static str),
    #[error("no signature line by key {0}")]
    NoSignature(String),
    #[error("the checkpoint signature does not verify")]
    BadSignature,
}

pub fn key_hash(name: &str, public: &VerifyingKey) -> [u8; 4] {
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update(b"\n");
    h.update([ALG_ED25519]);
    h.update(public.as_bytes());
    let d = h.finalize();
    [d[0], d[1], d[2], d[3]]
}

impl Checkpoint {
    pub fn body(&self) -> String {
        format!(
            "{}\n{}\n{}\n",
            self.origin,
            self.size,
            B64.encode(self.root)
        )
    }

    /// The full signed note; the key is named by the origin. With a pool, its nonce is one
    /// drawn ahead (see `nonces`).
    pub fn sign(&self, key: &LedgerKey, pool: Option<&NoncePool>) -> String {
        let body = self.body();
        let mut blob = key_hash(&self.origin, &key.public()).to_vec();
        blob.extend_from_slice(&key.sign_messages(&[body.as_bytes()], pool)[0]);
        format!("{body}\n\u{2014} {} {}\n", self.origin, B64.encode(blob))
    }

    /// Parses a signed note and checks its signature by `public` under the key name `origin`.
    pub fn verify(note: &str, public: &VerifyingKey) -> Result<Checkpoint, CheckpointError> {
        let (body, sigs) = note.split_once("\n\n").ok_or(CheckpointError::Malformed(
            "no blank line before the signatures",
        ))?;
        let body = format!("{body}\n");
        let mut lines = body.lines();
        let origin = lines
            .next()
            .filter(|o| !o.is_empty())
            .ok_or(CheckpointError::Malformed("no origin"))?;
        let size =
            lines
                .next()
                .and_then(|s| s.parse::<u64>().ok())
                .ok_or(CheckpointError::Malformed(
                    "tree size is not a decimal number",
                ))?;
        let root_b64 = lines
            .next()
            .ok_or(CheckpointError::Malformed("no root hash"))?;
        let root: Node = B64
            .decode(root_b64)
            .ok()
            .and_then(|r| r.try_into().ok())
            .ok_or(CheckpointError::Malformed(
                "root hash is not 32 bytes of base64",
            ))?;
        let want = key_hash(origin, public);
        for line in sigs.lines() {
            let Some(rest) = line.strip_prefix("\u{2014} ") else {
                return Err(CheckpointError::Malformed(
                    "signature line without the em dash",
                ));
            };
            let Some((name, sig_b64)) = rest.split_once(' ') else {
                return Err(CheckpointError::Malformed(
                    "signature line without a key name",
                ));
            };
            let Ok(blob) = B64.decode(sig_b64) else {
                continue;
            };
            if name != origin || blob.len() != 68 || blob[..4] != want {
                continue;
            }
            let mut sig = [0u8; 64];
            sig.copy_from_slice(&blob[4..]);
            if !verify_strict(public, body.as_bytes(), &sig) {
                return Err(CheckpointError::BadSignature);
            }
            return Ok(Checkpoint {
                origin: origin.to_string(),
                size,
                root,
            });
        }
        Err(CheckpointError::NoSignature(origin.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_and_verifies_and_detects_edits() {
        let key = LedgerKey::from_seed([3; 32]);
        let cp = Checkpoint {
            origin: "provenant/test".into(),
            size: 12,
            root: [5; 32],
        };
        let note = cp.sign(&key, None);
        assert!(note.starts_with("provenant/test\n12\nBQUF"));
        assert_eq!(Checkpoint::verify(&note, &key.public()).unwrap(), cp);
        let edited = note.replacen("\n12\n", "\n13\n", 1);
        assert_eq!(
            Checkpoint::verify(&edited, &key.public()),
            Err(CheckpointError::BadSignature)
        );
        let other = LedgerKey::from_seed([4; 32]);
        assert!(matches!(
            Checkpoint::verify(&note, &other.public()),
            Err(CheckpointError::NoSignature(_))
        ));
        assert!(Checkpoint::verify("garbage", &key.public()).is_err());
    }
}
