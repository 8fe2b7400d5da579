"""Partitions: one business day per partition (the day the run reports "as of")."""

import dagster as dg

# The last partition is yesterday (a day is complete once it is over), so the 02:00
# schedule runs the day that just ended.
daily_partitions = dg.DailyPartitionsDefinition(start_date="2024-01-01")
