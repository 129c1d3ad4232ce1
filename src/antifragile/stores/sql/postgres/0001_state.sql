-- antifragile state, PostgreSQL. Tables are created in the store's schema (the connection's
-- search_path). Times are epoch seconds passed in by the caller, never the server's now().
-- Keys use the "C" collation so that prefix scans use the index and sort in code-point order.

-- key-value entries: JSON text, a version (1 on creation, +1 per write), optional expiry
CREATE TABLE antifragile_kv (
    key        TEXT COLLATE "C" PRIMARY KEY,
    value      TEXT NOT NULL,
    version    BIGINT NOT NULL CHECK (version >= 1),
    expires_at DOUBLE PRECISION
);

CREATE INDEX antifragile_kv_expires_at ON antifragile_kv (expires_at)
    WHERE expires_at IS NOT NULL;

-- idempotency / dedup records: one claim per key until it expires
CREATE TABLE antifragile_idempotency (
    key         TEXT COLLATE "C" PRIMARY KEY,
    status      TEXT NOT NULL CHECK (status IN ('processing', 'succeeded', 'failed')),
    owner       TEXT,
    fingerprint TEXT,
    result      TEXT,
    created_at  DOUBLE PRECISION NOT NULL,
    expires_at  DOUBLE PRECISION NOT NULL
);

CREATE INDEX antifragile_idempotency_expires_at ON antifragile_idempotency (expires_at);

-- leases: the row outlives a release (owner NULL) so the fencing token keeps growing
CREATE TABLE antifragile_leases (
    name       TEXT COLLATE "C" PRIMARY KEY,
    owner      TEXT,
    token      BIGINT NOT NULL CHECK (token >= 1),
    expires_at DOUBLE PRECISION NOT NULL
);

-- token buckets: tokens at stamp (tokens may be negative while reservations are outstanding,
-- stamp may lie in the future while the bucket is paused)
CREATE TABLE antifragile_rate_limits (
    key    TEXT COLLATE "C" PRIMARY KEY,
    tokens DOUBLE PRECISION NOT NULL,
    stamp  DOUBLE PRECISION NOT NULL
);

-- circuit breakers: the shared part of each breaker's state
CREATE TABLE antifragile_breakers (
    name              TEXT COLLATE "C" PRIMARY KEY,
    state             TEXT NOT NULL,
    generation        BIGINT NOT NULL,
    open_until        DOUBLE PRECISION NOT NULL,
    consecutive_opens INTEGER NOT NULL,
    probes_left       INTEGER NOT NULL,
    writer            TEXT NOT NULL DEFAULT ''
);

-- circuit breakers: outcomes counted in one-second buckets (epoch seconds)
CREATE TABLE antifragile_breaker_windows (
    name     TEXT COLLATE "C" NOT NULL,
    second   BIGINT NOT NULL,
    calls    BIGINT NOT NULL,
    failures BIGINT NOT NULL,
    slow     BIGINT NOT NULL,
    PRIMARY KEY (name, second)
);
