-- Messages, their history, the database queue and idempotency keys.
-- Times are Unix milliseconds; ids are UUIDv7 text, so ordering by id is ordering by acceptance.

CREATE TABLE IF NOT EXISTS messages (
    id          TEXT PRIMARY KEY NOT NULL,
    api         TEXT NOT NULL,
    status      TEXT NOT NULL,
    accepted_at INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    attempts    INTEGER NOT NULL DEFAULT 0,
    last_error  TEXT,
    -- The accepted message as JSON: what the worker delivers and the archive keeps.
    payload     TEXT NOT NULL
) WITHOUT ROWID;

CREATE INDEX IF NOT EXISTS messages_by_status ON messages (status, id);

CREATE TABLE IF NOT EXISTS events (
    seq        INTEGER PRIMARY KEY,
    message_id TEXT NOT NULL,
    at         INTEGER NOT NULL,
    kind       TEXT NOT NULL,
    detail     TEXT
);

CREATE INDEX IF NOT EXISTS events_by_message ON events (message_id, seq);

-- The database queue. A lease moves available_at to the end of the visibility timeout and
-- stamps a token: an expired lease is simply due again, and a stale holder's token no longer
-- matches.
CREATE TABLE IF NOT EXISTS queue (
    message_id   TEXT PRIMARY KEY NOT NULL,
    enqueued_at  INTEGER NOT NULL,
    available_at INTEGER NOT NULL,
    attempts     INTEGER NOT NULL DEFAULT 0,
    lease_token  TEXT
) WITHOUT ROWID;

CREATE INDEX IF NOT EXISTS queue_by_due ON queue (available_at);

CREATE TABLE IF NOT EXISTS idempotency_keys (
    key          TEXT PRIMARY KEY NOT NULL,
    request_hash TEXT NOT NULL,
    status       INTEGER NOT NULL,
    response     TEXT NOT NULL,
    created_at   INTEGER NOT NULL
) WITHOUT ROWID;

CREATE INDEX IF NOT EXISTS idempotency_by_age ON idempotency_keys (created_at);
