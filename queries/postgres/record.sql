-- A delivered or archived message never goes back to an unfinished status: that would be a
-- stale worker whose lease ran out. A cancelled one only becomes delivered or archived (an
-- attempt already under way when it was cancelled, on a queue that cannot withdraw it). A status
-- change ends a worker's claim (claim.sql): a deferred message can be cancelled until its next
-- attempt. Only a dead letter is queued again (a redrive), so two redrives at once queue it once;
-- a stale worker's late temporary failure does not make a dead letter due again (it would have no
-- queue row left, and be neither sent nor listed among the dead letters). A message is abandoned
-- (its request's push to SQS or Kafka failed) only while no worker holds a claim on it (by the
-- database's clock, as claim.sql sets it): a push that reported a failure may have landed, and a
-- claimed copy is being sent.
-- $1 id, $2 status, $3 at, $4 attempts or NULL, $5 error or NULL
UPDATE messages
SET status = $2, updated_at = $3, attempts = coalesce($4, attempts), last_error = coalesce($5, last_error),
    claimed_until = NULL
WHERE id = $1
  AND NOT (status IN ('delivered', 'archived', 'cancelled') AND $2 NOT IN ('delivered', 'archived'))
  AND ($2 <> 'queued' OR status = 'dead')
  AND NOT (status = 'dead' AND $2 IN ('deferred', 'abandoned'))
  AND ($2 <> 'abandoned'
       OR (status IN ('queued', 'deferred') AND coalesce(claimed_until, 0) <= mailroom_now_ms()))
RETURNING id
