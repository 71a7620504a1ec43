-- A worker taking a message from an external queue (SQS, Kafka) claims it until this time (Unix
-- ms) before sending it, so a cancel meanwhile is refused instead of answered while the message
-- goes out anyway. A status change clears it. Releases before it ignore the column.
ALTER TABLE messages ADD COLUMN claimed_until INTEGER;
