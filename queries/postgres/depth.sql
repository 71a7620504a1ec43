-- The messages due (or leased, or delayed for a retry) and the oldest of them; the database's
-- now; and those waiting for their send_at, which count as enqueued from then (enqueue.sql).
WITH now AS (SELECT mailroom_now_ms() AS ms)
SELECT count(*) FILTER (WHERE q.enqueued_at <= now.ms),
       min(q.enqueued_at) FILTER (WHERE q.enqueued_at <= now.ms),
       now.ms,
       count(*) FILTER (WHERE q.enqueued_at > now.ms)
FROM now LEFT JOIN queue q ON true
GROUP BY now.ms
