//! SHA-256 content digests, the names of every content-addressed blob.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest as _, Sha256};

/// A SHA-256 digest. Displays as `sha256:<64 lowercase hex>`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest([u8; 32]);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DigestError {
    #[error("digest must be `sha256:` followed by 64 lowercase hex digits")]
    Malformed,
}

impl Digest {
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The digest of `data` (for small, in-memory data; streams hash incrementally).
    pub fn of(data: &[u8]) -> Self {
        Self(Sha256::digest(data).into())
    }

    /// The 64 lowercase hex digits, without the algorithm.
    pub fn hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Parses 64 lowercase hex digits (no algorithm prefix).
    pub fn from_hex(s: &str) -> Result<Self, DigestError> {
        if s.len() != 64
            || !s
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(DigestError::Malformed);
        }
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).map_err(|_| DigestError::Malformed)?;
        Ok(Self(out))
    }

    /// Parses `sha256:<hex>`.
    pub fn parse(s: &str) -> Result<Self, DigestError> {
        s.strip_prefix("sha256:")
            .ok_or(DigestError::Malformed)
            .and_then(Self::from_hex)
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest(sha256:{})", self.hex())
    }
}

impl FromStr for Digest {
    type Err = DigestError;
    fn from_str(s: &str) -> Result<Self, DigestError> {
        Self::parse(s)
    }
}

impl Serialize for Digest {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMPTY: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn known_digest_and_round_trip() {
        let d = Digest::of(b"");
        assert_eq!(d.hex(), EMPTY);
        assert_eq!(Digest::parse(&d.to_string()), Ok(d));
        assert_eq!(Digest::from_hex(EMPTY), Ok(d));
    }

    #[test]
    fn malformed_digests_are_rejected() {
        let upper = EMPTY.to_uppercase();
        let short = &EMPTY[..63];
        let bad_char = format!("{}g", &EMPTY[..63]);
        for s in [
            EMPTY.to_string(),
            format!("sha512:{EMPTY}"),
            format!("sha256:{upper}"),
            format!("sha256:{short}"),
            format!("sha256:{bad_char}"),
            format!("sha256:{EMPTY}0"),
        ] {
            assert_eq!(Digest::parse(&s), Err(DigestError::Malformed), "{s}");
        }
    }
}
