//! Errors of the unpacker, the packer and the template builders.

use std::io;
use std::path::PathBuf;

/// Why the strict unpacker refused an entry (R6). Each variant is a policy
/// decision, not an IO failure; tests match on these.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("absolute name")]
    AbsoluteName,
    #[error("`..` component")]
    DotDot,
    #[error("NUL or control character in name")]
    ControlCharacter,
    #[error("empty name")]
    EmptyName,
    #[error("name longer than {limit} bytes")]
    NameTooLong { limit: usize },
    #[error("deeper than {limit} components")]
    TooDeep { limit: usize },
    #[error("device node")]
    Device,
    #[error("FIFO")]
    Fifo,
    #[error("unsupported entry type {0:#04x}")]
    UnsupportedType(u8),
    #[error("hardlink target {target:?} is not an earlier regular file of this archive")]
    HardlinkTarget { target: String },
    #[error("symlink target empty or too long")]
    BadSymlinkTarget,
    #[error("a parent component is not a directory created by this archive (symlink or file)")]
    ThroughNonDirectory,
    #[error("already exists")]
    Duplicate,
    #[error("malformed whiteout")]
    BadWhiteout,
    #[error("more than {limit} entries")]
    TooManyEntries { limit: u64 },
    #[error("more than {limit} bytes of content")]
    TooManyBytes { limit: u64 },
    #[error("compression ratio above {limit}:1")]
    CompressionRatio { limit: u64 },
}

/// An error of [`crate::unpack`]. `entry` is the entry's name as found in the
/// archive, escaped for display.
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error("archive entry {entry}: rejected: {reason}")]
    Rejected { entry: String, reason: Rejection },
    #[error("archive entry {entry}: {op}")]
    Io {
        entry: String,
        op: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("read archive (after entry {after})")]
    Read {
        after: String,
        #[source]
        source: io::Error,
    },
    #[error("unpack destination {path}: {op}")]
    Destination {
        path: PathBuf,
        op: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("unpack destination {path} is not empty")]
    DestinationNotEmpty { path: PathBuf },
}

impl UnpackError {
    /// The policy rejection, if this is one.
    pub fn rejection(&self) -> Option<&Rejection> {
        match self {
            UnpackError::Rejected { reason, .. } => Some(reason),
            _ => None,
        }
    }
}

/// An error of [`crate::pack`].
#[derive(Debug, thiserror::Error)]
pub enum PackError {
    #[error("pack {path}: {op}")]
    Io {
        path: PathBuf,
        op: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("pack {path}: unsupported file type (device, FIFO or socket)")]
    Special { path: PathBuf },
    #[error("pack {path}: file changed size while being archived (freeze the tree first, R5)")]
    Changed { path: PathBuf },
    #[error("pack: write archive")]
    Write(#[source] io::Error),
}

/// An error of the template builders and the template cache.
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error("template {template}: prerequisite {what} missing: {hint}")]
    Missing {
        template: &'static str,
        what: String,
        hint: &'static str,
    },
    #[error("template {template}: {op} {path}")]
    Io {
        template: &'static str,
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("template {template}: {command} failed ({status}); last output: {tail}")]
    Command {
        template: &'static str,
        command: String,
        status: String,
        tail: String,
    },
    #[error("template {template}: pack")]
    Pack {
        template: &'static str,
        #[source]
        source: PackError,
    },
}

/// Escapes an archive name for messages and logs (control characters shown as
/// `\xNN`, so a hostile name cannot forge log lines).
pub(crate) fn display_name(name: &[u8]) -> String {
    let mut out = String::with_capacity(name.len());
    for chunk in name.utf8_chunks() {
        for c in chunk.valid().chars() {
            if c.is_control() {
                out.push_str(&c.escape_default().to_string());
            } else {
                out.push(c);
            }
        }
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}
