-- Ordering keys: jobs with the same ordering_key run one at a time, in the order they were
-- enqueued. ordering_seq is a job's place in its key's order (the key's highest place + its
-- position in the batch, taken when the job is inserted; two batches of one key inserted at
-- the same instant may share a place, and the job id breaks the tie).
-- Nullable columns without a default: adding them rewrites no row and locks the table only
-- for an instant; jobs without a key stay out of the new indexes.

ALTER TABLE antifragile_jobs ADD COLUMN ordering_key text COLLATE "C";
ALTER TABLE antifragile_jobs ADD COLUMN ordering_seq int8;

-- the unfinished jobs of a key in order: what a claim checks before it takes a keyed job
CREATE INDEX antifragile_jobs_ordering_open ON antifragile_jobs (ordering_key, ordering_seq, id)
    WHERE ordering_key IS NOT NULL
      AND state IN ('scheduled', 'queued', 'running', 'retrying');

-- every job of a key: the next place in the key's order is its highest + 1
CREATE INDEX antifragile_jobs_ordering ON antifragile_jobs (ordering_key, ordering_seq)
    WHERE ordering_key IS NOT NULL;
