//! Identifiers: content-addressed version ids, random prediction ids and API tokens.
use rand::RngCore;
use sha2::{Digest, Sha256};

/// A version id is 64 lowercase hex characters derived from the model and the content, so the
/// same push to the same model yields the same version, and a bare id is unique across models.
pub fn version_id(model_id: i64, content_digest: &str) -> String {
    let mut h = Sha256::new();
    h.update(b"modelyard-version\0");
    h.update(model_id.to_be_bytes());
    h.update(content_digest.as_bytes());
    hex::encode(h.finalize())
}

pub fn is_version_id(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

const BASE32: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";

/// Prediction and training ids: 26 characters of lowercase base32, as Replicate's look.
pub fn object_id() -> String {
    let mut bytes = [0u8; 17];
    rand::thread_rng().fill_bytes(&mut bytes);
    let mut out = String::with_capacity(26);
    let mut acc: u32 = 0;
    let mut bits = 0;
    for b in bytes {
        acc = (acc << 8) | b as u32;
        bits += 8;
        while bits >= 5 && out.len() < 26 {
            bits -= 5;
            out.push(BASE32[((acc >> bits) & 31) as usize] as char);
        }
    }
    out
}

/// A new API token. Only its hash is ever stored.
pub fn new_token() -> String {
    let mut bytes = [0u8; 20];
    rand::thread_rng().fill_bytes(&mut bytes);
    format!("r8_{}", hex::encode(bytes))
}

/// Tokens are 160 random bits, so a fast hash is enough: there is nothing to brute-force.
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_ids_depend_on_model_and_content() {
        let a = version_id(1, "abc");
        assert!(is_version_id(&a));
        assert_eq!(a, version_id(1, "abc"));
        assert_ne!(a, version_id(2, "abc"));
        assert_ne!(a, version_id(1, "abd"));
    }

    #[test]
    fn object_ids_look_like_replicates() {
        let id = object_id();
        assert_eq!(id.len(), 26);
        assert!(id.bytes().all(|b| BASE32.contains(&b)));
        assert_ne!(id, object_id());
    }

    #[test]
    fn tokens_hash_stably() {
        let t = new_token();
        assert!(t.starts_with("r8_") && t.len() == 43);
        assert_eq!(token_hash(&t), token_hash(&t));
        assert_ne!(token_hash(&t), token_hash(&new_token()));
    }
}
