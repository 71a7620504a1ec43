-- ?1: JSON array of message ids; ?2: now
INSERT INTO queue (message_id, enqueued_at, available_at, attempts, lease_token)
SELECT value, ?2, ?2, 0, NULL
FROM json_each(?1)
WHERE true
ON CONFLICT (message_id) DO NOTHING
