-- $1 id: whether a worker holds a live lease on the message's queue row. The row stays locked
-- until the cancel commits, and the lease query skips locked rows, so no worker takes the
-- message while the cancel decides.
SELECT lease_token IS NOT NULL AND available_at > mailroom_now_ms()
FROM queue
WHERE message_id = $1
FOR UPDATE
