-- ?1: JSON array of {id, api, at, payload}
INSERT INTO messages (id, api, status, accepted_at, updated_at, attempts, payload)
SELECT value ->> 'id', value ->> 'api', 'queued', value ->> 'at', value ->> 'at', 0, value ->> 'payload'
FROM json_each(?1)
