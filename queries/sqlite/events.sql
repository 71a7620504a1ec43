-- A message's history: its acceptance (from the message row, seq 0 sorts it first), then the
-- stored events in the order they happened.
SELECT at, kind, detail FROM (
    SELECT 0 AS seq, accepted_at AS at, 'accepted' AS kind, NULL AS detail
    FROM messages WHERE id = ?1
    UNION ALL
    SELECT seq, at, kind, detail FROM events WHERE message_id = ?1
) AS history
ORDER BY seq
