SELECT count(*), min(enqueued_at) FROM queue
