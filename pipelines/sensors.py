"""Sensors. ``landing_files_sensor`` starts the daily job when new landing files appear.

It compares the landing folder's (path, size, mtime) fingerprint with its cursor, so
it asks for a run only when something changed. Off by default.

``dead_runs_sensor`` (on by default) closes, every minute, the runs whose executing process
is gone (killed or crashed) and frees their pool slots, so that runs launched from the UI
or the schedule never wait for a dead run (pipelines/runs.py).
"""

from __future__ import annotations

import datetime as dt
import hashlib
from pathlib import Path

import dagster as dg

from pipelines.jobs import daily_job
from pipelines.partitions import daily_partitions
from tessera.settings import Deployment


def build_landing_sensor(deployment: Deployment, landing: Path) -> dg.SensorDefinition:
    globs = [s.path for s in deployment.sources]

    @dg.sensor(job=daily_job, name="landing_files_sensor", minimum_interval_seconds=300,
               default_status=dg.DefaultSensorStatus.STOPPED,
               description="Runs the daily job for the day the schedule would run (the last "
                           "complete day) when new or changed landing files appear.")
    def landing_files_sensor(context: dg.SensorEvaluationContext):
        root = Path(landing)
        h = hashlib.sha256()
        for g in globs:
            for p in sorted(root.glob(g)):
                st = p.stat()
                h.update(f"{p}|{st.st_size}|{st.st_mtime_ns}".encode())
        digest = h.hexdigest()
        if digest == context.cursor:
            return dg.SkipReason("no new landing files")
        context.update_cursor(digest)
        return dg.RunRequest(run_key=digest, partition_key=sensor_partition())

    return landing_files_sensor


def sensor_partition(now: dt.datetime | None = None) -> str:
    """The partition the 02:00 schedule runs: the last complete day (yesterday), never
    today, whose partition does not exist yet and whose data is still arriving."""
    return daily_partitions.get_partition_keys(current_time=now or dt.datetime.now(dt.timezone.utc))[-1]


@dg.sensor(name="dead_runs_sensor", minimum_interval_seconds=60,
           default_status=dg.DefaultSensorStatus.RUNNING,
           description="Marks failed the runs whose process is gone (killed or crashed) and "
                       "frees their duckdb pool slots. Never touches a live run.")
def dead_runs_sensor(context: dg.SensorEvaluationContext):
    from pipelines.runs import close_dead_runs

    closed = close_dead_runs(context.instance, context.log.info)
    return dg.SkipReason(f"closed {len(closed)} dead run(s)" if closed else "no dead runs")
