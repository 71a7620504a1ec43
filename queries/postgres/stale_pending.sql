-- $1 key, $2 now: the answer recorded with a key left pending past its time, its acceptance
-- having died while the queue was taking the messages (claim_idempotency.sql takes it over).
SELECT response FROM idempotency_keys WHERE key = $1 AND pending_until <= $2
