"""Change logs: the keys a table's incremental build rewrote, for the day's version.

Why: the day's version of a table (:mod:`tessera.history.versions`) is found by hashing
every row and joining the hashes with the previous version's. For ``core.events`` (50 M
rows at the reference scale) that was about 13 s of an incremental day in which a few
hundred thousand events were relinked. The build knows which events it deleted and
appended; a row whose key no build rewrote since the previous version was recorded is
the row that version holds, so only the logged keys need hashing and comparing.

A build numbers itself (``build``, increasing) and logs either the keys it rewrote or,
when it rewrote the table in full, one row with ``everything`` set. When a day's version
is recorded, the newest build number is kept with it (``ops.history_log_marks``); the
next version is found from the keys logged after that mark, and in full when a build
since then was full, when the previous version has no mark (it was recorded before the
log existed), or when a logged key is NULL. Log rows at or before the mark of the
version a new one is found from are dropped once that version is recorded: a re-run of
the newest day still finds its keys (it is found from the same previous version).

The keys of a table identify its rows, and the row hash covers them, so identical rows
share their key and the copy numbers over the logged keys are those over the table.
"""

from __future__ import annotations

from dataclasses import dataclass

from tessera.engine import Engine, SqlStep


@dataclass(frozen=True)
class ChangeLog:
    table: str                 # the log, ops.<name>
    keys: tuple[str, ...]      # the logged table's key columns


# The tables whose builds log their changes.
LOGS: dict[str, ChangeLog] = {"core.events": ChangeLog("ops.events_changes", ("source", "event_id"))}
MARKS = "ops.history_log_marks"


def _ensure(engine: Engine, log: ChangeLog) -> None:
    cols = ", ".join(f"{k} VARCHAR" for k in log.keys)
    engine.run(SqlStep("history.changes.ddl", f"""
        CREATE TABLE IF NOT EXISTS {log.table} (build BIGINT, everything BOOLEAN, {cols})"""),
               SqlStep("history.changes.marks_ddl", f"""
        CREATE TABLE IF NOT EXISTS {MARKS} (as_of_date DATE, tbl VARCHAR, upto BIGINT)"""))


def _next_build(engine: Engine, log: ChangeLog) -> int:
    """After every logged build and every mark (a pruned log never reuses a number)."""
    marks = f"(SELECT coalesce(max(upto), 0) FROM {MARKS})" if engine.table_exists(*MARKS.split(".")) else "0"
    return int(engine.scalar(SqlStep("history.changes.next", f"""
        SELECT greatest((SELECT coalesce(max(build), 0) FROM {log.table}), {marks}) + 1""")))


def newest_build(engine: Engine, table: str) -> int | None:
    """The number of the newest logged build of ``table`` (its rows may be pruned), or
    None when nothing was ever logged."""
    log = LOGS[table]
    if not engine.table_exists(*log.table.split(".")):
        return None
    return _next_build(engine, log) - 1


def log_keys(engine: Engine, table: str, select: str) -> None:
    """Log the keys an incremental build of ``table`` deleted or appended: ``select``
    returns them in the log's key order."""
    log = LOGS[table]
    _ensure(engine, log)
    build = _next_build(engine, log)
    engine.run(SqlStep("history.changes.keys", f"""
        INSERT INTO {log.table} SELECT CAST($build AS BIGINT), false, * FROM ({select})""", {"build": build}))


def log_everything(engine: Engine, table: str) -> None:
    """Log that a build rewrote ``table`` in full (its next version is found in full)."""
    log = LOGS[table]
    _ensure(engine, log)
    nulls = ", ".join("NULL" for _ in log.keys)
    engine.run(SqlStep("history.changes.everything", f"""
        INSERT INTO {log.table} VALUES (CAST($build AS BIGINT), true, {nulls})""",
                       {"build": _next_build(engine, log)}))


def mark(engine: Engine, table: str, day) -> None:
    """Keep the newest build number with ``day``'s version of ``table`` (recorded now).
    No mark while no build ever logged: whatever wrote the table did not log, so the
    next version is found in full."""
    log = LOGS[table]
    if not engine.table_exists(*log.table.split(".")):
        return
    _ensure(engine, log)
    engine.replace_partition(MARKS, {"as_of_date": day, "tbl": table}, SqlStep("history.changes.mark", f"""
        SELECT CAST($day AS DATE), $tbl, (SELECT coalesce(max(build), 0) FROM {log.table})""",
                                                                              {"day": day, "tbl": table}))


def keys_since(engine: Engine, table: str, previous) -> str | None:
    """``_hist_keys``: the keys logged since ``previous``'s version of ``table`` was
    recorded, and its name; None when the version must be found in full (see above)."""
    log = LOGS.get(table)
    if log is None or previous is None or not engine.table_exists(*log.table.split(".")) \
            or not engine.table_exists(*MARKS.split(".")):
        return None
    upto = engine.scalar(SqlStep("history.changes.previous_mark", f"""
        SELECT max(upto) FROM {MARKS} WHERE as_of_date = $day AND tbl = $tbl""", {"day": previous, "tbl": table}))
    if upto is None:
        return None
    null_key = " OR ".join(f"{k} IS NULL" for k in log.keys)
    full = engine.scalar(SqlStep("history.changes.any_full", f"""
        SELECT count(*) FROM {log.table} WHERE build > $upto AND (everything OR {null_key})""", {"upto": upto}))
    if full:
        return None
    keys = ", ".join(log.keys)
    engine.run(SqlStep("history.changes.keys_since", f"""
        CREATE OR REPLACE TEMP TABLE _hist_keys AS
        SELECT DISTINCT {keys} FROM {log.table} WHERE build > $upto""", {"upto": upto}))
    return "_hist_keys"


def key_filter(table: str, alias: str) -> str:
    """The predicate that keeps the rows of ``alias`` whose key is in ``_hist_keys``."""
    on = " AND ".join(f"k.{c} = {alias}.{c}" for c in LOGS[table].keys)
    return f"EXISTS (SELECT 1 FROM _hist_keys k WHERE {on})"


def prune(engine: Engine, table: str, previous) -> None:
    """Drop the log rows the version of ``previous`` (the one the newest was found from)
    already holds."""
    log = LOGS[table]
    if not (engine.table_exists(*log.table.split(".")) and engine.table_exists(*MARKS.split("."))):
        return
    engine.run(SqlStep("history.changes.prune", f"""
        DELETE FROM {log.table} WHERE build <= (
            SELECT coalesce(max(upto), 0) FROM {MARKS} WHERE as_of_date = $day AND tbl = $tbl)""",
                       {"day": previous, "tbl": table}))
