-- $1 message ids, $2 claim length (ms): a worker that took these messages from an external queue
-- (SQS, Kafka) claims the ones not sent yet before sending them; a cancel refuses a claimed
-- message (cancel_state.sql). Returns the claimed ones with their status. A row a cancel holds
-- locked is claimed (or not) once the cancel has committed, with the status it left.
UPDATE messages SET claimed_until = mailroom_now_ms() + $2
WHERE id = ANY($1) AND status IN ('queued', 'deferred')
RETURNING id, status
