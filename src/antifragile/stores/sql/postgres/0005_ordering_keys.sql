-- Ordering keys: jobs with the same ordering_key run one at a time, in the order they were
-- enqueued. ordering_seq is a job's place in that order, drawn from a sequence when the job is
-- inserted (jobs of one batch in batch order). Batches of one key inserted by two processes at
-- the same instant are ordered by their places, and still never run at once.
-- Nullable columns without a default: adding them rewrites no row and locks the table only
-- for an instant; jobs without a key stay out of the new index and draw no number.

ALTER TABLE antifragile_jobs ADD COLUMN ordering_key text COLLATE "C";
ALTER TABLE antifragile_jobs ADD COLUMN ordering_seq int8;

CREATE SEQUENCE antifragile_jobs_ordering_seq AS int8;

-- the unfinished jobs of a key in order: what a claim checks before it takes a keyed job
CREATE INDEX antifragile_jobs_ordering_open ON antifragile_jobs (ordering_key, ordering_seq)
    WHERE ordering_key IS NOT NULL
      AND state IN ('scheduled', 'queued', 'running', 'retrying');
