-- Decisions on unsubscribe requests from potential companies: append-only, never rebuilt.
CREATE TABLE IF NOT EXISTS ops.potential_unsubscribe_decisions (
    request_source VARCHAR NOT NULL, request_id VARCHAR NOT NULL, decision VARCHAR NOT NULL,
    decided_at TIMESTAMP NOT NULL, origin VARCHAR NOT NULL);
