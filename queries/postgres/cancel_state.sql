-- $1 id: the message's status, and whether a worker taking it from an external queue holds a
-- live claim on it (claim.sql): it may be being sent right now. The row stays locked until the
-- cancel commits, so a claim waits for it.
SELECT status, coalesce(claimed_until > mailroom_now_ms(), false)
FROM messages WHERE id = $1 FOR UPDATE
