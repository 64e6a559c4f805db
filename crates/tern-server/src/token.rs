//! Unguessable tokens for names the server makes up: `amq.gen-…` queue names, `amq.ctag-…`
//! consumer tags, direct reply-to addresses.

use std::hash::{BuildHasher, Hasher};

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// `len` URL-safe base64 characters: `seed` hashed with SipHash under a fresh random key (std's
/// `RandomState`), 10 characters per hash.
pub fn random_token(seed: u64, len: usize) -> String {
    let state = std::collections::hash_map::RandomState::new();
    let mut token = String::with_capacity(len);
    let mut bits = 0u64;
    for i in 0..len {
        if i % 10 == 0 {
            let mut h = state.build_hasher();
            h.write_u64(seed);
            h.write_usize(i);
            bits = h.finish();
        }
        token.push(char::from(ALPHABET[(bits & 63) as usize]));
        bits >>= 6;
    }
    token
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_have_the_length_and_alphabet_asked_for_and_differ() {
        let a = random_token(1, 22);
        assert_eq!(a.len(), 22);
        assert!(a.bytes().all(|b| ALPHABET.contains(&b)));
        assert_ne!(a, random_token(1, 22), "a fresh key each time");
    }
}
