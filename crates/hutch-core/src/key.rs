//! API keys: format, lookup prefix and hashing.
//!
//! A key is `hk_` followed by [`GENERATED_LEN`] symbols of the ID alphabet (200 random bits).
//! The store never sees the secret: it keeps the SHA-256 of the whole key (hex) and the first
//! [`PREFIX_LEN`] characters as a non-unique lookup prefix. Authentication looks rows up by
//! prefix, then compares hashes in constant time ([`KeyHash::matches`]).

use std::fmt;

use rand::Rng;
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq;

use crate::id::ALPHABET;

/// Every key starts with this.
pub const KEY_PREFIX: &str = "hk_";
/// Random symbols in a generated key (40 × 5 = 200 bits).
pub const GENERATED_LEN: usize = 40;
/// Shortest random part accepted from outside (26 × 5 = 130 bits), e.g. `HUTCH_ADMIN_KEY`.
pub const MIN_LEN: usize = 26;
/// Longest random part accepted.
pub const MAX_LEN: usize = 128;
/// Characters of the full key kept in clear as the lookup prefix (`hk_` + 9 symbols, 45 bits;
/// the remaining ≥ 85 bits of an accepted key, 155 of a generated one, stay secret).
pub const PREFIX_LEN: usize = 12;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("API key must start with `hk_`")]
    WrongPrefix,
    #[error("API key must have between {MIN_LEN} and {MAX_LEN} characters after `hk_`")]
    WrongLength,
    #[error("API key may contain only lowercase letters and digits after `hk_`")]
    BadCharacter,
    #[error("stored key hash must be 64 lowercase hex digits")]
    BadHash,
    #[error("stored key prefix is malformed")]
    BadPrefix,
}

/// The secret key as presented by a client. `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKeySecret(String);

impl ApiKeySecret {
    /// A new random key from the operating system's generator.
    pub fn generate() -> Self {
        Self::generate_with(&mut rand::rng())
    }

    pub fn generate_with<R: Rng + ?Sized>(rng: &mut R) -> Self {
        let mut s = String::with_capacity(KEY_PREFIX.len() + GENERATED_LEN);
        s.push_str(KEY_PREFIX);
        for _ in 0..GENERATED_LEN {
            s.push(char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]));
        }
        Self(s)
    }

    /// Checks the format of a presented key. Accepts any lowercase letters and digits (not only
    /// the generation alphabet) so operator-chosen keys of enough length work.
    pub fn parse(s: &str) -> Result<Self, KeyError> {
        let rest = s.strip_prefix(KEY_PREFIX).ok_or(KeyError::WrongPrefix)?;
        if !rest
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        {
            return Err(KeyError::BadCharacter);
        }
        if !(MIN_LEN..=MAX_LEN).contains(&rest.len()) {
            return Err(KeyError::WrongLength);
        }
        Ok(Self(s.to_owned()))
    }

    /// The secret itself, to show once at creation. Never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn prefix(&self) -> KeyPrefix {
        // The whole key is ASCII and at least PREFIX_LEN long, so this slice is in bounds.
        KeyPrefix(self.0[..PREFIX_LEN].to_owned())
    }

    pub fn hash(&self) -> KeyHash {
        KeyHash(Sha256::digest(self.0.as_bytes()).into())
    }
}

impl fmt::Debug for ApiKeySecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ApiKeySecret({}…)", &self.0[..PREFIX_LEN])
    }
}

/// The clear lookup prefix of a key (not unique, not secret).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct KeyPrefix(String);

impl KeyPrefix {
    pub fn parse(s: &str) -> Result<Self, KeyError> {
        let ok = s.len() == PREFIX_LEN
            && s.starts_with(KEY_PREFIX)
            && s[KEY_PREFIX.len()..]
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(KeyError::BadPrefix)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for KeyPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// SHA-256 of a whole key.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyHash([u8; 32]);

impl KeyHash {
    /// Parses the stored form (64 lowercase hex digits).
    pub fn from_hex(s: &str) -> Result<Self, KeyError> {
        if s.len() != 64
            || !s
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(KeyError::BadHash);
        }
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).map_err(|_| KeyError::BadHash)?;
        Ok(Self(out))
    }

    /// The stored form.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Whether `secret` hashes to this value, compared in constant time.
    pub fn matches(&self, secret: &ApiKeySecret) -> bool {
        self.ct_eq_hash(&secret.hash())
    }

    /// Constant-time equality of two hashes.
    pub fn ct_eq_hash(&self, other: &KeyHash) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl fmt::Debug for KeyHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KeyHash(…)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_parse_and_have_enough_entropy() {
        let k = ApiKeySecret::generate();
        assert_eq!(k.expose().len(), KEY_PREFIX.len() + GENERATED_LEN);
        assert_eq!(ApiKeySecret::parse(k.expose()), Ok(k.clone()));
        // 5 bits per symbol, and at least 128 of them outside the clear prefix.
        assert!(GENERATED_LEN * 5 >= 128 + (PREFIX_LEN - KEY_PREFIX.len()) * 5);
        assert_ne!(ApiKeySecret::generate(), k);
    }

    #[test]
    fn parse_table() {
        let ok26 = format!("hk_{}", "a".repeat(MIN_LEN));
        let short = format!("hk_{}", "a".repeat(MIN_LEN - 1));
        let long = format!("hk_{}", "a".repeat(MAX_LEN + 1));
        let upper = format!("hk_{}", "A".repeat(MIN_LEN));
        let dash = format!("hk_{}-", "a".repeat(MIN_LEN));
        let other = format!("sk_{}", "a".repeat(MIN_LEN));
        let cases: Vec<(&str, Result<(), KeyError>)> = vec![
            (&ok26, Ok(())),
            (&short, Err(KeyError::WrongLength)),
            (&long, Err(KeyError::WrongLength)),
            (&upper, Err(KeyError::BadCharacter)),
            (&dash, Err(KeyError::BadCharacter)),
            (&other, Err(KeyError::WrongPrefix)),
            ("", Err(KeyError::WrongPrefix)),
        ];
        for (input, want) in cases {
            assert_eq!(ApiKeySecret::parse(input).map(|_| ()), want, "{input}");
        }
    }

    #[test]
    fn hash_and_prefix() {
        let k = ApiKeySecret::parse(&format!("hk_{}", "b".repeat(30))).expect("valid");
        assert_eq!(k.prefix().as_str(), "hk_bbbbbbbbb");
        assert_eq!(KeyPrefix::parse(k.prefix().as_str()), Ok(k.prefix()));
        let h = k.hash();
        assert_eq!(h.to_hex().len(), 64);
        assert_eq!(KeyHash::from_hex(&h.to_hex()), Ok(h.clone()));
        assert!(h.matches(&k));
        let other = ApiKeySecret::generate();
        assert!(!h.matches(&other));
        assert!(KeyHash::from_hex(&h.to_hex().to_uppercase()).is_err());
        assert!(KeyPrefix::parse("hk_short").is_err());
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let k = ApiKeySecret::generate();
        let shown = format!("{k:?} {:?}", k.hash());
        assert!(!shown.contains(&k.expose()[PREFIX_LEN..]));
        assert!(!shown.contains(&k.hash().to_hex()));
    }
}
