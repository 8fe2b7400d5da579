-- Company users left unlinked, with the reason (ids only).
CREATE TABLE IF NOT EXISTS ops.unlinked_company_users (
    source VARCHAR NOT NULL, source_record_id VARCHAR NOT NULL, reason VARCHAR NOT NULL,
    detected_at TIMESTAMP NOT NULL);
