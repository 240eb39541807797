//! The host's layer cache (DESIGN §5): unpacked template layers under `<data>/layers/<hex>/`,
//! each the read-only lower dir of every overlay that uses it.
//!
//! [`LayerCache::install`]:
//! 1. Take an exclusive `flock` on `<dir>/.lock` (two agents on one data dir, or two launches
//!    of new templates, never unpack the same layer at once).
//! 2. If `<hex>/` exists, it is done (a layer dir only ever appears by rename, complete).
//! 3. Otherwise remove litter of unpacks that died (`.tmp-*`), then unpack the archive with
//!    the strict unpacker ([`hutch_image::unpack`], OCI whiteouts as overlayfs reads them) into
//!    `.tmp-<hex>-<pid>/`, hashing every byte read on the way.
//! 4. Compare the hash with the expected digest; on a mismatch, remove the temp dir and fail.
//! 5. fsync nothing (a crash loses a temp dir, never a half layer) and rename the temp dir to
//!    `<hex>/`, atomically.
//!
//! Everything here blocks: callers use `spawn_blocking`.
//!
//! Not yet: LRU eviction above a size cap while no sandbox uses a layer, and streaming layers
//! from the blob store (the control plane hands the agent an archive path today).

use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use hutch_core::Digest;
use hutch_image::{Compression, UnpackOptions, Whiteouts};
use sha2::{Digest as _, Sha256};

/// Why a layer could not be installed.
#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    #[error("{op} {path}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("unpack layer {digest}")]
    Unpack {
        digest: Digest,
        #[source]
        source: hutch_image::UnpackError,
    },
    #[error("layer archive {path} has digest {actual}, expected {expected}")]
    DigestMismatch {
        path: PathBuf,
        expected: Digest,
        actual: Digest,
    },
}

fn io_err(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> LayerError {
    let path = path.to_path_buf();
    move |source| LayerError::Io { op, path, source }
}

/// Unpacked layers under one directory.
#[derive(Debug, Clone)]
pub struct LayerCache {
    dir: PathBuf,
}

impl LayerCache {
    /// Creates `dir` (0700) if needed. Blocking.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self, LayerError> {
        let dir = dir.into();
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(io_err("create layer cache", &dir))?;
        Ok(LayerCache { dir })
    }

    /// The directory of one layer (whether or not it is present).
    pub fn path(&self, digest: &Digest) -> PathBuf {
        self.dir.join(digest.hex())
    }

    /// Whether the layer is unpacked here.
    pub fn contains(&self, digest: &Digest) -> bool {
        self.path(digest).is_dir()
    }

    /// Makes layer `digest` present, unpacking `archive` (plain or gzip tar) if it is not.
    /// The archive must hash to `digest`. Blocking.
    pub fn install(&self, digest: &Digest, archive: &Path) -> Result<PathBuf, LayerError> {
        let target = self.path(digest);
        let lock_path = self.dir.join(".lock");
        let lock = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io_err("open layer lock", &lock_path))?;
        rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive)
            .map_err(|e| io_err("lock", &lock_path)(e.into()))?;
        if target.is_dir() {
            return Ok(target);
        }
        self.remove_litter();
        let tmp = self
            .dir
            .join(format!(".tmp-{}-{}", digest.hex(), std::process::id()));
        let result = self.unpack_into(digest, archive, &tmp);
        match result {
            Ok(()) => {
                fs::rename(&tmp, &target).map_err(io_err("rename layer into place", &target))?;
                Ok(target)
            }
            Err(e) => {
                let _ = fs::remove_dir_all(&tmp);
                Err(e)
            }
        }
    }

    fn unpack_into(&self, digest: &Digest, archive: &Path, tmp: &Path) -> Result<(), LayerError> {
        fs::DirBuilder::new()
            .mode(0o755)
            .create(tmp)
            .map_err(io_err("create", tmp))?;
        // The layer's root becomes the sandbox's `/`.
        fs::set_permissions(tmp, fs::Permissions::from_mode(0o755))
            .map_err(io_err("chmod", tmp))?;
        let file = fs::File::open(archive).map_err(io_err("open layer archive", archive))?;
        let mut reader = HashingReader {
            inner: io::BufReader::with_capacity(1 << 20, file),
            hasher: Sha256::new(),
        };
        let opts = UnpackOptions {
            compression: Compression::Detect,
            whiteouts: Whiteouts::Overlay,
            ..UnpackOptions::default()
        };
        hutch_image::unpack(&mut reader, tmp, &opts).map_err(|source| LayerError::Unpack {
            digest: *digest,
            source,
        })?;
        // The digest covers the whole file, including padding after the end-of-archive marker.
        io::copy(&mut reader, &mut io::sink()).map_err(io_err("read layer archive", archive))?;
        let actual = Digest::from_bytes(reader.hasher.finalize().into());
        if actual != *digest {
            return Err(LayerError::DigestMismatch {
                path: archive.to_path_buf(),
                expected: *digest,
                actual,
            });
        }
        Ok(())
    }

    /// Removes temporary directories of unpacks that died (under the lock).
    fn remove_litter(&self) {
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return;
        };
        for e in entries.flatten() {
            if e.file_name().to_string_lossy().starts_with(".tmp-") {
                tracing::info!(path = %e.path().display(), "removing a dead layer unpack");
                let _ = fs::remove_dir_all(e.path());
            }
        }
    }
}

/// Hashes everything read through it.
struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn archive_of(dir: &Path, files: &[(&str, &str)]) -> (PathBuf, Digest) {
        let tree = dir.join("tree");
        fs::create_dir_all(&tree).unwrap();
        for (name, content) in files {
            fs::write(tree.join(name), content).unwrap();
        }
        let path = dir.join("layer.tar");
        let out = fs::File::create(&path).unwrap();
        let packed = hutch_image::pack(&tree, out, &hutch_image::PackOptions::default()).unwrap();
        (path, Digest::from_hex(&packed.sha256).unwrap())
    }

    #[test]
    fn installs_once_and_verifies_the_digest() {
        let tmp = tempfile::tempdir().unwrap();
        let (archive, digest) = archive_of(tmp.path(), &[("hello", "world")]);
        let cache = LayerCache::open(tmp.path().join("layers")).unwrap();
        assert!(!cache.contains(&digest));
        let dir = cache.install(&digest, &archive).unwrap();
        assert_eq!(fs::read_to_string(dir.join("hello")).unwrap(), "world");
        // Present: the archive is not read again.
        cache.install(&digest, Path::new("/nonexistent")).unwrap();

        let wrong = Digest::of(b"something else");
        let err = cache.install(&wrong, &archive).unwrap_err();
        assert!(matches!(err, LayerError::DigestMismatch { .. }), "{err}");
        assert!(!cache.contains(&wrong));
        let litter: Vec<_> = fs::read_dir(tmp.path().join("layers"))
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with(".tmp-"))
            .collect();
        assert!(litter.is_empty());
    }
}
