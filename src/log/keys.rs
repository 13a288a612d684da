//! The ledger's signing keys.
//!
//! Secret keys live as files under `<data>/keys/`, mode 0600, one per key id. Which key is
//! current is decided by the log itself (genesis, then each rotation event), never by the
//! files, so a stray key file cannot take over signing.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use curve25519_dalek::edwards::CompressedEdwardsY;
use curve25519_dalek::{EdwardsPoint, Scalar};
use ed25519_dalek::hazmat::ExpandedSecretKey;
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use sha2::{Digest as _, Sha512};
use zeroize::Zeroize;

use super::envelope::{Digest, signing_message};
use super::nonces::NoncePool;

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

/// SHA-512 of the parts, reduced mod ℓ.
fn wide_scalar(parts: &[&[u8]]) -> Scalar {
    let mut h = Sha512::new();
    for part in parts {
        h.update(part);
    }
    Scalar::from_bytes_mod_order_wide(&h.finalize().into())
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

    /// Signs event hashes in order. Each signature is the RFC 8032 one `sign_raw` would give,
    /// but the nonce points are compressed together with one shared field inversion
    /// (Montgomery's trick) instead of one inversion each, which makes a group's signing
    /// about a third faster. Nonces `pool` has ready are used instead of derived ones (see
    /// `nonces`): those signatures verify the same but differ from `sign_raw`'s.
    pub fn sign_events<'a>(
        &self,
        hashes: impl Iterator<Item = &'a Digest>,
        pool: Option<&NoncePool>,
    ) -> Vec<[u8; 64]> {
        let messages: Vec<[u8; 50]> = hashes.map(signing_message).collect();
        self.sign_messages(&messages, pool)
    }

    /// Signs whole messages in order, as `sign_events` signs event hashes.
    pub fn sign_messages<M: AsRef<[u8]>>(
        &self,
        messages: &[M],
        pool: Option<&NoncePool>,
    ) -> Vec<[u8; 64]> {
        let secret = ExpandedSecretKey::from(self.signing.as_bytes());
        let public = self.signing.verifying_key();
        let drawn = pool.map_or_else(Vec::new, |p| p.take(messages.len()));
        // Sized once, so growing it leaves no copy of a nonce behind in freed memory.
        let mut nonces: Vec<Scalar> = Vec::with_capacity(messages.len());
        nonces.extend(drawn.iter().map(|n| n.r));
        let mut big_rs: Vec<CompressedEdwardsY> = drawn.iter().map(|n| n.big_r).collect();
        drop(drawn);
        let derived = messages[nonces.len()..]
            .iter()
            .map(|m| wide_scalar(&[&secret.hash_prefix, m.as_ref()]));
        nonces.extend(derived);
        let points: Vec<EdwardsPoint> = nonces[big_rs.len()..]
            .iter()
            .map(EdwardsPoint::mul_base)
            .collect();
        big_rs.extend(EdwardsPoint::compress_batch_alloc(&points));
        let signatures = messages
            .iter()
            .zip(&nonces)
            .zip(&big_rs)
            .map(|((m, r), big_r)| {
                let k = wide_scalar(&[big_r.as_bytes(), public.as_bytes(), m.as_ref()]);
                let s = k * secret.scalar + r;
                let mut sig = [0u8; 64];
                sig[..32].copy_from_slice(big_r.as_bytes());
                sig[32..].copy_from_slice(s.as_bytes());
                sig
            })
            .collect();
        nonces.zeroize();
        signatures
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
        let sig = k.sign_events([&h].into_iter(), None)[0];
        assert!(verify_strict(&k.public(), &signing_message(&h), &sig));
        assert!(!verify_strict(
            &k.public(),
            &signing_message(&Digest([2; 32])),
            &sig
        ));
    }

    #[test]
    fn group_signing_matches_rfc_8032() {
        // RFC 8032 §7.1, tests 1 and 2.
        let k = LedgerKey::from_seed(
            hex::decode("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
                .unwrap()
                .try_into()
                .unwrap(),
        );
        assert_eq!(
            hex::encode(k.sign_messages(&[b""], None)[0]),
            "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e06522490155\
             5fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"
        );
        let k = LedgerKey::from_seed(
            hex::decode("4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb")
                .unwrap()
                .try_into()
                .unwrap(),
        );
        assert_eq!(
            hex::encode(k.sign_messages(&[[0x72u8]], None)[0]),
            "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da\
             085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00"
        );
    }

    #[test]
    fn group_signatures_equal_lone_ones() {
        let k = LedgerKey::from_seed([9; 32]);
        let hashes: Vec<Digest> = (0..100u8).map(|i| Digest([i; 32])).collect();
        let grouped = k.sign_events(hashes.iter(), None);
        assert_eq!(grouped.len(), hashes.len());
        for (h, sig) in hashes.iter().zip(&grouped) {
            assert_eq!(*sig, k.sign_raw(&signing_message(h)));
        }
        assert!(k.sign_events(std::iter::empty(), None).is_empty());
    }

    #[test]
    fn drawn_nonces_sign_first_and_derived_ones_after() {
        let k = LedgerKey::from_seed([5; 32]);
        let pool = NoncePool::default();
        assert!(pool.draw(40));
        let hashes: Vec<Digest> = (0..100u8).map(|i| Digest([i; 32])).collect();
        let signed = k.sign_events(hashes.iter(), Some(&pool));
        assert_eq!(pool.count(), 0);
        let mut points = std::collections::HashSet::new();
        for (i, (h, sig)) in hashes.iter().zip(&signed).enumerate() {
            assert!(verify_strict(&k.public(), &signing_message(h), sig), "{i}");
            assert_eq!(*sig == k.sign_raw(&signing_message(h)), i >= 40, "{i}");
            assert!(
                points.insert(sig[..32].to_vec()),
                "{i}: a nonce point used twice"
            );
        }
    }
}
