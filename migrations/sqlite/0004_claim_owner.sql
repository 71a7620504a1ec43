-- Which pull of which worker holds a message's claim (claimed_until): SQS and Kafka deliver at
-- least once, and a second copy of a message taken while the first is being sent is set aside
-- instead of claimed and sent too. Releases before it ignore the column.
ALTER TABLE messages ADD COLUMN claimed_by TEXT;
