SELECT count(*), min(enqueued_at), mailroom_now_ms() FROM queue
