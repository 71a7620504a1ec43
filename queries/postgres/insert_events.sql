-- $1: JSON array of {id, at, kind, detail}
INSERT INTO events (message_id, at, kind, detail)
SELECT (e ->> 'id')::uuid, (e ->> 'at')::bigint, e ->> 'kind', e ->> 'detail'
FROM jsonb_array_elements($1::jsonb) AS e
