-- Messages, their history, the database queue and idempotency keys: the same tables and columns
-- as migrations/sqlite/0001_init.sql. Times are Unix milliseconds, as in SQLite, so both stores
-- decode rows the same way; ids are native uuids.

CREATE TABLE IF NOT EXISTS messages (
    id          uuid PRIMARY KEY,
    api         text NOT NULL,
    status      text NOT NULL,
    accepted_at bigint NOT NULL,
    updated_at  bigint NOT NULL,
    attempts    integer NOT NULL DEFAULT 0,
    last_error  text,
    payload     text NOT NULL
);

CREATE INDEX IF NOT EXISTS messages_by_status ON messages (status, id);

CREATE TABLE IF NOT EXISTS events (
    seq        bigserial PRIMARY KEY,
    message_id uuid NOT NULL,
    at         bigint NOT NULL,
    kind       text NOT NULL,
    detail     text
);

CREATE INDEX IF NOT EXISTS events_by_message ON events (message_id, seq);

-- The queue: a lease moves available_at to the end of the visibility timeout and stamps a
-- token; workers lease with FOR UPDATE SKIP LOCKED, so replicas never wait on each other.
CREATE TABLE IF NOT EXISTS queue (
    message_id   uuid PRIMARY KEY,
    enqueued_at  bigint NOT NULL,
    available_at bigint NOT NULL,
    attempts     integer NOT NULL DEFAULT 0,
    lease_token  uuid
);

CREATE INDEX IF NOT EXISTS queue_by_due ON queue (available_at);

CREATE TABLE IF NOT EXISTS idempotency_keys (
    key          text PRIMARY KEY,
    request_hash text NOT NULL,
    status       integer NOT NULL,
    response     text NOT NULL,
    created_at   bigint NOT NULL
);

CREATE INDEX IF NOT EXISTS idempotency_by_age ON idempotency_keys (created_at);

-- The database's clock, in milliseconds: every replica compares due times against one clock.
CREATE OR REPLACE FUNCTION mailroom_now_ms() RETURNS bigint
    LANGUAGE sql VOLATILE
    AS $$ SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint $$;
