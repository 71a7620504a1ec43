-- $1 message ids, $2 owner: each message's status, and whether a live claim of another owner
-- holds it (claim.sql).
SELECT id, status,
       coalesce(status IN ('queued', 'deferred') AND claimed_until > mailroom_now_ms()
                AND claimed_by IS DISTINCT FROM $2, false)
FROM messages
WHERE id = ANY($1)
