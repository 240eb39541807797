//! `EntryInfo` as envd fills it (envd's `entryInfo`, shared `GetEntryInfo`):
//!
//! 1. `lstat` the path: a symlink is described as itself, never followed
//!    blindly (`size`, `modified_time`, `owner`, `group` are the link's).
//! 2. For a symlink, resolve it fully (`realpath`, as the user): if that
//!    works, `symlink_target` is the resolved path and `type`/`mode` are the
//!    target's, with `is_symlink` set (what SDK 2.6x reads). A dangling or
//!    unreadable link keeps its raw text as the target and the type
//!    `FILE_TYPE_SYMLINK`, so listings still show it.
//! 3. `mode` is the permission bits (`st_mode & 0o777`, like Go's
//!    `FileMode.Perm()`); `permissions` is Go's `FileMode.String()` of the
//!    lstat mode (`-rw-r--r--`, `drwxr-xr-x`, `Lrwxrwxrwx`, `urwxr-xr-x`).
//! 4. Owner and group are names from the sandbox's own passwd/group
//!    (numbers when absent), cached for one request.
//! 5. `metadata` holds the `user.e2b.*` extended attributes, bounded.

use std::{
    collections::HashMap,
    os::unix::fs::{FileTypeExt, MetadataExt},
    path::{Path, PathBuf},
};

use hutch_envd::filesystem::{EntryInfo, FileType};

use super::{FsError, path::base_name};
use crate::users;

/// Prefix of the extended attributes that carry E2B file metadata.
pub const XATTR_PREFIX: &str = "user.e2b.";
/// At most this many metadata attributes are read per entry.
const MAX_XATTRS: usize = 64;
/// Largest metadata value read.
const MAX_XATTR_VALUE: usize = 4096;

/// uid/gid → name lookups for one request (passwd is read once per id).
pub struct Names {
    etc_root: PathBuf,
    users: HashMap<u32, String>,
    groups: HashMap<u32, String>,
}

impl Names {
    pub fn new(etc_root: &Path) -> Names {
        Names {
            etc_root: etc_root.to_owned(),
            users: HashMap::new(),
            groups: HashMap::new(),
        }
    }

    fn user(&mut self, uid: u32) -> String {
        let root = &self.etc_root;
        self.users
            .entry(uid)
            .or_insert_with(|| users::name_of(root, "passwd", uid))
            .clone()
    }

    fn group(&mut self, gid: u32) -> String {
        let root = &self.etc_root;
        self.groups
            .entry(gid)
            .or_insert_with(|| users::name_of(root, "group", gid))
            .clone()
    }
}

fn kind_of(ft: std::fs::FileType) -> FileType {
    if ft.is_dir() {
        FileType::Directory
    } else if ft.is_file() {
        FileType::File
    } else if ft.is_symlink() {
        FileType::Symlink
    } else {
        // Devices, FIFOs and sockets: envd reports them as unspecified.
        FileType::Unspecified
    }
}

/// Go's `os.FileMode.String()` for a Unix `st_mode`.
pub fn go_mode_string(mode: u32, ft: std::fs::FileType) -> String {
    let mut s = String::with_capacity(12);
    // Same letters and order as Go's "dalTLDpSugct?".
    if ft.is_dir() {
        s.push('d');
    }
    if ft.is_symlink() {
        s.push('L');
    }
    if ft.is_block_device() || ft.is_char_device() {
        s.push('D');
    }
    if ft.is_fifo() {
        s.push('p');
    }
    if ft.is_socket() {
        s.push('S');
    }
    if mode & libc::S_ISUID != 0 {
        s.push('u');
    }
    if mode & libc::S_ISGID != 0 {
        s.push('g');
    }
    if ft.is_char_device() {
        s.push('c');
    }
    if mode & libc::S_ISVTX != 0 {
        s.push('t');
    }
    if s.is_empty() {
        s.push('-');
    }
    const RWX: &[u8; 9] = b"rwxrwxrwx";
    for (i, c) in RWX.iter().enumerate() {
        let bit = 1 << (8 - i);
        s.push(if mode & bit != 0 { *c as char } else { '-' });
    }
    s
}

/// Reads the `user.e2b.*` attributes of `path` (not following a symlink).
pub fn read_metadata(path: &Path) -> HashMap<String, String> {
    let mut out = HashMap::new();
    let mut names = vec![0u8; 16 << 10];
    let Ok(len) = rustix::fs::llistxattr(path, &mut names[..]) else {
        return out;
    };
    let mut value = vec![0u8; MAX_XATTR_VALUE];
    for raw in names[..len.min(names.len())].split(|b| *b == 0) {
        if out.len() >= MAX_XATTRS {
            break;
        }
        let Ok(name) = std::str::from_utf8(raw) else {
            continue;
        };
        let Some(key) = name.strip_prefix(XATTR_PREFIX) else {
            continue;
        };
        if key.is_empty() {
            continue;
        }
        if let Ok(n) = rustix::fs::lgetxattr(path, name, &mut value[..]) {
            out.insert(
                key.to_owned(),
                String::from_utf8_lossy(&value[..n.min(value.len())]).into_owned(),
            );
        }
    }
    out
}

fn timestamp(meta: &std::fs::Metadata) -> pbjson_types::Timestamp {
    pbjson_types::Timestamp {
        seconds: meta.mtime(),
        nanos: meta.mtime_nsec().clamp(0, 999_999_999) as i32,
    }
}

/// Describes `path` (blocking; call as the request's user).
pub fn entry_info(path: &Path, names: &mut Names) -> Result<EntryInfo, FsError> {
    let meta = std::fs::symlink_metadata(path).map_err(|e| FsError::io("stat", path, e))?;
    Ok(describe(path, &meta, names))
}

/// Describes `path` from its lstat `meta` (blocking).
pub fn describe(path: &Path, meta: &std::fs::Metadata, names: &mut Names) -> EntryInfo {
    let ft = meta.file_type();
    let mut kind = kind_of(ft);
    let mut mode = meta.mode() & 0o777;
    let mut symlink_target = None;
    let is_symlink = ft.is_symlink();
    if is_symlink {
        match std::fs::canonicalize(path).and_then(|t| std::fs::metadata(&t).map(|m| (t, m))) {
            Ok((target, tmeta)) => {
                kind = match kind_of(tmeta.file_type()) {
                    FileType::Unspecified => FileType::Symlink,
                    k => k,
                };
                mode = tmeta.mode() & 0o777;
                symlink_target = Some(target.to_string_lossy().into_owned());
            }
            Err(_) => {
                symlink_target = std::fs::read_link(path)
                    .ok()
                    .map(|t| t.to_string_lossy().into_owned());
            }
        }
    }
    let metadata = if ft.is_file() || ft.is_dir() {
        read_metadata(path)
    } else {
        HashMap::new()
    };
    EntryInfo {
        name: base_name(path),
        r#type: kind as i32,
        path: path.to_string_lossy().into_owned(),
        size: i64::try_from(meta.size()).unwrap_or(i64::MAX),
        mode,
        permissions: go_mode_string(meta.mode(), ft),
        owner: names.user(meta.uid()),
        group: names.group(meta.gid()),
        modified_time: Some(timestamp(meta)),
        symlink_target,
        metadata,
        is_symlink,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn mode_strings_match_go() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("f");
        std::fs::write(&f, b"x").unwrap();
        let l = d.path().join("l");
        std::os::unix::fs::symlink(&f, &l).unwrap();
        let ft_file = std::fs::symlink_metadata(&f).unwrap().file_type();
        let ft_dir = std::fs::symlink_metadata(d.path()).unwrap().file_type();
        let ft_link = std::fs::symlink_metadata(&l).unwrap().file_type();
        assert_eq!(go_mode_string(0o100644, ft_file), "-rw-r--r--");
        assert_eq!(go_mode_string(0o104755, ft_file), "urwxr-xr-x");
        assert_eq!(go_mode_string(0o040755, ft_dir), "drwxr-xr-x");
        assert_eq!(go_mode_string(0o041777, ft_dir), "dtrwxrwxrwx");
        assert_eq!(go_mode_string(0o120777, ft_link), "Lrwxrwxrwx");
    }

    #[test]
    fn symlinks_report_their_target() {
        let d = tempfile::tempdir().unwrap();
        let l = d.path().join("root");
        std::os::unix::fs::symlink("/", &l).unwrap();
        let dangling = d.path().join("dangling");
        std::os::unix::fs::symlink("/nonexistent/x", &dangling).unwrap();
        let mut names = Names::new(Path::new("/nonexistent"));
        let e = entry_info(&l, &mut names).unwrap();
        assert!(e.is_symlink);
        assert_eq!(e.r#type, FileType::Directory as i32);
        assert_eq!(e.symlink_target.as_deref(), Some("/"));
        assert_eq!(e.permissions, "Lrwxrwxrwx");
        let e = entry_info(&dangling, &mut names).unwrap();
        assert_eq!(e.r#type, FileType::Symlink as i32);
        assert_eq!(e.symlink_target.as_deref(), Some("/nonexistent/x"));
    }
}
