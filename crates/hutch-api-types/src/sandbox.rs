//! Sandboxes: create, the view of one, a page of them, and a new timeout.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// `POST /v1/sandboxes`. Every field but `template` is optional.
// (Doc comments here are the OpenAPI document's descriptions.) The bounds and defaults below
// are enforced by `hutch_core::request`, which turns this into a `SandboxSpec`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreateSandboxRequest {
    /// Template `name[:tag]` (default tag `latest`).
    pub template: String,
    /// CPUs, 0.1 to 64 in steps of 0.001 (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<f64>,
    /// 32 to 262144 (default 512).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_mb: Option<u64>,
    /// 64 to 1048576 (default 1024).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_mb: Option<u64>,
    /// 16 to 65536 (default 256).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pids: Option<u64>,
    /// Environment of every process; `HUTCH_*`, `E2B_SANDBOX` and `E2B_SANDBOX_ID` are reserved.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Labels to filter lists by.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
    /// `crun`, `runc` or `runsc` (default: the host's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<String>,
    /// Life in seconds, 1 to 2592000 (default 300).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_s: Option<u64>,
}

/// A sandbox as the API shows it. `env` is not shown: it may hold secrets.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SandboxView {
    pub id: String,
    /// `creating`, `running`, `sleeping`, `asleep`, `waking`, `stopping`, `stopped`, `failed`.
    pub state: String,
    /// `name:tag`.
    pub template: String,
    /// CPUs (fractions allowed).
    pub cpu: f64,
    pub memory_mb: u32,
    pub disk_mb: u32,
    pub pids: u32,
    /// The runtime asked for; `null` for the host's default.
    pub runtime: Option<String>,
    pub metadata: BTreeMap<String, String>,
    pub timeout_s: u64,
    /// RFC 3339.
    pub created_at: String,
    pub updated_at: String,
    /// When the sweeper removes it; `null`: never.
    pub expires_at: Option<String>,
    /// Why it is `failed`.
    pub failure_reason: Option<String>,
    /// The key that created it.
    pub created_by: Option<String>,
}

/// One page of sandboxes.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SandboxList {
    pub sandboxes: Vec<SandboxView>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

/// `POST /v1/sandboxes/{id}/timeout`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TimeoutRequest {
    /// Remaining life in seconds from now.
    pub timeout_s: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: serde_json::Value) -> Result<CreateSandboxRequest, serde_json::Error> {
        serde_json::from_value(v)
    }

    #[test]
    fn unknown_fields_and_wrong_types_fail_to_parse() {
        for v in [
            json!({"template": "busybox", "cpus": 1}),
            json!({"template": "busybox", "memory_mb": -1}),
            json!({"template": "busybox", "memory_mb": "512"}),
            json!({"template": "busybox", "env": {"A": 1}}),
            json!({"template": "busybox", "env": null}),
            json!({"cpu": 1}),
            json!({"template": 5}),
        ] {
            assert!(parse(v.clone()).is_err(), "{v}");
        }
        assert!(serde_json::from_value::<TimeoutRequest>(json!({"timeout_s": 1, "x": 1})).is_err());
    }

    #[test]
    fn absent_and_null_optionals_are_the_same() {
        let bare = parse(json!({"template": "busybox"})).expect("parse");
        let nulls =
            parse(json!({"template": "busybox", "cpu": null, "runtime": null})).expect("parse");
        assert_eq!(bare, nulls);
        assert_eq!(
            bare,
            CreateSandboxRequest {
                template: "busybox".into(),
                ..Default::default()
            }
        );
    }

    #[test]
    fn a_request_is_sent_with_only_the_fields_given() {
        let req = CreateSandboxRequest {
            template: "debian:12".into(),
            memory_mb: Some(256),
            env: [("A".to_owned(), "1".to_owned())].into(),
            ..Default::default()
        };
        let sent = serde_json::to_value(&req).expect("serialise");
        assert_eq!(
            sent,
            json!({"template": "debian:12", "memory_mb": 256, "env": {"A": "1"}})
        );
        assert_eq!(parse(sent).expect("parse back"), req);
    }
}
