//! The terminal WebSocket's control messages.

use serde::{Deserialize, Serialize};

/// A text frame of the terminal WebSocket (`GET /v1/sandboxes/{id}/pty`); binary frames carry
/// the terminal's bytes both ways.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum PtyControl {
    /// From the client: the terminal's new size.
    Resize { cols: u16, rows: u16 },
    /// From the server, which then closes: the process ended.
    Exit {
        exit_code: i32,
        /// The signal that ended it, if one did.
        signal: Option<i32>,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_as_they_travel() {
        let resize: PtyControl =
            serde_json::from_str(r#"{"type":"resize","cols":100,"rows":30}"#).expect("parse");
        assert_eq!(
            resize,
            PtyControl::Resize {
                cols: 100,
                rows: 30
            }
        );
        let exit = PtyControl::Exit {
            exit_code: 0,
            signal: Some(9),
        };
        assert_eq!(
            serde_json::to_string(&exit).expect("serialise"),
            r#"{"type":"exit","exit_code":0,"signal":9}"#
        );
    }
}
