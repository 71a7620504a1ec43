-- $1 status or NULL, $2 before id or NULL, $3 limit
SELECT id, status, attempts, updated_at, last_error, payload
FROM messages
WHERE ($1::text IS NULL OR status = $1) AND ($2::uuid IS NULL OR id < $2)
ORDER BY id DESC
LIMIT $3
