"""Which rows a staging table's batch checks judge: the rows this run wrote, or all.

Why the written rows are enough on an incremental day: an incremental staging build
deletes and inserts exactly the keys it records in ``ops.changed_keys`` for the run (new
and changed; :mod:`tessera.ingest.changed_keys`), and every other row is the row the
previous build left. So when the check's previous verdict on the table passed, a key
can only repeat, or a key or a field only become empty, in a row this run wrote: the
check judges those (a repeat against the whole table, the batch expectations on the
written rows) instead of 50 M events every day. Anything else judges the whole table:
a full build, a table this run did not build, a first verdict, or a previous verdict
that failed (its fault may still be in the table). Each verdict is recorded in
``ops.staging_check_verdicts`` with its scope.
"""

from __future__ import annotations

import datetime as dt

import duckdb

from tessera.engine.warehouse import table_exists

VERDICTS_DDL = """
CREATE TABLE IF NOT EXISTS ops.staging_check_verdicts (
    staging_table VARCHAR   NOT NULL,
    check_name    VARCHAR   NOT NULL,
    run_id        VARCHAR   NOT NULL,
    scope         VARCHAR   NOT NULL,   -- written (the rows this run wrote) | table
    rows_judged   BIGINT,
    passed        BOOLEAN   NOT NULL,
    checked_at    TIMESTAMP NOT NULL
)"""


def written_keys(con: duckdb.DuckDBPyConnection, table: str, entity: str, run_id: str,
                 check: str) -> str | None:
    """A select of the keys (``source``, ``source_record_id``) this run's incremental
    build of ``table`` wrote, when ``check`` may judge those rows only; None: judge the
    whole table."""
    con.execute(VERDICTS_DDL)
    if not table_exists(con, "ops", "staging_state"):
        return None
    has_run = con.execute("SELECT count(*) FROM information_schema.columns WHERE table_schema = 'ops' "
                          "AND table_name = 'staging_state' AND column_name = 'run_id'").fetchone()[0]
    if not has_run:
        return None
    n, incremental = con.execute("""
        SELECT count(*), count(*) FILTER (WHERE mode = 'incremental' AND run_id = ?)
        FROM ops.staging_state WHERE staging_table = ?""", [run_id, table]).fetchone()
    if not n or n != incremental:
        return None
    last = con.execute("""
        SELECT passed FROM ops.staging_check_verdicts WHERE staging_table = ? AND check_name = ?
        ORDER BY checked_at DESC, run_id DESC LIMIT 1""", [table, check]).fetchone()
    if not last or not last[0]:
        return None
    run = run_id.replace("'", "''")
    ent = entity.replace("'", "''")
    return (f"SELECT DISTINCT source, source_record_id FROM ops.changed_keys WHERE run_id = '{run}' "
            f"AND entity = '{ent}' AND change <> 'deleted'")


def record_verdict(con: duckdb.DuckDBPyConnection, table: str, check: str, run_id: str,
                   scope: str, rows: int | None, passed: bool, now: dt.datetime | None = None) -> None:
    con.execute(VERDICTS_DDL)
    now = now or dt.datetime.now().replace(microsecond=0)
    con.execute("DELETE FROM ops.staging_check_verdicts WHERE staging_table = ? AND check_name = ? AND run_id = ?",
                [table, check, run_id])
    con.execute("INSERT INTO ops.staging_check_verdicts VALUES (?, ?, ?, ?, ?, ?, ?)",
                [table, check, run_id, scope, rows, passed, now])


def duplicate_keys(con: duckdb.DuckDBPyConnection, table: str, written: str | None) -> tuple[int, int | None]:
    """(keys held by more than one row, rows judged): over the whole table, or, with
    ``written``, the written keys looked for in the whole table (a written key that
    repeats an untouched row's is found too)."""
    if written is None:
        dupes = con.execute(f"""
            SELECT count(*) FROM (SELECT source, source_record_id FROM {table}
            GROUP BY ALL HAVING count(*) > 1)""").fetchone()[0]
        return int(dupes), None
    dupes, judged = con.execute(f"""
        WITH k AS ({written}),
        hits AS (SELECT t.source, t.source_record_id, count(*) AS n FROM {table} t
                 JOIN k ON k.source = t.source AND k.source_record_id = t.source_record_id
                 GROUP BY ALL)
        SELECT count(*) FILTER (WHERE n > 1), coalesce(sum(n), 0) FROM hits""").fetchone()
    return int(dupes), int(judged)
