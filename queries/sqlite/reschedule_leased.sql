-- Retry, release and extend: ?1 JSON array of {id, token, available_at, uncount, keep}. uncount 1
-- gives the attempt back (a release at shutdown is not an attempt); keep 1 is a heartbeat: the
-- holder keeps its lease, due again only if it lets the new time pass.
UPDATE queue AS q
SET available_at = t.available_at,
    lease_token = CASE t.keep WHEN 1 THEN q.lease_token END,
    attempts = q.attempts - t.uncount
FROM (
    SELECT value ->> 'id' AS id, value ->> 'token' AS token,
           value ->> 'available_at' AS available_at, value ->> 'uncount' AS uncount,
           value ->> 'keep' AS keep
    FROM jsonb_each(?1)
) AS t
WHERE q.message_id = t.id AND q.lease_token = t.token
RETURNING message_id
