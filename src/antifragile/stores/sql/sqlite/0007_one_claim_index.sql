-- One claim index instead of two. Every enqueue, claim and completion wrote both (about 1.25
-- WAL pages each per single-job enqueue: a fifth of its pages); a claim from any queue now
-- takes the first ready jobs of each queue from antifragile_jobs_claim_queue and merges them
-- (one index seek per queue with ready jobs), in the same order and with the same result.
-- Dropping an index rewrites no row.

DROP INDEX IF EXISTS antifragile_jobs_claim_any;
