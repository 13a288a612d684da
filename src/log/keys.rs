//! The ledger's signing keys.
//!
//! Secret keys live as files under `<data>/keys/`, mode 0600, one per key id. Which key is
//! current is decided by the log itself (genesis, then each rotation event), never by the
//! files, so a stray key file cannot take over signing.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};

use super::envelope::{Digest, signing_message};

/// Domain separation for the new key's proof of possession in a rotation event.
pub const ROTATION_CONTEXT: &[u8] = b"provenant/key-rotation/v1";

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("key file {0}: {1}")]
    Io(PathBuf, std::io::Error),
    #[error("key file {0} is not 64 hex digits of an Ed25519 seed")]
    Malformed(PathBuf),
    #[error("no secret key for key id {0} under {1}")]
    Missing(String, PathBuf),
    #[error("the operating system's random source failed: {0}")]
    Random(String),
}

/// `key_id` = first 16 hex digits of blake3(public key).
pub fn key_id(public: &VerifyingKey) -> String {
    blake3::hash(public.as_bytes()).to_hex()[..16].to_string()
}

/// A signing key with its id.
#[derive(Clone)]
pub struct LedgerKey {
    pub id: String,
    pub signing: SigningKey,
}

impl LedgerKey {
    pub fn generate() -> Result<LedgerKey, KeyError> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|e| KeyError::Random(e.to_string()))?;
        Ok(Self::from_seed(seed))
    }

    pub fn from_seed(seed: [u8; 32]) -> LedgerKey {
        let signing = SigningKey::from_bytes(&seed);
        LedgerKey {
            id: key_id(&signing.verifying_key()),
            signing,
        }
    }

    pub fn public(&self) -> VerifyingKey {
        self.signing.verifying_key()
    }

    pub fn public_hex(&self) -> String {
        hex::encode(self.public().as_bytes())
    }

    pub fn sign_event(&self, hash: &Digest) -> [u8; 64] {
        self.signing.sign(&signing_message(hash)).to_bytes()
    }

    pub fn sign_raw(&self, message: &[u8]) -> [u8; 64] {
        self.signing.sign(message).to_bytes()
    }

    /// Writes the seed as hex with mode 0600, refusing to overwrite an existing file.
    pub fn save(&self, dir: &Path) -> Result<PathBuf, KeyError> {
        fs::create_dir_all(dir).map_err(|e| KeyError::Io(dir.to_path_buf(), e))?;
        let path = key_path(dir, &self.id);
        let mut opts = fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let mut f = opts
            .open(&path)
            .map_err(|e| KeyError::Io(path.clone(), e))?;
        f.write_all(hex::encode(self.signing.to_bytes()).as_bytes())
            .and_then(|_| f.sync_all())
            .map_err(|e| KeyError::Io(path.clone(), e))?;
        Ok(path)
    }

    pub fn load(dir: &Path, id: &str) -> Result<LedgerKey, KeyError> {
        let path = key_path(dir, id);
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(KeyError::Missing(id.to_string(), dir.to_path_buf()));
            }
            Err(e) => return Err(KeyError::Io(path, e)),
        };
        let mut seed = [0u8; 32];
        hex::decode_to_slice(text.trim(), &mut seed)
            .map_err(|_| KeyError::Malformed(path.clone()))?;
        let key = LedgerKey::from_seed(seed);
        if key.id != id {
            return Err(KeyError::Malformed(path));
        }
        Ok(key)
    }
}

fn key_path(dir: &Path, id: &str) -> PathBuf {
    dir.join(format!("{id}.key"))
}

/// The message the new key signs when it is announced, binding it to the key it replaces.
pub fn rotation_message(previous_key_id: &str, new_public: &VerifyingKey) -> Vec<u8> {
    let mut m = ROTATION_CONTEXT.to_vec();
    m.extend_from_slice(previous_key_id.as_bytes());
    m.extend_from_slice(new_public.as_bytes());
    m
}

/// Strict Ed25519 verification: rejects small-order keys and R, and non-canonical encodings.
pub fn verify_strict(public: &VerifyingKey, message: &[u8], signature: &[u8; 64]) -> bool {
    public
        .verify_strict(message, &Signature::from_bytes(signature))
        .is_ok()
}

pub fn parse_public(hex_str: &str) -> Option<VerifyingKey> {
    let mut b = [0u8; 32];
    hex::decode_to_slice(hex_str, &mut b).ok()?;
    VerifyingKey::from_bytes(&b).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn save_load_round_trip_with_private_mode() {
        let dir = tempfile::tempdir().unwrap();
        let k = LedgerKey::generate().unwrap();
        let path = k.save(dir.path()).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(
                fs::metadata(&path).unwrap().permissions().mode() & 0o777,
                0o600
            );
        }
        let back = LedgerKey::load(dir.path(), &k.id).unwrap();
        assert_eq!(back.public(), k.public());
        assert!(k.save(dir.path()).is_err(), "never overwrite a key");
        assert!(matches!(
            LedgerKey::load(dir.path(), "ffffffffffffffff"),
            Err(KeyError::Missing(..))
        ));
    }

    #[test]
    fn event_signatures_verify_strictly() {
        let k = LedgerKey::from_seed([7; 32]);
        let h = Digest([1; 32]);
        let sig = k.sign_event(&h);
        assert!(verify_strict(&k.public(), &signing_message(&h), &sig));
        assert!(!verify_strict(
            &k.public(),
            &signing_message(&Digest([2; 32])),
            &sig
        ));
    }
}
