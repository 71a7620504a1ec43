SELECT key, request_hash, status, response
FROM idempotency_keys
WHERE key = $1 AND created_at >= $2
