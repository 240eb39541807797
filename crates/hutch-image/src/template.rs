//! Built-in templates (`busybox`, `debian:12`) and their host cache.
//!
//! A built-in template is one deterministic tar (see [`crate::pack`]) kept in a
//! cache directory outside any data directory (by default
//! `/var/cache/hutch/templates`, a parameter), named
//! `<stem>-<recipe hash>.tar` with its SHA-256 beside it in `.sha256`. A fresh
//! data directory therefore reuses the cached archive instead of rebuilding.
//!
//! [`TemplateCache::ensure`]:
//! 1. Takes an exclusive `flock` on `<stem>.lock` (two servers, or a server and
//!    a test, never build the same template twice at once).
//! 2. Returns the cached archive if `<stem>-<hash>.tar` exists.
//! 3. Otherwise builds the tree in a temporary directory inside the cache dir,
//!    packs it to a temporary file, fsyncs, writes the digest file, and renames
//!    the archive into place (atomic: a crash leaves only `.tmp-*` litter,
//!    removed by the next build).
//!
//! The recipe hash covers everything that changes the result: the recipe
//! version and arguments, and for `busybox` the SHA-256 of the binary.
//!
//! All of this is blocking (and `debian:12` takes about a minute): run it on a
//! dedicated thread or in `spawn_blocking`, forwarding progress lines.

use std::fs;
use std::io::{self, BufRead, BufReader, Read};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;

use sha2::{Digest, Sha256};

use crate::error::TemplateError;
use crate::pack::{PackOptions, Specials, pack};

/// The built-in templates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Builtin {
    /// Debian's static busybox and a minimal tree: fast, for tests.
    Busybox,
    /// Debian 12 minbase + bash, python3, coreutils, procps, ca-certificates
    /// and a `user` account (uid 1000), built with mmdebstrap.
    Debian12,
}

impl Builtin {
    /// The template's `name:tag` as the API shows it.
    pub fn name(self) -> &'static str {
        match self {
            Builtin::Busybox => "busybox",
            Builtin::Debian12 => "debian:12",
        }
    }

    fn stem(self) -> &'static str {
        match self {
            Builtin::Busybox => "busybox",
            Builtin::Debian12 => "debian-12",
        }
    }
}

/// Where the builders find their tools and inputs (all parameters so tests
/// can point them elsewhere).
#[derive(Debug, Clone)]
pub struct BuildConfig {
    /// Debian's static busybox (package busybox-static).
    pub busybox: PathBuf,
    /// The mmdebstrap program (a name looked up in `PATH`, or a path).
    pub mmdebstrap: PathBuf,
    /// apt's configuration directory: its `sources.list` and
    /// `sources.list.d/*.{list,sources}` are handed to mmdebstrap, so the
    /// template is built from the same mirror the host uses.
    pub apt_etc: PathBuf,
    /// Debian suite for `debian:12`.
    pub suite: String,
}

impl Default for BuildConfig {
    fn default() -> Self {
        BuildConfig {
            busybox: PathBuf::from("/bin/busybox"),
            mmdebstrap: PathBuf::from("mmdebstrap"),
            apt_etc: PathBuf::from("/etc/apt"),
            suite: "bookworm".into(),
        }
    }
}

/// The default cache directory for built-in templates.
pub const DEFAULT_CACHE_DIR: &str = "/var/cache/hutch/templates";

/// mtime of every entry of a built-in template archive (2024-01-01), so the
/// same inputs give the same digest.
pub const TEMPLATE_MTIME: u64 = 1_704_067_200;

/// Packages of `debian:12` on top of minbase.
pub const DEBIAN_PACKAGES: &str = "bash,python3,coreutils,procps,ca-certificates";

/// Bump when a builder changes what it produces.
const RECIPE_VERSION: u32 = 1;

/// A template archive in the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedTemplate {
    pub name: &'static str,
    pub archive: PathBuf,
    /// Lowercase hex SHA-256 of the archive.
    pub sha256: String,
    /// Whether this call built it (false: it was already cached).
    pub built: bool,
}

/// Cache of built-in template archives.
#[derive(Debug, Clone)]
pub struct TemplateCache {
    dir: PathBuf,
    config: BuildConfig,
}

fn io_err(
    template: &'static str,
    op: &'static str,
    path: &Path,
) -> impl FnOnce(io::Error) -> TemplateError {
    let path = path.to_path_buf();
    move |source| TemplateError::Io {
        template,
        op,
        path,
        source,
    }
}

impl TemplateCache {
    pub fn new(dir: impl Into<PathBuf>, config: BuildConfig) -> Self {
        TemplateCache {
            dir: dir.into(),
            config,
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Hash of everything that determines `which`'s result.
    pub fn recipe_hash(&self, which: Builtin) -> Result<String, TemplateError> {
        let mut h = Sha256::new();
        h.update(format!(
            "hutch builtin {} v{RECIPE_VERSION}\n",
            which.stem()
        ));
        match which {
            Builtin::Busybox => {
                let bin = &self.config.busybox;
                let mut f = fs::File::open(bin).map_err(|_| TemplateError::Missing {
                    template: which.name(),
                    what: bin.display().to_string(),
                    hint: "install busybox-static (make setup)",
                })?;
                let mut bh = Sha256::new();
                io::copy(&mut f, &mut bh).map_err(io_err(which.name(), "read", bin))?;
                h.update(bh.finalize());
            }
            Builtin::Debian12 => {
                h.update(format!(
                    "suite={} variant=minbase include={DEBIAN_PACKAGES} user=user:1000\n",
                    self.config.suite
                ));
            }
        }
        Ok(hex::encode(h.finalize())[..16].to_string())
    }

    fn archive_path(&self, which: Builtin, hash: &str) -> PathBuf {
        self.dir.join(format!("{}-{hash}.tar", which.stem()))
    }

    /// The cached archive of `which`, if there is one. Blocking.
    pub fn cached(&self, which: Builtin) -> Result<Option<CachedTemplate>, TemplateError> {
        let hash = self.recipe_hash(which)?;
        let archive = self.archive_path(which, &hash);
        if !archive.exists() {
            return Ok(None);
        }
        let digest_path = archive.with_extension("tar.sha256");
        let sha256 = fs::read_to_string(&digest_path)
            .map_err(io_err(which.name(), "read digest", &digest_path))?
            .trim()
            .to_string();
        Ok(Some(CachedTemplate {
            name: which.name(),
            archive,
            sha256,
            built: false,
        }))
    }

    /// Returns the cached archive of `which`, building it first if needed.
    /// `progress` receives one line at a time (builder output). Blocking.
    pub fn ensure(
        &self,
        which: Builtin,
        progress: &mut dyn FnMut(&str),
    ) -> Result<CachedTemplate, TemplateError> {
        let name = which.name();
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(&self.dir)
            .map_err(io_err(name, "create cache directory", &self.dir))?;
        let lock_path = self.dir.join(format!("{}.lock", which.stem()));
        let lock = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io_err(name, "open lock", &lock_path))?;
        rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive)
            .map_err(|e| io_err(name, "lock", &lock_path)(e.into()))?;

        if let Some(hit) = self.cached(which)? {
            progress(&format!("{name}: using cached {}", hit.archive.display()));
            return Ok(hit);
        }
        self.remove_litter(which);

        let hash = self.recipe_hash(which)?;
        let tmp = self
            .dir
            .join(format!(".tmp-{}-{}", which.stem(), std::process::id()));
        let tree = tmp.join("root");
        let _ = fs::remove_dir_all(&tmp);
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&tmp)
            .map_err(io_err(name, "create build directory", &tmp))?;
        let result = self.build_and_pack(which, &hash, &tmp, &tree, progress);
        let _ = fs::remove_dir_all(&tmp);
        result
    }

    fn build_and_pack(
        &self,
        which: Builtin,
        hash: &str,
        tmp: &Path,
        tree: &Path,
        progress: &mut dyn FnMut(&str),
    ) -> Result<CachedTemplate, TemplateError> {
        let name = which.name();
        progress(&format!("{name}: building (recipe {hash})"));
        match which {
            Builtin::Busybox => {
                fs::DirBuilder::new()
                    .mode(0o755)
                    .create(tree)
                    .map_err(io_err(name, "create", tree))?;
                build_busybox_tree(&self.config.busybox, tree)?;
            }
            Builtin::Debian12 => build_debian_tree(&self.config, tree, progress)?,
        }
        progress(&format!("{name}: packing"));
        let part = tmp.join("archive.tar");
        let file = fs::File::create(&part).map_err(io_err(name, "create", &part))?;
        let mut out = io::BufWriter::with_capacity(1 << 20, file);
        let opts = PackOptions {
            mtime: Some(TEMPLATE_MTIME),
            specials: Specials::Error,
        };
        let packed = pack(tree, &mut out, &opts).map_err(|source| TemplateError::Pack {
            template: name,
            source,
        })?;
        let file = out
            .into_inner()
            .map_err(|e| io_err(name, "write", &part)(e.into_error()))?;
        file.sync_all().map_err(io_err(name, "fsync", &part))?;
        let archive = self.archive_path(which, hash);
        let digest_path = archive.with_extension("tar.sha256");
        fs::write(&digest_path, format!("{}\n", packed.sha256)).map_err(io_err(
            name,
            "write digest",
            &digest_path,
        ))?;
        fs::rename(&part, &archive).map_err(io_err(name, "rename into place", &archive))?;
        if let Ok(dir) = fs::File::open(&self.dir) {
            let _ = dir.sync_all();
        }
        progress(&format!(
            "{name}: cached {} ({} MiB, sha256 {})",
            archive.display(),
            packed.size >> 20,
            &packed.sha256[..12]
        ));
        Ok(CachedTemplate {
            name,
            archive,
            sha256: packed.sha256,
            built: true,
        })
    }

    /// Removes temporary directories of builds that died (under the lock).
    fn remove_litter(&self, which: Builtin) {
        let prefix = format!(".tmp-{}-", which.stem());
        if let Ok(entries) = fs::read_dir(&self.dir) {
            for e in entries.flatten() {
                if e.file_name().to_string_lossy().starts_with(&prefix) {
                    tracing::info!(path = %e.path().display(), "removing stale template build");
                    let _ = fs::remove_dir_all(e.path());
                }
            }
        }
    }
}

const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
user:x:1000:1000:user:/home/user:/bin/sh\n\
nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n";
const GROUP: &str = "root:x:0:\nuser:x:1000:\nnogroup:x:65534:\n";
const HOSTS: &str = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n";

/// Builds the `busybox` tree into the existing empty directory `dest`:
/// `bin/busybox`, one symlink per applet at its usual place (from
/// `busybox --list-full`), `/etc/{passwd,group,hostname,hosts}`, `/tmp` (1777),
/// `/root`, `/home/user`, and empty `/dev`, `/proc`, `/sys`. Blocking.
pub fn build_busybox_tree(busybox: &Path, dest: &Path) -> Result<(), TemplateError> {
    let t = Builtin::Busybox.name();
    if !busybox.is_file() {
        return Err(TemplateError::Missing {
            template: t,
            what: busybox.display().to_string(),
            hint: "install busybox-static (make setup)",
        });
    }
    let dirs: &[(&str, u32)] = &[
        ("bin", 0o755),
        ("sbin", 0o755),
        ("usr", 0o755),
        ("usr/bin", 0o755),
        ("usr/sbin", 0o755),
        ("etc", 0o755),
        ("tmp", 0o1777),
        ("root", 0o700),
        ("home", 0o755),
        ("home/user", 0o755),
        ("dev", 0o755),
        ("proc", 0o555),
        ("sys", 0o555),
        ("var", 0o755),
        ("run", 0o755),
    ];
    for (d, mode) in dirs {
        let p = dest.join(d);
        fs::DirBuilder::new()
            .mode(0o755)
            .create(&p)
            .map_err(io_err(t, "create", &p))?;
        fs::set_permissions(&p, fs::Permissions::from_mode(*mode))
            .map_err(io_err(t, "chmod", &p))?;
    }
    let bin = dest.join("bin/busybox");
    fs::copy(busybox, &bin).map_err(io_err(t, "copy", &bin))?;
    fs::set_permissions(&bin, fs::Permissions::from_mode(0o755))
        .map_err(io_err(t, "chmod", &bin))?;

    let out = Command::new(busybox)
        .arg("--list-full")
        .stdin(Stdio::null())
        .output()
        .map_err(io_err(t, "run --list-full", busybox))?;
    if !out.status.success() {
        return Err(TemplateError::Command {
            template: t,
            command: format!("{} --list-full", busybox.display()),
            status: out.status.to_string(),
            tail: String::from_utf8_lossy(&out.stderr).into_owned(),
        });
    }
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let rel = line.trim().trim_start_matches('/');
        // Only plain relative names in the directories made above.
        let ok = !rel.is_empty()
            && !rel
                .split('/')
                .any(|c| c.is_empty() || c == "." || c == "..")
            && rel != "bin/busybox";
        if !ok {
            continue;
        }
        let link = dest.join(rel);
        match symlink("/bin/busybox", &link) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io_err(t, "symlink", &link)(e)),
        }
    }
    let files: &[(&str, &str, u32)] = &[
        ("etc/passwd", PASSWD, 0o644),
        ("etc/group", GROUP, 0o644),
        ("etc/hostname", "sandbox\n", 0o644),
        ("etc/hosts", HOSTS, 0o644),
    ];
    for (f, content, mode) in files {
        let p = dest.join(f);
        fs::write(&p, content).map_err(io_err(t, "write", &p))?;
        fs::set_permissions(&p, fs::Permissions::from_mode(*mode))
            .map_err(io_err(t, "chmod", &p))?;
    }
    Ok(())
}

/// apt source files of the host, in a stable order.
fn host_sources(apt_etc: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let main = apt_etc.join("sources.list");
    if let Ok(text) = fs::read_to_string(&main)
        && text
            .lines()
            .any(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
    {
        found.push(main);
    }
    let mut extra: Vec<PathBuf> = fs::read_dir(apt_etc.join("sources.list.d"))
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "list" || x == "sources"))
                .collect()
        })
        .unwrap_or_default();
    extra.sort();
    found.extend(extra);
    found
}

/// Builds the `debian:12` tree at `dest` (which must not exist) with
/// mmdebstrap, streaming its output lines to `progress`. Uses the host's apt
/// sources (see [`BuildConfig::apt_etc`]); names no mirror itself. Needs root.
/// Blocking (about a minute).
pub fn build_debian_tree(
    config: &BuildConfig,
    dest: &Path,
    progress: &mut dyn FnMut(&str),
) -> Result<(), TemplateError> {
    let t = Builtin::Debian12.name();
    let sources = host_sources(&config.apt_etc);
    if sources.is_empty() {
        return Err(TemplateError::Missing {
            template: t,
            what: format!("apt sources in {}", config.apt_etc.display()),
            hint: "configure apt (sources.list or sources.list.d)",
        });
    }
    let mut cmd = Command::new(&config.mmdebstrap);
    cmd.arg("--mode=root")
        .arg("--variant=minbase")
        .arg(format!("--include={DEBIAN_PACKAGES}"))
        .arg("--skip=output/dev")
        .arg("--customize-hook=chroot \"$1\" useradd --create-home --uid 1000 --user-group --shell /bin/bash user")
        .arg(&config.suite)
        .arg(dest)
        .args(&sources)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let shown = format!(
        "{} ... {} {}",
        config.mmdebstrap.display(),
        config.suite,
        dest.display()
    );
    progress(&format!("{t}: running {shown}"));
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(TemplateError::Missing {
                template: t,
                what: config.mmdebstrap.display().to_string(),
                hint: "install mmdebstrap (make setup)",
            });
        }
        Err(e) => return Err(io_err(t, "spawn", &config.mmdebstrap)(e)),
    };
    let (tx, rx) = mpsc::channel::<String>();
    let readers: Vec<_> = [
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
    ]
    .into_iter()
    .flatten()
    .map(|stream| {
        let tx = tx.clone();
        std::thread::spawn(move || forward_lines(stream, &tx))
    })
    .collect();
    drop(tx);
    let mut tail: std::collections::VecDeque<String> = std::collections::VecDeque::new();
    for line in rx {
        progress(&line);
        tracing::info!(template = t, "{line}");
        if tail.len() == 20 {
            tail.pop_front();
        }
        tail.push_back(line);
    }
    for r in readers {
        let _ = r.join();
    }
    let status = child
        .wait()
        .map_err(io_err(t, "wait", &config.mmdebstrap))?;
    if !status.success() {
        return Err(TemplateError::Command {
            template: t,
            command: shown,
            status: status.to_string(),
            tail: Vec::from(tail).join("\n"),
        });
    }
    // The runtime provides /dev; leave only the empty directory.
    let dev = dest.join("dev");
    let _ = fs::remove_dir_all(&dev);
    fs::DirBuilder::new()
        .mode(0o755)
        .create(&dev)
        .map_err(io_err(t, "create", &dev))?;
    Ok(())
}

/// Sends `stream`'s lines (each cut at 4 KiB, lossily decoded) to `tx`.
fn forward_lines(stream: Box<dyn Read + Send>, tx: &mpsc::Sender<String>) {
    let mut reader = BufReader::new(stream.take(u64::MAX));
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match reader.by_ref().take(4096).read_until(b'\n', &mut buf) {
            Ok(0) | Err(_) => return,
            Ok(_) => {
                let line = String::from_utf8_lossy(&buf).trim_end().to_string();
                if !line.is_empty() && tx.send(line).is_err() {
                    return;
                }
            }
        }
    }
}
