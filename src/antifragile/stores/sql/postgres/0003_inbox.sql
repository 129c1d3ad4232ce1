-- The inbox: one row per inbound event (a webhook's message, status or order), recorded in the
-- same transaction as the job that handles it. (channel, event_id) is unique while the row
-- lives, so a provider's redelivery of an event is recognised and enqueues nothing; an expired
-- row is replaced by the next delivery of its event, and purged.
-- Times are epoch seconds passed in by the caller; ids and keys use the "C" collation. The
-- payload is json, not jsonb: it is stored as received (never queried inside), and json also
-- holds strings with the NUL character, which jsonb refuses -- an inbound message must never
-- fail to be recorded because of what its sender typed.

CREATE TABLE antifragile_inbox (
    id          TEXT COLLATE "C" PRIMARY KEY,
    channel     TEXT COLLATE "C" NOT NULL,
    event_id    TEXT COLLATE "C" NOT NULL,
    kind        TEXT NOT NULL,
    tenant_key  TEXT NOT NULL,
    payload     JSON NOT NULL,
    received_at DOUBLE PRECISION NOT NULL,
    expires_at  DOUBLE PRECISION NOT NULL,
    job_id      TEXT COLLATE "C",
    request_id  TEXT,
    CONSTRAINT antifragile_inbox_event UNIQUE (channel, event_id)
);

-- purging expired entries
CREATE INDEX antifragile_inbox_expires_at ON antifragile_inbox (expires_at);

-- listing, newest first
CREATE INDEX antifragile_inbox_received ON antifragile_inbox (received_at, id);
