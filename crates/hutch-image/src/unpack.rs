//! The one strict archive unpacker (DESIGN.md R6).
//!
//! Every tar stream Hutch accepts — template layers, volume archives, uploads —
//! goes through [`unpack`] (or [`validate`], which runs the very same parser and
//! policy against an in-memory model and writes nothing). The flow per entry:
//!
//! 1. Read the header from the (optionally gzip-decompressed) stream; count the
//!    entry against [`Limits::max_entries`].
//! 2. Validate the name: no absolute names, no `..`, no NUL or control
//!    characters, bounded component and total length, bounded depth.
//! 3. Validate the type: regular file, directory, symlink (target stored
//!    verbatim, never followed) or hardlink to an earlier regular file of the
//!    same archive. Devices, FIFOs and anything else are rejected.
//! 4. Apply it to the tree, relative to directory handles: every parent is
//!    opened with `O_DIRECTORY|O_NOFOLLOW` from the previous handle, every new
//!    file is created with `O_CREAT|O_EXCL|O_NOFOLLOW`, so a symlink planted by
//!    an earlier entry can never redirect a later write (R1).
//! 5. Copy content while counting total bytes and the compression ratio; the
//!    first limit crossed stops the stream with an error naming the entry.
//!
//! What the result looks like:
//! - Permission bits only: setuid and setgid are always dropped; the sticky
//!   bit is kept on directories (it only restricts deletion, `/tmp` needs it)
//!   and dropped on files.
//! - Ownership from the archive is ignored: everything is owned by
//!   [`UnpackOptions::owner`] (root by default). A layer built by Hutch never
//!   relies on archive ownership.
//! - xattrs, capabilities, ACLs (PAX `SCHILY.xattr.*`) are never applied.
//! - File and symlink mtimes are kept (so re-packing a tree is reproducible);
//!   directory mtimes are whatever creation leaves.
//! - Duplicate names are an error: an archive cannot replace what it already
//!   wrote, so a handle taken earlier stays valid.
//!
//! OCI whiteouts ([`Whiteouts::Overlay`], for layers): Hutch caches each layer
//! unpacked in its own directory and stacks the directories as overlayfs
//! lower layers (DESIGN.md §3, §5), so whiteouts are *materialised the way
//! overlayfs reads them* rather than applied to a flattened copy: `.wh.NAME`
//! becomes a character device 0:0 named `NAME`, `.wh..wh..opq` sets
//! `trusted.overlay.opaque=y` on its directory. Flattening would copy every
//! parent layer for each child and lose the sharing between templates.
//! Materialising needs CAP_MKNOD and CAP_SYS_ADMIN (the agent runs as root);
//! overlays mounted with `userxattr` (inside a user namespace) would need
//! `user.overlay.opaque` instead — not used by Hutch today. With
//! [`Whiteouts::Plain`] (volumes, uploads) `.wh.` names are ordinary names.
//!
//! This is blocking work (file IO for the whole stream): call it from
//! `spawn_blocking` or a dedicated thread.

use std::cell::Cell;
use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Read};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::rc::Rc;

use rustix::fs::{AtFlags, Dev, FileType, Mode, OFlags, Timespec, Timestamps, XattrFlags};

use crate::error::{Rejection, UnpackError, display_name};

/// Caps enforced while streaming. Crossing any one stops the unpack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Total bytes of file content (after decompression).
    pub max_bytes: u64,
    /// Number of entries (every header counts, including directories).
    pub max_entries: u64,
    /// Components in a name.
    pub max_depth: usize,
    /// Bytes in a full name (a single component is capped at 255 regardless).
    pub max_name_len: usize,
    /// Decompressed bytes per compressed byte, checked once
    /// [`Limits::ratio_grace_bytes`] have been decompressed.
    pub max_ratio: u64,
    /// Decompressed bytes allowed before the ratio is checked (small archives
    /// of empty files legitimately compress very well).
    pub ratio_grace_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_bytes: 8 << 30,
            max_entries: 500_000,
            max_depth: 64,
            max_name_len: 4096,
            max_ratio: 250,
            ratio_grace_bytes: 16 << 20,
        }
    }
}

/// How the input is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compression {
    /// Plain tar.
    None,
    /// gzip-compressed tar.
    Gzip,
    /// Look at the first two bytes (gzip magic `1f 8b`).
    #[default]
    Detect,
}

/// What `.wh.` names mean.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Whiteouts {
    /// Ordinary names (volumes, uploads).
    #[default]
    Plain,
    /// OCI layer whiteouts, materialised as overlayfs whiteouts (see module docs).
    Overlay,
}

/// Owner of everything the unpacker creates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Owner {
    pub uid: u32,
    pub gid: u32,
}

/// Options of [`unpack`] and [`validate`].
#[derive(Debug, Clone, Default)]
pub struct UnpackOptions {
    pub limits: Limits,
    pub compression: Compression,
    pub whiteouts: Whiteouts,
    pub owner: Owner,
}

/// What an unpack or validation saw.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UnpackStats {
    pub entries: u64,
    /// Bytes of file content.
    pub bytes: u64,
    /// Bytes read from the input (compressed, if it was).
    pub input_bytes: u64,
}

const OPAQUE_MARKER: &[u8] = b".wh..wh..opq";
const WHITEOUT_PREFIX: &[u8] = b".wh.";
const OPAQUE_XATTR: &str = "trusted.overlay.opaque";
const MAX_COMPONENT: usize = 255;
const MAX_SYMLINK_TARGET: usize = 4095;

/// Validates `input` against the policy without writing anything: the same
/// parser and rules as [`unpack`], applied to an in-memory model of the tree.
/// Blocking.
pub fn validate<R: Read>(input: R, opts: &UnpackOptions) -> Result<UnpackStats, UnpackError> {
    let mut tree = ModelTree::default();
    run(input, opts, &mut tree)
}

/// Unpacks `input` into `dest`, which must be an existing, empty directory
/// (so everything found in it afterwards came from this archive). On error the
/// destination holds a partial tree; the caller unpacks into a temporary
/// directory and renames it into place only on success. Blocking.
pub fn unpack<R: Read>(
    input: R,
    dest: &Path,
    opts: &UnpackOptions,
) -> Result<UnpackStats, UnpackError> {
    let dest_err = |op: &'static str| {
        move |source: rustix::io::Errno| UnpackError::Destination {
            path: dest.to_path_buf(),
            op,
            source: source.into(),
        }
    };
    let root = rustix::fs::open(
        dest,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(dest_err("open directory"))?;
    let dir = rustix::fs::Dir::read_from(&root).map_err(dest_err("read directory"))?;
    for item in dir {
        let item = item.map_err(dest_err("read directory"))?;
        let name = item.file_name().to_bytes();
        if name != b"." && name != b".." {
            return Err(UnpackError::DestinationNotEmpty {
                path: dest.to_path_buf(),
            });
        }
    }
    let chown = {
        let euid = rustix::process::geteuid().as_raw();
        let egid = rustix::process::getegid().as_raw();
        (euid, egid) != (opts.owner.uid, opts.owner.gid)
    };
    let mut tree = FsTree {
        root,
        stack: Vec::new(),
        owner: opts.owner,
        chown,
        is_root: rustix::process::geteuid().is_root(),
        deferred_modes: Vec::new(),
        buf: vec![0u8; 256 * 1024],
    };
    run(input, opts, &mut tree)
}

// ---------------------------------------------------------------------------
// Parsing and policy (shared by both modes)

/// Why an operation on the tree failed.
enum Fail {
    Reject(Rejection),
    Io(&'static str, io::Error),
}

impl From<Rejection> for Fail {
    fn from(r: Rejection) -> Self {
        Fail::Reject(r)
    }
}

/// Byte counters shared between the reader wrappers and the driver.
#[derive(Default)]
struct Counters {
    input: Cell<u64>,
    content: Cell<u64>,
    /// Set by [`ContentReader`] when it stops a copy because of a limit.
    tripped: Cell<Option<Rejection>>,
}

struct CountingReader<R> {
    inner: R,
    counters: Rc<Counters>,
}

impl<R: Read> Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.counters
            .input
            .set(self.counters.input.get() + n as u64);
        Ok(n)
    }
}

/// Decompressed-side counter: checks the ratio on every read, so a bomb made
/// of headers or padding is caught as well as one made of file content.
struct RatioReader<R> {
    inner: R,
    counters: Rc<Counters>,
    out: u64,
    limits: Limits,
    compressed: bool,
}

impl<R: Read> Read for RatioReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.out += n as u64;
        if self.compressed && self.out > self.limits.ratio_grace_bytes {
            let input = self.counters.input.get().max(1);
            if self.out / input > self.limits.max_ratio {
                let r = Rejection::CompressionRatio {
                    limit: self.limits.max_ratio,
                };
                self.counters.tripped.set(Some(r));
                return Err(io::Error::other("compression ratio limit"));
            }
        }
        Ok(n)
    }
}

/// Wraps one entry's content: counts it against `max_bytes`.
struct ContentReader<'a, R> {
    inner: R,
    counters: &'a Counters,
    max_bytes: u64,
}

impl<R: Read> Read for ContentReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        let total = self.counters.content.get() + n as u64;
        self.counters.content.set(total);
        if total > self.max_bytes {
            self.counters.tripped.set(Some(Rejection::TooManyBytes {
                limit: self.max_bytes,
            }));
            return Err(io::Error::other("content byte limit"));
        }
        Ok(n)
    }
}

/// The tree an archive is applied to: the real one ([`FsTree`]) or a model
/// ([`ModelTree`]). Both enforce the same semantics.
trait Tree {
    fn dir(&mut self, path: &[&[u8]], mode: u32) -> Result<(), Fail>;
    fn file(
        &mut self,
        path: &[&[u8]],
        mode: u32,
        mtime: i64,
        data: &mut dyn Read,
    ) -> Result<(), Fail>;
    fn symlink(&mut self, path: &[&[u8]], target: &[u8], mtime: i64) -> Result<(), Fail>;
    fn hardlink(&mut self, path: &[&[u8]], target: &[&[u8]]) -> Result<(), Fail>;
    fn whiteout(&mut self, path: &[&[u8]]) -> Result<(), Fail>;
    fn opaque(&mut self, dir: &[&[u8]]) -> Result<(), Fail>;
    fn finish(&mut self) -> Result<(), Fail>;
}

/// Splits and validates an archive name into components. Leading `./` and
/// empty components are dropped; an empty result means the root.
fn split_name<'a>(raw: &'a [u8], limits: &Limits) -> Result<Vec<&'a [u8]>, Rejection> {
    if raw.is_empty() {
        return Err(Rejection::EmptyName);
    }
    if raw.len() > limits.max_name_len {
        return Err(Rejection::NameTooLong {
            limit: limits.max_name_len,
        });
    }
    if raw.iter().any(|&b| b < 0x20 || b == 0x7f) {
        return Err(Rejection::ControlCharacter);
    }
    if raw[0] == b'/' {
        return Err(Rejection::AbsoluteName);
    }
    let mut comps = Vec::new();
    for comp in raw.split(|&b| b == b'/') {
        match comp {
            b"" | b"." => {}
            b".." => return Err(Rejection::DotDot),
            c if c.len() > MAX_COMPONENT => {
                return Err(Rejection::NameTooLong {
                    limit: MAX_COMPONENT,
                });
            }
            c => comps.push(c),
        }
    }
    if comps.len() > limits.max_depth {
        return Err(Rejection::TooDeep {
            limit: limits.max_depth,
        });
    }
    Ok(comps)
}

fn run<R: Read, T: Tree>(
    input: R,
    opts: &UnpackOptions,
    tree: &mut T,
) -> Result<UnpackStats, UnpackError> {
    let counters = Rc::new(Counters::default());
    let mut buffered = BufReader::with_capacity(
        64 * 1024,
        CountingReader {
            inner: input,
            counters: counters.clone(),
        },
    );
    let gzip = match opts.compression {
        Compression::None => false,
        Compression::Gzip => true,
        Compression::Detect => {
            let head = buffered.fill_buf().map_err(|source| UnpackError::Read {
                after: "(start)".into(),
                source,
            })?;
            head.starts_with(&[0x1f, 0x8b])
        }
    };
    let decompressed: Box<dyn Read> = if gzip {
        Box::new(flate2::bufread::MultiGzDecoder::new(buffered))
    } else {
        Box::new(buffered)
    };
    let ratio = RatioReader {
        inner: decompressed,
        counters: counters.clone(),
        out: 0,
        limits: opts.limits.clone(),
        compressed: gzip,
    };
    let mut archive = tar::Archive::new(ratio);
    let entries = archive.entries().map_err(|source| UnpackError::Read {
        after: "(start)".into(),
        source,
    })?;

    let limits = &opts.limits;
    let mut stats = UnpackStats::default();
    let mut last = String::from("(start)");
    for entry in entries {
        let mut entry = match entry {
            Ok(e) => e,
            Err(source) => {
                if let Some(reason) = counters.tripped.take() {
                    return Err(UnpackError::Rejected {
                        entry: last,
                        reason,
                    });
                }
                return Err(UnpackError::Read {
                    after: last,
                    source,
                });
            }
        };
        let raw_name = entry.path_bytes().into_owned();
        let shown = display_name(&raw_name);
        let reject = |reason: Rejection| UnpackError::Rejected {
            entry: shown.clone(),
            reason,
        };
        stats.entries += 1;
        if stats.entries > limits.max_entries {
            return Err(reject(Rejection::TooManyEntries {
                limit: limits.max_entries,
            }));
        }
        let path = split_name(&raw_name, limits).map_err(reject)?;
        let header = entry.header();
        let kind = header.entry_type();
        let mode = header.mode().unwrap_or(0o644);
        let mtime = header.mtime().unwrap_or(0).min(i64::MAX as u64) as i64;

        let result = match kind {
            tar::EntryType::Directory => tree.dir(&path, mode & 0o1777),
            tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse => {
                let name = path.last().copied().unwrap_or_default();
                if path.is_empty() {
                    Err(Rejection::EmptyName.into())
                } else if opts.whiteouts == Whiteouts::Overlay && name == OPAQUE_MARKER {
                    tree.opaque(&path[..path.len() - 1])
                } else if opts.whiteouts == Whiteouts::Overlay && name.starts_with(WHITEOUT_PREFIX)
                {
                    let hidden = &name[WHITEOUT_PREFIX.len()..];
                    if hidden.is_empty() || hidden == b"." || hidden == b".." {
                        Err(Rejection::BadWhiteout.into())
                    } else {
                        let mut target = path[..path.len() - 1].to_vec();
                        target.push(hidden);
                        tree.whiteout(&target)
                    }
                } else {
                    let mut data = ContentReader {
                        inner: &mut entry,
                        counters: &counters,
                        max_bytes: limits.max_bytes,
                    };
                    tree.file(&path, mode & 0o777, mtime, &mut data)
                }
            }
            tar::EntryType::Symlink => match entry.link_name_bytes() {
                Some(target)
                    if !target.is_empty()
                        && target.len() <= MAX_SYMLINK_TARGET
                        && !target.contains(&0) =>
                {
                    if path.is_empty() {
                        Err(Rejection::EmptyName.into())
                    } else {
                        tree.symlink(&path, &target, mtime)
                    }
                }
                _ => Err(Rejection::BadSymlinkTarget.into()),
            },
            tar::EntryType::Link => {
                let target_raw = entry.link_name_bytes().map(|t| t.into_owned());
                let target_raw = target_raw.unwrap_or_default();
                let target = split_name(&target_raw, limits).map_err(|_| {
                    reject(Rejection::HardlinkTarget {
                        target: display_name(&target_raw),
                    })
                })?;
                if path.is_empty() || target.is_empty() {
                    Err(Rejection::HardlinkTarget {
                        target: display_name(&target_raw),
                    }
                    .into())
                } else {
                    tree.hardlink(&path, &target).map_err(|f| match f {
                        Fail::Reject(Rejection::HardlinkTarget { .. }) => {
                            Fail::Reject(Rejection::HardlinkTarget {
                                target: display_name(&target_raw),
                            })
                        }
                        other => other,
                    })
                }
            }
            tar::EntryType::Char | tar::EntryType::Block => Err(Rejection::Device.into()),
            tar::EntryType::Fifo => Err(Rejection::Fifo.into()),
            other => Err(Rejection::UnsupportedType(other.as_byte()).into()),
        };
        match result {
            Ok(()) => {}
            Err(Fail::Reject(reason)) => return Err(reject(reason)),
            Err(Fail::Io(op, source)) => {
                if let Some(reason) = counters.tripped.take() {
                    return Err(reject(reason));
                }
                return Err(UnpackError::Io {
                    entry: shown,
                    op,
                    source,
                });
            }
        }
        last = shown;
    }
    tree.finish().map_err(|f| match f {
        Fail::Reject(reason) => UnpackError::Rejected {
            entry: last.clone(),
            reason,
        },
        Fail::Io(op, source) => UnpackError::Io {
            entry: last.clone(),
            op,
            source,
        },
    })?;
    stats.bytes = counters.content.get();
    stats.input_bytes = counters.input.get();
    Ok(stats)
}

// ---------------------------------------------------------------------------
// Validate-only: an in-memory model with the same semantics as the real tree.

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Dir,
    File,
    Symlink,
    Whiteout,
}

#[derive(Default)]
struct ModelTree {
    nodes: HashMap<Vec<u8>, Kind>,
}

fn join(path: &[&[u8]]) -> Vec<u8> {
    path.join(&b'/')
}

impl ModelTree {
    /// Makes sure every parent of `path` is (or implicitly becomes) a directory.
    fn parents(&mut self, path: &[&[u8]]) -> Result<(), Fail> {
        for i in 1..path.len() {
            let key = join(&path[..i]);
            match self.nodes.get(&key) {
                Some(Kind::Dir) => {}
                Some(_) => return Err(Rejection::ThroughNonDirectory.into()),
                None => {
                    self.nodes.insert(key, Kind::Dir);
                }
            }
        }
        Ok(())
    }

    /// Adds a leaf; an existing whiteout of the same name is replaced.
    fn leaf(&mut self, path: &[&[u8]], kind: Kind) -> Result<(), Fail> {
        self.parents(path)?;
        let key = join(path);
        match self.nodes.get(&key) {
            None | Some(Kind::Whiteout) => {
                self.nodes.insert(key, kind);
                Ok(())
            }
            Some(_) => Err(Rejection::Duplicate.into()),
        }
    }
}

impl Tree for ModelTree {
    fn dir(&mut self, path: &[&[u8]], _mode: u32) -> Result<(), Fail> {
        if path.is_empty() {
            return Ok(());
        }
        self.parents(path)?;
        match self.nodes.get(&join(path)) {
            Some(Kind::Dir) => Ok(()),
            None | Some(Kind::Whiteout) => {
                self.nodes.insert(join(path), Kind::Dir);
                Ok(())
            }
            Some(_) => Err(Rejection::Duplicate.into()),
        }
    }

    fn file(&mut self, path: &[&[u8]], _: u32, _: i64, data: &mut dyn Read) -> Result<(), Fail> {
        self.leaf(path, Kind::File)?;
        io::copy(data, &mut io::sink()).map_err(|e| Fail::Io("read content", e))?;
        Ok(())
    }

    fn symlink(&mut self, path: &[&[u8]], _: &[u8], _: i64) -> Result<(), Fail> {
        self.leaf(path, Kind::Symlink)
    }

    fn hardlink(&mut self, path: &[&[u8]], target: &[&[u8]]) -> Result<(), Fail> {
        if self.nodes.get(&join(target)) != Some(&Kind::File) {
            return Err(Rejection::HardlinkTarget {
                target: String::new(),
            }
            .into());
        }
        self.leaf(path, Kind::File)
    }

    fn whiteout(&mut self, path: &[&[u8]]) -> Result<(), Fail> {
        self.parents(path)?;
        // A name this layer already created hides the lower one by itself.
        self.nodes.entry(join(path)).or_insert(Kind::Whiteout);
        Ok(())
    }

    fn opaque(&mut self, dir: &[&[u8]]) -> Result<(), Fail> {
        self.dir(dir, 0o755)
    }

    fn finish(&mut self) -> Result<(), Fail> {
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// Extraction: everything relative to directory handles.

struct FsTree {
    root: OwnedFd,
    /// Handles of the directories leading to the last parent used, so that
    /// consecutive entries in one directory cost no extra `openat`.
    stack: Vec<(Vec<u8>, OwnedFd)>,
    owner: Owner,
    chown: bool,
    is_root: bool,
    /// Directories whose final mode would stop us writing into them (only
    /// when not running as root): applied in `finish`.
    deferred_modes: Vec<(Vec<Vec<u8>>, u32)>,
    buf: Vec<u8>,
}

const DIR_OPEN: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);

fn io(op: &'static str) -> impl Fn(rustix::io::Errno) -> Fail {
    move |e| Fail::Io(op, e.into())
}

/// Opens directory `name` under `parent` without following symlinks,
/// creating it (0755) when `create` and it is missing.
fn open_dir(parent: BorrowedFd<'_>, name: &[u8], create: bool) -> Result<OwnedFd, Fail> {
    match rustix::fs::openat(parent, name, DIR_OPEN, Mode::empty()) {
        Ok(fd) => Ok(fd),
        Err(rustix::io::Errno::NOENT) if create => {
            match rustix::fs::mkdirat(parent, name, Mode::from_raw_mode(0o755)) {
                Ok(()) | Err(rustix::io::Errno::EXIST) => {}
                Err(e) => return Err(Fail::Io("create parent directory", e.into())),
            }
            rustix::fs::openat(parent, name, DIR_OPEN, Mode::empty())
                .map_err(io("open parent directory"))
        }
        // ENOTDIR: a file or device; ELOOP: a symlink (O_NOFOLLOW).
        Err(rustix::io::Errno::NOTDIR | rustix::io::Errno::LOOP) => {
            Err(Rejection::ThroughNonDirectory.into())
        }
        Err(e) => Err(Fail::Io("open parent directory", e.into())),
    }
}

/// Is `name` under `dir` an overlay whiteout (char device 0:0)?
fn is_whiteout(dir: BorrowedFd<'_>, name: &[u8]) -> bool {
    match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => {
            FileType::from_raw_mode(st.st_mode) == FileType::CharacterDevice && st.st_rdev == 0
        }
        Err(_) => false,
    }
}

impl FsTree {
    /// Handle of the directory holding `path`'s last component.
    fn parent(&mut self, path: &[&[u8]], create: bool) -> Result<BorrowedFd<'_>, Fail> {
        let parents = &path[..path.len().saturating_sub(1)];
        let common = self
            .stack
            .iter()
            .zip(parents)
            .take_while(|((name, _), comp)| name.as_slice() == **comp)
            .count();
        self.stack.truncate(common);
        for comp in &parents[common..] {
            let fd = {
                let parent = self
                    .stack
                    .last()
                    .map_or(self.root.as_fd(), |(_, fd)| fd.as_fd());
                open_dir(parent, comp, create)?
            };
            self.stack.push((comp.to_vec(), fd));
        }
        Ok(self
            .stack
            .last()
            .map_or(self.root.as_fd(), |(_, fd)| fd.as_fd()))
    }

    /// Opens the handle of a directory that must already exist.
    fn walk(&self, path: &[&[u8]]) -> Result<OwnedFd, Fail> {
        let mut fd = rustix::fs::openat(&self.root, ".", DIR_OPEN, Mode::empty())
            .map_err(io("open root"))?;
        for comp in path {
            fd = open_dir(fd.as_fd(), comp, false)?;
        }
        Ok(fd)
    }

    fn set_dir_mode(&mut self, fd: BorrowedFd<'_>, path: &[&[u8]], mode: u32) -> Result<(), Fail> {
        if self.chown {
            rustix::fs::fchown(
                fd,
                Some(rustix::fs::Uid::from_raw(self.owner.uid)),
                Some(rustix::fs::Gid::from_raw(self.owner.gid)),
            )
            .map_err(io("chown directory"))?;
        }
        if self.is_root || mode & 0o700 == 0o700 {
            rustix::fs::fchmod(fd, Mode::from_raw_mode(mode)).map_err(io("chmod directory"))
        } else {
            rustix::fs::fchmod(fd, Mode::from_raw_mode(mode | 0o700))
                .map_err(io("chmod directory"))?;
            self.deferred_modes
                .push((path.iter().map(|c| c.to_vec()).collect(), mode));
            Ok(())
        }
    }

    fn chown_at(&self, dir: BorrowedFd<'_>, name: &[u8]) -> Result<(), Fail> {
        if !self.chown {
            return Ok(());
        }
        rustix::fs::chownat(
            dir,
            name,
            Some(rustix::fs::Uid::from_raw(self.owner.uid)),
            Some(rustix::fs::Gid::from_raw(self.owner.gid)),
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .map_err(io("chown"))
    }
}

fn timestamps(mtime: i64) -> Timestamps {
    let t = Timespec {
        tv_sec: mtime,
        tv_nsec: 0,
    };
    Timestamps {
        last_access: t,
        last_modification: t,
    }
}

/// Runs `create`; if the name is taken by an overlay whiteout this archive
/// wrote earlier, removes the whiteout and retries once.
fn create_replacing_whiteout<T>(
    dir: BorrowedFd<'_>,
    name: &[u8],
    mut create: impl FnMut() -> rustix::io::Result<T>,
) -> Result<T, Fail> {
    match create() {
        Ok(v) => Ok(v),
        Err(rustix::io::Errno::EXIST) if is_whiteout(dir, name) => {
            rustix::fs::unlinkat(dir, name, AtFlags::empty()).map_err(io("remove whiteout"))?;
            create().map_err(io("create"))
        }
        Err(rustix::io::Errno::EXIST) => Err(Rejection::Duplicate.into()),
        Err(e) => Err(Fail::Io("create", e.into())),
    }
}

impl Tree for FsTree {
    fn dir(&mut self, path: &[&[u8]], mode: u32) -> Result<(), Fail> {
        let Some(name) = path.last().copied() else {
            let root = rustix::fs::openat(&self.root, ".", DIR_OPEN, Mode::empty())
                .map_err(io("open root"))?;
            return self.set_dir_mode(root.as_fd(), path, mode);
        };
        let fd = {
            let parent = self.parent(path, true)?;
            match rustix::fs::mkdirat(parent, name, Mode::from_raw_mode(0o700)) {
                Ok(()) => {}
                // An implicit parent made earlier, or an explicit repeat:
                // merge (open_dir refuses anything that is not a directory).
                Err(rustix::io::Errno::EXIST) if is_whiteout(parent, name) => {
                    rustix::fs::unlinkat(parent, name, AtFlags::empty())
                        .map_err(io("remove whiteout"))?;
                    rustix::fs::mkdirat(parent, name, Mode::from_raw_mode(0o700))
                        .map_err(io("create directory"))?;
                }
                Err(rustix::io::Errno::EXIST) => {}
                Err(e) => return Err(Fail::Io("create directory", e.into())),
            }
            match open_dir(parent, name, false) {
                Err(Fail::Reject(Rejection::ThroughNonDirectory)) => {
                    return Err(Rejection::Duplicate.into());
                }
                other => other?,
            }
        };
        self.set_dir_mode(fd.as_fd(), path, mode)
    }

    fn file(
        &mut self,
        path: &[&[u8]],
        mode: u32,
        mtime: i64,
        data: &mut dyn Read,
    ) -> Result<(), Fail> {
        let name = path[path.len() - 1];
        let parent = self.parent(path, true)?;
        let fd = create_replacing_whiteout(parent, name, || {
            rustix::fs::openat(
                parent,
                name,
                OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::from_raw_mode(0o600),
            )
        })?;
        let mut file = std::fs::File::from(fd);
        loop {
            let n = match data.read(&mut self.buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Fail::Io("read content", e)),
            };
            io::Write::write_all(&mut file, &self.buf[..n])
                .map_err(|e| Fail::Io("write file", e))?;
        }
        if self.chown {
            rustix::fs::fchown(
                &file,
                Some(rustix::fs::Uid::from_raw(self.owner.uid)),
                Some(rustix::fs::Gid::from_raw(self.owner.gid)),
            )
            .map_err(io("chown file"))?;
        }
        rustix::fs::fchmod(&file, Mode::from_raw_mode(mode)).map_err(io("chmod file"))?;
        rustix::fs::futimens(&file, &timestamps(mtime)).map_err(io("set file times"))
    }

    fn symlink(&mut self, path: &[&[u8]], target: &[u8], mtime: i64) -> Result<(), Fail> {
        let name = path[path.len() - 1];
        let parent = self.parent(path, true)?;
        create_replacing_whiteout(parent, name, || rustix::fs::symlinkat(target, parent, name))?;
        rustix::fs::utimensat(parent, name, &timestamps(mtime), AtFlags::SYMLINK_NOFOLLOW)
            .map_err(io("set symlink times"))?;
        let parent = parent
            .try_clone_to_owned()
            .map_err(|e| Fail::Io("dup", e))?;
        self.chown_at(parent.as_fd(), name)
    }

    fn hardlink(&mut self, path: &[&[u8]], target: &[&[u8]]) -> Result<(), Fail> {
        let not_target = || {
            Fail::Reject(Rejection::HardlinkTarget {
                target: String::new(),
            })
        };
        let target_name = target[target.len() - 1];
        let target_dir = match self.walk(&target[..target.len() - 1]) {
            Ok(fd) => fd,
            Err(Fail::Reject(_)) => return Err(not_target()),
            Err(Fail::Io(_, e)) if e.kind() == io::ErrorKind::NotFound => {
                return Err(not_target());
            }
            Err(e) => return Err(e),
        };
        // The destination started empty, so a regular file here was written by
        // an earlier entry of this archive.
        match rustix::fs::statat(&target_dir, target_name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::RegularFile => {}
            _ => return Err(not_target()),
        }
        let name = path[path.len() - 1];
        let parent = self.parent(path, true)?;
        create_replacing_whiteout(parent, name, || {
            rustix::fs::linkat(&target_dir, target_name, parent, name, AtFlags::empty())
        })
    }

    fn whiteout(&mut self, path: &[&[u8]]) -> Result<(), Fail> {
        let name = path[path.len() - 1];
        let parent = self.parent(path, true)?;
        match rustix::fs::mknodat(
            parent,
            name,
            FileType::CharacterDevice,
            Mode::empty(),
            Dev::default(),
        ) {
            // A name this layer already created hides the lower one by itself.
            Ok(()) | Err(rustix::io::Errno::EXIST) => Ok(()),
            Err(e) => Err(Fail::Io("create whiteout", e.into())),
        }
    }

    fn opaque(&mut self, dir: &[&[u8]]) -> Result<(), Fail> {
        let fd = if dir.is_empty() {
            self.walk(&[])?
        } else {
            let name = dir[dir.len() - 1];
            let parent = self.parent(dir, true)?;
            open_dir(parent, name, true)?
        };
        rustix::fs::fsetxattr(&fd, OPAQUE_XATTR, b"y", XattrFlags::empty())
            .map_err(io("set opaque xattr"))
    }

    fn finish(&mut self) -> Result<(), Fail> {
        self.stack.clear();
        // Deepest first, so a parent closed to us does not block its child.
        let mut deferred = std::mem::take(&mut self.deferred_modes);
        deferred.sort_by_key(|(path, _)| std::cmp::Reverse(path.len()));
        for (path, mode) in deferred {
            let comps: Vec<&[u8]> = path.iter().map(Vec::as_slice).collect();
            let fd = self.walk(&comps)?;
            rustix::fs::fchmod(&fd, Mode::from_raw_mode(mode)).map_err(io("chmod directory"))?;
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn names(raw: &str) -> Result<Vec<String>, Rejection> {
        split_name(raw.as_bytes(), &Limits::default()).map(|v| {
            v.into_iter()
                .map(|c| String::from_utf8_lossy(c).into_owned())
                .collect()
        })
    }

    #[test]
    fn name_rules() {
        assert_eq!(names("./a/b/").unwrap(), vec!["a", "b"]);
        assert_eq!(names("a//b").unwrap(), vec!["a", "b"]);
        assert!(names("./").unwrap().is_empty());
        let table: &[(&str, Rejection)] = &[
            ("/etc/passwd", Rejection::AbsoluteName),
            ("../x", Rejection::DotDot),
            ("a/../../x", Rejection::DotDot),
            ("a\nb", Rejection::ControlCharacter),
            ("a\x7fb", Rejection::ControlCharacter),
            ("", Rejection::EmptyName),
        ];
        for (raw, want) in table {
            assert_eq!(names(raw).unwrap_err(), *want, "{raw:?}");
        }
        let long = "x".repeat(256);
        assert_eq!(
            names(&long).unwrap_err(),
            Rejection::NameTooLong { limit: 255 }
        );
        let deep = vec!["d"; 65].join("/");
        assert_eq!(names(&deep).unwrap_err(), Rejection::TooDeep { limit: 64 });
    }
}
