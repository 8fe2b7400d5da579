"""Partitions: one business day per partition (the day the run reports "as of")."""

import dagster as dg

# end_offset=1 lets an operator run "as of today"; the schedule runs yesterday.
daily_partitions = dg.DailyPartitionsDefinition(start_date="2024-01-01", end_offset=1)
