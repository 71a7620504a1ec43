-- Heartbeat: the holder of lease $2 on message $1 keeps it for $3 ms from now.
UPDATE queue
SET available_at = mailroom_now_ms() + $3
WHERE message_id = $1 AND lease_token = $2
RETURNING message_id
