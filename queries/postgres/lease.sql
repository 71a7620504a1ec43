-- $1 lease token, $2 visibility in ms, $3 how many. SKIP LOCKED: concurrent workers take
-- different rows without waiting for each other.
WITH due AS (
    SELECT message_id FROM queue
    WHERE available_at <= mailroom_now_ms()
    ORDER BY available_at
    LIMIT $3
    FOR UPDATE SKIP LOCKED
)
UPDATE queue AS q
SET lease_token = $1, available_at = mailroom_now_ms() + $2, attempts = q.attempts + 1
FROM due
WHERE q.message_id = due.message_id
RETURNING q.message_id, q.attempts, (SELECT payload FROM messages m WHERE m.id = q.message_id)
