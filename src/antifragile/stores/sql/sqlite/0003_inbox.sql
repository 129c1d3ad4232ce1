-- The inbox: one row per inbound event (a webhook's message, status or order), recorded in the
-- same transaction as the job that handles it. (channel, event_id) is unique while the row
-- lives, so a provider's redelivery of an event is recognised and enqueues nothing; an expired
-- row is replaced by the next delivery of its event, and purged.
-- Times are epoch seconds (REAL) passed in by the caller; the payload is JSON TEXT.

CREATE TABLE antifragile_inbox (
    id          TEXT NOT NULL PRIMARY KEY,
    channel     TEXT NOT NULL,
    event_id    TEXT NOT NULL,
    kind        TEXT NOT NULL,
    tenant_key  TEXT NOT NULL,
    payload     TEXT NOT NULL,
    received_at REAL NOT NULL,
    expires_at  REAL NOT NULL,
    job_id      TEXT,
    request_id  TEXT,
    CONSTRAINT antifragile_inbox_event UNIQUE (channel, event_id)
);

-- purging expired entries
CREATE INDEX antifragile_inbox_expires_at ON antifragile_inbox (expires_at);

-- listing, newest first
CREATE INDEX antifragile_inbox_received ON antifragile_inbox (received_at, id);
