-- Shared state of the stores layer: key-value, idempotency records, leases, rate-limit buckets,
-- circuit-breaker records and their windows of outcomes.
-- Times are epoch seconds (REAL) passed in by the caller; JSON values are stored as TEXT.

-- key-value with TTL and compare-and-set; expires_at NULL: never expires
CREATE TABLE antifragile_kv (
    key        TEXT    NOT NULL PRIMARY KEY,
    value      TEXT    NOT NULL,
    version    INTEGER NOT NULL CHECK (version >= 1),
    expires_at REAL
) WITHOUT ROWID;

CREATE INDEX antifragile_kv_expires_at ON antifragile_kv (expires_at)
    WHERE expires_at IS NOT NULL;

-- claim-if-absent records: a claim (processing) then its outcome, kept until expires_at
CREATE TABLE antifragile_idempotency (
    key         TEXT NOT NULL PRIMARY KEY,
    status      TEXT NOT NULL CHECK (status IN ('processing', 'succeeded', 'failed')),
    owner       TEXT,
    fingerprint TEXT,
    result      TEXT,
    created_at  REAL NOT NULL,
    expires_at  REAL NOT NULL
) WITHOUT ROWID;

CREATE INDEX antifragile_idempotency_expires_at ON antifragile_idempotency (expires_at);

-- leases; a released lease keeps its row (owner NULL) so that fencing tokens keep growing
CREATE TABLE antifragile_leases (
    name       TEXT    NOT NULL PRIMARY KEY,
    owner      TEXT,
    token      INTEGER NOT NULL CHECK (token >= 1),
    expires_at REAL    NOT NULL
) WITHOUT ROWID;

-- token buckets: `tokens` at time `stamp`
CREATE TABLE antifragile_rate_limits (
    key    TEXT NOT NULL PRIMARY KEY,
    tokens REAL NOT NULL,
    stamp  REAL NOT NULL
) WITHOUT ROWID;

-- the shared part of each circuit breaker's state
CREATE TABLE antifragile_breakers (
    name              TEXT    NOT NULL PRIMARY KEY,
    state             TEXT    NOT NULL,
    generation        INTEGER NOT NULL,
    open_until        REAL    NOT NULL,
    consecutive_opens INTEGER NOT NULL,
    probes_left       INTEGER NOT NULL,
    writer            TEXT    NOT NULL DEFAULT ''
) WITHOUT ROWID;

-- one-second buckets of call outcomes per breaker (a time-based sliding window)
CREATE TABLE antifragile_breaker_windows (
    name     TEXT    NOT NULL,
    second   INTEGER NOT NULL,
    calls    INTEGER NOT NULL DEFAULT 0,
    failures INTEGER NOT NULL DEFAULT 0,
    slow     INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (name, second)
) WITHOUT ROWID;
