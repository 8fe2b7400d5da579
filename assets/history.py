"""As-of days: the asset that records (forward run) or looks up (backfill) the version of
the day's inputs that every partitioned asset of that day reads. Thin wrapper over
tessera.history; metadata carries counts only."""

import datetime as dt

import dagster as dg
from dagster_duckdb import DuckDBResource

from assets._common import DAY_INPUTS, POOL
from pipelines.partitions import daily_backfill, daily_partitions
from tessera.engine import as_engine
from tessera.engine.warehouse import Timer
from tessera.history import record_day
from tessera.history.versions import version_mismatches
from tessera.settings import Deployment


def day_input_keys(deployment: Deployment) -> list[dg.AssetKey]:
    """The assets behind tessera.history.DAY_INPUTS that this deployment builds."""
    has = lambda entity: bool(deployment.sources_of(entity))  # noqa: E731
    keys = [["marts", "contact_cards"], ["core", "customers"], ["core", "bounce_status"]]
    keys += [["core", "orders"]] if has("order") else []
    keys += [["core", "events"]] if has("event") else []
    keys += [["staging", "order_lines"]] if has("order_line") else []
    keys += [["staging", "products"]] if has("product") else []
    keys += [["staging", "unsubscribes"]] if has("unsubscribe") else []
    keys += [["core", "companies"]] if has("company") else []
    keys += [["core", "company_contacts"]] if has("company_user") else []
    if has("potential_company"):
        keys += [["staging", "potential_companies"], ["core", "potential_companies"],
                 ["core", "potential_unsubscribes"]]
    return [dg.AssetKey(k) for k in keys]


def build(deployment: Deployment):
    @dg.asset(key=DAY_INPUTS, group_name="history", pool=POOL, deps=day_input_keys(deployment),
              kinds={"duckdb"}, partitions_def=daily_partitions, backfill_policy=daily_backfill,
              description="What the platform knew at the end of the day: a run of the newest day "
                          "stores the version of every table the partitioned assets read "
                          "(history.<schema>__<table>, only the rows that changed); a run of an "
                          "earlier day (a backfill) stores nothing and its partitioned assets "
                          "read that day's version. Erased people are removed from every version.")
    def days(context: dg.AssetExecutionContext, warehouse: DuckDBResource) -> dg.MaterializeResult:
        timer = Timer()
        day = dt.date.fromisoformat(context.partition_key)
        with warehouse.get_connection() as con:
            out = record_day(as_engine(con), day, context.run_id, dt.datetime.now().replace(microsecond=0))
        meta = {"recorded": out["recorded"], "backfill": out["backfill"],
                "latest_recorded_day": str(out["latest_recorded"]),
                "inputs_as_of": str(out["version_of"]),
                "dagster/row_count": dg.MetadataValue.int(
                    sum(t["opened"] + t["closed"] for t in out["tables"].values())),  # stored by this run
                "rows_opened": sum(t["opened"] for t in out["tables"].values()),
                "rows_closed": sum(t["closed"] for t in out["tables"].values()),
                "by_table": dg.MetadataValue.json(out["tables"]),
                "duration_s": dg.MetadataValue.float(timer.seconds)}
        if out["backfill"]:
            context.log.info(f"backfill of {day}: the partitioned assets read the inputs recorded "
                             f"on {out['version_of']} (newest recorded day {out['latest_recorded']})")
        return dg.MaterializeResult(metadata=meta)

    @dg.asset_check(pool=POOL, asset=DAY_INPUTS, name="newest_version_reads_back", blocking=False,
                    description="Each input table has as many rows as its newest recorded version "
                                "(the rows opened by that day less those closed by then: what a "
                                "backfill of that day would read; row counts, no hashing). "
                                "Skipped after a backfill.")
    def reads_back(warehouse: DuckDBResource):
        with warehouse.get_connection() as con:
            diff = version_mismatches(as_engine(con), exact=False)
        if diff is None:
            return dg.AssetCheckResult(passed=True, metadata={"compared": False})
        return dg.AssetCheckResult(passed=not any(diff.values()), severity=dg.AssetCheckSeverity.WARN,
                                   metadata={"compared": True, "differing_rows": dg.MetadataValue.json(diff)})

    return [days], [reads_back]

