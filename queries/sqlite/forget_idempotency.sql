DELETE FROM idempotency_keys WHERE key = ?1
