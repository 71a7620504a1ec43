-- The queue took the messages this key guards: a retry with it is answered from the record.
UPDATE idempotency_keys SET pending_until = NULL WHERE key = ?1
