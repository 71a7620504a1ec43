-- A message's `accepted` event is read from messages.accepted_at (queries/sqlite/events.sql)
-- instead of being stored as an event row: two fewer b-tree inserts per accepted message. The
-- rows written before this migration would otherwise show the event twice.
DELETE FROM events WHERE kind = 'accepted';
