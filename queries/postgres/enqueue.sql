-- $1: JSON array of message ids. Wakes idle workers (LISTEN mailroom_queue) at commit.
WITH queued AS (
    INSERT INTO queue (message_id, enqueued_at, available_at, attempts, lease_token)
    SELECT (id #>> '{}')::uuid, mailroom_now_ms(), mailroom_now_ms(), 0, NULL
    FROM jsonb_array_elements($1::jsonb) AS id
    ON CONFLICT (message_id) DO NOTHING
    RETURNING 1
)
SELECT pg_notify('mailroom_queue', count(*)::text) FROM queued
