//! Exec: the request, the events of a streamed run, and the result of a waited one.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// `POST /v1/sandboxes/{id}/exec`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ExecRequest {
    /// The program and its arguments (no shell: use `["sh", "-c", "..."]` for one).
    pub cmd: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Working directory inside the sandbox (default: the template's, else the user's home).
    /// Paths under `/proc` are refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    /// User inside the sandbox (default: the template's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Text written to the process's standard input, which is then closed. Without it the
    /// process has no stdin.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdin: Option<String>,
    /// Seconds before the process is killed (default: no limit but the sandbox's life).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_s: Option<u64>,
    /// Answer once the process ends with its whole (capped) output, instead of streaming.
    #[serde(default, skip_serializing_if = "is_false")]
    pub wait: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// One event of a streamed exec (one NDJSON line).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum ExecEvent {
    /// The process started.
    Start { pid: u32 },
    /// Output on stdout: `data` (UTF-8 text) or `data_b64` (bytes that are not UTF-8).
    Stdout {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        data: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        data_b64: Option<String>,
    },
    /// Output on stderr, as `stdout`.
    Stderr {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        data: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        data_b64: Option<String>,
    },
    /// The process ended; always the last event of a stream that did not fail.
    Exit {
        exit_code: i32,
        /// The signal that ended it, if one did.
        signal: Option<i32>,
        /// The kernel's OOM killer ended it.
        oom: bool,
        /// The request's timeout ended it.
        timed_out: bool,
    },
    /// The stream failed after it started (the guest went away); the last event.
    Error { code: String, message: String },
}

/// The answer of an exec with `wait: true`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ExecResult {
    pub exit_code: i32,
    pub signal: Option<i32>,
    /// Standard output as text (bytes that are not UTF-8 replaced by U+FFFD).
    pub stdout: String,
    pub stderr: String,
    /// Output beyond the cap was dropped from `stdout` or `stderr`.
    pub truncated: bool,
    pub oom: bool,
    pub timed_out: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_request_is_sent_with_only_the_fields_given() {
        let req = ExecRequest {
            cmd: vec!["sh".into(), "-c".into(), "echo hi".into()],
            timeout_s: Some(60),
            ..Default::default()
        };
        let sent = serde_json::to_value(&req).expect("serialise");
        assert_eq!(
            sent,
            json!({"cmd": ["sh", "-c", "echo hi"], "timeout_s": 60})
        );
        assert_eq!(
            serde_json::from_value::<ExecRequest>(sent).expect("parse"),
            req
        );
        assert!(
            serde_json::from_value::<ExecRequest>(json!({"cmd": ["true"], "shell": true})).is_err()
        );
    }

    #[test]
    fn events_carry_their_type_tag() {
        let ev = ExecEvent::Error {
            code: "unavailable".into(),
            message: "gone".into(),
        };
        assert_eq!(
            serde_json::to_value(&ev).expect("serialise"),
            json!({"type": "error", "code": "unavailable", "message": "gone"})
        );
        assert!(serde_json::from_value::<ExecEvent>(json!({"type": "keepalive"})).is_err());
    }
}
