//! `GET /metrics`: the sandbox's CPU, memory and disk, as envd reports them
//! (`ts`, `cpu_count`, `cpu_used_pct`, `mem_total`, `mem_used`, `mem_cache`,
//! `disk_used`, `disk_total`, all sizes in bytes, plus envd's deprecated
//! `mem_total_mib` / `mem_used_mib`).
//!
//! 1. Memory: the sandbox's cgroup when it has a limit (v2 `memory.current`
//!    / `memory.max` / `memory.stat:file`; v1 `memory/memory.usage_in_bytes`
//!    / `memory.limit_in_bytes` / `memory.stat:total_cache`), used = usage
//!    minus page cache; otherwise `/proc/meminfo` (used = total − available).
//! 2. CPU: cumulative usage of the cgroup (v2 `cpu.stat:usage_usec`, v1
//!    `cpuacct/cpuacct.usage`), else `/proc/stat`'s busy time; the percentage
//!    is over the time since the previous call, or over a 100 ms sample on
//!    the first call (or when the previous one is older than a minute).
//!    `cpu_count` is the online CPUs, capped by a cgroup CPU quota.
//! 3. Disk: `statvfs("/")`.
//!
//! The cgroup and /proc roots come from the configuration, so tests point
//! them at fixtures. All reads are small, bounded, and on the blocking pool.

use std::{
    io::Read,
    path::{Path, PathBuf},
    sync::Mutex,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use axum::{Json, extract::State, http::StatusCode};
use serde::Serialize;

use crate::GuestState;

/// The reply, field for field as envd sends it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Metrics {
    pub ts: i64,
    pub cpu_count: u32,
    pub cpu_used_pct: f64,
    pub mem_total_mib: u64,
    pub mem_used_mib: u64,
    pub mem_total: u64,
    pub mem_used: u64,
    pub mem_cache: u64,
    pub disk_used: u64,
    pub disk_total: u64,
}

/// Largest kernel file read.
const MAX_READ: u64 = 256 << 10;
/// The CPU sample taken when there is no recent previous one.
const FIRST_SAMPLE: Duration = Duration::from_millis(100);
/// A previous sample older than this is not used.
const SAMPLE_MAX_AGE: Duration = Duration::from_secs(60);

fn read(path: &Path) -> Option<String> {
    let mut s = String::new();
    std::fs::File::open(path)
        .ok()?
        .take(MAX_READ)
        .read_to_string(&mut s)
        .ok()?;
    Some(s)
}

fn read_u64(path: &Path) -> Option<u64> {
    read(path)?.trim().parse().ok()
}

/// `key value` lines (memory.stat, cpu.stat).
fn stat_field(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let mut it = l.split_whitespace();
        (it.next()? == key).then(|| it.next()?.parse().ok())?
    })
}

/// `Key:   123 kB` lines of /proc/meminfo, in bytes.
fn meminfo_field(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let rest = l.strip_prefix(key)?.strip_prefix(':')?;
        let kb: u64 = rest.split_whitespace().next()?.parse().ok()?;
        Some(kb.saturating_mul(1024))
    })
}

/// Limits above this are "no limit" (cgroup v1 writes a page-rounded i64::MAX).
const UNLIMITED: u64 = 1 << 60;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Memory {
    pub total: u64,
    pub used: u64,
    pub cache: u64,
}

/// Step 1 of the module docs.
pub fn memory(cgroup: &Path, proc_root: &Path) -> Memory {
    let host = read(&proc_root.join("meminfo")).map(|m| {
        let total = meminfo_field(&m, "MemTotal").unwrap_or(0);
        let avail = meminfo_field(&m, "MemAvailable")
            .or_else(|| meminfo_field(&m, "MemFree"))
            .unwrap_or(0);
        let cache = meminfo_field(&m, "Cached").unwrap_or(0);
        Memory {
            total,
            used: total.saturating_sub(avail),
            cache,
        }
    });
    let host = host.unwrap_or(Memory {
        total: 0,
        used: 0,
        cache: 0,
    });
    // cgroup v2, then v1.
    let v2 = read_u64(&cgroup.join("memory.current")).map(|usage| {
        let limit = read(&cgroup.join("memory.max")).and_then(|s| s.trim().parse::<u64>().ok());
        let cache = read(&cgroup.join("memory.stat"))
            .and_then(|s| stat_field(&s, "file"))
            .unwrap_or(0);
        (usage, limit, cache)
    });
    let v1 = || {
        let dir = cgroup.join("memory");
        read_u64(&dir.join("memory.usage_in_bytes")).map(|usage| {
            let limit = read_u64(&dir.join("memory.limit_in_bytes"));
            let stat = read(&dir.join("memory.stat")).unwrap_or_default();
            let cache = stat_field(&stat, "total_cache")
                .or_else(|| stat_field(&stat, "cache"))
                .unwrap_or(0);
            (usage, limit, cache)
        })
    };
    match v2.or_else(v1) {
        Some((usage, Some(limit), cache))
            if limit < UNLIMITED && (host.total == 0 || limit < host.total) =>
        {
            Memory {
                total: limit,
                used: usage.saturating_sub(cache).min(limit),
                cache,
            }
        }
        _ => host,
    }
}

/// The number of CPUs `cpuN` lines in /proc/stat show.
fn online_cpus(proc_root: &Path) -> u32 {
    let n = read(&proc_root.join("stat"))
        .map(|s| {
            s.lines()
                .filter(|l| {
                    l.strip_prefix("cpu")
                        .is_some_and(|r| r.starts_with(|c: char| c.is_ascii_digit()))
                })
                .count() as u32
        })
        .unwrap_or(0);
    if n > 0 {
        n
    } else {
        std::thread::available_parallelism()
            .map(|n| n.get() as u32)
            .unwrap_or(1)
    }
}

/// The CPUs a cgroup quota allows, if one is set.
fn quota_cpus(cgroup: &Path) -> Option<u32> {
    let (quota, period) = if let Some(s) = read(&cgroup.join("cpu.max")) {
        let mut it = s.split_whitespace();
        (
            it.next()?.parse::<f64>().ok()?,
            it.next()?.parse::<f64>().ok()?,
        )
    } else {
        let q = read(&cgroup.join("cpu/cpu.cfs_quota_us"))?
            .trim()
            .parse::<f64>()
            .ok()?;
        let p = read(&cgroup.join("cpu/cpu.cfs_period_us"))?
            .trim()
            .parse::<f64>()
            .ok()?;
        (q, p)
    };
    (quota > 0.0 && period > 0.0).then(|| (quota / period).ceil().max(1.0) as u32)
}

pub fn cpu_count(cgroup: &Path, proc_root: &Path) -> u32 {
    let online = online_cpus(proc_root);
    quota_cpus(cgroup).map_or(online, |q| q.min(online)).max(1)
}

/// Cumulative CPU time used, in nanoseconds, and whether it is the cgroup's
/// (else the whole machine's busy time from /proc/stat).
pub fn cpu_usage_ns(cgroup: &Path, proc_root: &Path) -> Option<u64> {
    if let Some(us) = read(&cgroup.join("cpu.stat")).and_then(|s| stat_field(&s, "usage_usec")) {
        return Some(us.saturating_mul(1000));
    }
    for p in [
        "cpuacct/cpuacct.usage",
        "cpu,cpuacct/cpuacct.usage",
        "cpuacct.usage",
    ] {
        if let Some(ns) = read_u64(&cgroup.join(p)) {
            return Some(ns);
        }
    }
    // /proc/stat: busy jiffies (all but idle and iowait), USER_HZ = 100.
    let stat = read(&proc_root.join("stat"))?;
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let busy: u64 = v
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4)
        .map(|(_, x)| *x)
        .sum();
    Some(busy.saturating_mul(10_000_000))
}

pub fn disk() -> (u64, u64) {
    match rustix::fs::statvfs("/") {
        Ok(s) => {
            let total = s.f_blocks.saturating_mul(s.f_frsize);
            let used = s
                .f_blocks
                .saturating_sub(s.f_bfree)
                .saturating_mul(s.f_frsize);
            (used, total)
        }
        Err(_) => (0, 0),
    }
}

/// The previous CPU sample, per cgroup root: (usage ns, when).
static PREVIOUS: Mutex<Vec<(PathBuf, u64, Instant)>> = Mutex::new(Vec::new());

fn percent(used_ns: u64, elapsed: Duration, cpus: u32) -> f64 {
    let wall = elapsed.as_nanos() as f64 * f64::from(cpus.max(1));
    if wall <= 0.0 {
        return 0.0;
    }
    let pct = (used_ns as f64 / wall * 100.0).clamp(0.0, 100.0);
    (pct * 100.0).round() / 100.0
}

/// Collects every figure (blocking: it may sleep for the first CPU sample).
pub fn collect(cgroup: &Path, proc_root: &Path) -> Metrics {
    let cpus = cpu_count(cgroup, proc_root);
    let now_usage = cpu_usage_ns(cgroup, proc_root);
    let now = Instant::now();
    let prev = {
        let mut all = PREVIOUS.lock().unwrap_or_else(|p| p.into_inner());
        let prev = all
            .iter()
            .find(|(p, _, _)| p == cgroup)
            .map(|(_, u, t)| (*u, *t));
        all.retain(|(p, _, _)| p != cgroup);
        if all.len() > 16 {
            all.clear();
        }
        if let Some(u) = now_usage {
            all.push((cgroup.to_owned(), u, now));
        }
        prev
    };
    let cpu_used_pct = match (now_usage, prev) {
        (Some(u), Some((pu, pt)))
            if now.duration_since(pt) <= SAMPLE_MAX_AGE && now > pt && u >= pu =>
        {
            percent(u - pu, now.duration_since(pt), cpus)
        }
        (Some(u0), _) => {
            std::thread::sleep(FIRST_SAMPLE);
            let t1 = Instant::now();
            match cpu_usage_ns(cgroup, proc_root) {
                Some(u1) if u1 >= u0 => {
                    let mut all = PREVIOUS.lock().unwrap_or_else(|p| p.into_inner());
                    all.retain(|(p, _, _)| p != cgroup);
                    all.push((cgroup.to_owned(), u1, t1));
                    percent(u1 - u0, t1.duration_since(now), cpus)
                }
                _ => 0.0,
            }
        }
        (None, _) => 0.0,
    };
    let mem = memory(cgroup, proc_root);
    let (disk_used, disk_total) = disk();
    Metrics {
        ts: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0),
        cpu_count: cpus,
        cpu_used_pct,
        mem_total_mib: mem.total >> 20,
        mem_used_mib: mem.used >> 20,
        mem_total: mem.total,
        mem_used: mem.used,
        mem_cache: mem.cache,
        disk_used,
        disk_total,
    }
}

pub async fn metrics(State(state): State<GuestState>) -> Result<Json<Metrics>, StatusCode> {
    let (cg, proc_root) = (
        state.config.cgroup_root.clone(),
        state.config.proc_root.clone(),
    );
    tokio::task::spawn_blocking(move || collect(&cg, &proc_root))
        .await
        .map(Json)
        .map_err(|_| StatusCode::INTERNAL_SERVER_ERROR)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn write(root: &Path, rel: &str, text: &str) {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    fn proc_fixture() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        write(
            d.path(),
            "meminfo",
            "MemTotal:       8000000 kB\nMemFree:         100000 kB\nMemAvailable:   6000000 kB\nCached:          500000 kB\n",
        );
        write(
            d.path(),
            "stat",
            "cpu  100 0 100 1000 0 0 0 0 0 0\ncpu0 50 0 50 500 0 0 0\ncpu1 50 0 50 500 0 0 0\nintr 1\n",
        );
        d
    }

    #[test]
    fn meminfo_without_cgroup_limit() {
        let p = proc_fixture();
        let cg = tempfile::tempdir().unwrap();
        let m = memory(cg.path(), p.path());
        assert_eq!(
            m,
            Memory {
                total: 8_000_000 * 1024,
                used: 2_000_000 * 1024,
                cache: 500_000 * 1024
            }
        );
        // A v1 cgroup without a real limit falls back to meminfo too.
        write(cg.path(), "memory/memory.usage_in_bytes", "1000\n");
        write(
            cg.path(),
            "memory/memory.limit_in_bytes",
            "9223372036854771712\n",
        );
        assert_eq!(memory(cg.path(), p.path()).total, 8_000_000 * 1024);
    }

    #[test]
    fn cgroup_v1_and_v2_limits() {
        let p = proc_fixture();
        let v1 = tempfile::tempdir().unwrap();
        write(v1.path(), "memory/memory.usage_in_bytes", "300000000\n");
        write(v1.path(), "memory/memory.limit_in_bytes", "536870912\n");
        write(
            v1.path(),
            "memory/memory.stat",
            "cache 100000000\ntotal_cache 100000000\nrss 1\n",
        );
        assert_eq!(
            memory(v1.path(), p.path()),
            Memory {
                total: 536_870_912,
                used: 200_000_000,
                cache: 100_000_000
            }
        );
        let v2 = tempfile::tempdir().unwrap();
        write(v2.path(), "memory.current", "300000000\n");
        write(v2.path(), "memory.max", "536870912\n");
        write(v2.path(), "memory.stat", "anon 1\nfile 50000000\n");
        assert_eq!(
            memory(v2.path(), p.path()),
            Memory {
                total: 536_870_912,
                used: 250_000_000,
                cache: 50_000_000
            }
        );
        write(v2.path(), "memory.max", "max\n");
        assert_eq!(memory(v2.path(), p.path()).total, 8_000_000 * 1024);
    }

    #[test]
    fn cpu_sources_and_quota() {
        let p = proc_fixture();
        let cg = tempfile::tempdir().unwrap();
        assert_eq!(cpu_count(cg.path(), p.path()), 2);
        assert_eq!(cpu_usage_ns(cg.path(), p.path()), Some(200 * 10_000_000));
        write(cg.path(), "cpu.stat", "usage_usec 1500\nuser_usec 1000\n");
        assert_eq!(cpu_usage_ns(cg.path(), p.path()), Some(1_500_000));
        write(cg.path(), "cpu.max", "50000 100000\n");
        assert_eq!(cpu_count(cg.path(), p.path()), 1);
        let v1 = tempfile::tempdir().unwrap();
        write(v1.path(), "cpuacct/cpuacct.usage", "777\n");
        assert_eq!(cpu_usage_ns(v1.path(), p.path()), Some(777));
        assert_eq!(percent(1_000_000_000, Duration::from_secs(1), 2), 50.0);
        assert_eq!(percent(5_000_000_000, Duration::from_secs(1), 2), 100.0);
    }
}
