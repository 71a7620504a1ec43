SELECT id, status FROM messages WHERE id IN (SELECT value FROM json_each(?1))
