-- With an external queue (SQS, Kafka) a request's messages are committed with its idempotency
-- key before the queue takes them. Until this time (Unix ms) the acceptance may still be
-- pushing: a retry with the key is told to wait (409) instead of answered 202 for messages
-- that may yet be abandoned. Cleared once the queue took them; past it, the accepting process
-- is taken to have died mid-push and the key is claimed afresh. Releases before it ignore it.
ALTER TABLE idempotency_keys ADD COLUMN IF NOT EXISTS pending_until bigint;
