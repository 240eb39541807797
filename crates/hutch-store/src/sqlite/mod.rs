//! The SQLite backend (embedded, single node).
//!
//! Connections run with WAL journaling, foreign keys on and a busy timeout. Queries are built at
//! run time (`sqlx::query*`), so no database is needed to compile. Job leasing takes the write
//! lock up front with `BEGIN IMMEDIATE`; the PostgreSQL backend will use
//! `FOR UPDATE SKIP LOCKED` instead.
//!
//! This file owns the pool (opening, pragmas, migrations) and the conversions more than one
//! aggregate uses. Each aggregate's file (`workspaces.rs`, `api_keys.rs`, `sandboxes.rs`,
//! `templates.rs`, `audit.rs`, `jobs.rs`) owns its row type, column list, queries and its trait's
//! `impl` for [`SqliteStore`]; it must not use another aggregate's row type or call another
//! aggregate's trait.

mod api_keys;
mod audit;
mod jobs;
mod sandboxes;
mod templates;
mod workspaces;

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use hutch_core::{SandboxState, Timestamp};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use crate::error::{Result, StoreError};

/// How long a connection waits for the write lock before giving up.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The SQLite implementation of [`Store`](crate::Store).
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
}

impl SqliteStore {
    /// Opens (creating if needed) the database file at `path` and applies migrations.
    pub async fn open(path: &Path) -> Result<Self> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(BUSY_TIMEOUT);
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            // sqlx pings a connection before every checkout by default, a round trip to
            // the connection's worker thread for a check that only matters for networked
            // databases: an open SQLite file does not go away under us.
            .test_before_acquire(false)
            .connect_with(options)
            .await
            .map_err(StoreError::db("open database"))?;
        Self::migrated(pool).await
    }

    /// A private in-memory database (tests). One connection, kept open for the pool's life,
    /// so every query sees the same database.
    pub async fn open_in_memory() -> Result<Self> {
        let options = SqliteConnectOptions::new()
            .filename(":memory:")
            .foreign_keys(true)
            .busy_timeout(BUSY_TIMEOUT);
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(options)
            .await
            .map_err(StoreError::db("open in-memory database"))?;
        Self::migrated(pool).await
    }

    async fn migrated(pool: SqlitePool) -> Result<Self> {
        sqlx::migrate!("./migrations/sqlite")
            .run(&pool)
            .await
            .map_err(StoreError::Migrate)?;
        Ok(Self { pool })
    }

    /// The underlying pool, for backend-specific tests (query plans, constraints).
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }
}

// ---------------------------------------------------------------------------------------------
// Row conversion shared by the aggregates

fn corrupt<E>(what: &'static str) -> impl FnOnce(E) -> StoreError {
    move |_| StoreError::Corrupt { what }
}

fn parse<T: FromStr>(s: &str, what: &'static str) -> Result<T> {
    s.parse().map_err(corrupt(what))
}

fn opt_parse<T: FromStr>(s: Option<&str>, what: &'static str) -> Result<Option<T>> {
    s.map(|s| parse(s, what)).transpose()
}

fn to_u32(v: i64, what: &'static str) -> Result<u32> {
    u32::try_from(v).map_err(corrupt(what))
}

fn to_u64(v: i64, what: &'static str) -> Result<u64> {
    u64::try_from(v).map_err(corrupt(what))
}

fn to_i64<T: TryInto<i64>>(v: T, what: &'static str) -> Result<i64> {
    v.try_into()
        .map_err(|_| StoreError::Conflict(format!("{what} is too large to store")))
}

fn ts(ms: i64) -> Timestamp {
    Timestamp::from_unix_ms(ms)
}

fn in_list(states: impl Iterator<Item = &'static str>) -> String {
    let quoted: Vec<String> = states.map(|s| format!("'{s}'")).collect();
    format!("({})", quoted.join(", "))
}

fn states_where(pred: fn(SandboxState) -> bool) -> String {
    in_list(
        SandboxState::ALL
            .into_iter()
            .filter(|s| pred(*s))
            .map(SandboxState::as_str),
    )
}

fn convert<R, T>(rows: Vec<R>) -> Result<Vec<T>>
where
    T: TryFrom<R, Error = StoreError>,
{
    rows.into_iter().map(T::try_from).collect()
}

fn json_text<T: serde::Serialize>(v: &T, what: &'static str) -> Result<String> {
    serde_json::to_string(v).map_err(|_| StoreError::Conflict(format!("{what} cannot be encoded")))
}
