SELECT id, status, attempts, updated_at, last_error, payload FROM messages WHERE id = $1
