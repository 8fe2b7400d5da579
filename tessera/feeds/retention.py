"""Retention of what a feed keeps: its files and manifests, its stored rows (the diff
state) and its delivery log, each dropped once older than the feed's ``retention`` days.

Delivered days are counted back from the delivered day (the partition), not the clock,
so a re-run of a day drops exactly what the first run dropped; the delivery log, stamped
with clock times, from the run's time. Two things are never dropped whatever their
age: the last delivered day (the base the next diff is taken against: dropping it would
turn every row into an "added" and lose the removals) and a pending batch (never lost).
The stored state keeps the versions a retained day delivered (see
:mod:`tessera.feeds.diff`). A dropped day also leaves ``exports.feed_deliveries``, so a
backfill older than the retention is delivered as a first delivery, honestly, rather
than diffed against nothing.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

from tessera.engine import Engine, SqlStep, as_engine


def apply_retention(engine: Engine, feed, feeds_dir: Path, as_of: dt.date, now: dt.datetime,
                    destination: str | None = None) -> dict[str, int]:
    """Drop what ``feed`` keeps beyond its retention: delivered days counted back from
    ``as_of``, the delivery log (stamped with clock times) from ``now``; counts."""
    engine = as_engine(engine)
    out = {"retention_days_dropped": 0, "retention_files_deleted": 0,
           "retention_batches_dropped": 0, "retention_attempts_dropped": 0}
    keep = feed.retention
    if keep.days is not None and engine.table_exists("exports", "feed_deliveries"):
        cutoff = as_of - dt.timedelta(days=keep.days)
        days = [r[0] for r in engine.rows(SqlStep("feeds.retention_days", """
            SELECT as_of_date FROM exports.feed_deliveries WHERE feed = ? AND as_of_date < ?
              AND as_of_date < (SELECT max(as_of_date) FROM exports.feed_deliveries WHERE feed = ?)
            ORDER BY 1""", [feed.name, cutoff, feed.name]))]
        if days:
            files = [r[0] for r in engine.rows(SqlStep("feeds.retention_files", """
                SELECT file FROM exports.feed_files WHERE feed = ?
                  AND as_of_date IN (SELECT unnest(CAST(? AS DATE[])))""", [feed.name, days]))]
            # the warehouse first: a file whose record is gone is only an orphan, while a
            # record whose file is gone would be a diff base without its delivery
            with engine.together():
                for table in ("feed_files", "feed_deliveries", "feed_selections"):
                    if not engine.table_exists("exports", table):
                        continue
                    engine.run(SqlStep(f"feeds.retention_{table}", f"""
                        DELETE FROM exports.{table} WHERE feed = ?
                          AND as_of_date IN (SELECT unnest(CAST(? AS DATE[])))""",
                        [feed.name, days]))
                if engine.table_exists("exports", feed.name):
                    # versions no retained day delivered: closed by the first retained
                    # day or before (the last delivered day's are open: it is kept)
                    engine.run(SqlStep("feeds.retention_state", f"""
                        DELETE FROM exports."{feed.name}" WHERE valid_to <= (
                            SELECT min(as_of_date) FROM exports.feed_deliveries WHERE feed = ?)""",
                        [feed.name]))
            folder = Path(feeds_dir) / feed.name
            names = files + [f"{feed.name}_{d.isoformat()}.manifest.json" for d in days]
            for name in names:
                try:
                    os.remove(folder / name)
                    out["retention_files_deleted"] += 1
                except FileNotFoundError:
                    pass
            out["retention_days_dropped"] = len(days)
    if (keep.delivery_log_days is not None and destination is not None
            and engine.table_exists("exports", "delivery_batches")):
        cutoff_ts = now - dt.timedelta(days=keep.delivery_log_days)
        old = """SELECT batch_id FROM exports.delivery_batches WHERE destination = ?
                 AND status <> 'pending' AND queued_at < CAST(? AS TIMESTAMP)"""
        with engine.together():
            out["retention_attempts_dropped"] = int(engine.scalar(SqlStep(
                "delivery.retention_count_attempts",
                "SELECT count(*) FROM exports.delivery_attempts WHERE destination = ? "
                "AND started_at < CAST(? AS TIMESTAMP)", [destination, cutoff_ts])))
            engine.run(SqlStep("delivery.retention_attempts",
                               "DELETE FROM exports.delivery_attempts WHERE destination = ? "
                               "AND started_at < CAST(? AS TIMESTAMP)", [destination, cutoff_ts]))
            out["retention_batches_dropped"] = int(engine.scalar(SqlStep(
                "delivery.retention_count_batches", f"SELECT count(*) FROM ({old})",
                [destination, cutoff_ts])))
            engine.run(SqlStep("delivery.retention_subjects", f"""
                DELETE FROM exports.delivery_batch_subjects WHERE destination = ?
                  AND batch_id IN ({old})""", [destination, destination, cutoff_ts]))
            engine.run(SqlStep("delivery.retention_batches", """
                DELETE FROM exports.delivery_batches WHERE destination = ?
                  AND status <> 'pending' AND queued_at < CAST(? AS TIMESTAMP)""",
                [destination, cutoff_ts]))
    return out
