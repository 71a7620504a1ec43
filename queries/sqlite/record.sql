-- ?1: JSON array of {id, status, at, attempts, error}. A delivered or archived message never
-- goes back to an unfinished status: that would be a stale worker whose lease ran out. A
-- cancelled one only becomes delivered or archived (an attempt already under way when it was
-- cancelled, on a queue that cannot withdraw it), never due again. A status change ends a
-- worker's claim (claim.sql): a deferred message can be cancelled until its next attempt. Only
-- a dead letter is queued again (a redrive), so two redrives at once queue it once; a stale
-- worker's late temporary failure does not make a dead letter due again (it would have no queue
-- row left, and be neither sent nor listed among the dead letters). A message is abandoned (its
-- request's push to SQS or Kafka failed) only while no worker holds a claim on it: a push that
-- reported a failure may have landed, and a claimed copy is being sent.
UPDATE messages AS m
SET status = t.status,
    updated_at = t.at,
    attempts = coalesce(t.attempts, m.attempts),
    last_error = coalesce(t.error, m.last_error),
    claimed_until = NULL
FROM (
    SELECT value ->> 'id' AS id, value ->> 'status' AS status, value ->> 'at' AS at,
           value ->> 'attempts' AS attempts, value ->> 'error' AS error
    FROM jsonb_each(?1)
) AS t
WHERE m.id = t.id
  AND NOT (m.status IN ('delivered', 'archived', 'cancelled')
           AND t.status NOT IN ('delivered', 'archived'))
  AND (t.status <> 'queued' OR m.status = 'dead')
  AND NOT (m.status = 'dead' AND t.status IN ('deferred', 'abandoned'))
  AND (t.status <> 'abandoned'
       OR (m.status IN ('queued', 'deferred') AND coalesce(m.claimed_until, 0) <= t.at))
RETURNING id
