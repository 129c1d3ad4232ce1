-- The context a job carries from the request that caused it: a JSON object of strings
-- (request_id, trace context), NULL when there is none. The worker runs the job in it.
-- A nullable column without a default: adding it rewrites no row.

ALTER TABLE antifragile_jobs ADD COLUMN context TEXT;
