-- ?1 JSON array of message ids, ?2 until (Unix ms), ?3 owner (one pull of one worker), ?4 now:
-- a worker that took these messages from an external queue (SQS, Kafka) claims the ones not
-- sent yet before sending them; a cancel refuses a claimed message (cancel_state.sql). A live
-- claim of another owner stays: another copy of the message is being sent. The single writer
-- runs this and claimed.sql in one transaction, so what it answers is what the claim saw.
UPDATE messages SET claimed_until = ?2, claimed_by = ?3
WHERE id IN (SELECT value FROM json_each(?1)) AND status IN ('queued', 'deferred')
  AND (claimed_until IS NULL OR claimed_until <= ?4 OR claimed_by = ?3)
