SELECT at, kind, detail FROM events WHERE message_id = $1 ORDER BY seq
