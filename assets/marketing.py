"""Marketing: RFM per day and one asset per configured segment (``segments.<name>``)."""


import datetime as dt

import dagster as dg
from dagster_duckdb import DuckDBResource

from assets._common import POOL, markdown_counts, table_metadata
from pipelines.partitions import daily_partitions
from tessera.config import Deployment
from tessera.rfm import build_rfm
from tessera.segments import build_segment
from tessera.warehouse import Timer

GROUP = "marketing"
RFM = dg.AssetKey(["marketing", "rfm_scores"])
CARDS = dg.AssetKey(["marts", "contact_cards"])


def _day(context) -> dt.date:
    return dt.date.fromisoformat(context.partition_key)


def build(deployment: Deployment):
    deps = [dg.AssetKey(["core", "orders"])] if deployment.sources_of("order") else []
    deps.append(CARDS)

    @dg.asset(key=RFM, group_name=GROUP, pool=POOL, deps=deps, kinds={"duckdb"},
              partitions_def=daily_partitions,
              description="Recency, frequency, monetary quintiles and RFM group per customer, per day.")
    def rfm_scores(context: dg.AssetExecutionContext, warehouse: DuckDBResource) -> dg.MaterializeResult:
        timer = Timer()
        day = _day(context)
        with warehouse.get_connection() as con:
            stats = build_rfm(con, day)
            meta = table_metadata(con, "marketing", "rfm_scores", timer.seconds,
                                  {"scored": stats["scored"]}, "as_of_date = ?", [day])
            meta["by_group"] = markdown_counts("rfm_group", list(stats["groups"].items()))
        return dg.MaterializeResult(metadata=meta)

    @dg.asset_check(asset=RFM, name="rfm_scores_in_range", blocking=True)
    def rfm_range(warehouse: DuckDBResource):
        with warehouse.get_connection() as con:
            bad = con.execute("""SELECT count(*) FROM marketing.rfm_scores
                WHERE r_score NOT BETWEEN 1 AND 5 OR f_score NOT BETWEEN 1 AND 5
                   OR m_score NOT BETWEEN 1 AND 5 OR recency_days < 0 OR rfm_group IS NULL""").fetchone()[0]
        return dg.AssetCheckResult(passed=bad == 0, metadata={"bad_rows": int(bad)})

    assets, checks = [rfm_scores], [rfm_range]
    for segment in deployment.segments:
        a, c = _segment_asset(deployment, segment)
        assets.append(a)
        checks.append(c)
    return assets, checks


def _segment_asset(deployment: Deployment, segment):
    key = dg.AssetKey(["segments", segment.name])

    @dg.asset(key=key, group_name="segments", pool=POOL, deps=[CARDS, RFM], kinds={"duckdb"},
              partitions_def=daily_partitions,
              description=f"Segment '{segment.name}' ({segment.kind}): {segment.description}",
              metadata={"rule": dg.MetadataValue.json(segment.rule), "kind": segment.kind})
    def _segment(context: dg.AssetExecutionContext, warehouse: DuckDBResource) -> dg.MaterializeResult:
        timer = Timer()
        day = _day(context)
        with warehouse.get_connection() as con:
            stats = build_segment(con, deployment, segment, day)
        return dg.MaterializeResult(metadata={
            "dagster/row_count": stats["members"],
            "members": stats["members"], "entered": stats["entered"], "left": stats["left"],
            "duration_s": dg.MetadataValue.float(timer.seconds),
        })

    @dg.asset_check(asset=key, name="members_are_customers", blocking=True)
    def _members_ok(warehouse: DuckDBResource):
        with warehouse.get_connection() as con:
            bad = con.execute("""SELECT count(*) FROM marketing.segment_members m
                WHERE segment = ? AND customer_id NOT IN (SELECT customer_id FROM core.customers)""",
                              [segment.name]).fetchone()[0]
        return dg.AssetCheckResult(passed=bad == 0, metadata={"unknown_customers": int(bad)})

    return _segment, _members_ok
