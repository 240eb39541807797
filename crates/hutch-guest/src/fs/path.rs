//! Turning a path from a request into an absolute, lexically clean path, the
//! way envd does (`permissions.ExpandAndResolve`):
//!
//! 1. Reject a path longer than the configured bound or holding a NUL.
//! 2. An empty path means the default working directory (else the user's home).
//! 3. `~` and `~/rest` expand to the user's home; `~other` is refused.
//! 4. A relative path is taken relative to the user's home.
//! 5. `.` and `..` are removed lexically (`..` never climbs above `/`).
//!
//! Symlinks are *not* resolved here: they are followed by the kernel when the
//! operation runs, under the user's own filesystem identity (see
//! [`super::identity`]), so a link can lead the user nowhere the user could
//! not go anyway.

use std::path::{Component, Path, PathBuf};

use super::FsError;
use crate::users::User;

/// Resolves `raw` for `user` (see the module docs).
pub fn resolve(
    raw: &str,
    user: &User,
    default_dir: Option<&Path>,
    max_len: usize,
) -> Result<PathBuf, FsError> {
    if raw.len() > max_len {
        return Err(FsError::Invalid(format!(
            "path is longer than {max_len} bytes"
        )));
    }
    if raw.contains('\0') {
        return Err(FsError::Invalid("path contains a NUL byte".into()));
    }
    let joined = if raw.is_empty() {
        default_dir
            .map(Path::to_path_buf)
            .unwrap_or_else(|| user.home.clone())
    } else if raw == "~" {
        user.home.clone()
    } else if let Some(rest) = raw.strip_prefix("~/") {
        user.home.join(rest)
    } else if raw.starts_with('~') {
        return Err(FsError::Invalid(format!(
            "cannot expand {raw:?}: only ~ and ~/ (the user's own home) are supported"
        )));
    } else if raw.starts_with('/') {
        PathBuf::from(raw)
    } else {
        user.home.join(raw)
    };
    let clean = clean(&joined);
    if clean.as_os_str().len() > max_len {
        return Err(FsError::Invalid(format!(
            "resolved path is longer than {max_len} bytes"
        )));
    }
    Ok(clean)
}

/// Lexical clean-up of an absolute path (a relative one is taken from `/`).
pub fn clean(p: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir => {
                out.pop();
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    out
}

/// The last component of a path, or `/` for the root.
pub fn base_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "/".into())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn user() -> User {
        User {
            name: "user".into(),
            uid: 1000,
            gid: 1000,
            groups: vec![],
            home: "/home/user".into(),
            shell: "/bin/sh".into(),
        }
    }

    #[test]
    fn table() {
        let u = user();
        let cases: &[(&str, Option<&str>)] = &[
            ("/a/b", Some("/a/b")),
            ("/a/../../b/./c/", Some("/b/c")),
            ("rel/x", Some("/home/user/rel/x")),
            ("../../etc", Some("/etc")),
            ("~", Some("/home/user")),
            ("~/d", Some("/home/user/d")),
            ("~root/x", None),
            ("", Some("/home/user")),
            ("/a\0b", None),
            ("/", Some("/")),
        ];
        for (raw, want) in cases {
            let got = resolve(raw, &u, None, 64).ok();
            assert_eq!(got.as_deref(), want.map(Path::new), "{raw:?}");
        }
        assert_eq!(
            resolve("", &u, Some(Path::new("/work")), 64).unwrap(),
            Path::new("/work")
        );
        assert!(resolve(&"a".repeat(65), &u, None, 64).is_err());
        assert!(
            resolve(&"a/".repeat(30), &u, None, 64).is_err(),
            "bound applies after joining the home"
        );
    }
}
