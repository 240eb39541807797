//! Pseudo-terminals: open a master/slave pair and resize it.
//!
//! 1. Open `/dev/ptmx` close-on-exec (so no other child inherits the master),
//!    grant and unlock it.
//! 2. Get the slave through the master itself (`TIOCGPTPEER`, no path lookup),
//!    falling back to `ptsname` on kernels older than 4.13.
//! 3. Set the window size; the child makes the slave its controlling
//!    terminal after `setsid` (see `spawn`).

use std::{io, os::fd::OwnedFd};

use rustix::{
    fs::{Mode, OFlags},
    io::Errno,
    pty::OpenptFlags,
    termios::Winsize,
};

use super::spec::PtySize;

pub struct PtyPair {
    pub master: OwnedFd,
    pub slave: OwnedFd,
}

fn winsize(size: PtySize) -> Winsize {
    Winsize {
        ws_row: size.rows,
        ws_col: size.cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    }
}

/// Steps 1–3 of the module docs.
pub fn open(size: PtySize) -> io::Result<PtyPair> {
    let flags = OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC;
    let master = rustix::pty::openpt(flags)?;
    rustix::pty::grantpt(&master)?;
    rustix::pty::unlockpt(&master)?;
    let slave = match rustix::pty::ioctl_tiocgptpeer(&master, flags) {
        Ok(fd) => fd,
        Err(Errno::NOTTY | Errno::INVAL | Errno::NOSYS) => {
            let name = rustix::pty::ptsname(&master, Vec::new())?;
            rustix::fs::open(
                name.as_c_str(),
                OFlags::RDWR | OFlags::NOCTTY | OFlags::CLOEXEC,
                Mode::empty(),
            )?
        }
        Err(e) => return Err(e.into()),
    };
    resize(&master, size)?;
    Ok(PtyPair { master, slave })
}

/// Sets the terminal's size (`TIOCSWINSZ`); the kernel sends SIGWINCH to
/// its foreground process group.
pub fn resize(master: impl std::os::fd::AsFd, size: PtySize) -> io::Result<()> {
    rustix::termios::tcsetwinsize(master, winsize(size))?;
    Ok(())
}
