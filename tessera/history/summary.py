"""Run history: what each recorded day did, for ``tessera summary`` and the web page.

Why from the recorded versions: "customers new / updated" needs the previous day's
golden records, which only the versions keep (``history.core__customers``; a row's
identity leaves out when it was rebuilt, so an untouched customer is not "updated").
The rest comes from what the day's forward runs wrote: the import report (by batch =
run id), the merge log (by run key), erasures between the previous recorded day and
this one, segment entries and exits dated on the day, and the day's feed deliveries only.
Counts only, never personal data.
"""

from __future__ import annotations

import datetime as dt

from tessera.engine import Engine, SqlStep
from tessera.history.versions import SCHEMA, recorded_days

COLUMNS = ("as_of_date", "files_read", "files_failed", "rows_loaded", "rows_rejected",
           "customers", "customers_new", "customers_updated", "customers_merged",
           "customers_split", "customers_erased", "segment_entries", "segment_exits",
           "feeds", "feed_rows")


def _has(engine: Engine, table: str) -> bool:
    schema, name = table.split(".")
    return engine.table_exists(schema, name)


def days_step(engine: Engine, limit: int = 60) -> SqlStep:
    """One row per recorded day (newest first) with :data:`COLUMNS`."""
    parts = [f"""d AS (SELECT as_of_date, recorded_at,
                        lag(recorded_at) OVER (ORDER BY as_of_date) AS prev_at FROM {SCHEMA}.days),
                 r AS (SELECT run_id, as_of_date FROM {SCHEMA}.runs WHERE NOT backfill)"""]
    joins, cols = [], []

    def add(name: str, sql: str, select: list[str]) -> None:
        parts.append(f"{name} AS ({sql})")
        joins.append(f"LEFT JOIN {name} ON {name}.day = d.as_of_date")
        cols.extend(select)

    add("imp", """SELECT r.as_of_date AS day,
                    count(*) FILTER (WHERE status IN ('loaded', 'empty', 'failed')) AS files_read,
                    count(*) FILTER (WHERE status = 'failed') AS files_failed,
                    sum(new + updated + unchanged) AS rows_loaded, sum(rejected) AS rows_rejected
                  FROM ops.import_report i JOIN r ON r.run_id = i.batch_id GROUP BY 1""",
        ["files_read", "files_failed", "rows_loaded", "rows_rejected"])
    if _has(engine, f"{SCHEMA}.core__customers"):
        h = f"{SCHEMA}.core__customers"
        add("cu", f"""WITH first AS (SELECT customer_id, min(_from) AS first_day FROM {h} GROUP BY 1),
                          touched AS (SELECT DISTINCT _from AS day, customer_id FROM {h})
                      SELECT t.day, count(*) FILTER (WHERE f.first_day = t.day) AS customers_new,
                             count(*) FILTER (WHERE f.first_day < t.day) AS customers_updated
                      FROM touched t JOIN first f USING (customer_id) GROUP BY 1""",
            ["customers_new", "customers_updated"])
        add("tot", f"""SELECT d2.as_of_date AS day, count(*) AS customers FROM {SCHEMA}.days d2
                       JOIN {h} x ON x._from <= d2.as_of_date AND NOT EXISTS (
                           SELECT 1 FROM {h}__closed c WHERE c._row_hash = x._row_hash
                           AND c._copy = x._copy AND c._from = x._from AND c._to <= d2.as_of_date)
                       GROUP BY 1""", ["customers"])
    if _has(engine, "core.merge_log"):
        add("ml", """SELECT r.as_of_date AS day, count(*) FILTER (WHERE event = 'merged') AS customers_merged,
                            count(*) FILTER (WHERE event = 'split') AS customers_split
                     FROM core.merge_log m JOIN r ON r.run_id = m.run_key GROUP BY 1""",
            ["customers_merged", "customers_split"])
    if _has(engine, "ops.erasures"):
        add("er", """SELECT d.as_of_date AS day, count(DISTINCT e.customer_id) AS customers_erased
                     FROM d JOIN ops.erasures e ON e.erased_at <= d.recorded_at
                      AND (d.prev_at IS NULL OR e.erased_at > d.prev_at) GROUP BY 1""",
            ["customers_erased"])
    if _has(engine, "marketing.segment_history"):
        add("se", """SELECT entered_on AS day, count(*) AS segment_entries
                     FROM marketing.segment_history GROUP BY 1""", ["segment_entries"])
        add("sx", """SELECT left_on AS day, count(*) AS segment_exits
                     FROM marketing.segment_history WHERE left_on IS NOT NULL GROUP BY 1""",
            ["segment_exits"])
    if _has(engine, "exports.feed_deliveries"):
        add("fd", """SELECT as_of_date AS day, count(*) AS feeds, sum(rows) AS feed_rows
                     FROM exports.feed_deliveries GROUP BY 1""", ["feeds", "feed_rows"])
    select = ", ".join(["d.as_of_date"] + [f"CAST(coalesce({c}, 0) AS BIGINT) AS {c}" if c in cols
                                            else f"CAST(0 AS BIGINT) AS {c}" for c in COLUMNS[1:]])
    return SqlStep("history.days_summary",
                   f"WITH {', '.join(parts)} SELECT {select} FROM d {' '.join(joins)} "
                   f"ORDER BY d.as_of_date DESC LIMIT {int(limit)}")


def days_summary(engine: Engine, limit: int = 60) -> list[dict]:
    """Every recorded day's counts, newest first (empty before the first recorded day)."""
    if not engine.table_exists(SCHEMA, "runs") or not _has(engine, "ops.import_report"):
        return []
    return [dict(zip(COLUMNS, row)) for row in engine.rows(days_step(engine, limit))]


def day_summary(engine: Engine, day: dt.date | None = None) -> dict | None:
    """One day's counts (default: the newest recorded day), with its segment changes and
    the feeds delivered for that day only; None when the day was never recorded."""
    days = recorded_days(engine)
    if not days:
        return None
    day = day or days[-1]
    row = next((r for r in days_summary(engine, limit=len(days)) if r["as_of_date"] == day), None)
    if row is None:
        return None
    row["segments"] = []
    if _has(engine, "marketing.segment_history"):
        row["segments"] = engine.rows(SqlStep("history.segment_changes", """
            SELECT segment, count(*) FILTER (WHERE entered_on = $day) AS entered,
                   count(*) FILTER (WHERE left_on = $day) AS exited
            FROM marketing.segment_history GROUP BY 1
            HAVING count(*) FILTER (WHERE entered_on = $day OR left_on = $day) > 0 ORDER BY 1""",
            {"day": day}))
    row["feed_list"] = []
    if _has(engine, "exports.feed_deliveries"):
        row["feed_list"] = engine.rows(SqlStep("history.day_feeds", """
            SELECT feed, file, rows FROM exports.feed_deliveries WHERE as_of_date = $day ORDER BY feed""",
            {"day": day}))
    row["runs"] = [r[0] for r in engine.rows(SqlStep("history.day_runs", f"""
        SELECT run_id FROM {SCHEMA}.runs WHERE as_of_date = $day AND NOT backfill ORDER BY started_at""",
        {"day": day}))]
    return row
