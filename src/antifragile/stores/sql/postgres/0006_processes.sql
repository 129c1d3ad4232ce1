-- Liveness: one row per running worker, scheduler or service process, written by the process
-- itself every few seconds (its heartbeat) and deleted when it stops gracefully. A row whose
-- last_seen is older than the liveness threshold belongs to a process that died; such rows are
-- deleted by the scheduler's retention pass.
-- Times are epoch seconds passed in by the caller; queues is a JSON array, or NULL for a
-- process that serves every queue.

CREATE TABLE antifragile_processes (
    id         TEXT COLLATE "C" PRIMARY KEY,
    kind       TEXT NOT NULL,
    host       TEXT NOT NULL,
    pid        INTEGER NOT NULL,
    queues     JSONB,
    started_at DOUBLE PRECISION NOT NULL,
    last_seen  DOUBLE PRECISION NOT NULL
);

-- judging and deleting the rows of dead processes
CREATE INDEX antifragile_processes_last_seen ON antifragile_processes (last_seen);
