//! Template names (`name:tag`) and template build states.
//!
//! Grammar (strict, lowercase, so names are safe in paths, URLs and logs):
//! - name: 1–64 characters, lowercase letters and digits in groups joined by single `.`, `_`
//!   or `-` (`debian`, `python-3.12`, `my_app`);
//! - tag: 1–64 characters of lowercase letters, digits, `.`, `_`, `-`, starting with a letter,
//!   digit or `_` (`12`, `latest`, `v1.2.0`);
//! - a reference without `:tag` means `:latest`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

pub const MAX_NAME_LEN: usize = 64;
pub const MAX_TAG_LEN: usize = 64;
pub const DEFAULT_TAG: &str = "latest";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateNameError {
    #[error(
        "template name must be 1 to {MAX_NAME_LEN} lowercase letters, digits and single `.`, `_` or `-` between them"
    )]
    BadName,
    #[error(
        "template tag must be 1 to {MAX_TAG_LEN} lowercase letters, digits, `.`, `_` or `-`, not starting with `.` or `-`"
    )]
    BadTag,
}

fn is_alnum(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

fn valid_name(s: &str) -> bool {
    let b = s.as_bytes();
    if b.is_empty() || b.len() > MAX_NAME_LEN {
        return false;
    }
    let sep = |c: u8| matches!(c, b'.' | b'_' | b'-');
    if !is_alnum(b[0]) || !is_alnum(b[b.len() - 1]) {
        return false;
    }
    b.iter().all(|&c| is_alnum(c) || sep(c)) && !b.windows(2).any(|w| sep(w[0]) && sep(w[1]))
}

fn valid_tag(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= MAX_TAG_LEN
        && (is_alnum(b[0]) || b[0] == b'_')
        && b.iter()
            .all(|&c| is_alnum(c) || matches!(c, b'.' | b'_' | b'-'))
}

/// A validated template name (without tag).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TemplateName(String);

impl TemplateName {
    pub fn parse(s: &str) -> Result<Self, TemplateNameError> {
        if valid_name(s) {
            Ok(Self(s.to_owned()))
        } else {
            Err(TemplateNameError::BadName)
        }
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A validated template tag.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TemplateTag(String);

impl TemplateTag {
    pub fn parse(s: &str) -> Result<Self, TemplateNameError> {
        if valid_tag(s) {
            Ok(Self(s.to_owned()))
        } else {
            Err(TemplateNameError::BadTag)
        }
    }
    pub fn latest() -> Self {
        Self(DEFAULT_TAG.to_owned())
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// `name:tag`, as written in requests and annotations.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TemplateRef {
    pub name: TemplateName,
    pub tag: TemplateTag,
}

impl TemplateRef {
    pub fn new(name: TemplateName, tag: TemplateTag) -> Self {
        Self { name, tag }
    }

    /// Parses `name` or `name:tag`.
    pub fn parse(s: &str) -> Result<Self, TemplateNameError> {
        let (name, tag) = match s.split_once(':') {
            Some((n, t)) => (n, TemplateTag::parse(t)?),
            None => (s, TemplateTag::latest()),
        };
        Ok(Self {
            name: TemplateName::parse(name)?,
            tag,
        })
    }
}

impl fmt::Display for TemplateRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.name.0, self.tag.0)
    }
}

impl FromStr for TemplateRef {
    type Err = TemplateNameError;
    fn from_str(s: &str) -> Result<Self, TemplateNameError> {
        Self::parse(s)
    }
}

impl Serialize for TemplateRef {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for TemplateRef {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// A template's build state: `pending → building → ready | failed` (and `pending → failed`
/// when a build is cancelled before it starts). The store's CHECK constraint holds the same set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TemplateState {
    Pending,
    Building,
    Ready,
    Failed,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateStateError {
    #[error("unknown template state")]
    Unknown,
    #[error("a template cannot go from {from} to {to}")]
    Illegal {
        from: TemplateState,
        to: TemplateState,
    },
}

impl TemplateState {
    pub const ALL: [TemplateState; 4] = [
        TemplateState::Pending,
        TemplateState::Building,
        TemplateState::Ready,
        TemplateState::Failed,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            TemplateState::Pending => "pending",
            TemplateState::Building => "building",
            TemplateState::Ready => "ready",
            TemplateState::Failed => "failed",
        }
    }

    pub const fn can_become(self, to: TemplateState) -> bool {
        use TemplateState::*;
        matches!(
            (self, to),
            (Pending, Building | Failed) | (Building, Ready | Failed)
        )
    }

    pub fn check_transition(self, to: TemplateState) -> Result<(), TemplateStateError> {
        if self.can_become(to) {
            Ok(())
        } else {
            Err(TemplateStateError::Illegal { from: self, to })
        }
    }
}

impl fmt::Display for TemplateState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for TemplateState {
    type Err = TemplateStateError;
    fn from_str(s: &str) -> Result<Self, TemplateStateError> {
        TemplateState::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or(TemplateStateError::Unknown)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_table() {
        let long_name = "a".repeat(MAX_NAME_LEN);
        let too_long_name = "a".repeat(MAX_NAME_LEN + 1);
        let long_tag = format!("x:{}", "1".repeat(MAX_TAG_LEN));
        let too_long_tag = format!("x:{}", "1".repeat(MAX_TAG_LEN + 1));
        let cases: Vec<(&str, Result<&str, TemplateNameError>)> = vec![
            ("debian:12", Ok("debian:12")),
            ("busybox", Ok("busybox:latest")),
            ("python-3.12:slim", Ok("python-3.12:slim")),
            ("my_app:v1.2.0", Ok("my_app:v1.2.0")),
            ("a:_x", Ok("a:_x")),
            (&long_name, Ok("")),
            (&long_tag, Ok("")),
            ("", Err(TemplateNameError::BadName)),
            (":12", Err(TemplateNameError::BadName)),
            ("Debian:12", Err(TemplateNameError::BadName)),
            ("-debian", Err(TemplateNameError::BadName)),
            ("debian-", Err(TemplateNameError::BadName)),
            ("deb--ian", Err(TemplateNameError::BadName)),
            ("deb/ian", Err(TemplateNameError::BadName)),
            ("../etc", Err(TemplateNameError::BadName)),
            ("deb ian", Err(TemplateNameError::BadName)),
            (&too_long_name, Err(TemplateNameError::BadName)),
            ("debian:", Err(TemplateNameError::BadTag)),
            ("debian:.12", Err(TemplateNameError::BadTag)),
            ("debian:-12", Err(TemplateNameError::BadTag)),
            ("debian:12:1", Err(TemplateNameError::BadTag)),
            ("debian:UP", Err(TemplateNameError::BadTag)),
            ("debian:a/b", Err(TemplateNameError::BadTag)),
            (&too_long_tag, Err(TemplateNameError::BadTag)),
        ];
        for (input, want) in cases {
            let got = TemplateRef::parse(input).map(|r| r.to_string());
            match want {
                Ok("") => assert!(got.is_ok(), "{input}"),
                Ok(s) => assert_eq!(got.as_deref(), Ok(s), "{input}"),
                Err(e) => assert_eq!(got, Err(e), "{input}"),
            }
        }
    }

    #[test]
    fn serde_round_trip() {
        let r: TemplateRef = serde_json::from_str("\"busybox\"").expect("parse");
        assert_eq!(
            serde_json::to_string(&r).expect("serialise"),
            "\"busybox:latest\""
        );
        assert!(serde_json::from_str::<TemplateRef>("\"Bad\"").is_err());
    }

    #[test]
    fn state_table() {
        use TemplateState::*;
        let allowed = [
            (Pending, Building),
            (Pending, Failed),
            (Building, Ready),
            (Building, Failed),
        ];
        for from in TemplateState::ALL {
            assert_eq!(from.as_str().parse::<TemplateState>(), Ok(from));
            for to in TemplateState::ALL {
                assert_eq!(
                    from.can_become(to),
                    allowed.contains(&(from, to)),
                    "{from} -> {to}"
                );
            }
        }
        assert_eq!(
            Ready.check_transition(Building),
            Err(TemplateStateError::Illegal {
                from: Ready,
                to: Building
            })
        );
    }
}
