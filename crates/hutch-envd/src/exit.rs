//! The words of a process's end: what envd writes in `EndEvent.status` and
//! `EndEvent.error`, stated once for the guest that writes them and the
//! client that reads them back.
//!
//! Owns: Go's names of Linux signals (`syscall.Signal.String()`, which envd
//! prints), the `signal: <name>` status and its reading back, and the marker
//! of an OOM kill.
//! Must not: decide whether a process was OOM-killed (the guest reads its
//! cgroup for that) or what a caller makes of an end.
//!
//! 1. A process that a signal ended has `status` = `signal: <name>`, with
//!    ` (core dumped)` appended when it dumped core; [`signal_status`] writes
//!    it and [`status_signal`] reads the number back. A signal Go has no name
//!    for reads `signal <N>`.
//! 2. A process the kernel's OOM killer ended has `error` =
//!    [`OOM_KILLED_ERROR`]; its status stays `signal: killed`, as the SDKs
//!    expect.

use std::borrow::Cow;

/// `EndEvent.error` of a process the kernel's OOM killer ended.
pub const OOM_KILLED_ERROR: &str = "out of memory: killed by the OOM killer";

/// Go's names of signals 1 to 31 on Linux, in order.
const SIGNAL_NAMES: [&str; 31] = [
    "hangup",
    "interrupt",
    "quit",
    "illegal instruction",
    "trace/breakpoint trap",
    "aborted",
    "bus error",
    "floating point exception",
    "killed",
    "user defined signal 1",
    "segmentation fault",
    "user defined signal 2",
    "broken pipe",
    "alarm clock",
    "terminated",
    "stack fault",
    "child exited",
    "continued",
    "stopped (signal)",
    "stopped",
    "stopped (tty input)",
    "stopped (tty output)",
    "urgent I/O condition",
    "CPU time limit exceeded",
    "file size limit exceeded",
    "virtual timer expired",
    "profiling timer expired",
    "window changed",
    "I/O possible",
    "power failure",
    "bad system call",
];

const STATUS_PREFIX: &str = "signal: ";
const CORE_DUMPED: &str = " (core dumped)";
/// Go's name of a signal outside [`SIGNAL_NAMES`] is this and the number.
const UNNAMED: &str = "signal ";

/// Go's name of signal `sig`.
fn signal_name(sig: i32) -> Cow<'static, str> {
    let named = usize::try_from(sig)
        .ok()
        .and_then(|n| n.checked_sub(1))
        .and_then(|i| SIGNAL_NAMES.get(i));
    match named {
        Some(name) => Cow::Borrowed(name),
        None => Cow::Owned(format!("{UNNAMED}{sig}")),
    }
}

/// `EndEvent.status` of a process that signal `sig` ended (step 1).
pub fn signal_status(sig: i32, core_dumped: bool) -> String {
    let mut status = format!("{STATUS_PREFIX}{}", signal_name(sig));
    if core_dumped {
        status.push_str(CORE_DUMPED);
    }
    status
}

/// The signal a `status` written by [`signal_status`] names; `None` for any
/// other status (`exit status 1`, `unknown`).
pub fn status_signal(status: &str) -> Option<i32> {
    let name = status.strip_prefix(STATUS_PREFIX)?;
    let name = name.strip_suffix(CORE_DUMPED).unwrap_or(name);
    match SIGNAL_NAMES.iter().position(|n| *n == name) {
        Some(i) => i32::try_from(i + 1).ok(),
        None => name.strip_prefix(UNNAMED)?.parse().ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_read_like_go() {
        assert_eq!(signal_status(9, false), "signal: killed");
        assert_eq!(signal_status(15, false), "signal: terminated");
        assert_eq!(
            signal_status(11, true),
            "signal: segmentation fault (core dumped)"
        );
        assert_eq!(signal_status(40, false), "signal: signal 40");
    }

    #[test]
    fn every_status_reads_back_as_its_signal() {
        for sig in (1..=31).chain([34, 40, 64]) {
            for core_dumped in [false, true] {
                let status = signal_status(sig, core_dumped);
                assert_eq!(status_signal(&status), Some(sig), "{status}");
            }
        }
    }

    #[test]
    fn other_statuses_name_no_signal() {
        for status in [
            "exit status 1",
            "exit status 0",
            "unknown",
            "signal: ",
            "signal: no such name",
            "signal: signal x",
            "killed",
        ] {
            assert_eq!(status_signal(status), None, "{status}");
        }
    }
}
