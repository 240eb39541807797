//! How a process ended, in the words the SDKs read.
//!
//! envd fills `EndEvent` from Go's `os.ProcessState`, so we do the same:
//! 1. Normal exit: `exitCode` = code, `exited` = true, `status` = "exit status N",
//!    `error` = the status when N != 0 (Go's `cmd.Wait` error), absent on 0.
//! 2. Death by signal: `exitCode` = -1, `exited` = false, `status` =
//!    "signal: killed" (Go's signal names, " (core dumped)" appended: see
//!    `hutch_envd::exit`), `error` = the status.
//! 3. OOM: before a process starts we read the sandbox cgroup's OOM-kill
//!    counter; if it died of SIGKILL and the counter rose meanwhile, `error`
//!    is `hutch_envd::exit::OOM_KILLED_ERROR` (status stays "signal: killed",
//!    as the SDKs expect). The guest client reads it as `oom: true`.
//!
//! The counter lives in `memory.events` (cgroup v2, line `oom_kill N`) or
//! `memory.oom_control` (v1, same line; either at the memory controller's
//! directory or under `memory/` of a v1 hierarchy root). The root is a
//! parameter, so tests use fixture files.

use std::{
    io::Read,
    path::{Path, PathBuf},
};

use hutch_envd::{
    exit::{OOM_KILLED_ERROR, signal_status},
    process::process_event::EndEvent,
};

use crate::reaper::Exit;

/// Files holding the OOM-kill counter, relative to the cgroup root, in the
/// order they are tried.
const OOM_COUNTER_FILES: [&str; 3] = [
    "memory.events",
    "memory.oom_control",
    "memory/memory.oom_control",
];

/// Largest counter file read.
const MAX_COUNTER_FILE: u64 = 64 << 10;

/// Reads the OOM-kill counter of the cgroup at `root`; `None` when no layout
/// we know is there (then OOM kills are not told apart).
pub fn read_oom_kills(root: &Path) -> Option<u64> {
    OOM_COUNTER_FILES.iter().find_map(|rel| {
        let path: PathBuf = root.join(rel);
        let mut text = String::new();
        std::fs::File::open(&path)
            .ok()?
            .take(MAX_COUNTER_FILE)
            .read_to_string(&mut text)
            .ok()?;
        parse_oom_kill(&text)
    })
}

/// The value of the `oom_kill N` line of a `memory.events` or
/// `memory.oom_control` file.
pub fn parse_oom_kill(text: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let mut f = line.split_ascii_whitespace();
        (f.next()? == "oom_kill").then_some(())?;
        f.next()?.parse().ok()
    })
}

/// The end event of a process that ended with `exit`; `oom_killed` says the
/// cgroup's OOM-kill counter rose while it ran.
pub fn end_event(exit: Exit, oom_killed: bool) -> EndEvent {
    match exit {
        Exit::Code(code) => {
            let status = format!("exit status {code}");
            EndEvent {
                exit_code: code,
                exited: true,
                error: (code != 0).then(|| status.clone()),
                status,
            }
        }
        Exit::Signal {
            signal,
            core_dumped,
        } => {
            let status = signal_status(signal, core_dumped);
            let error = if oom_killed && signal == libc::SIGKILL {
                OOM_KILLED_ERROR.to_owned()
            } else {
                status.clone()
            };
            EndEvent {
                exit_code: -1,
                exited: false,
                status,
                error: Some(error),
            }
        }
    }
}

/// The end event when the exit status was lost (the reaper went away).
pub fn lost_event() -> EndEvent {
    EndEvent {
        exit_code: -1,
        exited: false,
        status: "unknown".to_owned(),
        error: Some("the guest lost track of the process".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_and_signals_read_like_go() {
        let e = end_event(Exit::Code(0), false);
        assert_eq!(
            (e.exit_code, e.exited, e.status.as_str(), e.error),
            (0, true, "exit status 0", None)
        );
        let e = end_event(Exit::Code(3), false);
        assert_eq!(
            (e.exit_code, e.exited, e.error.as_deref()),
            (3, true, Some("exit status 3"))
        );
        let e = end_event(
            Exit::Signal {
                signal: 9,
                core_dumped: false,
            },
            false,
        );
        assert_eq!(
            (e.exit_code, e.exited, e.status.as_str()),
            (-1, false, "signal: killed")
        );
        assert_eq!(e.error.as_deref(), Some("signal: killed"));
        let e = end_event(
            Exit::Signal {
                signal: 11,
                core_dumped: true,
            },
            false,
        );
        assert_eq!(e.status, "signal: segmentation fault (core dumped)");
        assert_eq!(
            end_event(
                Exit::Signal {
                    signal: 15,
                    core_dumped: false
                },
                false
            )
            .status,
            "signal: terminated"
        );
    }

    #[test]
    fn oom_is_told_apart_only_for_sigkill() {
        let e = end_event(
            Exit::Signal {
                signal: 9,
                core_dumped: false,
            },
            true,
        );
        assert_eq!(
            (e.status.as_str(), e.error.as_deref()),
            ("signal: killed", Some(OOM_KILLED_ERROR))
        );
        let e = end_event(
            Exit::Signal {
                signal: 15,
                core_dumped: false,
            },
            true,
        );
        assert_eq!(e.error.as_deref(), Some("signal: terminated"));
        assert_eq!(
            end_event(Exit::Code(137), true).error.as_deref(),
            Some("exit status 137")
        );
    }

    #[test]
    fn oom_counter_parsing() {
        let v2 = "low 0\nhigh 0\nmax 12\noom 3\noom_kill 2\noom_group_kill 0\n";
        assert_eq!(parse_oom_kill(v2), Some(2));
        let v1 = "oom_kill_disable 0\nunder_oom 0\noom_kill 7\n";
        assert_eq!(parse_oom_kill(v1), Some(7));
        assert_eq!(parse_oom_kill("oom_kill_disable 0\nunder_oom 0\n"), None);
        assert_eq!(parse_oom_kill("oom_kill x\n"), None);
        assert_eq!(parse_oom_kill(""), None);
    }

    #[test]
    fn oom_counter_layouts() {
        let v2 = tempfile::tempdir().expect("test setup");
        std::fs::write(v2.path().join("memory.events"), "oom 1\noom_kill 4\n").expect("test setup");
        assert_eq!(read_oom_kills(v2.path()), Some(4));

        let v1_controller = tempfile::tempdir().expect("test setup");
        std::fs::write(
            v1_controller.path().join("memory.oom_control"),
            "under_oom 0\noom_kill 5\n",
        )
        .expect("test setup");
        assert_eq!(read_oom_kills(v1_controller.path()), Some(5));

        let v1_root = tempfile::tempdir().expect("test setup");
        std::fs::create_dir(v1_root.path().join("memory")).expect("test setup");
        std::fs::write(
            v1_root.path().join("memory/memory.oom_control"),
            "oom_kill 6\n",
        )
        .expect("test setup");
        assert_eq!(read_oom_kills(v1_root.path()), Some(6));

        // An old v1 kernel without the counter, and no cgroup at all.
        let old = tempfile::tempdir().expect("test setup");
        std::fs::write(
            old.path().join("memory.oom_control"),
            "oom_kill_disable 0\nunder_oom 0\n",
        )
        .expect("test setup");
        assert_eq!(read_oom_kills(old.path()), None);
        assert_eq!(read_oom_kills(Path::new("/nonexistent/cgroup")), None);
    }
}
