-- Hutch metadata schema, SQLite dialect.
--
-- Portability rules (a PostgreSQL copy lives in migrations/postgres/ once that backend exists):
-- * times are BIGINT milliseconds since the Unix epoch, UTC;
-- * IDs and enum-like values are TEXT, every enum guarded by a CHECK listing its values;
-- * JSON documents are TEXT (JSONB on PostgreSQL); nothing filters inside JSON: metadata that
--   is filtered on also lives in sandbox_metadata;
-- * no triggers, no SQLite date functions, no ON CONFLICT REPLACE.
-- SQLite-only idioms that remain, with their PostgreSQL spelling:
-- * audit_log.seq INTEGER PRIMARY KEY AUTOINCREMENT  ->  BIGINT GENERATED ALWAYS AS IDENTITY;
-- * job leasing relies on BEGIN IMMEDIATE in code  ->  SELECT ... FOR UPDATE SKIP LOCKED;
-- * foreign keys need PRAGMA foreign_keys = ON per connection (set by the store).

CREATE TABLE workspaces (
    id                     TEXT PRIMARY KEY,
    name                   TEXT NOT NULL UNIQUE,
    max_running_sandboxes  BIGINT CHECK (max_running_sandboxes >= 0),
    max_memory_mb          BIGINT CHECK (max_memory_mb >= 0),
    max_disk_mb            BIGINT CHECK (max_disk_mb >= 0),
    created_by             TEXT,
    created_at             BIGINT NOT NULL
);

CREATE TABLE api_keys (
    id            TEXT PRIMARY KEY,
    workspace_id  TEXT NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    name          TEXT NOT NULL,
    role          TEXT NOT NULL CHECK (role IN ('operator', 'admin', 'member')),
    -- First characters of the key in clear, for lookup; not unique.
    prefix        TEXT NOT NULL,
    -- SHA-256 of the whole key, lowercase hex. The key itself is never stored.
    hash          TEXT NOT NULL UNIQUE,
    created_by    TEXT,
    created_at    BIGINT NOT NULL,
    revoked_at    BIGINT
);
CREATE INDEX api_keys_prefix ON api_keys (prefix);
CREATE INDEX api_keys_workspace ON api_keys (workspace_id, created_at);

CREATE TABLE templates (
    id              TEXT PRIMARY KEY,
    -- NULL for built-in templates, which belong to the platform and every workspace sees.
    workspace_id    TEXT REFERENCES workspaces (id) ON DELETE CASCADE,
    -- The workspace id, or '_platform': NULLs are distinct in UNIQUE, so uniqueness per owner
    -- needs a NOT NULL column.
    owner           TEXT NOT NULL,
    name            TEXT NOT NULL,
    tag             TEXT NOT NULL,
    state           TEXT NOT NULL CHECK (state IN ('pending', 'building', 'ready', 'failed')),
    digest          TEXT,
    failure_reason  TEXT,
    created_by      TEXT,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL,
    CHECK (owner = COALESCE(workspace_id, '_platform')),
    UNIQUE (owner, name, tag)
);
CREATE INDEX templates_workspace ON templates (workspace_id);

CREATE TABLE sandboxes (
    id              TEXT PRIMARY KEY,
    workspace_id    TEXT NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    -- name:tag as requested; template_id once resolved (no foreign key: a sandbox outlives
    -- nothing it needs from the row, and cascades must not race).
    template        TEXT NOT NULL,
    template_id     TEXT,
    state           TEXT NOT NULL CHECK (state IN ('creating', 'running', 'sleeping', 'asleep',
                                                   'waking', 'stopping', 'stopped', 'failed')),
    generation      BIGINT NOT NULL CHECK (generation >= 0),
    cpu_millis      BIGINT NOT NULL,
    memory_mb       BIGINT NOT NULL,
    disk_mb         BIGINT NOT NULL,
    pids            BIGINT NOT NULL,
    runtime         TEXT CHECK (runtime IN ('crun', 'runc', 'runsc')),
    env             TEXT NOT NULL,
    metadata        TEXT NOT NULL,
    timeout_s       BIGINT NOT NULL,
    -- NULL: never expires.
    expires_at      BIGINT,
    failure_reason  TEXT,
    created_by      TEXT,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL
);
CREATE INDEX sandboxes_workspace_page ON sandboxes (workspace_id, created_at, id);
-- The lifetime sweeper's query: WHERE expires_at <= now ORDER BY expires_at.
CREATE INDEX sandboxes_expires ON sandboxes (expires_at) WHERE expires_at IS NOT NULL;
-- Recovery at start: every sandbox not stopped or failed.
CREATE INDEX sandboxes_state ON sandboxes (state);

-- Metadata in rows, so `?metadata=k=v` filters use an index on any backend.
CREATE TABLE sandbox_metadata (
    sandbox_id  TEXT NOT NULL REFERENCES sandboxes (id) ON DELETE CASCADE,
    key         TEXT NOT NULL,
    value       TEXT NOT NULL,
    PRIMARY KEY (sandbox_id, key)
);
CREATE INDEX sandbox_metadata_kv ON sandbox_metadata (key, value);

-- Who did what. Not a foreign key to workspaces or keys: the record of a deletion outlives
-- the deleted workspace and its keys.
CREATE TABLE audit_log (
    seq           INTEGER PRIMARY KEY AUTOINCREMENT,
    at            BIGINT NOT NULL,
    workspace_id  TEXT,
    key_id        TEXT,
    request_id    TEXT,
    action        TEXT NOT NULL,
    object        TEXT,
    outcome       TEXT NOT NULL CHECK (outcome IN ('ok', 'denied', 'failed'))
);
CREATE INDEX audit_log_workspace ON audit_log (workspace_id, seq);

-- Background work (template builds, function validations, volume syncs), leased by workers.
CREATE TABLE jobs (
    id                TEXT PRIMARY KEY,
    workspace_id      TEXT REFERENCES workspaces (id) ON DELETE CASCADE,
    kind              TEXT NOT NULL CHECK (kind IN ('build', 'validation', 'volume_sync')),
    payload           TEXT NOT NULL,
    state             TEXT NOT NULL CHECK (state IN ('queued', 'running', 'succeeded', 'failed',
                                                     'cancelled')),
    attempts          BIGINT NOT NULL DEFAULT 0,
    max_attempts      BIGINT NOT NULL CHECK (max_attempts >= 1),
    lease_owner       TEXT,
    lease_expires_at  BIGINT,
    result            TEXT,
    error             TEXT,
    created_by        TEXT,
    created_at        BIGINT NOT NULL,
    updated_at        BIGINT NOT NULL,
    -- A lease exists exactly while the job runs.
    CHECK ((state = 'running') = (lease_owner IS NOT NULL AND lease_expires_at IS NOT NULL))
);
CREATE INDEX jobs_queue ON jobs (state, created_at);
CREATE INDEX jobs_workspace ON jobs (workspace_id);
