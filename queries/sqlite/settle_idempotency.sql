-- The queue took the messages this key guards: a retry with it is answered from the record.
-- ?1 key; ?2 status and ?3 response, the request's final answer when the queue took only some of
-- them (NULL: the recorded answer stands).
UPDATE idempotency_keys
SET pending_until = NULL, status = coalesce(?2, status), response = coalesce(?3, response)
WHERE key = ?1
