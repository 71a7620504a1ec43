-- Claims a key, or takes over one older than the TTL or whose acceptance died mid-push
-- (pending_until passed). Returns a row only if claimed.
-- ?1 key, ?2 request hash, ?3 status, ?4 response, ?5 now, ?6 expired-before, ?7 pending until
INSERT INTO idempotency_keys (key, request_hash, status, response, created_at, pending_until)
VALUES (?1, ?2, ?3, ?4, ?5, ?7)
ON CONFLICT (key) DO UPDATE SET
    request_hash = excluded.request_hash,
    status = excluded.status,
    response = excluded.response,
    created_at = excluded.created_at,
    pending_until = excluded.pending_until
WHERE idempotency_keys.created_at < ?6 OR idempotency_keys.pending_until <= ?5
RETURNING key
