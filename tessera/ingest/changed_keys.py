"""Incremental staging: rewrite only the records whose raw versions changed, and name them.

Why this is exact: a staging row is the latest raw version of *one* key
(``_latest_union``'s window is per ``source_record_id``) put through row-local
normalisation, so recomputing a key from all of its raw versions gives the row a full
rebuild gives. A key can only change when a version of it arrives (raw is append-only
between erasures: ingestion inserts new and updated versions, stamped ``_file_seq``), so
the keys to recompute are those with a raw row from a file loaded after the last
build's watermark (``_file_seq``: every loaded file takes the next number of the file
ledger, so a later file always has a higher one). Everything that could change a row without a new raw version forces a full
rebuild instead (``_full_reason``): a different staging SQL (mappings, contracts, junk
lists, normalisation tables: the statement's digest), a new source, raw rows removed or
back-dated (the count of rows before the watermark moved), an erasure, and, for contact
records, a pending or new soft delete / restore (the held-version filter reads the
previous run's identity map).

Each run writes what changed to ``ops.changed_keys`` (new / changed / deleted, by a
64-bit digest of the whole row against the stored row), in incremental and full mode
alike, so later stages can work from them; a first build (no table before) writes no
row per key (every key is new: ``ops.staging_state.mode`` says so), and keys recorded
more than 30 days before the run are dropped. Full mode costs two extra hashings of the
table; with ``incremental: false`` none of this runs (staging as before).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from dataclasses import dataclass
from typing import Callable

from tessera.engine import Engine, SqlStep
from tessera.engine.dialect import hash64
from tessera.engine.warehouse import sql_literal
from tessera.privacy.consent import BULK_EDITS_DDL, SOFT_DELETED_SQL

# Bump when the mechanism itself changes: every stored state becomes stale (full day).
MECHANISM = "1"

STATE_DDL = """
CREATE TABLE IF NOT EXISTS ops.staging_state (
    staging_table VARCHAR   NOT NULL,
    source        VARCHAR   NOT NULL,
    sql_digest    VARCHAR   NOT NULL,   -- sha-256 of the full staging statement
    watermark     BIGINT,               -- max(_file_seq) of the source's raw rows at the build
    rows_before   BIGINT    NOT NULL,   -- raw rows at or below the watermark then
    built_at      TIMESTAMP NOT NULL,
    mode          VARCHAR   NOT NULL,   -- incremental | full
    reason        VARCHAR,              -- why the build was full
    run_id        VARCHAR               -- the run that built it (its checks judge its rows)
)"""
# a warehouse made before the run id was recorded gains it (its rows: NULL, so full checks)
STATE_RUN_ID = "ALTER TABLE ops.staging_state ADD COLUMN IF NOT EXISTS run_id VARCHAR"

CHANGED_DDL = """
CREATE TABLE IF NOT EXISTS ops.changed_keys (
    run_id            VARCHAR   NOT NULL,
    entity            VARCHAR   NOT NULL,
    source            VARCHAR   NOT NULL,
    source_record_id  VARCHAR   NOT NULL,
    change            VARCHAR   NOT NULL,   -- new | changed | deleted
    recorded_at       TIMESTAMP NOT NULL
)"""

# Around the soft-delete hold in a staging statement (``staging._held_filter``): left out
# of the digest, since _full_reason makes every build with a soft delete in play full.
HELD_OPEN, HELD_CLOSE = "/* held */ ", " /* end held */ "

# The restriction a staging statement puts on raw.<source> for an incremental build.
KEYS_TABLE = "_stg_keys"


@dataclass(frozen=True)
class ChangeRun:
    """The run a staging build belongs to: its id (the key of ``ops.changed_keys``) and clock."""

    run_id: str
    now: dt.datetime


def restrict_raw(source_name: str, keys: str | None) -> str:
    """``raw.<source>`` as a staging statement reads it: all of it, or only the keys in ``keys``."""
    if keys is None:
        return f"raw.{source_name}"
    return (f"(SELECT * FROM raw.{source_name} WHERE source_record_id IN "
            f"(SELECT source_record_id FROM {keys} WHERE source = {sql_literal(source_name)}))")


def _digest(sql: str, params: dict) -> str:
    sql = re.sub(re.escape(HELD_OPEN) + ".*?" + re.escape(HELD_CLOSE), "", sql, flags=re.S)
    text = json.dumps([MECHANISM, sql, params], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def _q(col: str) -> str:
    return '"' + col.replace('"', '""') + '"'


def _row_hash(engine: Engine, table: str) -> str:
    cols = list(engine.columns(SqlStep("staging.incremental.columns", f"SELECT * FROM {table} LIMIT 0")))
    return hash64(*map(_q, cols))


def _full_reason(engine: Engine, table: str, sources: list[str], digest: str,
                 contact_records: bool) -> tuple[str | None, dict]:
    """Why this build must be full (None: it may be incremental), and the stored state."""
    schema, name = table.split(".")
    if not engine.table_exists(schema, name):
        return "no staging table yet", {}
    state = {r[0]: r[1:] for r in engine.rows(SqlStep("staging.incremental.state", """
        SELECT source, sql_digest, watermark, rows_before, built_at FROM ops.staging_state
        WHERE staging_table = $t""", {"t": table}))}
    if not state:
        return "no recorded state", {}
    if set(state) != set(sources):
        return "the sources changed", state
    if any(v[0] != digest for v in state.values()):
        return "the staging statement changed (configuration or contract)", state
    built_at = min(v[3] for v in state.values())
    for src, (_, wm, before, _) in state.items():
        now_before = engine.scalar(SqlStep("staging.incremental.rows_before",
                                           f"SELECT count(*) FROM raw.{src} WHERE _file_seq <= $wm",
                                           {"wm": wm})) if wm is not None else 0
        if now_before != before:
            return f"raw.{src} lost or gained rows before the last build", state
    if engine.table_exists("ops", "erasures") and engine.scalar(SqlStep(
            "staging.incremental.erasures", "SELECT count(*) FROM ops.erasures WHERE erased_at >= $b",
            {"b": built_at})):
        return "an erasure since the last build", state
    if contact_records:
        engine.run(SqlStep("staging.incremental.bulk_ddl", BULK_EDITS_DDL))
        if engine.scalar(SqlStep("staging.incremental.soft_deleted", f"SELECT count(*) FROM ({SOFT_DELETED_SQL})")):
            return "a soft delete is pending", state
        if engine.scalar(SqlStep("staging.incremental.bulk_edits", """
                SELECT count(*) FROM ops.bulk_edits
                WHERE action IN ('delete', 'restore') AND requested_at >= $b""", {"b": built_at})):
            return "a soft delete or restore since the last build", state
    return None, state


def stage(engine: Engine, table: str, entity: str, sources: list[str],
          make_sql: Callable[[str | None], str], params: dict, run: ChangeRun,
          contact_records: bool = False, force_full: str | None = None) -> dict:
    """Build ``table`` (``staging.<name>``) from ``make_sql`` incrementally where exact,
    record its changed keys; returns the mode, why, and the counts per change.

    ``make_sql(keys)`` is the table's full statement, reading each raw source through
    :func:`restrict_raw` (``keys``: a table of ``(source, source_record_id)`` or None).
    """
    engine.run(SqlStep("staging.incremental.state_ddl", STATE_DDL),
               SqlStep("staging.incremental.state_run_id", STATE_RUN_ID),
               SqlStep("staging.incremental.changed_ddl", CHANGED_DDL))
    full_sql = make_sql(None)
    digest = _digest(full_sql, params)
    reason, state = (force_full, {}) if force_full else _full_reason(
        engine, table, sources, digest, contact_records)
    key_cols = "source, source_record_id"
    first_build = None
    with engine.together():
        # a re-run replaces its run's keys; keys recorded more than 30 days ago go
        engine.run(SqlStep("staging.incremental.clear_run", """
            DELETE FROM ops.changed_keys WHERE entity = $entity
            AND (run_id = $run OR recorded_at < CAST($now AS TIMESTAMP) - INTERVAL 30 DAY)""",
                           {"run": run.run_id, "entity": entity, "now": run.now}))
        if reason is None:
            # the keys with a version loaded since the last build's watermark
            picks = " UNION ALL ".join(
                f"SELECT {sql_literal(s)} AS source, source_record_id FROM raw.{s} WHERE $wm_{i} IS NULL OR _file_seq > $wm_{i}"
                for i, s in enumerate(sources))
            wms = {f"wm_{i}": state[s][1] for i, s in enumerate(sources)}
            engine.run(SqlStep("staging.incremental.keys", f"""
                CREATE OR REPLACE TEMP TABLE {KEYS_TABLE} AS
                SELECT DISTINCT source, source_record_id FROM ({picks}) k""", wms))
            row = _row_hash(engine, table)
            engine.run(SqlStep("staging.incremental.next", f"""
                CREATE OR REPLACE TEMP TABLE _stg_next AS {make_sql(KEYS_TABLE)}""", params))
            engine.run(SqlStep("staging.incremental.changes", f"""
                INSERT INTO ops.changed_keys
                SELECT $run, $entity, coalesce(n.source, o.source), coalesce(n.source_record_id, o.source_record_id),
                       CASE WHEN o.source IS NULL THEN 'new' WHEN n.source IS NULL THEN 'deleted' ELSE 'changed' END,
                       CAST($now AS TIMESTAMP)
                FROM (SELECT {key_cols}, {row} AS _h FROM _stg_next) n
                FULL OUTER JOIN (SELECT t.source, t.source_record_id, {row} AS _h
                                 FROM {table} t JOIN {KEYS_TABLE} k USING ({key_cols})) o
                  ON n.source = o.source AND n.source_record_id = o.source_record_id
                WHERE n._h IS DISTINCT FROM o._h""",
                               {"run": run.run_id, "entity": entity, "now": run.now}))
            engine.run(SqlStep("staging.incremental.delete", f"""
                DELETE FROM {table} WHERE EXISTS (
                    SELECT 1 FROM ops.changed_keys c WHERE c.run_id = $run AND c.entity = $entity
                    AND c.source = {table}.source AND c.source_record_id = {table}.source_record_id)""",
                               {"run": run.run_id, "entity": entity}),
                       SqlStep("staging.incremental.insert", f"""
                INSERT INTO {table} SELECT n.* FROM _stg_next n WHERE EXISTS (
                    SELECT 1 FROM ops.changed_keys c WHERE c.run_id = $run AND c.entity = $entity
                    AND c.change <> 'deleted' AND c.source = n.source AND c.source_record_id = n.source_record_id)""",
                               {"run": run.run_id, "entity": entity}))
            considered = engine.scalar(SqlStep("staging.incremental.considered",
                                               f"SELECT count(*) FROM {KEYS_TABLE}"))
            engine.run(SqlStep("staging.incremental.drop", f"DROP TABLE IF EXISTS {KEYS_TABLE}"),
                       SqlStep("staging.incremental.drop_next", "DROP TABLE IF EXISTS _stg_next"))
        else:
            schema, name = table.split(".")
            had = engine.table_exists(schema, name)
            if had:
                engine.run(SqlStep("staging.incremental.before", f"""
                    CREATE OR REPLACE TEMP TABLE _stg_before AS
                    SELECT {key_cols}, {_row_hash(engine, table)} AS _h FROM {table}"""))
            engine.replace_table(table, SqlStep(f"{table}.full", full_sql, params))
            if had:
                engine.run(SqlStep("staging.incremental.full_changes", f"""
                    INSERT INTO ops.changed_keys
                    SELECT $run, $entity, coalesce(n.source, o.source), coalesce(n.source_record_id, o.source_record_id),
                           CASE WHEN o.source IS NULL THEN 'new' WHEN n.source IS NULL THEN 'deleted' ELSE 'changed' END,
                           CAST($now AS TIMESTAMP)
                    FROM (SELECT {key_cols}, {_row_hash(engine, table)} AS _h FROM {table}) n
                    FULL OUTER JOIN _stg_before o ON n.source = o.source AND n.source_record_id = o.source_record_id
                    WHERE n._h IS DISTINCT FROM o._h""", {"run": run.run_id, "entity": entity, "now": run.now}))
            else:
                # a first build: every key is new, which the state's mode says without a row
                # per key (50 M events would be 50 M rows)
                first_build = int(engine.scalar(SqlStep("staging.incremental.first_rows",
                                                        f"SELECT count(*) FROM {table}")))
            considered = None
            engine.run(SqlStep("staging.incremental.drop_before", "DROP TABLE IF EXISTS _stg_before"))
        # the watermark is the newest file this build has seen, per source
        engine.run(SqlStep("staging.incremental.state_clear",
                           "DELETE FROM ops.staging_state WHERE staging_table = $t", {"t": table}))
        for s in sources:
            engine.run(SqlStep("staging.incremental.state_write", f"""
                INSERT INTO ops.staging_state
                SELECT $t, {sql_literal(s)}, $digest, w.wm,
                       (SELECT count(*) FROM raw.{s} WHERE _file_seq <= w.wm), CAST($now AS TIMESTAMP), $mode, $reason,
                       $run
                FROM (SELECT max(_file_seq) AS wm FROM raw.{s}) w""",
                               {"t": table, "digest": digest, "now": run.now,
                                "mode": "full" if reason else "incremental", "reason": reason,
                                "run": run.run_id}))
    counts = dict(engine.rows(SqlStep("staging.incremental.counts", """
        SELECT change, count(*) FROM ops.changed_keys WHERE run_id = $run AND entity = $entity GROUP BY ALL""",
                                      {"run": run.run_id, "entity": entity})))
    out = {"staging_mode": "full" if reason else "incremental", "staging_full_reason": reason or "",
           "keys_new": first_build if first_build is not None else int(counts.get("new", 0)),
           "keys_changed": int(counts.get("changed", 0)), "keys_deleted": int(counts.get("deleted", 0))}
    if considered is not None:
        out["keys_recomputed"] = int(considered)
    return out
