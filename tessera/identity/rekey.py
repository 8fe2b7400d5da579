"""Customer ids follow merges everywhere, in the run that merges them.

Tables rebuilt from ``core.customer_sources`` every run (``core.events``, orders,
consents, cards) follow a merge by construction. Stored tables keyed by customer that
outlive a run (each day's RFM, scores, stages, segment membership and history, score
actions, feeds' rows, overrides, bulk edits; :data:`tessera.vocabulary.CUSTOMER_KEYED_TABLES`)
are re-keyed here, right after identity and before anything downstream reads them, so no
step sees a merged-away id (issue #20: ``members_are_customers`` read every stored day of
membership and failed every run after the first real merge).

A split needs nothing: the id stays with the part holding most of the records (its
history with it), the other part gets a fresh id with no history.
"""

from __future__ import annotations

from tessera.engine import Engine, SqlStep, as_engine, step_from_file
from tessera.vocabulary import CUSTOMER_KEYED_TABLES

_MAX_CHAIN = 32  # merges of merges followed per run; each pass follows one more link


def _columns(engine: Engine, schema: str, table: str) -> list[str]:
    return [r[0] for r in engine.rows(SqlStep(
        "rekey.columns", "SELECT column_name FROM information_schema.columns "
        "WHERE table_schema = $s AND table_name = $t ORDER BY ordinal_position", {"s": schema, "t": table}))]


def keyed_tables(engine: Engine) -> dict[str, tuple[str, tuple[str, ...], list[str]]]:
    """Existing customer-keyed tables: name -> (kind, keys, columns)."""
    out = {}
    for name, (kind, keys) in CUSTOMER_KEYED_TABLES.items():
        schema, table = name.split(".")
        if engine.table_exists(schema, table):
            cols = _columns(engine, schema, table)
            if "customer_id" in cols:
                out[name] = (kind, keys, cols)
    for (table,) in engine.rows(SqlStep("rekey.feed_tables", """
            SELECT table_name FROM information_schema.columns
            WHERE table_schema = 'exports' AND column_name = 'customer_id'
              AND table_name IN (SELECT table_name FROM information_schema.columns
                                 WHERE table_schema = 'exports' AND column_name = 'as_of_date')
              AND table_name IN (SELECT table_name FROM information_schema.tables
                                 WHERE table_schema = 'exports' AND table_type = 'BASE TABLE')""")):
        cols = _columns(engine, "exports", table)
        # a feed's state is row versions (tessera.feeds.diff): one version per customer
        # and end (the open one, or the one closed on a day), the survivor's winning
        keys = ("valid_to",) if "valid_to" in cols else ("as_of_date",)
        out[f"exports.{table}"] = ("daily", keys, cols)
    return out


def _moved_rows(table: str, cols: list[str]) -> SqlStep:
    """_rk: the rows of stale ids and of the ids absorbing them, re-keyed, with
    ``_moved`` (1 for a row that came from a merged-away id) and ``_orig``."""
    sel = ", ".join("coalesce(m.new_id, t.customer_id) AS customer_id" if c == "customer_id"
                    else f't."{c}"' for c in cols)
    return SqlStep(f"rekey.moved_rows[{table}]", f"""
        CREATE OR REPLACE TEMP TABLE _rk AS
        SELECT {sel}, CASE WHEN m.old_id IS NULL THEN 0 ELSE 1 END AS _moved, t.customer_id AS _orig
        FROM {table} t LEFT JOIN _rekey m ON m.old_id = t.customer_id
        WHERE t.customer_id IN (SELECT old_id FROM _rk_ids) OR t.customer_id IN (SELECT new_id FROM _rk_ids)""")


def _rows_back(table: str, kind: str, keys: tuple[str, ...], cols: list[str]) -> SqlStep:
    names = ", ".join(f'"{c}"' for c in cols)
    if kind == "daily":
        part = ", ".join([*(f'"{k}"' for k in keys), "customer_id"])
        body = (f"SELECT {names} FROM _rk QUALIFY row_number() OVER "
                f"(PARTITION BY {part} ORDER BY _moved, _orig) = 1")
    elif kind == "log":
        body = f"SELECT {names} FROM _rk"
    elif kind == "survivor_history":
        body = (f"SELECT {names} FROM _rk r WHERE r._moved = 0 OR NOT EXISTS "
                "(SELECT 1 FROM _rk s WHERE s.customer_id = r.customer_id AND s._moved = 0)")
    elif kind == "intervals":
        part = ", ".join([*(f'"{k}"' for k in keys), "customer_id"])
        # periods [entered_on, left_on) of one key and customer, united: a period that
        # starts after every earlier one ended opens a new island (left_on NULL: open)
        body = f"""
            WITH r AS (SELECT {part}, entered_on, coalesce(left_on, DATE '9999-12-31') AS left_on FROM _rk),
            o AS (SELECT *, max(left_on) OVER (PARTITION BY {part} ORDER BY entered_on, left_on
                                               ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS prev_end
                  FROM r),
            g AS (SELECT *, sum(CASE WHEN prev_end IS NULL OR entered_on > prev_end THEN 1 ELSE 0 END)
                               OVER (PARTITION BY {part} ORDER BY entered_on, left_on
                                     ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS island
                  FROM o)
            SELECT {part}, min(entered_on) AS entered_on,
                   nullif(max(left_on), DATE '9999-12-31') AS left_on
            FROM g GROUP BY {part}, island"""
        extra = [c for c in cols if c not in (*keys, "customer_id", "entered_on", "left_on")]
        if extra:
            raise ValueError(f"{table}: interval table with other columns {extra}")
        names = ", ".join([*(f'"{k}"' for k in keys), "customer_id", "entered_on", "left_on"])
    else:
        raise ValueError(kind)
    return SqlStep(f"rekey.rows_back[{table}]", f"INSERT INTO {table} ({names}) {body}")


def rekey_customer_tables(target) -> dict[str, int]:
    """Move every stored row of a merged-away customer id to the customer holding it now.
    Returns rows moved per table (tables with none are left out). Re-runnable."""
    engine = as_engine(target)
    if not (engine.table_exists("core", "merge_log") and engine.table_exists("core", "customer_sources")):
        return {}
    engine.run(step_from_file(__package__, "rekey_map.sql"))
    for _ in range(_MAX_CHAIN):  # a into b, then b into c: a goes to c
        if not engine.scalar(SqlStep("rekey.chained", """
                SELECT count(*) FROM _rekey WHERE new_id IN (SELECT old_id FROM _rekey)""")):
            break
        engine.run(SqlStep("rekey.follow_chain", """
            UPDATE _rekey SET new_id = m.new_id FROM _rekey m WHERE _rekey.new_id = m.old_id"""))
    moved: dict[str, int] = {}
    if not engine.scalar(SqlStep("rekey.any", "SELECT count(*) FROM _rekey")):
        engine.run(SqlStep("rekey.drop_map", "DROP TABLE IF EXISTS _rekey"))
        return moved
    tables = keyed_tables(engine)
    with engine.together():
        for table, (kind, keys, cols) in sorted(tables.items()):
            engine.run(SqlStep(f"rekey.stale_ids[{table}]", f"""
                CREATE OR REPLACE TEMP TABLE _rk_ids AS
                SELECT m.old_id, m.new_id FROM _rekey m
                WHERE m.old_id IN (SELECT DISTINCT customer_id FROM {table})"""))
            n = int(engine.scalar(SqlStep("rekey.stale_count", "SELECT count(*) FROM _rk_ids")) or 0)
            if not n:
                continue
            engine.run(_moved_rows(table, cols))
            moved[table] = int(engine.scalar(SqlStep("rekey.moved_count",
                                                      "SELECT count(*) FROM _rk WHERE _moved = 1")) or 0)
            engine.run(SqlStep(f"rekey.delete[{table}]", f"""
                DELETE FROM {table} WHERE customer_id IN (SELECT old_id FROM _rk_ids)
                                       OR customer_id IN (SELECT new_id FROM _rk_ids)"""))
            engine.run(_rows_back(table, kind, keys, cols))
    engine.run(SqlStep("rekey.drop_temps", "DROP TABLE IF EXISTS _rk"),
               SqlStep("rekey.drop_ids", "DROP TABLE IF EXISTS _rk_ids"),
               SqlStep("rekey.drop_map", "DROP TABLE IF EXISTS _rekey"))
    return moved
