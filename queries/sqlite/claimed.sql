-- ?1 JSON array of message ids, ?2 owner, ?3 now: each message's status, and whether a live
-- claim of another owner holds it (claim.sql).
SELECT id, status,
       coalesce(status IN ('queued', 'deferred') AND claimed_until > ?3 AND claimed_by IS NOT ?2, false)
FROM messages
WHERE id IN (SELECT value FROM json_each(?1))
