-- A message's `accepted` event is read from messages.accepted_at (queries/postgres/events.sql)
-- instead of being stored as an event row: two fewer index and table inserts per accepted message. The
-- rows written before this migration would otherwise show the event twice.
DELETE FROM events WHERE kind = 'accepted';
