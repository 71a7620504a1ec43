-- Retry and release: ?1 JSON array of {id, token, available_at, uncount}; uncount 1 gives the
-- attempt back (a release at shutdown is not an attempt).
UPDATE queue AS q
SET available_at = t.available_at, lease_token = NULL, attempts = q.attempts - t.uncount
FROM (
    SELECT value ->> 'id' AS id, value ->> 'token' AS token,
           value ->> 'available_at' AS available_at, value ->> 'uncount' AS uncount
    FROM jsonb_each(?1)
) AS t
WHERE q.message_id = t.id AND q.lease_token = t.token
RETURNING message_id
