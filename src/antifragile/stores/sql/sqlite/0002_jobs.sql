-- Durable jobs: one row per job, a column per field of antifragile.jobs.Job.
-- Times are epoch seconds (REAL) passed in by the caller; JSON values are stored as TEXT
-- (payload, history, result, status_flag, state_data), and the queue appends to history and
-- merges status flags with SQLite's JSON functions.
-- A rowid table: secondary indexes point at the 8-byte rowid, and claims select by rowid.

CREATE TABLE antifragile_jobs (
    id              TEXT    NOT NULL PRIMARY KEY,
    name            TEXT    NOT NULL,
    queue           TEXT    NOT NULL,
    state           TEXT    NOT NULL CHECK (state IN ('scheduled', 'queued', 'running',
                                                      'retrying', 'succeeded', 'dead',
                                                      'resolved')),
    priority        INTEGER NOT NULL DEFAULT 0,
    payload         TEXT    NOT NULL,
    payload_version INTEGER NOT NULL DEFAULT 1,
    idempotency_key TEXT,
    attempts        INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    max_attempts    INTEGER NOT NULL,
    run_at          REAL    NOT NULL,
    created_at      REAL    NOT NULL,
    updated_at      REAL    NOT NULL,
    provider        TEXT,
    timeout         REAL,
    lease_owner     TEXT,
    lease_until     REAL,
    first_failed_at REAL,
    last_failed_at  REAL,
    last_error_code TEXT,
    last_error      TEXT,
    history         TEXT    NOT NULL DEFAULT '[]',
    result          TEXT,
    resolution      TEXT,
    status_flag     TEXT,
    state_data      TEXT
);

-- at most one job per idempotency key; jobs without a key are not indexed at all
CREATE UNIQUE INDEX antifragile_jobs_idempotency_key ON antifragile_jobs (idempotency_key)
    WHERE idempotency_key IS NOT NULL;

-- claiming: the ready rows of one queue in claim order, and of all queues. Only rows in a
-- claimable state are in these indexes, so a job leaves them when it is claimed, and finished
-- jobs cost them nothing. The trailing queue makes the any-queue index cover its filter.
CREATE INDEX antifragile_jobs_claim_queue
    ON antifragile_jobs (queue, priority DESC, run_at, id)
    WHERE state IN ('scheduled', 'queued', 'retrying');

CREATE INDEX antifragile_jobs_claim_any
    ON antifragile_jobs (priority DESC, run_at, id, queue)
    WHERE state IN ('scheduled', 'queued', 'retrying');

-- leases that run out: the jobs of dead workers are taken over
CREATE INDEX antifragile_jobs_leases ON antifragile_jobs (lease_until, queue)
    WHERE state = 'running';

-- finished jobs by state and age: the dead-letter listing, purges of old jobs
CREATE INDEX antifragile_jobs_finished ON antifragile_jobs (state, updated_at)
    WHERE state IN ('succeeded', 'dead', 'resolved');

-- the dead-letter queue's filters
CREATE INDEX antifragile_jobs_dead_queue ON antifragile_jobs (queue, updated_at)
    WHERE state = 'dead';

CREATE INDEX antifragile_jobs_dead_provider ON antifragile_jobs (provider, updated_at)
    WHERE state = 'dead';

CREATE INDEX antifragile_jobs_dead_error_code ON antifragile_jobs (last_error_code, updated_at)
    WHERE state = 'dead';
