SELECT status, count(*) FROM messages GROUP BY status
