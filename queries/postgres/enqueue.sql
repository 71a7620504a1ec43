-- $1: JSON array of message ids, due at once; $2: JSON array of {id, at} due later (send_at),
-- which count as enqueued from then, so a message waiting for its time does not age the queue.
-- Wakes idle workers (LISTEN mailroom_queue) at commit.
WITH queued AS (
    INSERT INTO queue (message_id, enqueued_at, available_at, attempts, lease_token)
    SELECT (id #>> '{}')::uuid, mailroom_now_ms(), mailroom_now_ms(), 0, NULL::uuid
    FROM jsonb_array_elements($1::jsonb) AS id
    UNION ALL
    SELECT (s ->> 'id')::uuid, (s ->> 'at')::bigint, (s ->> 'at')::bigint, 0, NULL::uuid
    FROM jsonb_array_elements($2::jsonb) AS s
    -- A message pushed again while its row is still here (a redrive landing between a worker's
    -- `dead` record and its removal of the row) starts afresh, and the old lease no longer
    -- settles it: removing the row then would strand the message `queued`.
    ON CONFLICT (message_id) DO UPDATE SET
        enqueued_at = excluded.enqueued_at,
        available_at = excluded.available_at,
        attempts = 0,
        lease_token = NULL
    RETURNING 1
)
SELECT pg_notify('mailroom_queue', count(*)::text) FROM queued
