-- $1 id, $2 the event's detail: the message is cancelled, leaves the queue, and its history
-- says so. Run once cancel_lock.sql and cancel_state.sql have said it may be.
WITH cancelled AS (
    UPDATE messages SET status = 'cancelled', updated_at = mailroom_now_ms()
    WHERE id = $1
    RETURNING id
), dequeued AS (
    DELETE FROM queue WHERE message_id = $1
)
INSERT INTO events (message_id, at, kind, detail)
SELECT id, mailroom_now_ms(), 'cancelled', $2 FROM cancelled
