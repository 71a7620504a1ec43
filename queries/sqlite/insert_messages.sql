-- ?1: JSON array of {id, api, at, payload}. A message already stored (a redrive pushes it again)
-- is left as it is.
INSERT INTO messages (id, api, status, accepted_at, updated_at, attempts, payload)
SELECT value ->> 'id', value ->> 'api', 'queued', value ->> 'at', value ->> 'at', 0, value ->> 'payload'
FROM json_each(?1)
WHERE true
ON CONFLICT (id) DO NOTHING
