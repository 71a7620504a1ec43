-- A message's history: its acceptance, read from the message row (seq 0 sorts it first), then the
-- stored events in the order they happened. Releases before this one stored the `accepted` event
-- as a row; where that row exists it is the one shown, so no migration has to delete it (and a
-- rollback to such a release reads what it expects).
SELECT at, kind, detail FROM (
    SELECT 0 AS seq, accepted_at AS at, 'accepted' AS kind, NULL AS detail
    FROM messages
    WHERE id = ?1
      AND NOT EXISTS (SELECT 1 FROM events WHERE message_id = ?1 AND kind = 'accepted')
    UNION ALL
    SELECT seq, at, kind, detail FROM events WHERE message_id = ?1
) AS history
ORDER BY seq
