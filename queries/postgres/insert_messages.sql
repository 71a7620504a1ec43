-- $1: JSON array of {id, api, at, payload}. A message already stored is left as it is.
INSERT INTO messages (id, api, status, accepted_at, updated_at, attempts, payload)
SELECT (m ->> 'id')::uuid, m ->> 'api', 'queued', (m ->> 'at')::bigint, (m ->> 'at')::bigint, 0, m ->> 'payload'
FROM jsonb_array_elements($1::jsonb) AS m
ON CONFLICT (id) DO NOTHING
