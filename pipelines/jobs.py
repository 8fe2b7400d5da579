"""Jobs. The daily job materialises every asset, as of one business day.

It runs in process: one process, one DuckDB writer, and no copy of the data between
steps (assets exchange tables in the warehouse, not Python objects).
"""

import dagster as dg

from pipelines.partitions import daily_partitions

daily_job = dg.define_asset_job(
    name="daily_job",
    selection=dg.AssetSelection.all(),
    partitions_def=daily_partitions,
    executor_def=dg.in_process_executor,
    description="Ingest every source, resolve identities, build golden records, the contact "
                "card, RFM, segments and export feeds, as of the partition's day. For a day "
                "before the newest recorded one (a backfill) the partitioned assets read that "
                "day's recorded inputs (history/days), one day per run.",
)
