//! Non-blocking IO on a process's pipe or PTY master, driven by tokio's
//! reactor. Reads are of a fixed maximum size, so what we hold per read is
//! bounded whatever the process prints.

use std::{
    io,
    os::fd::{AsFd, BorrowedFd, OwnedFd},
};

use bytes::Bytes;
use rustix::{fs::OFlags, io::Errno};
use tokio::io::unix::AsyncFd;

/// One end of a pipe or a PTY master, non-blocking.
pub struct Fd(AsyncFd<OwnedFd>);

/// The result of a read that does not wait.
pub enum ReadNow {
    Data(Bytes),
    WouldBlock,
    Eof,
}

/// A PTY master reads EIO once every slave is closed: that is its EOF.
fn is_eof_error(e: Errno) -> bool {
    e == Errno::IO
}

impl Fd {
    /// Takes `fd` over, making it non-blocking. Needs a tokio runtime.
    #[allow(unsafe_code)]
    pub fn new(fd: OwnedFd) -> io::Result<Fd> {
        let flags = rustix::fs::fcntl_getfl(&fd)?;
        rustix::fs::fcntl_setfl(&fd, flags | OFlags::NONBLOCK)?;
        // SAFETY: the `OwnedFd` is open and owned by the `AsyncFd` from here
        // until it is dropped; nothing replaces or closes it meanwhile, so
        // its raw fd keeps naming the same open file description.
        let registered = unsafe { AsyncFd::register(fd) };
        Ok(Fd(registered?))
    }

    /// Reads at most `max` bytes, waiting for some; `None` at EOF.
    pub async fn read_chunk(&self, max: usize) -> io::Result<Option<Bytes>> {
        loop {
            let mut guard = self.0.readable().await?;
            match guard.try_io(|fd| read_once(fd.get_ref(), max)) {
                Ok(result) => return result,
                Err(_would_block) => continue,
            }
        }
    }

    /// Reads at most `max` bytes if some are there now.
    pub fn try_read_chunk(&self, max: usize) -> io::Result<ReadNow> {
        match read_once(self.0.get_ref(), max) {
            Ok(Some(b)) => Ok(ReadNow::Data(b)),
            Ok(None) => Ok(ReadNow::Eof),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(ReadNow::WouldBlock),
            Err(e) => Err(e),
        }
    }

    /// Writes all of `data`, waiting while the pipe or terminal is full.
    pub async fn write_all(&self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            let mut guard = self.0.writable().await?;
            match guard.try_io(|fd| rustix::io::write(fd.get_ref(), data).map_err(io::Error::from))
            {
                Ok(Ok(n)) => data = &data[n..],
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
        Ok(())
    }
}

impl AsFd for Fd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.get_ref().as_fd()
    }
}

/// One `read(2)` of at most `max` bytes; `None` at EOF. EAGAIN is returned
/// as an error of kind WouldBlock, so `try_io` clears readiness.
fn read_once(fd: &OwnedFd, max: usize) -> io::Result<Option<Bytes>> {
    let mut buf = vec![0u8; max.max(1)];
    loop {
        match rustix::io::read(fd, &mut buf) {
            Ok(0) => return Ok(None),
            Ok(n) => {
                buf.truncate(n);
                return Ok(Some(Bytes::from(buf)));
            }
            Err(Errno::INTR) => continue,
            Err(Errno::AGAIN) => return Err(io::ErrorKind::WouldBlock.into()),
            Err(e) if is_eof_error(e) => return Ok(None),
            Err(e) => return Err(e.into()),
        }
    }
}
