-- ?1 now: the messages due (or leased, or delayed for a retry) and the oldest of them; and those
-- waiting for their send_at, which count as enqueued from then (insert.sql).
SELECT count(*) FILTER (WHERE enqueued_at <= ?1),
       min(enqueued_at) FILTER (WHERE enqueued_at <= ?1),
       count(*) FILTER (WHERE enqueued_at > ?1)
FROM queue
