-- ?1 key, ?2 oldest created_at still valid
SELECT key, request_hash, status, response, pending_until
FROM idempotency_keys
WHERE key = ?1 AND created_at >= ?2
