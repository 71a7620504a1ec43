-- ?1 key, ?2 oldest created_at still valid, ?3 now: a key left pending past its time (its
-- acceptance died mid-push) no longer holds, as claim_idempotency.sql takes it over.
SELECT key, request_hash, status, response, pending_until, created_at
FROM idempotency_keys
WHERE key = ?1 AND created_at >= ?2 AND (pending_until IS NULL OR pending_until > ?3)
