-- Ordering keys: jobs with the same ordering_key run one at a time, in the order they were
-- enqueued. ordering_seq is a job's place in that order: one more than the highest place of
-- any keyed job, taken when the job is inserted (SQLite's one writer at a time makes it grow
-- with every keyed job, so within a key it is the enqueue order).
-- Nullable columns without a default: adding them rewrites no row, and jobs without a key
-- stay out of the new indexes. A claim reads a ready job's key from the row it already visits
-- (the claim indexes do not cover the state), and checks the key's unfinished jobs only when
-- it has one.

ALTER TABLE antifragile_jobs ADD COLUMN ordering_key TEXT;
ALTER TABLE antifragile_jobs ADD COLUMN ordering_seq INTEGER;

-- the unfinished jobs of a key in order: what a claim checks before it takes a keyed job
CREATE INDEX antifragile_jobs_ordering_open ON antifragile_jobs (ordering_key, ordering_seq)
    WHERE ordering_key IS NOT NULL
      AND state IN ('scheduled', 'queued', 'running', 'retrying');

-- the highest place taken: the next keyed job's is one more
CREATE INDEX antifragile_jobs_ordering_seq ON antifragile_jobs (ordering_seq)
    WHERE ordering_seq IS NOT NULL;
