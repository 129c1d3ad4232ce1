-- antifragile jobs, PostgreSQL: one row per durable job, a column per field of jobs.Job.
-- Times are epoch seconds passed in by the caller; ids and keys use the "C" collation.
-- JSON columns are jsonb: the queue appends to history and merges status flags in SQL.

CREATE TABLE antifragile_jobs (
    id              TEXT COLLATE "C" PRIMARY KEY,
    name            TEXT NOT NULL,
    queue           TEXT COLLATE "C" NOT NULL,
    state           TEXT NOT NULL CHECK (state IN ('scheduled', 'queued', 'running', 'retrying',
                                                   'succeeded', 'dead', 'resolved')),
    priority        INTEGER NOT NULL,
    payload         JSONB NOT NULL,
    payload_version INTEGER NOT NULL,
    idempotency_key TEXT COLLATE "C",
    attempts        INTEGER NOT NULL CHECK (attempts >= 0),
    max_attempts    INTEGER NOT NULL,
    run_at          DOUBLE PRECISION NOT NULL,
    created_at      DOUBLE PRECISION NOT NULL,
    updated_at      DOUBLE PRECISION NOT NULL,
    provider        TEXT,
    timeout         DOUBLE PRECISION,
    lease_owner     TEXT,
    lease_until     DOUBLE PRECISION,
    first_failed_at DOUBLE PRECISION,
    last_failed_at  DOUBLE PRECISION,
    last_error_code TEXT,
    last_error      TEXT,
    history         JSONB NOT NULL DEFAULT '[]'::jsonb,
    result          JSONB,
    resolution      TEXT,
    status_flag     JSONB,
    state_data      JSONB,
    CONSTRAINT antifragile_jobs_idempotency_key UNIQUE (idempotency_key)
);

-- claiming: the ready rows of one queue in claim order, and of all queues (only rows in a
-- claimable state are in these indexes, so finished jobs cost them nothing)
CREATE INDEX antifragile_jobs_claim_queue
    ON antifragile_jobs (queue, priority DESC, run_at, id)
    WHERE state IN ('scheduled', 'queued', 'retrying');

CREATE INDEX antifragile_jobs_claim_any
    ON antifragile_jobs (priority DESC, run_at, id)
    WHERE state IN ('scheduled', 'queued', 'retrying');

-- leases that run out (jobs of dead workers are taken over)
CREATE INDEX antifragile_jobs_leases ON antifragile_jobs (lease_until) WHERE state = 'running';

-- finished jobs by state and age: the dead-letter listing, purges of old jobs
CREATE INDEX antifragile_jobs_finished ON antifragile_jobs (state, updated_at)
    WHERE state IN ('succeeded', 'dead', 'resolved');

-- the dead-letter queue's filters
CREATE INDEX antifragile_jobs_dead_queue ON antifragile_jobs (queue, updated_at)
    WHERE state = 'dead';

CREATE INDEX antifragile_jobs_dead_name ON antifragile_jobs (name, updated_at)
    WHERE state = 'dead';

CREATE INDEX antifragile_jobs_dead_provider ON antifragile_jobs (provider, updated_at)
    WHERE state = 'dead';

CREATE INDEX antifragile_jobs_dead_error_code ON antifragile_jobs (last_error_code, updated_at)
    WHERE state = 'dead';
