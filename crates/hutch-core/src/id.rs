//! Typed identifiers.
//!
//! An ID is a two-letter type prefix followed by [`RANDOM_LEN`] characters drawn from a
//! 32-symbol lowercase alphabet (5 bits each, 100 random bits). Only lowercase ASCII letters and
//! digits appear, so `{port}-{id}.{domain}` parses without ambiguity.

use std::fmt;
use std::str::FromStr;

use rand::Rng;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Number of random characters after the prefix (20 × 5 bits = 100 bits).
pub const RANDOM_LEN: usize = 20;

/// The symbols of the random part: digits and lowercase letters without `i`, `l`, `o`, `u`
/// (Crockford's base 32, lowercased), so IDs read aloud without confusion.
pub const ALPHABET: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";

/// Why a string is not an ID of the expected type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("{kind} id must start with `{prefix}`")]
    WrongPrefix {
        kind: &'static str,
        prefix: &'static str,
    },
    #[error("{kind} id must have {expected} characters after its prefix")]
    WrongLength { kind: &'static str, expected: usize },
    #[error("{kind} id may contain only lowercase letters and digits")]
    BadCharacter { kind: &'static str },
}

fn random_part<R: Rng + ?Sized>(rng: &mut R) -> String {
    (0..RANDOM_LEN)
        .map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]))
        .collect()
}

fn validate(kind: &'static str, prefix: &'static str, s: &str) -> Result<(), IdError> {
    let rest = s
        .strip_prefix(prefix)
        .ok_or(IdError::WrongPrefix { kind, prefix })?;
    if rest.len() != RANDOM_LEN {
        return Err(IdError::WrongLength {
            kind,
            expected: RANDOM_LEN,
        });
    }
    if !rest.bytes().all(|b| ALPHABET.contains(&b)) {
        return Err(IdError::BadCharacter { kind });
    }
    Ok(())
}

macro_rules! define_id {
    ($(#[$doc:meta])* $name:ident, $prefix:literal, $kind:literal) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            /// The type prefix every ID of this kind starts with.
            pub const PREFIX: &'static str = $prefix;

            /// A fresh random ID from the operating system's generator.
            pub fn generate() -> Self {
                Self::generate_with(&mut rand::rng())
            }

            /// A fresh ID from the given generator (tests pass a seeded one).
            pub fn generate_with<R: Rng + ?Sized>(rng: &mut R) -> Self {
                Self(format!("{}{}", $prefix, random_part(rng)))
            }

            /// Parses and validates an ID of this kind.
            pub fn parse(s: &str) -> Result<Self, IdError> {
                validate($kind, $prefix, s)?;
                Ok(Self(s.to_owned()))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.0)
            }
        }

        impl FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                Self::parse(s)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                Self::parse(&s).map_err(serde::de::Error::custom)
            }
        }
    };
}

define_id!(
    /// A sandbox.
    SandboxId, "sb", "sandbox"
);
define_id!(
    /// A template.
    TemplateId, "tp", "template"
);
define_id!(
    /// A volume.
    VolumeId, "vl", "volume"
);
define_id!(
    /// A function (uploaded handler code).
    FunctionId, "fn", "function"
);
define_id!(
    /// A task (one invocation of a function).
    TaskId, "tk", "task"
);
define_id!(
    /// A template build.
    BuildId, "bd", "build"
);
define_id!(
    /// A workspace (tenant).
    WorkspaceId, "ws", "workspace"
);
define_id!(
    /// An API key's public identifier (never the secret).
    KeyId, "ky", "key"
);
define_id!(
    /// One API request, for logs and error reports.
    RequestId, "rq", "request"
);
define_id!(
    /// A background job (build, validation, volume sync).
    JobId, "jb", "job"
);

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn generated_ids_parse_back_and_use_only_the_alphabet() {
        for _ in 0..200 {
            let id = SandboxId::generate();
            assert_eq!(id.as_str().len(), 2 + RANDOM_LEN);
            assert!(
                id.as_str()
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
            );
            assert_eq!(SandboxId::parse(id.as_str()), Ok(id.clone()));
            assert_eq!(id.to_string().parse::<SandboxId>(), Ok(id));
        }
    }

    #[test]
    fn generated_ids_differ() {
        let a = WorkspaceId::generate();
        let b = WorkspaceId::generate();
        assert_ne!(a, b);
    }

    #[test]
    fn seeded_generation_is_deterministic() {
        let mut r1 = rand::rngs::StdRng::seed_from_u64(7);
        let mut r2 = rand::rngs::StdRng::seed_from_u64(7);
        assert_eq!(
            TemplateId::generate_with(&mut r1),
            TemplateId::generate_with(&mut r2)
        );
    }

    #[test]
    fn parse_rejects_bad_ids() {
        let good = "sb0123456789abcdefghjk";
        assert!(SandboxId::parse(good).is_ok());
        let cases: &[(&str, IdError)] = &[
            (
                "tp0123456789abcdefghjk",
                IdError::WrongPrefix {
                    kind: "sandbox",
                    prefix: "sb",
                },
            ),
            (
                "",
                IdError::WrongPrefix {
                    kind: "sandbox",
                    prefix: "sb",
                },
            ),
            (
                "sb0123456789abcdefghj",
                IdError::WrongLength {
                    kind: "sandbox",
                    expected: RANDOM_LEN,
                },
            ),
            (
                "sb0123456789abcdefghjkm",
                IdError::WrongLength {
                    kind: "sandbox",
                    expected: RANDOM_LEN,
                },
            ),
            (
                "sb0123456789ABCDEFGHJK",
                IdError::BadCharacter { kind: "sandbox" },
            ),
            (
                "sb0123456789abcdefghj-",
                IdError::BadCharacter { kind: "sandbox" },
            ),
            // `i`, `l`, `o` and `u` are not in the alphabet.
            (
                "sb0123456789abcdefghji",
                IdError::BadCharacter { kind: "sandbox" },
            ),
            // Multi-byte characters cannot sneak in with a matching byte length.
            (
                "sb0123456789abcdefghé",
                IdError::BadCharacter { kind: "sandbox" },
            ),
        ];
        for (input, want) in cases {
            assert_eq!(
                SandboxId::parse(input).as_ref(),
                Err(want),
                "input {input:?}"
            );
        }
    }

    #[test]
    fn serde_is_a_plain_string_and_validates() {
        let id = KeyId::generate();
        let json = serde_json::to_string(&id).expect("serialise");
        assert_eq!(json, format!("\"{id}\""));
        let back: KeyId = serde_json::from_str(&json).expect("deserialise");
        assert_eq!(back, id);
        assert!(serde_json::from_str::<KeyId>("\"ky-not-valid\"").is_err());
        assert!(serde_json::from_str::<SandboxId>(&json).is_err());
    }

    #[test]
    fn prefixes_are_distinct_two_letter_lowercase() {
        let prefixes = [
            SandboxId::PREFIX,
            TemplateId::PREFIX,
            VolumeId::PREFIX,
            FunctionId::PREFIX,
            TaskId::PREFIX,
            BuildId::PREFIX,
            WorkspaceId::PREFIX,
            KeyId::PREFIX,
            RequestId::PREFIX,
            JobId::PREFIX,
        ];
        let mut sorted = prefixes.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), prefixes.len());
        for p in prefixes {
            assert_eq!(p.len(), 2);
            assert!(p.bytes().all(|b| b.is_ascii_lowercase()));
        }
    }
}
