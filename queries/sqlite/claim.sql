-- ?1 JSON array of message ids, ?2 until (Unix ms): a worker that took these messages from an
-- external queue (SQS, Kafka) claims the ones not sent yet before sending them; a cancel refuses
-- a claimed message (cancel_state.sql). The single writer runs this and statuses.sql in one
-- transaction, so the statuses it answers are the ones the claim saw.
UPDATE messages SET claimed_until = ?2
WHERE id IN (SELECT value FROM json_each(?1)) AND status IN ('queued', 'deferred')
