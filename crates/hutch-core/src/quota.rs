//! Workspace quotas and host capacity, and the pure checks made at create time.

/// Per-workspace limits (defined with the wire types: one type on the wire, in checks and in
/// the store).
pub use hutch_api_types::Quota;
use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::request::Resources;

/// What a workspace (or a host) currently uses, as counted by the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Usage {
    pub running_sandboxes: u32,
    pub cpu_millis: u64,
    pub memory_mb: u64,
    pub disk_mb: u64,
}

/// What a host can hold in total.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capacity {
    pub max_sandboxes: u32,
    /// CPU may be overcommitted: this is the host's allowance, not its core count.
    pub cpu_millis: u64,
    pub memory_mb: u64,
    pub disk_mb: u64,
}

/// Which limit a request would cross.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuotaError {
    #[error("workspace quota of {limit} running sandboxes reached")]
    RunningSandboxes { limit: u32 },
    #[error("workspace memory quota of {limit} MB would be exceeded")]
    Memory { limit: u64 },
    #[error("workspace disk quota of {limit} MB would be exceeded")]
    Disk { limit: u64 },
    #[error("host has no room for another sandbox")]
    HostSandboxes,
    #[error("host has no CPU allowance left for this request")]
    HostCpu,
    #[error("host has not enough memory left for this request")]
    HostMemory,
    #[error("host has not enough disk left for this request")]
    HostDisk,
}

impl From<QuotaError> for Error {
    fn from(e: QuotaError) -> Self {
        match e {
            QuotaError::RunningSandboxes { .. }
            | QuotaError::Memory { .. }
            | QuotaError::Disk { .. } => Error::QuotaExceeded(e.to_string()),
            QuotaError::HostSandboxes
            | QuotaError::HostCpu
            | QuotaError::HostMemory
            | QuotaError::HostDisk => Error::CapacityExhausted(e.to_string()),
        }
    }
}

fn fits(used: u64, add: u64, limit: u64) -> bool {
    used.checked_add(add).is_some_and(|t| t <= limit)
}

/// May a workspace using `usage` add a sandbox with `want`? Pure.
pub fn check_quota(quota: &Quota, usage: &Usage, want: &Resources) -> Result<(), QuotaError> {
    if let Some(limit) = quota.max_running_sandboxes
        && !fits(u64::from(usage.running_sandboxes), 1, u64::from(limit))
    {
        return Err(QuotaError::RunningSandboxes { limit });
    }
    if let Some(limit) = quota.max_memory_mb
        && !fits(usage.memory_mb, u64::from(want.memory_mb), limit)
    {
        return Err(QuotaError::Memory { limit });
    }
    if let Some(limit) = quota.max_disk_mb
        && !fits(usage.disk_mb, u64::from(want.disk_mb), limit)
    {
        return Err(QuotaError::Disk { limit });
    }
    Ok(())
}

/// May a host using `used` take a sandbox with `want`? Pure.
pub fn check_capacity(
    capacity: &Capacity,
    used: &Usage,
    want: &Resources,
) -> Result<(), QuotaError> {
    if !fits(
        u64::from(used.running_sandboxes),
        1,
        u64::from(capacity.max_sandboxes),
    ) {
        return Err(QuotaError::HostSandboxes);
    }
    if !fits(
        used.cpu_millis,
        u64::from(want.cpu_millis),
        capacity.cpu_millis,
    ) {
        return Err(QuotaError::HostCpu);
    }
    if !fits(
        used.memory_mb,
        u64::from(want.memory_mb),
        capacity.memory_mb,
    ) {
        return Err(QuotaError::HostMemory);
    }
    if !fits(used.disk_mb, u64::from(want.disk_mb), capacity.disk_mb) {
        return Err(QuotaError::HostDisk);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorCode;

    const WANT: Resources = Resources {
        cpu_millis: 1000,
        memory_mb: 512,
        disk_mb: 1024,
        pids: 256,
    };

    fn usage(running: u32, mem: u64, disk: u64) -> Usage {
        Usage {
            running_sandboxes: running,
            cpu_millis: u64::from(running) * 1000,
            memory_mb: mem,
            disk_mb: disk,
        }
    }

    #[test]
    fn quota_table() {
        let q = Quota {
            max_running_sandboxes: Some(2),
            max_memory_mb: Some(1024),
            max_disk_mb: Some(4096),
        };
        let cases = [
            (usage(0, 0, 0), Ok(())),
            (usage(1, 512, 1024), Ok(())),
            (
                usage(2, 0, 0),
                Err(QuotaError::RunningSandboxes { limit: 2 }),
            ),
            (usage(1, 513, 0), Err(QuotaError::Memory { limit: 1024 })),
            (usage(1, 0, 3073), Err(QuotaError::Disk { limit: 4096 })),
            (
                usage(1, u64::MAX, 0),
                Err(QuotaError::Memory { limit: 1024 }),
            ),
        ];
        for (u, want) in cases {
            assert_eq!(check_quota(&q, &u, &WANT), want, "{u:?}");
        }
        assert_eq!(
            check_quota(
                &Quota::default(),
                &usage(u32::MAX, u64::MAX, u64::MAX),
                &WANT
            ),
            Ok(())
        );
    }

    #[test]
    fn capacity_table() {
        let cap = Capacity {
            max_sandboxes: 3,
            cpu_millis: 4000,
            memory_mb: 2048,
            disk_mb: 8192,
        };
        let cases = [
            (usage(0, 0, 0), Ok(())),
            (usage(2, 1536, 7168), Ok(())),
            (usage(3, 0, 0), Err(QuotaError::HostSandboxes)),
            (
                Usage {
                    cpu_millis: 3500,
                    ..usage(1, 0, 0)
                },
                Err(QuotaError::HostCpu),
            ),
            (usage(1, 1537, 0), Err(QuotaError::HostMemory)),
            (usage(1, 0, 7169), Err(QuotaError::HostDisk)),
        ];
        for (u, want) in cases {
            assert_eq!(check_capacity(&cap, &u, &WANT), want, "{u:?}");
        }
    }

    #[test]
    fn errors_map_to_quota_or_capacity_codes() {
        assert_eq!(
            Error::from(QuotaError::Disk { limit: 1 }).code(),
            ErrorCode::QuotaExceeded
        );
        assert_eq!(
            Error::from(QuotaError::HostMemory).code(),
            ErrorCode::CapacityExhausted
        );
    }
}
