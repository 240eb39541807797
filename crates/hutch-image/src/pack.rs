//! The deterministic packer: a directory tree becomes a tar stream whose bytes
//! depend only on the tree's names, types, permission bits, contents and
//! (unless fixed) mtimes — so the SHA-256 of the stream is a content address.
//!
//! 1. The tree is walked depth-first through directory handles (`openat` with
//!    `O_NOFOLLOW`), children sorted by name bytes.
//! 2. Every header carries uid/gid 0, empty user/group names, the permission
//!    bits (including setuid etc.: the unpacker strips them on the way in) and
//!    either the file's mtime or [`PackOptions::mtime`].
//! 3. A file with several links is written once; later names become hardlink
//!    entries to the first name (sorted order, so stable).
//! 4. Overlay whiteouts (char device 0:0) become OCI `.wh.NAME` entries and an
//!    opaque directory (`trusted.overlay.opaque=y`) gets a `.wh..wh..opq`
//!    entry, so a sandbox's upper dir packs into an OCI-style layer.
//!    Other devices, FIFOs and sockets are errors, or skipped with
//!    [`Specials::Skip`].
//! 5. Content is streamed through a fixed buffer while hashing: memory does not
//!    grow with file sizes. A file that changes size mid-read is an error
//!    (freeze a sandbox before packing its tree, R5).
//!
//! Blocking.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags};
use sha2::{Digest, Sha256};

use crate::error::PackError;

/// What to do with devices, FIFOs and sockets (other than overlay whiteouts).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Specials {
    #[default]
    Error,
    /// Leave them out (a sandbox's upper dir may hold sockets).
    Skip,
}

/// Options of [`pack`].
#[derive(Debug, Clone, Default)]
pub struct PackOptions {
    /// Fixed mtime for every entry; `None` keeps each file's mtime.
    pub mtime: Option<u64>,
    pub specials: Specials,
}

/// The result of [`pack`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packed {
    /// Lowercase hex SHA-256 of the whole stream.
    pub sha256: String,
    /// Bytes written.
    pub size: u64,
    pub entries: u64,
}

struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    written: u64,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Reads exactly `remaining` bytes from a file, failing if it is shorter.
struct ExactReader<R> {
    inner: R,
    remaining: u64,
    short: bool,
}

impl<R: Read> Read for ExactReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.remaining == 0 {
            return Ok(0);
        }
        let max = buf
            .len()
            .min(self.remaining.min(usize::MAX as u64) as usize);
        let n = self.inner.read(&mut buf[..max])?;
        if n == 0 {
            self.short = true;
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "file shrank while being archived",
            ));
        }
        self.remaining -= n as u64;
        Ok(n)
    }
}

const DIR_OPEN: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);

struct Packer<W: Write> {
    builder: tar::Builder<HashingWriter<W>>,
    opts: PackOptions,
    root: PathBuf,
    /// (dev, ino) of multi-link files already written → their archive name.
    links: HashMap<(u64, u64), Vec<u8>>,
    entries: u64,
}

/// Packs the tree at `root` into `out`, returning the stream's SHA-256.
/// `root` itself has no entry (its mode is the unpacker's destination's);
/// names are relative (`bin/sh`). Blocking.
pub fn pack<W: Write>(root: &Path, out: W, opts: &PackOptions) -> Result<Packed, PackError> {
    let fd = rustix::fs::open(root, DIR_OPEN, Mode::empty()).map_err(|e| PackError::Io {
        path: root.to_path_buf(),
        op: "open directory",
        source: e.into(),
    })?;
    let mut builder = tar::Builder::new(HashingWriter {
        inner: out,
        hasher: Sha256::new(),
        written: 0,
    });
    builder.follow_symlinks(false);
    let mut packer = Packer {
        builder,
        opts: opts.clone(),
        root: root.to_path_buf(),
        links: HashMap::new(),
        entries: 0,
    };
    packer.walk(fd.as_fd(), &mut Vec::new())?;
    let mut writer = packer.builder.into_inner().map_err(PackError::Write)?;
    writer.flush().map_err(PackError::Write)?;
    Ok(Packed {
        sha256: hex::encode(writer.hasher.finalize()),
        size: writer.written,
        entries: packer.entries,
    })
}

fn base_header(kind: tar::EntryType, mode: u32, mtime: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode & 0o7777);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(mtime);
    h.set_size(0);
    h
}

impl<W: Write> Packer<W> {
    fn path_of(&self, name: &[u8]) -> PathBuf {
        use std::os::unix::ffi::OsStrExt;
        self.root.join(std::ffi::OsStr::from_bytes(name))
    }

    fn io(&self, name: &[u8], op: &'static str, source: io::Error) -> PackError {
        PackError::Io {
            path: self.path_of(name),
            op,
            source,
        }
    }

    fn mtime(&self, actual: i64) -> u64 {
        self.opts.mtime.unwrap_or(actual.max(0) as u64)
    }

    fn header_dir(&mut self, name: &[u8], mode: u32, mtime: i64) -> Result<(), PackError> {
        let mut h = base_header(tar::EntryType::Directory, mode, self.mtime(mtime));
        self.append(&mut h, name, io::empty())
    }

    fn append<R: Read>(
        &mut self,
        h: &mut tar::Header,
        name: &[u8],
        data: R,
    ) -> Result<(), PackError> {
        use std::os::unix::ffi::OsStrExt;
        self.entries += 1;
        self.builder
            .append_data(h, std::ffi::OsStr::from_bytes(name), data)
            .map_err(PackError::Write)
    }

    fn walk(&mut self, dir: BorrowedFd<'_>, prefix: &mut Vec<u8>) -> Result<(), PackError> {
        let mut names: Vec<Vec<u8>> = Vec::new();
        {
            let dup = rustix::fs::openat(dir, ".", DIR_OPEN, Mode::empty())
                .map_err(|e| self.io(prefix, "open directory", e.into()))?;
            let entries = rustix::fs::Dir::read_from(&dup)
                .map_err(|e| self.io(prefix, "read directory", e.into()))?;
            for item in entries {
                let item = item.map_err(|e| self.io(prefix, "read directory", e.into()))?;
                let name = item.file_name().to_bytes();
                if name != b"." && name != b".." {
                    names.push(name.to_vec());
                }
            }
        }
        names.sort();
        for name in names {
            let base = prefix.len();
            prefix.extend_from_slice(&name);
            self.one(dir, &name, prefix)?;
            prefix.truncate(base);
        }
        Ok(())
    }

    fn one(
        &mut self,
        dir: BorrowedFd<'_>,
        name: &[u8],
        full: &mut Vec<u8>,
    ) -> Result<(), PackError> {
        let st = rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)
            .map_err(|e| self.io(full, "stat", e.into()))?;
        let mode = st.st_mode;
        match FileType::from_raw_mode(mode) {
            FileType::Directory => {
                let fd: OwnedFd = rustix::fs::openat(dir, name, DIR_OPEN, Mode::empty())
                    .map_err(|e| self.io(full, "open directory", e.into()))?;
                full.push(b'/');
                self.header_dir(full, mode, st.st_mtime)?;
                if is_opaque(fd.as_fd()) {
                    let base = full.len();
                    full.extend_from_slice(b".wh..wh..opq");
                    let mut h =
                        base_header(tar::EntryType::Regular, 0o644, self.mtime(st.st_mtime));
                    self.append(&mut h, full, io::empty())?;
                    full.truncate(base);
                }
                self.walk(fd.as_fd(), full)?;
                full.pop();
            }
            FileType::RegularFile => {
                let key = (st.st_dev, st.st_ino);
                if st.st_nlink > 1 {
                    if let Some(first) = self.links.get(&key).cloned() {
                        use std::os::unix::ffi::OsStrExt;
                        let mut h =
                            base_header(tar::EntryType::Link, mode, self.mtime(st.st_mtime));
                        self.entries += 1;
                        return self
                            .builder
                            .append_link(
                                &mut h,
                                std::ffi::OsStr::from_bytes(full),
                                std::ffi::OsStr::from_bytes(&first),
                            )
                            .map_err(PackError::Write);
                    }
                    self.links.insert(key, full.clone());
                }
                let fd = rustix::fs::openat(
                    dir,
                    name,
                    OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .map_err(|e| self.io(full, "open file", e.into()))?;
                let size = st.st_size.max(0) as u64;
                let mut h = base_header(tar::EntryType::Regular, mode, self.mtime(st.st_mtime));
                h.set_size(size);
                let mut reader = ExactReader {
                    inner: std::fs::File::from(fd),
                    remaining: size,
                    short: false,
                };
                let res = self.append(&mut h, full, &mut reader);
                if reader.short {
                    return Err(PackError::Changed {
                        path: self.path_of(full),
                    });
                }
                res?;
                // Grown since stat: also a changed tree.
                let mut probe = [0u8; 1];
                if reader
                    .inner
                    .read(&mut probe)
                    .map_err(|e| self.io(full, "read file", e))?
                    != 0
                {
                    return Err(PackError::Changed {
                        path: self.path_of(full),
                    });
                }
            }
            FileType::Symlink => {
                use std::os::unix::ffi::OsStrExt;
                let target = rustix::fs::readlinkat(dir, name, Vec::new())
                    .map_err(|e| self.io(full, "read symlink", e.into()))?;
                let mut h = base_header(tar::EntryType::Symlink, 0o777, self.mtime(st.st_mtime));
                self.entries += 1;
                self.builder
                    .append_link(
                        &mut h,
                        std::ffi::OsStr::from_bytes(full),
                        std::ffi::OsStr::from_bytes(target.to_bytes()),
                    )
                    .map_err(PackError::Write)?;
            }
            FileType::CharacterDevice if st.st_rdev == 0 => {
                // An overlay whiteout: `.wh.NAME` in the same directory.
                let base = full.len() - name.len();
                let mut wh = full[..base].to_vec();
                wh.extend_from_slice(b".wh.");
                wh.extend_from_slice(name);
                let mut h = base_header(tar::EntryType::Regular, 0o644, self.mtime(st.st_mtime));
                self.append(&mut h, &wh, io::empty())?;
            }
            _ => match self.opts.specials {
                Specials::Skip => {
                    tracing::debug!(path = %self.path_of(full).display(), "pack: skipping special file");
                }
                Specials::Error => {
                    return Err(PackError::Special {
                        path: self.path_of(full),
                    });
                }
            },
        }
        Ok(())
    }
}

fn is_opaque(dir: BorrowedFd<'_>) -> bool {
    let mut buf = [0u8; 4];
    matches!(
        rustix::fs::fgetxattr(dir, "trusted.overlay.opaque", &mut buf),
        Ok(1) if buf[0] == b'y'
    )
}
