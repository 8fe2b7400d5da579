"""Versions of the day's inputs, so that a backfill of day D sees what the run of D saw.

Why versions of these tables and not of raw alone: raw is already append-only with its
load batch, but identity, golden records, consent and the card are rebuilt from it each
run and keep stable ids by looking at the previous run's result. Re-deriving a past day
from raw would have to replay that chain of runs; storing what the chain produced is
exact and costs only what changed. Each run of the newest day (the forward run) stores,
for every table the partitioned stages read (:data:`DAY_INPUTS`), the rows that appeared
since the previous recorded day (``history.<schema>__<table>``, partition ``_from``)
and the ones that went away (``history.<schema>__<table>__closed``, partition ``_to``).
A row is identified by a 64-bit hash of its values and a copy number (so identical rows
keep their multiplicity); both writes are ``replace_partition`` of the day, so a re-run
of the newest day replaces its version. A run of an earlier day (a backfill) writes
nothing here: :func:`day_engine` hands its stages an engine that reads every input as it
was on that day. Erasures are never undone: ``tessera forget`` deletes the person's rows
from the ``history`` schema too, and ``ops.erasures`` and erasure suppressions are read
as they are now.
"""

from __future__ import annotations

import datetime as dt

from tessera.engine import Engine, SqlStep
from tessera.engine.dialect import hash64
from tessera.engine.overlay import OverlayEngine
from tessera.history import changes

SCHEMA = "history"

# Every current-state table a partitioned stage reads (RFM, scores, stages, segments,
# predictions, recommendations, feeds, the potential-companies export). A table a
# deployment lacks is skipped.
DAY_INPUTS: tuple[str, ...] = (
    "marts.contact_cards", "core.customers", "core.orders", "core.events", "core.bounce_status",
    "core.company_contacts", "core.companies", "core.potential_companies",
    "core.potential_unsubscribes", "staging.order_lines", "staging.products",
    "staging.unsubscribes", "staging.potential_companies",
    "ops.potential_unsubscribe_decisions", "ops.suppressions", "marketing.segment_overrides",
)

# Columns that record when a run rebuilt a row, not what it says: left out of a row's
# identity, or every row would be a new version every day.
VOLATILE = frozenset({"golden_built_at", "resolved_at"})

# Identical rows are numbered 1..n, so a row's identity (hash, copy) keeps multiplicity.
COPY_NUMBER = "row_number() OVER (PARTITION BY _row_hash ORDER BY _row_hash)"

# Suppressions of these channels hold on every day, past ones included (erasure).
ALWAYS_IN_FORCE = "channel = 'all'"


class NotRecorded(RuntimeError):
    """A past day before the first recorded one: what the platform knew then was not kept."""


def history_table(table: str) -> str:
    return f"{SCHEMA}.{table.replace('.', '__')}"


def _exists(engine: Engine, table: str) -> bool:
    schema, name = table.split(".")
    return engine.table_exists(schema, name)


def _columns(engine: Engine, table: str) -> list[str]:
    return list(engine.arrow(SqlStep("history.columns", f"SELECT * FROM {table} LIMIT 0")).schema.names)


def _q(column: str) -> str:
    return '"' + column.replace('"', '""') + '"'


def _ensure_days(engine: Engine) -> None:
    engine.run(SqlStep("history.schema", f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}"),
               SqlStep("history.days_table", f"""CREATE TABLE IF NOT EXISTS {SCHEMA}.days (
                   as_of_date DATE, run_id VARCHAR, tables BIGINT, opened BIGINT, closed BIGINT,
                   recorded_at TIMESTAMP)"""),
               SqlStep("history.runs_table", f"""CREATE TABLE IF NOT EXISTS {SCHEMA}.runs (
                   run_id VARCHAR, as_of_date DATE, backfill BOOLEAN, started_at TIMESTAMP)"""))


def _record_run(engine: Engine, run_id: str, day: dt.date, backfill: bool, now: dt.datetime) -> None:
    """Which day each run was for, and whether it was a backfill (the run history's key)."""
    engine.replace_partition(f"{SCHEMA}.runs", {"run_id": run_id}, SqlStep("history.run", (
        "SELECT $run, CAST($day AS DATE), $backfill, CAST($now AS TIMESTAMP)"),
        {"run": run_id, "day": day, "backfill": backfill, "now": now}))


def recorded_days(engine: Engine) -> list[dt.date]:
    """The days a forward run recorded, oldest first."""
    if not engine.table_exists(SCHEMA, "days"):
        return []
    return [r[0] for r in engine.rows(SqlStep(
        "history.recorded_days", f"SELECT as_of_date FROM {SCHEMA}.days ORDER BY 1"))]


def _state_sql(table: str, cols: list[str], op: str, day: str) -> str:
    """The rows of ``table``'s history in force at ``day`` (``op`` ``<=``) or just before it
    (``<``); ``day`` is a parameter or a literal."""
    hist = history_table(table)
    select = ", ".join(cols)
    return (f"SELECT {select} FROM {hist} h WHERE h._from {op} {day} AND NOT EXISTS ("
            f"SELECT 1 FROM {hist}__closed x WHERE x._row_hash = h._row_hash AND x._copy = h._copy "
            f"AND x._from = h._from AND x._to {op} {day})")


def _ensure_history(engine: Engine, table: str, cols: list[str]) -> list[str]:
    """Create ``table``'s history tables, or add the columns it gained; returns the history
    table's columns in order."""
    hist = history_table(table)
    keyed = [c for c in cols if c not in VOLATILE] or cols
    if not _exists(engine, hist):
        engine.replace_table(hist, SqlStep("history.create", (
            f"SELECT *, {hash64(*map(_q, keyed))} AS _row_hash, CAST(1 AS BIGINT) AS _copy, "
            f"CAST(NULL AS DATE) AS _from FROM {table} WHERE 1 = 0")))
        engine.replace_table(f"{hist}__closed", SqlStep("history.create_closed", (
            f"SELECT _row_hash, _copy, _from, _from AS _to FROM {hist} WHERE 1 = 0")))
    have = _columns(engine, hist)
    new = [c for c in cols if c not in have]
    if new:  # typed NULLs for the earlier versions, from an empty join with the table
        engine.replace_table(hist, SqlStep("history.add_columns", (
            f"SELECT h.*, {', '.join('n.' + _q(c) for c in new)} FROM {hist} h "
            f"LEFT JOIN (SELECT {', '.join(map(_q, new))} FROM {table} WHERE 1 = 0) n ON 1 = 0")))
        have = _columns(engine, hist)
    return have


def _record_table(engine: Engine, table: str, day: dt.date, keys: str | None = None) -> tuple[int, int]:
    """Store the rows of ``table`` that appeared since the previous version, and close the
    ones that went away.

    Each row's identity (hash of its values, copy number) and the previous version's
    identities are computed once, narrow, into temporary tables that both writes read:
    computed in each write, the hash and the copy-number window over 50 M events ran
    twice a day. The new rows' values are read back from the table by row id. ``keys``:
    the keys the table's builds rewrote since the previous version (its change log,
    :mod:`tessera.history.changes`); only their rows are compared, on both sides.
    """
    cols = _columns(engine, table)
    hist = history_table(table)
    have = _columns(engine, hist)
    keyed = [c for c in cols if c not in VOLATILE] or cols
    now_where = before_where = ""
    if keys is not None:
        now_where = f" WHERE {changes.key_filter(table, 't')}"
        before_where = f" AND {changes.key_filter(table, 'h')}"
    engine.run(
        SqlStep("history.numbered", (
            f"CREATE OR REPLACE TEMP TABLE _hist_now AS SELECT _rid, _row_hash, {COPY_NUMBER} AS _copy "
            f"FROM (SELECT rowid AS _rid, {hash64(*map(_q, keyed))} AS _row_hash FROM {table} t{now_where})")),
        SqlStep("history.before", (
            "CREATE OR REPLACE TEMP TABLE _hist_before AS "
            + _state_sql(table, ["h._row_hash", "h._copy", "h._from"], "<", "$day") + before_where),
                {"day": day}))
    try:
        # the rows on one side only, in one join of both identities (two anti-joins built a
        # hash table of 50 M events twice: 8.6 s -> 5.6 s measured)
        engine.run(SqlStep("history.diff", (
            "CREATE OR REPLACE TEMP TABLE _hist_diff AS "
            "SELECT n._rid, coalesce(n._row_hash, b._row_hash) AS _row_hash, coalesce(n._copy, b._copy) AS _copy, "
            "b._from AS _was_from, n._row_hash IS NOT NULL AS _opened "
            "FROM _hist_now n FULL OUTER JOIN _hist_before b ON b._row_hash = n._row_hash AND b._copy = n._copy "
            "WHERE n._row_hash IS NULL OR b._row_hash IS NULL")))
        out = [("$day" if c == "_from" else (f"t.{_q(c)}" if c in cols else
                                               f"n.{_q(c)}" if c in ("_row_hash", "_copy") else "NULL"))
               + f" AS {_q(c)}" for c in have]
        opened = engine.replace_partition(hist, {"_from": day}, SqlStep("history.opened", (
            f"SELECT {', '.join(out)} FROM (SELECT * FROM _hist_diff WHERE _opened) n "
            f"JOIN {table} t ON t.rowid = n._rid"), {"day": day}))
        closed = engine.replace_partition(f"{hist}__closed", {"_to": day}, SqlStep("history.closed", (
            "SELECT _row_hash, _copy, _was_from AS _from, $day AS _to FROM _hist_diff WHERE NOT _opened"),
            {"day": day}))
    finally:
        engine.run(SqlStep("history.drop_now", "DROP TABLE IF EXISTS _hist_now"),
                   SqlStep("history.drop_before", "DROP TABLE IF EXISTS _hist_before"),
                   SqlStep("history.drop_diff", "DROP TABLE IF EXISTS _hist_diff"))
    return opened, closed


def _count_difference(engine: Engine, table: str, day: dt.date) -> int:
    """Rows of ``table`` less the rows ``day``'s version holds, counted as the rows opened
    by then less those closed by then: two counts over the days' partitions instead of
    the anti-join a backfill reads (11 s a day on 50 M events); a lost or extra opening
    or closing shows as a difference."""
    hist = history_table(table)
    return int(engine.scalar(SqlStep("history.count_mismatch", (
        f"SELECT (SELECT count(*) FROM {table}) - (SELECT count(*) FROM {hist} WHERE _from <= $day) "
        f"+ (SELECT count(*) FROM {hist}__closed WHERE _to <= $day)"), {"day": day})) or 0)


def record_day(engine: Engine, day: dt.date, run_id: str, now: dt.datetime) -> dict:
    """Store the day's version of every input (a forward run), or nothing for a day before
    the newest recorded one (a backfill reads the recorded versions instead)."""
    _ensure_days(engine)
    days = recorded_days(engine)
    if days and day < days[-1]:
        _record_run(engine, run_id, day, True, now)
        return {"recorded": False, "backfill": True, "latest_recorded": days[-1],
                "version_of": _version_day(days, day), "tables": {}}
    tables: dict[str, dict] = {}
    inputs = [t for t in DAY_INPUTS if _exists(engine, t)]
    # The history tables are created (or widened) before, not inside, the transaction that
    # fills them: DuckDB 2.0.0 answered GROUP BY over a table created and filled with more
    # than one row group in one transaction with no rows at all (measured).
    for table in inputs:
        _ensure_history(engine, table, _columns(engine, table))
    previous = max((d for d in days if d < day), default=None)
    with engine.together():
        _record_run(engine, run_id, day, False, now)
        for table in inputs:
            keys = changes.keys_since(engine, table, previous) if table in changes.LOGS else None
            opened, closed = _record_table(engine, table, day, keys)
            if keys is not None and _count_difference(engine, table, day):
                keys = None  # a write no build logged: compare every row
                opened, closed = _record_table(engine, table, day)
            tables[table] = {"opened": opened, "closed": closed}
            if table in changes.LOGS:
                tables[table]["by_change_log"] = keys is not None
                changes.mark(engine, table, day)
                if previous is not None:
                    changes.prune(engine, table, previous)
        engine.run(SqlStep("history.drop_keys", "DROP TABLE IF EXISTS _hist_keys"))
        engine.replace_partition(f"{SCHEMA}.days", {"as_of_date": day}, SqlStep("history.day", (
            "SELECT CAST($day AS DATE), $run, CAST($tables AS BIGINT), CAST($opened AS BIGINT), "
            "CAST($closed AS BIGINT), CAST($now AS TIMESTAMP)"),
            {"day": day, "run": run_id, "tables": len(tables), "now": now,
             "opened": sum(t["opened"] for t in tables.values()),
             "closed": sum(t["closed"] for t in tables.values())}))
    return {"recorded": True, "backfill": False, "latest_recorded": day, "version_of": day,
            "tables": tables}


def version_mismatches(engine: Engine, exact: bool = True) -> dict[str, int] | None:
    """Rows that differ between each input table and its newest recorded version (0 when
    the version reads back exactly); None when the newest run of the history asset was a
    backfill (the tables may have moved on since the newest recorded day). ``exact=False``
    compares row counts only (no hashing of the tables: the daily check at scale)."""
    if not engine.table_exists(SCHEMA, "runs"):
        return None
    last = engine.rows(SqlStep("history.last_run", f"""
        SELECT backfill FROM {SCHEMA}.runs ORDER BY started_at DESC, run_id DESC LIMIT 1"""))
    days = recorded_days(engine)
    if not last or last[0][0] or not days:
        return None
    out = {}
    for table in DAY_INPUTS:
        if not (_exists(engine, table) and _exists(engine, history_table(table))):
            continue
        if not exact:
            out[table] = abs(_count_difference(engine, table, days[-1]))
            continue
        cols = _columns(engine, table)
        keyed = [c for c in cols if c not in VOLATILE] or cols
        out[table] = int(engine.scalar(SqlStep("history.mismatches", f"""
            WITH cur AS (SELECT {hash64(*map(_q, keyed))} AS _row_hash FROM {table}),
            numbered AS (SELECT _row_hash, {COPY_NUMBER} AS _copy FROM cur),
            ver AS ({_state_sql(table, ['h._row_hash', 'h._copy'], '<=', '$day')}),
            a AS (SELECT * FROM numbered EXCEPT SELECT * FROM ver),
            b AS (SELECT * FROM ver EXCEPT SELECT * FROM numbered)
            SELECT (SELECT count(*) FROM a) + (SELECT count(*) FROM b)""", {"day": days[-1]})))
    return out


def _version_day(days: list[dt.date], day: dt.date) -> dt.date:
    """The recorded day whose version holds on ``day`` (the last one on or before it)."""
    earlier = [d for d in days if d <= day]
    if not earlier:
        raise NotRecorded(
            f"{day} is before the first recorded day ({days[0]}): what the platform knew then "
            "was not kept, so it cannot be rebuilt as of that day")
    return earlier[-1]


def relations(engine: Engine, day: dt.date) -> dict[str, str]:
    """``schema.table`` -> the SELECT of its rows in force at the end of ``day``."""
    literal = f"DATE '{day.isoformat()}'"
    out = {}
    for table in DAY_INPUTS:
        if not (_exists(engine, table) and _exists(engine, history_table(table))):
            continue
        cols = _columns(engine, table)
        have = set(_columns(engine, history_table(table)))
        select = [f"h.{_q(c)}" if c in have else f"NULL AS {_q(c)}" for c in cols]
        sql = _state_sql(table, select, "<=", literal)
        if table == "ops.suppressions":  # erasures hold on every day
            sql += (f" UNION ALL SELECT {', '.join(map(_q, cols))} FROM ops.suppressions "
                    f"WHERE {ALWAYS_IN_FORCE}")
        out[table] = sql
    return out


def day_engine(engine: Engine, day: dt.date) -> Engine:
    """The engine a partitioned stage of ``day`` should use: ``engine`` itself for the
    newest recorded day (or when nothing is recorded), else one that reads every input
    as it was at the end of ``day``. Raises :class:`NotRecorded` before the first day."""
    days = recorded_days(engine)
    if not days or day >= days[-1]:
        return engine
    _version_day(days, day)
    return OverlayEngine(engine, relations(engine, day))
