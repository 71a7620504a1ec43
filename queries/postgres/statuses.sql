SELECT id, status FROM messages WHERE id = ANY($1)
