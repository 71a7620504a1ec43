-- ?1 lease token, ?2 lease deadline (the new available_at), ?3 now, ?4 how many
UPDATE queue
SET lease_token = ?1, available_at = ?2, attempts = attempts + 1
WHERE message_id IN (
    SELECT message_id FROM queue WHERE available_at <= ?3 ORDER BY available_at LIMIT ?4
)
RETURNING message_id, attempts
