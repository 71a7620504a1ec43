-- $1 message ids, $2 now, $3 why: the messages of a request whose process died while the queue
-- was taking them, sent again under the same Idempotency-Key. A copy the queue did take is then
-- dropped unsent by the worker that receives it, and the new request's copy is the only one. A
-- message being sent right now (claimed) or already sent is left as it is. Claims are stamped
-- by the database's clock (claim.sql), so they are compared with it, not with this host's.
UPDATE messages
SET status = 'abandoned', updated_at = $2, last_error = $3
WHERE id = ANY($1)
  AND status IN ('queued', 'deferred')
  AND coalesce(claimed_until, 0) <= mailroom_now_ms()
RETURNING id
