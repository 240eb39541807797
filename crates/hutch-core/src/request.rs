//! The create-sandbox request, validated. Its JSON shape, [`CreateSandboxRequest`], belongs to
//! `hutch-api-types`, which parses it (unknown fields rejected); a pure function here,
//! `SandboxSpec::try_from`, checks every field and fills in defaults. Only a [`SandboxSpec`]
//! reaches the scheduler and the runtime.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::template::TemplateRef;

/// Bounds and defaults. Host capacity and workspace quotas are checked separately
/// ([`crate::quota`]); these only reject requests no host should consider.
pub mod limits {
    pub const CPU_MILLIS_MIN: u32 = 100;
    pub const CPU_MILLIS_MAX: u32 = 64_000;
    pub const CPU_MILLIS_DEFAULT: u32 = 1_000;
    pub const MEMORY_MB_MIN: u32 = 32;
    pub const MEMORY_MB_MAX: u32 = 262_144;
    pub const MEMORY_MB_DEFAULT: u32 = 512;
    pub const DISK_MB_MIN: u32 = 64;
    pub const DISK_MB_MAX: u32 = 1_048_576;
    pub const DISK_MB_DEFAULT: u32 = 1_024;
    pub const PIDS_MIN: u32 = 16;
    pub const PIDS_MAX: u32 = 65_536;
    pub const PIDS_DEFAULT: u32 = 256;
    pub const TIMEOUT_S_MIN: u64 = 1;
    /// Thirty days; longer lives come from sleeping, not from a longer timeout.
    pub const TIMEOUT_S_MAX: u64 = 30 * 24 * 3600;
    pub const TIMEOUT_S_DEFAULT: u64 = 300;
    pub const ENV_MAX_ENTRIES: usize = 256;
    pub const ENV_NAME_MAX: usize = 128;
    pub const ENV_VALUE_MAX: usize = 32 * 1024;
    pub const ENV_TOTAL_MAX: usize = 256 * 1024;
    pub const METADATA_MAX_ENTRIES: usize = 64;
    pub const METADATA_KEY_MAX: usize = 64;
    pub const METADATA_VALUE_MAX: usize = 256;
}

use limits::*;

/// Environment names the platform sets itself; a request may not override them.
pub const RESERVED_ENV_PREFIX: &str = "HUTCH_";
pub const RESERVED_ENV_NAMES: &[&str] = &["E2B_SANDBOX", "E2B_SANDBOX_ID"];

/// The OCI runtime a sandbox runs under.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Runtime {
    Crun,
    Runc,
    Runsc,
}

impl Runtime {
    pub const ALL: [Runtime; 3] = [Runtime::Crun, Runtime::Runc, Runtime::Runsc];
    pub const fn as_str(self) -> &'static str {
        match self {
            Runtime::Crun => "crun",
            Runtime::Runc => "runc",
            Runtime::Runsc => "runsc",
        }
    }
}

impl fmt::Display for Runtime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Runtime {
    type Err = ValidationError;
    fn from_str(s: &str) -> Result<Self, ValidationError> {
        Runtime::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| invalid("runtime", "must be one of crun, runc, runsc"))
    }
}

/// `POST /v1/sandboxes` as it arrives: the input of validation.
pub use hutch_api_types::CreateSandboxRequest;

/// Resource limits of one sandbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resources {
    /// Thousandths of a CPU.
    pub cpu_millis: u32,
    pub memory_mb: u32,
    pub disk_mb: u32,
    pub pids: u32,
}

/// A create request that passed validation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxSpec {
    pub template: TemplateRef,
    pub resources: Resources,
    pub env: BTreeMap<String, String>,
    pub metadata: BTreeMap<String, String>,
    /// `None`: the host's default runtime.
    pub runtime: Option<Runtime>,
    pub timeout_s: u64,
}

/// Why a request was rejected: which field, and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct ValidationError {
    pub field: String,
    pub reason: String,
}

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> ValidationError {
    ValidationError {
        field: field.into(),
        reason: reason.into(),
    }
}

impl From<ValidationError> for Error {
    fn from(e: ValidationError) -> Self {
        Error::InvalidInput(e.to_string())
    }
}

fn bounded_u32(
    field: &str,
    value: Option<u64>,
    min: u32,
    max: u32,
    default: u32,
) -> Result<u32, ValidationError> {
    match value {
        None => Ok(default),
        Some(v) if v >= u64::from(min) && v <= u64::from(max) => {
            u32::try_from(v).map_err(|_| invalid(field, format!("must be {min} to {max}")))
        }
        Some(_) => Err(invalid(field, format!("must be {min} to {max}"))),
    }
}

fn cpu_millis(cpu: Option<f64>) -> Result<u32, ValidationError> {
    let Some(cpu) = cpu else {
        return Ok(CPU_MILLIS_DEFAULT);
    };
    let range = || {
        invalid(
            "cpu",
            format!(
                "must be {} to {} in steps of 0.001",
                f64::from(CPU_MILLIS_MIN) / 1000.0,
                f64::from(CPU_MILLIS_MAX) / 1000.0
            ),
        )
    };
    if !cpu.is_finite() {
        return Err(range());
    }
    let millis = (cpu * 1000.0).round();
    if (millis - cpu * 1000.0).abs() > 1e-6
        || millis < f64::from(CPU_MILLIS_MIN)
        || millis > f64::from(CPU_MILLIS_MAX)
    {
        return Err(range());
    }
    // In range [100, 64000] and integral, so the conversion is exact.
    Ok(millis as u32)
}

fn validate_env(env: &BTreeMap<String, String>) -> Result<(), ValidationError> {
    if env.len() > ENV_MAX_ENTRIES {
        return Err(invalid(
            "env",
            format!("at most {ENV_MAX_ENTRIES} variables"),
        ));
    }
    let mut total = 0usize;
    for (name, value) in env {
        let field = || format!("env.{}", printable(name));
        let b = name.as_bytes();
        let grammar = !b.is_empty()
            && b.len() <= ENV_NAME_MAX
            && (b[0].is_ascii_alphabetic() || b[0] == b'_')
            && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'_');
        if !grammar {
            return Err(invalid(
                field(),
                format!(
                    "name must be 1 to {ENV_NAME_MAX} letters, digits or `_`, not starting with a digit"
                ),
            ));
        }
        if name.starts_with(RESERVED_ENV_PREFIX) || RESERVED_ENV_NAMES.contains(&name.as_str()) {
            return Err(invalid(field(), "name is reserved for the platform"));
        }
        if value.len() > ENV_VALUE_MAX {
            return Err(invalid(
                field(),
                format!("value longer than {ENV_VALUE_MAX} bytes"),
            ));
        }
        if value.contains('\0') {
            return Err(invalid(field(), "value contains a NUL byte"));
        }
        total += name.len() + value.len() + 2;
    }
    if total > ENV_TOTAL_MAX {
        return Err(invalid(
            "env",
            format!("more than {ENV_TOTAL_MAX} bytes in total"),
        ));
    }
    Ok(())
}

/// The grammar of a metadata key: also used to parse `?metadata=k=v` filters.
pub fn valid_metadata_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= METADATA_KEY_MAX
        && key
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'))
}

/// The grammar of a metadata value.
pub fn valid_metadata_value(value: &str) -> bool {
    value.chars().count() <= METADATA_VALUE_MAX && !value.chars().any(char::is_control)
}

fn validate_metadata(md: &BTreeMap<String, String>) -> Result<(), ValidationError> {
    if md.len() > METADATA_MAX_ENTRIES {
        return Err(invalid(
            "metadata",
            format!("at most {METADATA_MAX_ENTRIES} entries"),
        ));
    }
    for (k, v) in md {
        if !valid_metadata_key(k) {
            return Err(invalid(
                format!("metadata.{}", printable(k)),
                format!("key must be 1 to {METADATA_KEY_MAX} letters, digits, `.`, `_` or `-`"),
            ));
        }
        if !valid_metadata_value(v) {
            return Err(invalid(
                format!("metadata.{k}"),
                format!(
                    "value must be at most {METADATA_VALUE_MAX} characters without control characters"
                ),
            ));
        }
    }
    Ok(())
}

/// A name echoed back in an error, trimmed and stripped of control characters.
fn printable(s: &str) -> String {
    s.chars()
        .filter(|c| !c.is_control())
        .take(ENV_NAME_MAX)
        .collect()
}

impl TryFrom<CreateSandboxRequest> for SandboxSpec {
    type Error = ValidationError;

    /// Checks every field and fills in defaults. Pure.
    fn try_from(req: CreateSandboxRequest) -> Result<SandboxSpec, ValidationError> {
        let template =
            TemplateRef::parse(&req.template).map_err(|e| invalid("template", e.to_string()))?;
        let resources = Resources {
            cpu_millis: cpu_millis(req.cpu)?,
            memory_mb: bounded_u32(
                "memory_mb",
                req.memory_mb,
                MEMORY_MB_MIN,
                MEMORY_MB_MAX,
                MEMORY_MB_DEFAULT,
            )?,
            disk_mb: bounded_u32(
                "disk_mb",
                req.disk_mb,
                DISK_MB_MIN,
                DISK_MB_MAX,
                DISK_MB_DEFAULT,
            )?,
            pids: bounded_u32("pids", req.pids, PIDS_MIN, PIDS_MAX, PIDS_DEFAULT)?,
        };
        validate_env(&req.env)?;
        validate_metadata(&req.metadata)?;
        let runtime = req.runtime.as_deref().map(str::parse).transpose()?;
        let timeout_s = match req.timeout_s {
            None => TIMEOUT_S_DEFAULT,
            Some(t) if (TIMEOUT_S_MIN..=TIMEOUT_S_MAX).contains(&t) => t,
            Some(_) => {
                return Err(invalid(
                    "timeout_s",
                    format!("must be {TIMEOUT_S_MIN} to {TIMEOUT_S_MAX}"),
                ));
            }
        };
        Ok(SandboxSpec {
            template,
            resources,
            env: req.env,
            metadata: req.metadata,
            runtime,
            timeout_s,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: serde_json::Value) -> Result<CreateSandboxRequest, serde_json::Error> {
        serde_json::from_value(v)
    }

    fn validate(req: CreateSandboxRequest) -> Result<SandboxSpec, ValidationError> {
        SandboxSpec::try_from(req)
    }

    #[test]
    fn defaults_fill_in() {
        let spec = validate(parse(json!({"template": "busybox"})).expect("parse")).expect("valid");
        assert_eq!(spec.template.to_string(), "busybox:latest");
        assert_eq!(
            spec.resources,
            Resources {
                cpu_millis: CPU_MILLIS_DEFAULT,
                memory_mb: MEMORY_MB_DEFAULT,
                disk_mb: DISK_MB_DEFAULT,
                pids: PIDS_DEFAULT,
            }
        );
        assert_eq!(spec.runtime, None);
        assert_eq!(spec.timeout_s, TIMEOUT_S_DEFAULT);
        assert!(spec.env.is_empty() && spec.metadata.is_empty());
    }

    #[test]
    fn full_request_is_kept() {
        let spec = validate(
            parse(json!({
            "template": "debian:12", "cpu": 1.5, "memory_mb": 1024, "disk_mb": 2048,
            "pids": 512, "env": {"FOO": "bar", "_X1": ""}, "metadata": {"team": "ml", "run.id": "7"},
            "runtime": "runsc", "timeout_s": 3600
        }))
            .expect("parse"),
        )
        .expect("valid");
        assert_eq!(spec.resources.cpu_millis, 1500);
        assert_eq!(spec.resources.memory_mb, 1024);
        assert_eq!(spec.resources.disk_mb, 2048);
        assert_eq!(spec.resources.pids, 512);
        assert_eq!(spec.runtime, Some(Runtime::Runsc));
        assert_eq!(spec.timeout_s, 3600);
        assert_eq!(spec.env.get("FOO").map(String::as_str), Some("bar"));
        assert_eq!(spec.metadata.len(), 2);
    }

    #[test]
    fn validation_table() {
        let big_env: serde_json::Map<String, serde_json::Value> = (0..=ENV_MAX_ENTRIES)
            .map(|i| (format!("V{i}"), json!("x")))
            .collect();
        let huge_total: serde_json::Map<String, serde_json::Value> = (0..10)
            .map(|i| (format!("V{i}"), json!("x".repeat(ENV_VALUE_MAX))))
            .collect();
        let many_md: serde_json::Map<String, serde_json::Value> = (0..=METADATA_MAX_ENTRIES)
            .map(|i| (format!("k{i}"), json!("v")))
            .collect();
        let cases: Vec<(serde_json::Value, Option<&str>)> = vec![
            // (extra fields, field named in the error or None when valid)
            (json!({"cpu": 0.1}), None),
            (json!({"cpu": 64}), None),
            (json!({"cpu": 0.05}), Some("cpu")),
            (json!({"cpu": 64.001}), Some("cpu")),
            (json!({"cpu": 1.0001}), Some("cpu")),
            (json!({"cpu": -1}), Some("cpu")),
            (json!({"memory_mb": MEMORY_MB_MIN}), None),
            (json!({"memory_mb": MEMORY_MB_MIN - 1}), Some("memory_mb")),
            (json!({"memory_mb": MEMORY_MB_MAX + 1}), Some("memory_mb")),
            (json!({"memory_mb": u64::MAX}), Some("memory_mb")),
            (json!({"disk_mb": DISK_MB_MIN - 1}), Some("disk_mb")),
            (json!({"disk_mb": DISK_MB_MAX}), None),
            (json!({"pids": PIDS_MIN - 1}), Some("pids")),
            (json!({"pids": PIDS_MAX + 1}), Some("pids")),
            (json!({"timeout_s": 0}), Some("timeout_s")),
            (json!({"timeout_s": TIMEOUT_S_MAX}), None),
            (json!({"timeout_s": TIMEOUT_S_MAX + 1}), Some("timeout_s")),
            (json!({"runtime": "crun"}), None),
            (json!({"runtime": "runc"}), None),
            (json!({"runtime": "docker"}), Some("runtime")),
            (json!({"runtime": "CRUN"}), Some("runtime")),
            (json!({"env": {"1A": "x"}}), Some("env.1A")),
            (json!({"env": {"": "x"}}), Some("env.")),
            (json!({"env": {"A-B": "x"}}), Some("env.A-B")),
            (json!({"env": {"A=B": "x"}}), Some("env.A=B")),
            (
                json!({"env": {"HUTCH_SANDBOX_ID": "x"}}),
                Some("env.HUTCH_SANDBOX_ID"),
            ),
            (
                json!({"env": {"E2B_SANDBOX": "x"}}),
                Some("env.E2B_SANDBOX"),
            ),
            (json!({"env": {"E2B_API": "x"}}), None),
            (json!({"env": {"A": "x\u{0}y"}}), Some("env.A")),
            (
                json!({"env": {"A": "x".repeat(ENV_VALUE_MAX + 1)}}),
                Some("env.A"),
            ),
            (json!({"env": {"A": "x".repeat(ENV_VALUE_MAX)}}), None),
            (json!({"env": big_env}), Some("env")),
            (json!({"env": huge_total}), Some("env")),
            (json!({"metadata": {"a=b": "x"}}), Some("metadata.a=b")),
            (json!({"metadata": {"": "x"}}), Some("metadata.")),
            (
                json!({"metadata": {"k": "line\nbreak"}}),
                Some("metadata.k"),
            ),
            (
                json!({"metadata": {"k": "é".repeat(METADATA_VALUE_MAX)}}),
                None,
            ),
            (
                json!({"metadata": {"k": "v".repeat(METADATA_VALUE_MAX + 1)}}),
                Some("metadata.k"),
            ),
            (
                json!({"metadata": {"k".repeat(METADATA_KEY_MAX + 1): "v"}}),
                Some("metadata."),
            ),
            (json!({"metadata": many_md}), Some("metadata")),
            (json!({"template": "Debian"}), Some("template")),
            (json!({"template": "debian:"}), Some("template")),
        ];
        for (extra, want) in cases {
            let mut body = json!({"template": "busybox"});
            if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
                for (k, v) in e {
                    b.insert(k.clone(), v.clone());
                }
            }
            let got = validate(parse(body).expect("parses"));
            match want {
                None => assert!(got.is_ok(), "{extra}: {got:?}"),
                Some(field) => {
                    let err = got.expect_err("should be rejected");
                    assert!(
                        err.field.starts_with(field),
                        "{extra}: field {} want {field}",
                        err.field
                    );
                    assert_eq!(Error::from(err).code().as_str(), "invalid_input");
                }
            }
        }
    }
}
