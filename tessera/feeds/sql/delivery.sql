-- The delivery mechanism (tessera.feeds.delivery). delivery_batches: one row per batch
-- ever queued for an HTTP destination; the body is kept only until it is acknowledged.
-- delivery_attempts: one row per HTTP attempt (status, error class, wait asked for).
CREATE TABLE IF NOT EXISTS exports.delivery_batches (
    batch_id VARCHAR NOT NULL, destination VARCHAR NOT NULL, source VARCHAR NOT NULL,
    as_of_date DATE, seq INTEGER NOT NULL, records INTEGER NOT NULL, content_type VARCHAR NOT NULL,
    body VARCHAR, body_sha256 VARCHAR NOT NULL, status VARCHAR NOT NULL,
    queued_at TIMESTAMP NOT NULL, delivered_at TIMESTAMP);

CREATE TABLE IF NOT EXISTS exports.delivery_attempts (
    batch_id VARCHAR NOT NULL, destination VARCHAR NOT NULL, attempt INTEGER NOT NULL,
    started_at TIMESTAMP NOT NULL, duration_ms DOUBLE NOT NULL, http_status INTEGER,
    outcome VARCHAR NOT NULL, error VARCHAR, wait_s DOUBLE);

-- delivery_batch_subjects: which customer each record of a batch is about (its position
-- in the batch), so that an erasure can drop their records from a body not acknowledged
-- yet (tessera.feeds.delivery.scrub_erased_batches). Deliberately not named customer_id:
-- `forget` deletes customer_id rows in its own transaction, before the bodies are scrubbed.
CREATE TABLE IF NOT EXISTS exports.delivery_batch_subjects (
    destination VARCHAR NOT NULL, batch_id VARCHAR NOT NULL, record INTEGER NOT NULL,
    subject_id BIGINT NOT NULL);
