//! The unary `filesystem.Filesystem` RPCs: `Stat`, `MakeDir`, `Move`,
//! `ListDir`, `Remove`.
//!
//! Each handler: 1. decodes the request (`Unary`) and the user
//! (`RequestUser`); 2. resolves the paths (`path::resolve`); 3. does the work
//! on the blocking pool as that user (`identity::blocking_as`); 4. replies
//! with the entry, or an error whose Connect code the SDK maps
//! (`not_found` → FileNotFoundException, `already_exists` → `False` from
//! `make_dir`, `invalid_argument`, `permission_denied`).

use std::{
    collections::VecDeque,
    os::unix::fs::DirBuilderExt,
    path::{Path, PathBuf},
};

use axum::extract::State;
use hutch_envd::filesystem::{
    EntryInfo, FileType, ListDirRequest, ListDirResponse, MakeDirRequest, MakeDirResponse,
    MoveRequest, MoveResponse, RemoveRequest, RemoveResponse, StatRequest, StatResponse,
};

use super::{
    FsError,
    entry::{Names, describe, entry_info},
    identity::blocking_as,
    path::resolve,
};
use crate::{
    GuestState,
    auth::RequestUser,
    rpc::{RpcError, Unary, UnaryReply},
    users::User,
};

/// Most entries one `ListDir` returns; deeper trees need a smaller depth.
pub const MAX_LIST_ENTRIES: usize = 100_000;

/// Resolves a request path with the configured bounds.
pub fn resolve_for(state: &GuestState, user: &User, raw: &str) -> Result<PathBuf, FsError> {
    resolve(
        raw,
        user,
        state.config.default_workdir.as_deref(),
        state.config.max_path_len,
    )
}

/// `mkdir -p` with mode 0755 (blocking; as the user, so the directories it
/// creates are the user's, like envd's `EnsureDirs` + chown).
pub fn make_dirs(path: &Path) -> Result<(), FsError> {
    let mut prefix = PathBuf::from("/");
    for c in path.components().skip(1) {
        prefix.push(c);
        match std::fs::DirBuilder::new().mode(0o755).create(&prefix) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                match std::fs::metadata(&prefix) {
                    Ok(m) if m.is_dir() => {}
                    Ok(_) => return Err(FsError::NotADirectory(prefix.display().to_string())),
                    Err(e) => return Err(FsError::io("stat", &prefix, e)),
                }
            }
            Err(e) => return Err(FsError::io("creating directory", &prefix, e)),
        }
    }
    Ok(())
}

pub async fn stat(
    State(state): State<GuestState>,
    RequestUser(user): RequestUser,
    req: Unary<StatRequest>,
) -> Result<UnaryReply<StatResponse>, RpcError> {
    let path = resolve_for(&state, &user, &req.msg.path)?;
    let etc = state.config.etc_root.clone();
    let entry = blocking_as(&user, move || entry_info(&path, &mut Names::new(&etc))).await?;
    Ok(UnaryReply {
        codec: req.codec,
        msg: StatResponse { entry: Some(entry) },
    })
}

pub async fn make_dir(
    State(state): State<GuestState>,
    RequestUser(user): RequestUser,
    req: Unary<MakeDirRequest>,
) -> Result<UnaryReply<MakeDirResponse>, RpcError> {
    let path = resolve_for(&state, &user, &req.msg.path)?;
    let etc = state.config.etc_root.clone();
    let entry = blocking_as(&user, move || {
        match std::fs::metadata(&path) {
            Ok(m) if m.is_dir() => return Err(FsError::AlreadyExists(path.display().to_string())),
            Ok(_) => {
                return Err(FsError::Invalid(format!(
                    "{} exists and is not a directory",
                    path.display()
                )));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(FsError::io("stat", &path, e)),
        }
        make_dirs(&path)?;
        entry_info(&path, &mut Names::new(&etc))
    })
    .await?;
    Ok(UnaryReply {
        codec: req.codec,
        msg: MakeDirResponse { entry: Some(entry) },
    })
}

/// Moves a regular file across filesystems: copy next to the destination,
/// rename into place, then remove the source (blocking).
fn move_across(src: &Path, dst: &Path) -> Result<(), FsError> {
    let meta = std::fs::symlink_metadata(src).map_err(|e| FsError::io("stat", src, e))?;
    if !meta.is_file() {
        return Err(FsError::Invalid(format!(
            "cannot move {} to another filesystem: only regular files can be",
            src.display()
        )));
    }
    let tmp = super::temp_sibling(dst);
    if let Err(e) = std::fs::copy(src, &tmp).and_then(|_| std::fs::rename(&tmp, dst)) {
        let _ = std::fs::remove_file(&tmp);
        return Err(FsError::io("moving", dst, e));
    }
    std::fs::remove_file(src).map_err(|e| FsError::io("removing", src, e))
}

pub async fn move_entry(
    State(state): State<GuestState>,
    RequestUser(user): RequestUser,
    req: Unary<MoveRequest>,
) -> Result<UnaryReply<MoveResponse>, RpcError> {
    if req.msg.source.is_empty() || req.msg.destination.is_empty() {
        return Err(FsError::Invalid("source and destination are required".into()).into());
    }
    let src = resolve_for(&state, &user, &req.msg.source)?;
    let dst = resolve_for(&state, &user, &req.msg.destination)?;
    let etc = state.config.etc_root.clone();
    let entry = blocking_as(&user, move || {
        std::fs::symlink_metadata(&src).map_err(|e| FsError::io("stat", &src, e))?;
        if dst.starts_with(&src) && dst != src {
            return Err(FsError::Invalid(format!(
                "cannot move {} into itself",
                src.display()
            )));
        }
        if let Some(parent) = dst.parent() {
            make_dirs(parent)?;
        }
        match std::fs::rename(&src, &dst) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EXDEV) => move_across(&src, &dst)?,
            Err(e) => return Err(FsError::io("moving", &src, e)),
        }
        entry_info(&dst, &mut Names::new(&etc))
    })
    .await?;
    Ok(UnaryReply {
        codec: req.codec,
        msg: MoveResponse { entry: Some(entry) },
    })
}

pub async fn remove(
    State(state): State<GuestState>,
    RequestUser(user): RequestUser,
    req: Unary<RemoveRequest>,
) -> Result<UnaryReply<RemoveResponse>, RpcError> {
    // An empty path would mean the working directory: never remove that by
    // omission.
    if req.msg.path.is_empty() {
        return Err(FsError::Invalid("path is required".into()).into());
    }
    let path = resolve_for(&state, &user, &req.msg.path)?;
    blocking_as(&user, move || {
        if path == Path::new("/") {
            return Err(FsError::Invalid("refusing to remove /".into()));
        }
        let meta = std::fs::symlink_metadata(&path).map_err(|e| FsError::io("stat", &path, e))?;
        // remove_dir_all never follows symlinks inside the tree.
        let r = if meta.is_dir() {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        r.map_err(|e| FsError::io("removing", &path, e))
    })
    .await?;
    Ok(UnaryReply {
        codec: req.codec,
        msg: RemoveResponse {},
    })
}

/// Lists `root` down to `depth` levels (1: direct children), never following
/// a symlink below the root, bounded by [`MAX_LIST_ENTRIES`] (blocking).
pub fn list(root: &Path, depth: u32, names: &mut Names) -> Result<Vec<EntryInfo>, FsError> {
    // The listed directory itself may be reached through a symlink (envd
    // resolves it); nothing below it is followed.
    let meta = std::fs::metadata(root).map_err(|e| FsError::io("stat", root, e))?;
    if !meta.is_dir() {
        return Err(FsError::NotADirectory(root.display().to_string()));
    }
    let mut out = Vec::new();
    let mut queue = VecDeque::from([(root.to_path_buf(), 1u32)]);
    while let Some((dir, level)) = queue.pop_front() {
        let rd = match std::fs::read_dir(&dir) {
            Ok(rd) => rd,
            // The root must be readable; an unreadable subdirectory is listed
            // but not entered.
            Err(e) if dir == root => return Err(FsError::io("listing", root, e)),
            Err(_) => continue,
        };
        for item in rd {
            let Ok(item) = item else { continue };
            let path = dir.join(item.file_name());
            let Ok(meta) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            if out.len() >= MAX_LIST_ENTRIES {
                return Err(FsError::Exhausted(format!(
                    "{} holds more than {MAX_LIST_ENTRIES} entries at depth {depth}; list with a smaller depth",
                    root.display()
                )));
            }
            if meta.is_dir() && level < depth {
                queue.push_back((path.clone(), level + 1));
            }
            out.push(describe(&path, &meta, names));
        }
    }
    // envd's order: directories first, then by name ignoring case.
    let dir = FileType::Directory as i32;
    out.sort_by(|a, b| {
        (b.r#type == dir)
            .cmp(&(a.r#type == dir))
            .then_with(|| a.name.to_lowercase().cmp(&b.name.to_lowercase()))
    });
    Ok(out)
}

pub async fn list_dir(
    State(state): State<GuestState>,
    RequestUser(user): RequestUser,
    req: Unary<ListDirRequest>,
) -> Result<UnaryReply<ListDirResponse>, RpcError> {
    let path = resolve_for(&state, &user, &req.msg.path)?;
    let depth = req.msg.depth.max(1);
    let etc = state.config.etc_root.clone();
    let entries = blocking_as(&user, move || list(&path, depth, &mut Names::new(&etc))).await?;
    Ok(UnaryReply {
        codec: req.codec,
        msg: ListDirResponse { entries },
    })
}
