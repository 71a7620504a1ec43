-- Retry ($4 = 0) and release ($4 = 1, the attempt is given back): due again after $3 ms.
UPDATE queue
SET available_at = mailroom_now_ms() + $3, lease_token = NULL, attempts = attempts - $4
WHERE message_id = $1 AND lease_token = $2
RETURNING message_id
