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
//! [`LayerCache::fetch`] gets a layer this host does not have from the blob store: it streams
//! the blob (digest-verified by the store as it reads) into `.dl-<hex>-<pid>-<n>` (memory stays
//! bounded whatever the size), then installs from that file as above and removes it.
//!
//! Bookkeeping for eviction lives in `.meta/<hex>`: the layer's size in bytes (written at
//! install, hard links counted once), and as the file's mtime the layer's last use
//! ([`LayerCache::touch`], at every launch). [`LayerCache::evict`] removes the least recently
//! used layers, never one in use, until the cache is under its cap (renamed away under the
//! cache's lock, deleted after it by [`LayerCache::remove_evicted`]); the blob store still has
//! them, so a later launch fetches them again.
//!
//! Everything but `fetch` blocks: callers use `spawn_blocking`.

use std::collections::HashSet;
use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use futures::StreamExt as _;
use hutch_blob::{BlobError, BlobStore};
use hutch_core::Digest;
use hutch_image::{Compression, UnpackOptions, Whiteouts};
use sha2::{Digest as _, Sha256};
use tokio::io::AsyncWriteExt as _;

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
    #[error("fetch layer {digest} from the blob store")]
    Blob {
        digest: Digest,
        #[source]
        source: BlobError,
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

/// Numbers the downloads and evictions of this process (temporary names).
static DOWNLOADS: AtomicU64 = AtomicU64::new(0);

/// Name prefix of an evicted layer waiting to be deleted (a kind of `.tmp-` litter).
const EVICTED: &str = ".tmp-evict-";

/// The layer cache's lock; see [`LayerCache::lock`].
pub struct CacheLock {
    /// Closing it releases the `flock`.
    _file: fs::File,
}

impl LayerCache {
    /// Creates `dir` and `dir/.meta` (0700) if needed and removes downloads a dead agent left.
    /// Blocking.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self, LayerError> {
        let dir = dir.into();
        let meta = dir.join(".meta");
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&meta)
            .map_err(io_err("create layer cache", &meta))?;
        // One agent per data dir: no download of ours is in flight yet.
        if let Ok(entries) = fs::read_dir(&dir) {
            for e in entries.flatten() {
                if e.file_name().to_string_lossy().starts_with(".dl-") {
                    let _ = fs::remove_file(e.path());
                }
            }
        }
        Ok(LayerCache { dir })
    }

    fn meta_path(&self, digest: &Digest) -> PathBuf {
        self.dir.join(".meta").join(digest.hex())
    }

    /// Gets layer `digest` from `blobs` and installs it (see the module docs). Present
    /// already: nothing is read.
    pub async fn fetch(&self, digest: &Digest, blobs: &dyn BlobStore) -> Result<(), LayerError> {
        if self.contains(digest) {
            return Ok(());
        }
        let n = DOWNLOADS.fetch_add(1, Ordering::Relaxed);
        let dl = self
            .dir
            .join(format!(".dl-{}-{}-{n}", digest.hex(), std::process::id()));
        let result = async {
            self.download(digest, blobs, &dl).await?;
            let (cache, digest, archive) = (self.clone(), *digest, dl.clone());
            tokio::task::spawn_blocking(move || cache.install(&digest, &archive))
                .await
                .map_err(|e| io_err("install a fetched layer", &dl)(io::Error::other(e)))?
                .map(drop)
        }
        .await;
        let _ = tokio::fs::remove_file(&dl).await;
        result
    }

    async fn download(
        &self,
        digest: &Digest,
        blobs: &dyn BlobStore,
        dl: &Path,
    ) -> Result<(), LayerError> {
        let blob_err = |source| LayerError::Blob {
            digest: *digest,
            source,
        };
        let mut stream = blobs.get_stream(digest).await.map_err(blob_err)?;
        let mut file = tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(dl)
            .await
            .map_err(io_err("create a layer download", dl))?;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(blob_err)?;
            file.write_all(&chunk)
                .await
                .map_err(io_err("write a layer download", dl))?;
        }
        file.flush()
            .await
            .map_err(io_err("write a layer download", dl))
    }

    /// Marks layer `digest` as used now (for [`LayerCache::evict`]). Blocking.
    pub fn touch(&self, digest: &Digest) -> Result<(), LayerError> {
        let meta = self.meta_path(digest);
        match fs::OpenOptions::new().write(true).open(&meta) {
            Ok(f) => f
                .set_modified(SystemTime::now())
                .map_err(io_err("mark a layer used", &meta)),
            // Installed before sizes were recorded: record it now (which also marks it used).
            Err(e) if e.kind() == io::ErrorKind::NotFound => self.record_size(digest).map(drop),
            Err(e) => Err(io_err("mark a layer used", &meta)(e)),
        }
    }

    /// Writes `.meta/<hex>` with the layer's size; returns the size.
    fn record_size(&self, digest: &Digest) -> Result<u64, LayerError> {
        let dir = self.path(digest);
        let size = tree_size(&dir).map_err(io_err("measure layer", &dir))?;
        let meta = self.meta_path(digest);
        fs::write(&meta, size.to_string()).map_err(io_err("record layer size", &meta))?;
        Ok(size)
    }

    /// Takes layers that are not in `in_use`, least recently used first, out of the cache until
    /// it holds at most `max_bytes`: each is renamed out of sight (atomic), to be deleted by
    /// [`LayerCache::remove_evicted`] once the caller has let go of its own locks. Returns the
    /// layers taken, oldest first. `lock` is the cache's lock ([`LayerCache::lock`]), so that no
    /// install runs meanwhile. Blocking.
    pub fn evict(
        &self,
        _lock: &CacheLock,
        max_bytes: u64,
        in_use: &HashSet<Digest>,
    ) -> Result<Vec<Digest>, LayerError> {
        let mut layers = Vec::new();
        let entries = fs::read_dir(&self.dir).map_err(io_err("list layers", &self.dir))?;
        for e in entries.flatten() {
            let Ok(digest) = Digest::from_hex(&e.file_name().to_string_lossy()) else {
                continue;
            };
            let meta = self.meta_path(&digest);
            let recorded = fs::read_to_string(&meta)
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok());
            let size = match recorded {
                Some(size) => size,
                None => self.record_size(&digest)?,
            };
            let used = fs::metadata(&meta)
                .and_then(|m| m.modified())
                .unwrap_or(SystemTime::UNIX_EPOCH);
            layers.push((used, digest, size));
        }
        let mut total: u64 = layers.iter().map(|(_, _, size)| size).sum();
        layers.sort();
        let mut evicted = Vec::new();
        for (_, digest, size) in layers {
            if total <= max_bytes {
                break;
            }
            if in_use.contains(&digest) {
                continue;
            }
            let path = self.path(&digest);
            let doomed = self.dir.join(format!(
                "{EVICTED}{}-{}-{}",
                digest.hex(),
                std::process::id(),
                DOWNLOADS.fetch_add(1, Ordering::Relaxed)
            ));
            fs::rename(&path, &doomed).map_err(io_err("evict layer", &path))?;
            let _ = fs::remove_file(self.meta_path(&digest));
            tracing::info!(layer = %digest, bytes = size, "evicted a layer from the host cache");
            total -= size;
            evicted.push(digest);
        }
        Ok(evicted)
    }

    /// Deletes the layers [`LayerCache::evict`] took out. Needs no lock: nothing else uses
    /// those names (an install's litter removal may race it; either deletion is fine).
    pub fn remove_evicted(&self) {
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return;
        };
        for e in entries.flatten() {
            if e.file_name().to_string_lossy().starts_with(EVICTED) {
                let _ = fs::remove_dir_all(e.path());
            }
        }
    }

    /// The cache-wide lock of installs and evictions (an exclusive `flock`, held until the
    /// value is dropped).
    pub fn lock(&self) -> Result<CacheLock, LayerError> {
        let lock_path = self.dir.join(".lock");
        let lock = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io_err("open layer lock", &lock_path))?;
        rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive)
            .map_err(|e| io_err("lock", &lock_path)(e.into()))?;
        Ok(CacheLock { _file: lock })
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
        let _lock = self.lock()?;
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
                self.record_size(digest)?;
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

/// Bytes a tree takes on disk (allocated blocks; a file with several links counted once).
fn tree_size(root: &Path) -> io::Result<u64> {
    let mut seen = HashSet::new();
    let mut total = 0u64;
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in fs::read_dir(&dir)? {
            let e = e?;
            let m = e.path().symlink_metadata()?;
            if m.nlink() > 1 && !m.is_dir() && !seen.insert((m.dev(), m.ino())) {
                continue;
            }
            total += m.blocks() * 512;
            if m.is_dir() {
                stack.push(e.path());
            }
        }
    }
    Ok(total)
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

    #[test]
    fn evicts_the_least_recently_used_layers_not_in_use() {
        let tmp = tempfile::tempdir().unwrap();
        let cache = LayerCache::open(tmp.path().join("layers")).unwrap();
        let mut layers = Vec::new();
        for name in ["a", "b", "c"] {
            let src = tmp.path().join(name);
            fs::create_dir(&src).unwrap();
            let (archive, digest) = archive_of(&src, &[("data", &name.repeat(20_000))]);
            cache.install(&digest, &archive).unwrap();
            layers.push(digest);
        }
        let size = |d: &Digest| -> u64 {
            fs::read_to_string(cache.meta_path(d))
                .unwrap()
                .parse()
                .unwrap()
        };
        assert!(layers.iter().all(|d| size(d) >= 20_000));
        // Used in the order a, b, c (mtimes a second apart: coarse filesystems keep order).
        let now = SystemTime::now();
        for (i, d) in layers.iter().enumerate() {
            let f = fs::File::options()
                .write(true)
                .open(cache.meta_path(d))
                .unwrap();
            f.set_modified(now - std::time::Duration::from_secs(10 - i as u64))
                .unwrap();
        }
        let total: u64 = layers.iter().map(size).sum();
        // Room for everything: nothing goes.
        let lock = cache.lock().unwrap();
        assert!(
            cache
                .evict(&lock, total, &HashSet::new())
                .unwrap()
                .is_empty()
        );
        // Room for two, `a` in use: `b`, the oldest unused, goes.
        let in_use = HashSet::from([layers[0]]);
        let evicted = cache.evict(&lock, total - 1, &in_use).unwrap();
        assert_eq!(evicted, vec![layers[1]]);
        assert!(cache.contains(&layers[0]) && !cache.contains(&layers[1]));
        // Out of sight at once, deleted when asked.
        let waiting = || {
            fs::read_dir(tmp.path().join("layers"))
                .unwrap()
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with(EVICTED))
                .count()
        };
        assert_eq!(waiting(), 1);
        cache.remove_evicted();
        assert_eq!(waiting(), 0);
        // `c` is used now; with room for nothing, only what is in use stays.
        cache.touch(&layers[2]).unwrap();
        let evicted = cache.evict(&lock, 0, &in_use).unwrap();
        assert_eq!(evicted, vec![layers[2]]);
        assert!(cache.contains(&layers[0]));
        assert!(!cache.meta_path(&layers[2]).exists());
    }
}
