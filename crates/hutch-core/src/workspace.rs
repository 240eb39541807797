//! Workspace names: `default` and whatever the operator creates.
//!
//! Grammar: 1–63 lowercase letters, digits and `-`, starting and ending with a letter or digit
//! (a DNS label), so a name is safe in URLs, paths and logs.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

pub const MAX_WORKSPACE_NAME_LEN: usize = 63;
/// The workspace the operator's key belongs to, created on first start.
pub const DEFAULT_WORKSPACE: &str = "default";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "workspace name must be 1 to {MAX_WORKSPACE_NAME_LEN} lowercase letters, digits or `-`, not starting or ending with `-`"
)]
pub struct WorkspaceNameError;

/// A validated workspace name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WorkspaceName(String);

impl WorkspaceName {
    pub fn parse(s: &str) -> Result<Self, WorkspaceNameError> {
        let b = s.as_bytes();
        let alnum = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
        let ok = !b.is_empty()
            && b.len() <= MAX_WORKSPACE_NAME_LEN
            && b.iter().all(|c| alnum(c) || *c == b'-')
            && b.first().is_some_and(alnum)
            && b.last().is_some_and(alnum);
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(WorkspaceNameError)
        }
    }

    pub fn default_workspace() -> Self {
        Self(DEFAULT_WORKSPACE.to_owned())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for WorkspaceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for WorkspaceName {
    type Err = WorkspaceNameError;
    fn from_str(s: &str) -> Result<Self, WorkspaceNameError> {
        Self::parse(s)
    }
}

impl Serialize for WorkspaceName {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for WorkspaceName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_table() {
        let max = "a".repeat(MAX_WORKSPACE_NAME_LEN);
        let over = "a".repeat(MAX_WORKSPACE_NAME_LEN + 1);
        let cases = [
            ("default", true),
            ("team-42", true),
            ("a", true),
            ("0", true),
            (max.as_str(), true),
            (over.as_str(), false),
            ("", false),
            ("-a", false),
            ("a-", false),
            ("Team", false),
            ("a_b", false),
            ("a.b", false),
            ("a b", false),
        ];
        for (input, ok) in cases {
            assert_eq!(WorkspaceName::parse(input).is_ok(), ok, "{input:?}");
        }
        assert_eq!(WorkspaceName::default_workspace().as_str(), "default");
    }
}
