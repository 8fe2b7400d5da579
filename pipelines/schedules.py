"""Schedules. The daily run is off by default: a deployment turns it on in the UI."""

import dagster as dg

from pipelines.jobs import daily_job

# Runs at 02:00 for the previous day's partition.
daily_schedule = dg.build_schedule_from_partitioned_job(
    daily_job, hour_of_day=2, minute_of_hour=0, name="daily_schedule",
    default_status=dg.DefaultScheduleStatus.STOPPED,
)
