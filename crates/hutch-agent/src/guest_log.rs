//! The guest's output: a pipe out of the sandbox, drained into a bounded, rotated host log.
//!
//! The guest (the sandbox's init) writes its diagnostics to stdout and stderr. Those are the
//! write end of a pipe the agent makes at launch, never a host file: a host file held by a
//! sandbox process could be reopened from inside through `/proc/<pid>/fd` and grown past the
//! sandbox's disk limit (the guest is non-dumpable as well, so its `/proc/1/fd` cannot be
//! opened by sandbox processes at all).
//!
//! 1. [`pipe`] makes the pipe, both ends close-on-exec; the write end goes to the runtime as
//!    the container's stdout and stderr, and the agent drops its copy once the runtime
//!    returned, so the guest holds the only writer.
//! 2. [`drain`] reads the other end in a task and appends what arrives to `guest.log`; past
//!    `rotate_at` bytes the file becomes `guest.log.1` (replacing the previous one) and a new
//!    one starts. The host keeps at most twice `rotate_at` bytes per sandbox, whatever the
//!    sandbox writes; reading a chunk at a time, the task holds no buffer while idle.
//! 3. The task ends at end of file, when the last writer (the guest and anything it passed
//!    the descriptor to) is gone.
//!
//! After an agent restart nobody reads the pipes of sandboxes launched before it: the guest's
//! writes then fail with EPIPE (it ignores SIGPIPE, as every Rust program does) and its log
//! stops growing; the sandbox is unaffected.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use tokio::io::AsyncWriteExt;

/// Bytes of `guest.log` after which it is rotated.
pub const ROTATE_AT: u64 = 256 * 1024;

/// Bytes read from the pipe at a time (a pipe's default capacity is 64 KiB).
const CHUNK: usize = 16 * 1024;

/// A new pipe: `(read end, write end)`, both close-on-exec.
pub fn pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).map_err(std::io::Error::from)
}

/// Drains `read_end` into `log` (and `log.1`) in a task of the current tokio runtime; the
/// task ends at the pipe's end of file. Must be called within a tokio runtime (also from a
/// `spawn_blocking` thread).
pub fn drain(
    read_end: OwnedFd,
    log: PathBuf,
    rotate_at: u64,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let pipe = tokio::net::unix::pipe::Receiver::from_owned_fd(read_end)?;
    Ok(tokio::spawn(async move {
        if let Err(e) = pump(pipe, &log, rotate_at).await {
            tracing::warn!(log = %log.display(), error = %e, "collecting the guest's output stopped");
        }
    }))
}

async fn pump(
    pipe: tokio::net::unix::pipe::Receiver,
    log: &Path,
    rotate_at: u64,
) -> std::io::Result<()> {
    let mut file = open_append(log).await?;
    let mut written = file.metadata().await?.len();
    loop {
        pipe.readable().await?;
        let mut chunk = Vec::with_capacity(CHUNK);
        match pipe.try_read_buf(&mut chunk) {
            Ok(0) => return file.flush().await,
            Ok(n) => {
                if written > 0 && written + n as u64 > rotate_at {
                    file.flush().await?;
                    tokio::fs::rename(log, rotated(log)).await?;
                    file = open_append(log).await?;
                    written = 0;
                }
                file.write_all(&chunk).await?;
                written += n as u64;
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
}

/// `guest.log` → `guest.log.1`.
pub fn rotated(log: &Path) -> PathBuf {
    let mut name = log.as_os_str().to_owned();
    name.push(".1");
    PathBuf::from(name)
}

async fn open_append(path: &Path) -> std::io::Result<tokio::fs::File> {
    tokio::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// Everything written reaches the logs in order; neither file grows past the rotation
    /// size by more than one chunk's worth, and only the newest two files remain; the task
    /// ends when the writer is closed.
    #[tokio::test]
    async fn output_is_kept_bounded_and_rotated() {
        let dir = tempfile::tempdir().expect("tmp");
        let log = dir.path().join("guest.log");
        let (read_end, write_end) = pipe().expect("pipe");
        let task = drain(read_end, log.clone(), 1000).expect("drain");
        let mut writer = std::fs::File::from(write_end);
        let mut sent = Vec::new();
        for i in 0..400 {
            let line = format!("line {i:04} of the guest's output\n");
            writer.write_all(line.as_bytes()).expect("write");
            sent.extend_from_slice(line.as_bytes());
            if i % 50 == 0 {
                // Let the task read in several chunks, so rotation happens more than once.
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
        }
        drop(writer);
        tokio::time::timeout(std::time::Duration::from_secs(10), task)
            .await
            .expect("the task ends at end of file")
            .expect("task");

        let newest = std::fs::read(&log).expect("log");
        let older = std::fs::read(rotated(&log)).expect("rotated log");
        assert!(!older.is_empty() && !newest.is_empty());
        let mut kept = older.clone();
        kept.extend_from_slice(&newest);
        assert!(sent.ends_with(&kept), "the newest output is kept, in order");
        assert!(kept.len() < sent.len(), "older output was dropped");
        let files: Vec<_> = std::fs::read_dir(dir.path())
            .expect("ls")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(files.len(), 2, "{files:?}");
        for f in [&older, &newest] {
            assert!(f.len() <= 1000 + CHUNK, "{} bytes", f.len());
        }
    }

    /// The twin of the bound: below the rotation size nothing is rotated or lost.
    #[tokio::test]
    async fn small_output_stays_in_one_file() {
        let dir = tempfile::tempdir().expect("tmp");
        let log = dir.path().join("guest.log");
        let (read_end, write_end) = pipe().expect("pipe");
        let task = drain(read_end, log.clone(), 1 << 20).expect("drain");
        std::fs::File::from(write_end)
            .write_all(b"hello\nworld\n")
            .expect("write");
        task.await.expect("task");
        assert_eq!(std::fs::read(&log).expect("log"), b"hello\nworld\n");
        assert!(!rotated(&log).exists());
    }
}
