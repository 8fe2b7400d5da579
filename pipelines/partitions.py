"""Partitions: one business day per partition (the day the run reports "as of")."""

import warnings

import dagster as dg

# backfill_policy on @asset is marked beta in Dagster 1.x; the policy is what a backfill
# must obey here, so its warning (one per asset, on every command) says nothing to users
warnings.filterwarnings("ignore", category=dg.BetaWarning, message=".*backfill_policy")

# The last partition is yesterday (a day is complete once it is over), so the 02:00
# schedule runs the day that just ended.
daily_partitions = dg.DailyPartitionsDefinition(start_date="2024-01-01")

# A backfill runs one day per run, oldest first: each day of a partitioned asset reads
# that day's recorded inputs (history/days) and some compare with the previous stored
# day (score threshold actions, feed diffs), so a range is never one run.
daily_backfill = dg.BackfillPolicy.multi_run(max_partitions_per_run=1)
