//! Signed URLs for `GET/POST /files`, as the E2B SDKs build them for
//! `download_url()` / `upload_url()`:
//! `"v1_" + base64_nopad(sha256("{path}:{read|write}:{user}:{token}[:{expires}]"))`.

use base64::Engine as _;
use sha2::{Digest, Sha256};

/// Which way a signed URL lets bytes move.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Read,
    Write,
}

impl Operation {
    fn as_str(self) -> &'static str {
        match self {
            Operation::Read => "read",
            Operation::Write => "write",
        }
    }
}

/// Computes the signature of a `/files` URL. `user` is the user named in the
/// URL (empty for the default user); `expires` is a unix time in seconds.
pub fn sign(path: &str, op: Operation, user: &str, token: &str, expires: Option<i64>) -> String {
    let mut h = Sha256::new();
    h.update(path.as_bytes());
    h.update(b":");
    h.update(op.as_str().as_bytes());
    h.update(b":");
    h.update(user.as_bytes());
    h.update(b":");
    h.update(token.as_bytes());
    if let Some(exp) = expires {
        h.update(b":");
        h.update(exp.to_string().as_bytes());
    }
    format!(
        "v1_{}",
        base64::engine::general_purpose::STANDARD_NO_PAD.encode(h.finalize())
    )
}

/// Why a signed URL was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("signature does not match")]
    Mismatch,
    #[error("signature expired")]
    Expired,
    #[error("signature_expiration is not a unix time")]
    BadExpiration,
}

/// Checks a signature in constant time with respect to its content.
pub fn verify(
    path: &str,
    op: Operation,
    user: &str,
    token: &str,
    signature: &str,
    expiration: Option<&str>,
    now_unix: i64,
) -> Result<(), SignatureError> {
    let expires = match expiration {
        Some(s) => Some(
            s.parse::<i64>()
                .map_err(|_| SignatureError::BadExpiration)?,
        ),
        None => None,
    };
    let want = sign(path, op, user, token, expires);
    let equal = want.len() == signature.len()
        && want
            .bytes()
            .zip(signature.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0;
    if !equal {
        return Err(SignatureError::Mismatch);
    }
    match expires {
        Some(exp) if exp < now_unix => Err(SignatureError::Expired),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_rejections() {
        let s = sign("/a.txt", Operation::Read, "", "tok", Some(100));
        assert!(s.starts_with("v1_"));
        assert!(!s.contains('='));
        assert_eq!(
            verify("/a.txt", Operation::Read, "", "tok", &s, Some("100"), 50),
            Ok(())
        );
        assert_eq!(
            verify("/a.txt", Operation::Read, "", "tok", &s, Some("100"), 101),
            Err(SignatureError::Expired)
        );
        assert_eq!(
            verify("/a.txt", Operation::Write, "", "tok", &s, Some("100"), 50),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify("/b.txt", Operation::Read, "", "tok", &s, Some("100"), 50),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify("/a.txt", Operation::Read, "", "tok", &s, Some("x"), 50),
            Err(SignatureError::BadExpiration)
        );
        let no_exp = sign("/a.txt", Operation::Write, "user", "tok", None);
        assert_eq!(
            verify(
                "/a.txt",
                Operation::Write,
                "user",
                "tok",
                &no_exp,
                None,
                1 << 40
            ),
            Ok(())
        );
    }

    /// Same input as the SDK's `get_signature` (python: e2b/sandbox/signature.py):
    /// sha256 of "path:operation:user:token:exp", base64 without padding.
    #[test]
    fn matches_known_vector() {
        // printf '/home/user/f:write:user:secret:1700000000' | sha256sum | xxd -r -p | base64 | tr -d =
        assert_eq!(
            sign(
                "/home/user/f",
                Operation::Write,
                "user",
                "secret",
                Some(1_700_000_000)
            ),
            format!("v1_{}", KNOWN)
        );
    }
    const KNOWN: &str = "j/VjH5BMY+YMrmHFeo5G4TaDS8SMNHW/Qj8KNpVZ2Jk";
}
