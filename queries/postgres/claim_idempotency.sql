-- Claims a key, or takes over one older than $6. Returns a row only if claimed.
INSERT INTO idempotency_keys (key, request_hash, status, response, created_at)
VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (key) DO UPDATE SET
    request_hash = excluded.request_hash,
    status = excluded.status,
    response = excluded.response,
    created_at = excluded.created_at
WHERE idempotency_keys.created_at < $6
RETURNING key
