-- Ordering keys: jobs with the same ordering_key run one at a time, in the order they were
-- enqueued. ordering_seq is a job's place in its key's order (the key's highest place + 1,
-- taken when the job is inserted; SQLite's one writer at a time makes it unique per key).
-- Nullable columns without a default: adding them rewrites no row, and jobs without a key
-- stay out of the new indexes.

ALTER TABLE antifragile_jobs ADD COLUMN ordering_key TEXT;
ALTER TABLE antifragile_jobs ADD COLUMN ordering_seq INTEGER;

-- the unfinished jobs of a key in order: what a claim checks before it takes a keyed job
CREATE INDEX antifragile_jobs_ordering_open ON antifragile_jobs (ordering_key, ordering_seq)
    WHERE ordering_key IS NOT NULL
      AND state IN ('scheduled', 'queued', 'running', 'retrying');

-- every job of a key: the next place in the key's order is its highest + 1
CREATE INDEX antifragile_jobs_ordering ON antifragile_jobs (ordering_key, ordering_seq)
    WHERE ordering_key IS NOT NULL;

-- the claim indexes cover the ordering key too, so a claim reads whether a ready job has one
-- from the index alone (rebuilt over the ready jobs only)
DROP INDEX antifragile_jobs_claim_queue;
CREATE INDEX antifragile_jobs_claim_queue
    ON antifragile_jobs (queue, priority DESC, run_at, id, ordering_key)
    WHERE state IN ('scheduled', 'queued', 'retrying');

DROP INDEX antifragile_jobs_claim_any;
CREATE INDEX antifragile_jobs_claim_any
    ON antifragile_jobs (priority DESC, run_at, id, queue, ordering_key)
    WHERE state IN ('scheduled', 'queued', 'retrying');
