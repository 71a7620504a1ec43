-- $1 id: the message's status, its row locked until the cancel commits.
SELECT status FROM messages WHERE id = $1 FOR UPDATE
