-- Ack and dead-letter: only the current lease holder may settle.
DELETE FROM queue WHERE message_id = $1 AND lease_token = $2 RETURNING message_id
