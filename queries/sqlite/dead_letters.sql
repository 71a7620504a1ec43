-- Messages dead-lettered now: a range of the status index, so the cost follows the dead letters,
-- not every message ever stored (a GROUP BY over all statuses read the whole table every 5 s).
SELECT count(*) FROM messages WHERE status = 'dead'
