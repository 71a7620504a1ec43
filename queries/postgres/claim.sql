-- $1 message ids, $2 claim length (ms), $3 owner (one pull of one worker): a worker that took
-- these messages from an external queue (SQS, Kafka) claims the ones not sent yet before
-- sending them; a cancel refuses a claimed message (cancel_state.sql). A live claim of another
-- owner stays: another copy of the message is being sent. Returns the claimed ones with their
-- status. A row another transaction holds locked (a cancel, another claim) is claimed (or not)
-- once that one has committed, with what it left.
UPDATE messages SET claimed_until = mailroom_now_ms() + $2, claimed_by = $3
WHERE id = ANY($1) AND status IN ('queued', 'deferred')
  AND (claimed_until IS NULL OR claimed_until <= mailroom_now_ms() OR claimed_by = $3)
RETURNING id, status
