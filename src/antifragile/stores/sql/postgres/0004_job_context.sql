-- The context a job carries from the request that caused it: a JSON object of strings
-- (request_id, trace context), NULL when there is none. The worker runs the job in it.
-- json, not jsonb: it is never queried inside, is stored as given (no parsing into jsonb on
-- the enqueue path), and holds any string a caller's request id may contain.
-- A nullable column without a default: adding it rewrites no row and locks the table only
-- for an instant.

ALTER TABLE antifragile_jobs ADD COLUMN context JSON;
