-- The feeds' bookkeeping. feed_erasure_notices: which erased customers each feed has
-- announced, and in which day's delivery (pseudonymous ids only: `forget` never deletes
-- from it). feed_deliveries: one row per feed and day delivered.
CREATE TABLE IF NOT EXISTS exports.feed_erasure_notices (
    feed VARCHAR NOT NULL, erased_customer BIGINT NOT NULL, as_of_date DATE NOT NULL);

CREATE TABLE IF NOT EXISTS exports.feed_deliveries (
    feed VARCHAR NOT NULL, as_of_date DATE NOT NULL, file VARCHAR NOT NULL, rows BIGINT NOT NULL,
    sha256 VARCHAR NOT NULL, written_at TIMESTAMP NOT NULL);

-- feed_files: every file of a delivered day (full / deletions, or added / changed /
-- removed), its rows and checksum, and the day the diff was taken against.
CREATE TABLE IF NOT EXISTS exports.feed_files (
    feed VARCHAR NOT NULL, as_of_date DATE NOT NULL, kind VARCHAR NOT NULL, file VARCHAR NOT NULL,
    rows BIGINT NOT NULL, sha256 VARCHAR NOT NULL, previous_delivery DATE);


-- feed_selections: the digest of the selection (SQL) each day was delivered with; a diff
-- day reuses the base day's rows only if it is the same (tessera.feeds.changes).
CREATE TABLE IF NOT EXISTS exports.feed_selections (
    feed VARCHAR NOT NULL, as_of_date DATE NOT NULL, selection_key VARCHAR NOT NULL);

-- feed_definitions: each feed's definition (feeds.yaml, as JSON) as last delivered, so that
-- `forget` can still scrub the kept files of a feed removed from the configuration.
CREATE TABLE IF NOT EXISTS exports.feed_definitions (
    feed VARCHAR NOT NULL, definition VARCHAR NOT NULL, as_of_date DATE NOT NULL);
