-- ?1 id, ?2 now, ?3 the event's detail: the message is cancelled, leaves the queue, and its
-- history says so. Run once cancel_state.sql has said it may be.
UPDATE messages SET status = 'cancelled', updated_at = ?2 WHERE id = ?1;
DELETE FROM queue WHERE message_id = ?1;
INSERT INTO events (message_id, at, kind, detail) VALUES (?1, ?2, 'cancelled', ?3);
