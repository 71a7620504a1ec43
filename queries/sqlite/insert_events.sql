-- ?1: JSON array of {id, at, kind, detail}
INSERT INTO events (message_id, at, kind, detail)
SELECT value ->> 'id', value ->> 'at', value ->> 'kind', value ->> 'detail'
FROM json_each(?1)
