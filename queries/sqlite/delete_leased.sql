-- Ack and dead-letter: ?1 JSON array of {id, token}; only the current lease holder may settle.
DELETE FROM queue
WHERE (message_id, lease_token) IN (
    SELECT value ->> 'id', value ->> 'token' FROM jsonb_each(?1)
)
RETURNING message_id
