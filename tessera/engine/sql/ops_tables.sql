-- Operational tables: what came in, what was refused and why.
-- Rejects never hold the refused value itself: it may be personal data.
CREATE TABLE IF NOT EXISTS ops.rejects (
    source            VARCHAR   NOT NULL,
    file              VARCHAR   NOT NULL,
    line              BIGINT,
    field             VARCHAR   NOT NULL,
    reason            VARCHAR   NOT NULL,
    source_record_id  VARCHAR,
    batch_id          VARCHAR   NOT NULL,
    rejected_at       TIMESTAMP NOT NULL
);

CREATE TABLE IF NOT EXISTS ops.import_report (
    source        VARCHAR   NOT NULL,
    file          VARCHAR   NOT NULL,
    batch_id      VARCHAR   NOT NULL,
    status        VARCHAR   NOT NULL,   -- loaded | empty | failed | duplicate_file
    records       BIGINT    NOT NULL,   -- records found in the file
    new           BIGINT    NOT NULL,
    updated       BIGINT    NOT NULL,
    unchanged     BIGINT    NOT NULL,
    rejected      BIGINT    NOT NULL,
    sha256        VARCHAR   NOT NULL,
    message       VARCHAR,
    loaded_at     TIMESTAMP NOT NULL
);

-- One row per distinct file content ever loaded: the same delivery twice changes nothing.
CREATE TABLE IF NOT EXISTS ops.file_ledger (
    source     VARCHAR   NOT NULL,
    sha256     VARCHAR   NOT NULL,
    file       VARCHAR   NOT NULL,
    bytes      BIGINT    NOT NULL,
    file_seq   BIGINT    NOT NULL,
    status     VARCHAR   NOT NULL,
    loaded_at  TIMESTAMP NOT NULL
);

-- The sha256 of a landing file as last read, under the file's stat (size, modification
-- and change times in ns, inode): a file whose stat is unchanged is not read again to
-- learn that it was loaded already (the day's 15 GB event file took 14 s to hash and
-- decode each day). The quick check of make, rsync and git's index; a scrub or a rebuild
-- forgets the file's row.
CREATE TABLE IF NOT EXISTS ops.file_stats (
    source     VARCHAR NOT NULL,
    file       VARCHAR NOT NULL,
    bytes      BIGINT  NOT NULL,
    mtime_ns   BIGINT  NOT NULL,
    ctime_ns   BIGINT  NOT NULL,
    inode      BIGINT  NOT NULL,
    sha256     VARCHAR NOT NULL
);

CREATE TABLE IF NOT EXISTS ops.sequences (
    name   VARCHAR PRIMARY KEY,
    value  BIGINT NOT NULL
);

-- Facts about how the stored data was made (e.g. which hash the record hashes are).
CREATE TABLE IF NOT EXISTS ops.warehouse_info (
    key    VARCHAR PRIMARY KEY,
    value  VARCHAR NOT NULL
);

CREATE TABLE IF NOT EXISTS ops.segment_runs (
    segment     VARCHAR NOT NULL,
    as_of_date  DATE    NOT NULL,
    members     BIGINT  NOT NULL,
    built_at    TIMESTAMP NOT NULL
);

-- Records dropped at ingestion because they carry an erased person's identifier.
ALTER TABLE ops.import_report ADD COLUMN IF NOT EXISTS suppressed BIGINT DEFAULT 0;

-- Batch-level expectations (great-expectations) per run: counts and percentages only,
-- never the unexpected values themselves (they are personal data).
CREATE TABLE IF NOT EXISTS ops.expectation_results (
    batch_id            VARCHAR   NOT NULL,
    table_name          VARCHAR   NOT NULL,
    expectation         VARCHAR   NOT NULL,
    column_name         VARCHAR,              -- NULL for table-level; columns joined by ',' for compound
    blocking            BOOLEAN   NOT NULL,
    success             BOOLEAN   NOT NULL,
    element_count       BIGINT,
    unexpected_count    BIGINT,
    unexpected_percent  DOUBLE,
    observed_value      DOUBLE,               -- numeric observations only (row count)
    expected            VARCHAR,              -- the bounds or threshold, e.g. 'mostly 0.5'
    validated_at        TIMESTAMP NOT NULL
);

-- The import report's "not imported", by reason: one row per file, run, field and reason.
-- A record refused for two reasons counts under both; reasons never hold values.
CREATE TABLE IF NOT EXISTS ops.import_reject_reasons (
    source    VARCHAR   NOT NULL,
    file      VARCHAR   NOT NULL,
    batch_id  VARCHAR   NOT NULL,
    field     VARCHAR   NOT NULL,
    reason    VARCHAR   NOT NULL,
    records   BIGINT    NOT NULL
);
