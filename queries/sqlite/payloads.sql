-- ?1: JSON array of message ids
SELECT id, payload FROM messages WHERE id IN (SELECT value FROM json_each(?1))
