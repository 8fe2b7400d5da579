"""The web page's published snapshot and the daily static analytics report.

Built last (``build_last``): the snapshot depends on every asset whose tables the page
reads, so it is published once they are all written, and the page then shows one run's
consistent state while the next run writes.
"""


import datetime as dt
import json
from pathlib import Path

import dagster as dg
from dagster_duckdb import DuckDBResource

from assets._common import POOL
from pipelines.partitions import daily_partitions
from tessera.card.changes import build_contact_changes
from tessera.engine import as_engine
from tessera.engine.warehouse import Timer
from tessera.settings import Deployment
from tessera.web.report import report_folder, write_report
from tessera.web.snapshot import READ_SCHEMAS, READ_TABLES, current, filter_labels, publish, snapshot_root

GROUP = "web"
CHANGES = dg.AssetKey(["marts", "contact_changes"])
SNAPSHOT = dg.AssetKey(["marts", "web_snapshot"])
REPORT = dg.AssetKey(["marts", "analytics_report"])


def _read_keys(upstream: list[dg.AssetKey]) -> list[dg.AssetKey]:
    """Every asset of a schema the page reads (not the feeds: a failed delivery must not
    keep the page on yesterday's data)."""
    # segments: their assets write ops.segment_runs and marketing.segment_history
    schemas = {t.split(".")[0] for t in READ_TABLES} | set(READ_SCHEMAS) | {"segments"}
    return [k for k in upstream if k.path[0] in schemas]


def build_last(deployment: Deployment, upstream: list[dg.AssetKey]):
    @dg.asset(key=CHANGES, group_name=GROUP, pool=POOL, deps=[dg.AssetKey(["marts", "contact_cards"])],
              partitions_def=daily_partitions, kinds={"duckdb"},
              description="New, updated and deleted contacts of the day, against the previous "
                          "day's fingerprints of the cards' golden fields (counts only).")
    def contact_changes(context: dg.AssetExecutionContext, warehouse: DuckDBResource) -> dg.MaterializeResult:
        timer = Timer()
        day = dt.date.fromisoformat(context.partition_key)
        with warehouse.get_connection() as con:
            stats = build_contact_changes(con, day)
        return dg.MaterializeResult(metadata={
            "dagster/row_count": dg.MetadataValue.int(int(stats["contacts"])),  # fingerprints kept
            **{k: dg.MetadataValue.int(int(stats[k])) for k in ("contacts", "new", "updated", "deleted")},
            "first_day": dg.MetadataValue.bool(bool(stats["first_day"])),
            "duration_s": dg.MetadataValue.float(timer.seconds),
        })

    @dg.asset(key=SNAPSHOT, group_name=GROUP, pool=POOL, deps=_read_keys(upstream) + [CHANGES],
              kinds={"parquet"},
              description="What the web page reads, copied to Parquet and switched atomically at "
                          "the end of the run: the page answers while the next run writes.")
    def snapshot(warehouse: DuckDBResource) -> dg.MaterializeResult:
        timer = Timer()
        with warehouse.get_connection() as con:
            stats = publish(as_engine(con), warehouse.database, filter_labels(deployment))
        return dg.MaterializeResult(metadata={
            "path": dg.MetadataValue.path(stats["folder"]),
            "dagster/row_count": dg.MetadataValue.int(stats["rows"]),
            "tables": dg.MetadataValue.int(stats["tables"]),
            "rows": dg.MetadataValue.int(stats["rows"]),
            "bytes": dg.MetadataValue.int(stats["bytes"]),
            "duration_s": dg.MetadataValue.float(timer.seconds),
        })

    @dg.asset(key=REPORT, group_name=GROUP, pool=POOL, deps=[SNAPSHOT], partitions_def=daily_partitions,
              kinds={"html"},
              description="The day's analytics (charts and headline numbers) as one static HTML "
                          "file for analysts without the server; its path is in the metadata.")
    def analytics_report(context: dg.AssetExecutionContext, warehouse: DuckDBResource) -> dg.MaterializeResult:
        from tessera.engine import read_snapshot

        timer = Timer()
        day = dt.date.fromisoformat(context.partition_key)
        folder = current(warehouse.database)
        if folder is None:
            raise dg.Failure(f"no published snapshot under {snapshot_root(warehouse.database)}")
        with read_snapshot(folder) as engine:
            stats = write_report(engine, report_folder(warehouse.database), day)
        rows = "\n".join(f"| {k} | {v:,.2f} |" for k, v in stats["headline"].items())
        return dg.MaterializeResult(metadata={
            "path": dg.MetadataValue.path(stats["path"]),
            "url": dg.MetadataValue.url(Path(stats["path"]).as_uri()),
            "headline": dg.MetadataValue.md("| measure | value |\n| --- | ---: |\n" + rows),
            "charts": dg.MetadataValue.int(stats["charts"]),
            "bytes": dg.MetadataValue.int(stats["bytes"]),
            "duration_s": dg.MetadataValue.float(timer.seconds),
        })

    @dg.asset_check(pool=POOL, asset=SNAPSHOT, name="snapshot_has_every_card", blocking=True,
                    description="The published snapshot holds the warehouse's contact cards, "
                                "and CURRENT names it.")
    def snapshot_complete(warehouse: DuckDBResource):
        folder = current(warehouse.database)
        published = (json.loads((folder / "manifest.json").read_text(encoding="utf-8"))["rows"]
                     if folder is not None else {})
        with warehouse.get_connection() as con:
            cards = con.execute("SELECT count(*) FROM marts.contact_cards").fetchone()[0]
        return dg.AssetCheckResult(passed=published.get("marts.contact_cards") == cards,
                                   metadata={"cards": int(cards),
                                             "published_cards": int(published.get("marts.contact_cards", -1))})

    return [contact_changes, snapshot, analytics_report], [snapshot_complete]
