-- Every insert of a write batch, as one statement list: one round trip to the database thread.
-- ?1: JSON array of new messages {id, api, at, payload}. A message already stored (a redrive
-- pushes it again) is left as it is.
INSERT INTO messages (id, api, status, accepted_at, updated_at, attempts, payload)
SELECT value ->> 'id', value ->> 'api', 'queued', value ->> 'at', value ->> 'at', 0, value ->> 'payload'
FROM jsonb_each(?1)
WHERE true
ON CONFLICT (id) DO NOTHING;

-- ?2: JSON array of events {id, at, kind, detail}
INSERT INTO events (message_id, at, kind, detail)
SELECT value ->> 'id', value ->> 'at', value ->> 'kind', value ->> 'detail'
FROM jsonb_each(?2);

-- ?3: JSON array of message ids to queue now; ?4: now; ?5: JSON array of {id, at} to queue for
-- a later time (send_at), which count as enqueued from then, so a message waiting for its time
-- does not age the queue. One statement for both: sqlx binds a statement's unnamed slots below
-- its highest ?N from the arguments left over, and a statement of its own for ?5 would run out
-- of them before reaching ?5, leaving it NULL.
INSERT INTO queue (message_id, enqueued_at, available_at, attempts, lease_token)
SELECT value, ?4, ?4, 0, NULL
FROM jsonb_each(?3)
UNION ALL
SELECT value ->> 'id', value ->> 'at', value ->> 'at', 0, NULL
FROM jsonb_each(?5)
WHERE true
-- A message pushed again while its row is still here (a redrive landing between a worker's
-- `dead` record and its removal of the row) starts afresh, and the old lease no longer settles
-- it: removing the row then would strand the message `queued` with nothing to deliver it.
ON CONFLICT (message_id) DO UPDATE SET
    enqueued_at = excluded.enqueued_at,
    available_at = excluded.available_at,
    attempts = 0,
    lease_token = NULL;
