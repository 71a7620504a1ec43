-- ?1 id, ?2 now: the message's status, and whether a worker holds a live lease on its queue row
-- or, taking it from an external queue, a live claim on it (claim.sql): it may be being sent
-- right now. The single writer runs this and cancel.sql in one transaction, so nothing leases or
-- claims the message in between.
SELECT m.status,
       coalesce(m.claimed_until > ?2, false) OR EXISTS (
           SELECT 1 FROM queue q
           WHERE q.message_id = m.id AND q.lease_token IS NOT NULL AND q.available_at > ?2
       )
FROM messages m
WHERE m.id = ?1
