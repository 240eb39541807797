//! The sandbox lifecycle state machine (DESIGN §9).
//!
//! ```text
//! creating → running ⇄ sleeping → asleep → waking → running
//!     any live state → stopping → stopped
//!     any live or transitional state → failed;  failed → stopping (clean up)
//! ```
//!
//! Every accepted transition bumps the [`Generation`]; the store applies it as a
//! compare-and-swap on (state, generation), so two writers can never both win.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Where a sandbox is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SandboxState {
    Creating,
    Running,
    Sleeping,
    Asleep,
    Waking,
    Stopping,
    Stopped,
    Failed,
}

/// A transition the state machine does not allow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransitionError {
    #[error("a sandbox cannot go from {from} to {to}")]
    Illegal {
        from: SandboxState,
        to: SandboxState,
    },
    #[error("the sandbox changed concurrently (generation {actual}, expected {expected})")]
    StaleGeneration {
        expected: Generation,
        actual: Generation,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown sandbox state")]
pub struct StateParseError;

impl SandboxState {
    pub const ALL: [SandboxState; 8] = [
        SandboxState::Creating,
        SandboxState::Running,
        SandboxState::Sleeping,
        SandboxState::Asleep,
        SandboxState::Waking,
        SandboxState::Stopping,
        SandboxState::Stopped,
        SandboxState::Failed,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            SandboxState::Creating => "creating",
            SandboxState::Running => "running",
            SandboxState::Sleeping => "sleeping",
            SandboxState::Asleep => "asleep",
            SandboxState::Waking => "waking",
            SandboxState::Stopping => "stopping",
            SandboxState::Stopped => "stopped",
            SandboxState::Failed => "failed",
        }
    }

    /// No further work happens on its own: `stopped` and `failed`.
    pub const fn is_terminal(self) -> bool {
        matches!(self, SandboxState::Stopped | SandboxState::Failed)
    }

    /// An operation is half done; after a crash, recovery must finish or undo it.
    pub const fn is_transitional(self) -> bool {
        matches!(
            self,
            SandboxState::Creating
                | SandboxState::Sleeping
                | SandboxState::Waking
                | SandboxState::Stopping
        )
    }

    /// Counts against memory quota and host capacity (processes may be resident).
    pub const fn holds_memory(self) -> bool {
        matches!(
            self,
            SandboxState::Creating
                | SandboxState::Running
                | SandboxState::Sleeping
                | SandboxState::Waking
                | SandboxState::Stopping
        )
    }

    /// Counts against disk quota (an upper dir or checkpoint exists).
    pub const fn holds_disk(self) -> bool {
        !self.is_terminal()
    }

    /// Subject to the lifetime sweeper when its `expires_at` has passed.
    pub const fn is_sweepable(self) -> bool {
        matches!(
            self,
            SandboxState::Creating
                | SandboxState::Running
                | SandboxState::Sleeping
                | SandboxState::Asleep
                | SandboxState::Waking
        )
    }

    /// The transition table. `self == to` is never a transition (operations are idempotent
    /// by checking the current state before asking).
    pub const fn can_become(self, to: SandboxState) -> bool {
        use SandboxState::*;
        matches!(
            (self, to),
            (Creating, Running | Stopping | Failed)
                | (Running, Sleeping | Stopping | Failed)
                | (Sleeping, Asleep | Running | Failed)
                | (Asleep, Waking | Stopping | Failed)
                | (Waking, Running | Asleep | Failed)
                | (Stopping, Stopped | Failed)
                | (Failed, Stopping)
        )
    }

    pub fn check_transition(self, to: SandboxState) -> Result<(), TransitionError> {
        if self.can_become(to) {
            Ok(())
        } else {
            Err(TransitionError::Illegal { from: self, to })
        }
    }
}

impl fmt::Display for SandboxState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SandboxState {
    type Err = StateParseError;
    fn from_str(s: &str) -> Result<Self, StateParseError> {
        SandboxState::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or(StateParseError)
    }
}

/// A monotonically increasing version of a sandbox row, bumped on each transition.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Generation(pub u64);

impl Generation {
    pub const fn next(self) -> Generation {
        Generation(self.0.saturating_add(1))
    }
}

impl fmt::Display for Generation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A state together with the generation it was read at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Versioned {
    pub state: SandboxState,
    pub generation: Generation,
}

impl Versioned {
    /// The state of a freshly inserted sandbox.
    pub const fn initial() -> Self {
        Versioned {
            state: SandboxState::Creating,
            generation: Generation(0),
        }
    }

    /// The next version if `to` is legal from here and `expected` is still current.
    pub fn advance(self, expected: Generation, to: SandboxState) -> Result<Self, TransitionError> {
        if self.generation != expected {
            return Err(TransitionError::StaleGeneration {
                expected,
                actual: self.generation,
            });
        }
        self.state.check_transition(to)?;
        Ok(Versioned {
            state: to,
            generation: self.generation.next(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::SandboxState::*;
    use super::*;

    /// Every allowed edge, spelled out once more so a change to the table is a conscious one.
    const ALLOWED: &[(SandboxState, SandboxState)] = &[
        (Creating, Running),
        (Creating, Stopping),
        (Creating, Failed),
        (Running, Sleeping),
        (Running, Stopping),
        (Running, Failed),
        (Sleeping, Asleep),
        (Sleeping, Running),
        (Sleeping, Failed),
        (Asleep, Waking),
        (Asleep, Stopping),
        (Asleep, Failed),
        (Waking, Running),
        (Waking, Asleep),
        (Waking, Failed),
        (Stopping, Stopped),
        (Stopping, Failed),
        (Failed, Stopping),
    ];

    #[test]
    fn transition_table_is_exactly_the_allowed_edges() {
        for from in SandboxState::ALL {
            for to in SandboxState::ALL {
                let want = ALLOWED.contains(&(from, to));
                assert_eq!(from.can_become(to), want, "{from} -> {to}");
                assert_eq!(from.check_transition(to).is_ok(), want);
            }
        }
    }

    #[test]
    fn the_design_paths_are_walkable() {
        let paths: &[&[SandboxState]] = &[
            &[Creating, Running, Sleeping, Asleep, Waking, Running],
            &[Creating, Running, Stopping, Stopped],
            &[Creating, Failed, Stopping, Stopped],
            &[Creating, Running, Sleeping, Running],
            &[Creating, Running, Sleeping, Asleep, Stopping, Stopped],
            &[Creating, Stopping, Stopped],
        ];
        for path in paths {
            let mut v = Versioned::initial();
            for (i, &to) in path.iter().enumerate().skip(1) {
                v = v.advance(v.generation, to).expect("legal step");
                assert_eq!(v.generation, Generation(i as u64));
            }
        }
    }

    #[test]
    fn stopped_is_final_and_nothing_returns_to_creating() {
        for to in SandboxState::ALL {
            assert!(!Stopped.can_become(to));
            assert!(!to.can_become(Creating));
            assert!(!to.can_become(to), "self-loop {to}");
        }
    }

    #[test]
    fn stale_generation_loses() {
        let v = Versioned::initial();
        let won = v.advance(Generation(0), Running).expect("first writer");
        assert_eq!(
            won.advance(Generation(0), Stopping),
            Err(TransitionError::StaleGeneration {
                expected: Generation(0),
                actual: Generation(1)
            })
        );
        assert_eq!(
            won.advance(Generation(1), Creating),
            Err(TransitionError::Illegal {
                from: Running,
                to: Creating
            })
        );
    }

    #[test]
    fn classification_is_consistent() {
        for s in SandboxState::ALL {
            assert_eq!(s.as_str().parse::<SandboxState>(), Ok(s));
            if s.is_terminal() {
                assert!(!s.holds_memory() && !s.holds_disk() && !s.is_sweepable());
            }
            if s.holds_memory() {
                assert!(s.holds_disk());
            }
        }
        assert!("zombie".parse::<SandboxState>().is_err());
        assert_eq!(
            serde_json::to_string(&Asleep).expect("serialise"),
            "\"asleep\""
        );
    }
}
