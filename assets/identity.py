"""Identity: source records resolved into persons with stable customer ids."""


import datetime as dt

import dagster as dg
from dagster_duckdb import DuckDBResource

from assets._common import POOL, markdown_counts, table_metadata
from resources.spark import SparkEngineResource
from tessera.settings import Deployment
from tessera.identity.resolve import resolve
from tessera.identity.rekey import rekey_customer_tables
from tessera.engine.warehouse import Timer, ensure_warehouse

GROUP = "identity"
SOURCES = dg.AssetKey(["core", "customer_sources"])
MERGE_LOG = dg.AssetKey(["core", "merge_log"])
REFUSED = dg.AssetKey(["core", "refused_merges"])
LINKS = dg.AssetKey(["core", "identity_links"])


def build(deployment: Deployment):
    @dg.multi_asset(
        specs=[
            dg.AssetSpec(SOURCES, group_name=GROUP, deps=[dg.AssetKey(["staging", "contacts"])],
                         kinds={"duckdb"},
                         description="Which golden customer each source record belongs to "
                                     "(public: source, source_record_id, customer_id)."),
            dg.AssetSpec(MERGE_LOG, group_name=GROUP, kinds={"duckdb"},
                         deps=[dg.AssetKey(["staging", "contacts"])],
                         description="Every merge and split of customer ids, with rule and evidence."),
            dg.AssetSpec(REFUSED, group_name=GROUP, kinds={"duckdb"},
                         deps=[dg.AssetKey(["staging", "contacts"])],
                         description="Links refused by merge protection in the latest run (two ERP ids, "
                                     "a never-merge pair, a cluster too large): record ids, rule, reason."),
            dg.AssetSpec(LINKS, group_name=GROUP, kinds={"duckdb"},
                         deps=[dg.AssetKey(["staging", "contacts"])],
                         description="The record-to-record links that built each customer, with rule "
                                     "and match weight (the evidence behind core.customer_sources)."),
        ],
        pool=POOL,
    )
    def customer_sources(context: dg.AssetExecutionContext, warehouse: DuckDBResource,
                         spark: SparkEngineResource):
        timer = Timer()
        with warehouse.get_connection() as con:
            ensure_warehouse(con)
            with spark.stage_engine(con) as engine:
                # incremental: only the records the changed keys reach, where exact
                stats = resolve(engine, dt.datetime.now().replace(microsecond=0), context.run_id,
                                deployment.identity, incremental=deployment.incremental)
            # in the same run, before anything downstream reads them: stored days of
            # marketing output, feeds' rows, overrides and bulk edits follow the merges
            with spark.stage_engine(con) as engine:
                stats["rekeyed_rows"] = rekey_customer_tables(engine)
            by_rule = con.execute(
                "SELECT matched_by, count(*) FROM core.customer_sources GROUP BY ALL ORDER BY 1").fetchall()
            meta = table_metadata(con, "core", "customer_sources", timer.seconds, stats)
            meta["records_by_rule"] = markdown_counts("matched_by", by_rule)
            log_meta = table_metadata(con, "core", "merge_log", timer.seconds,
                                      {"merges_this_run": stats["merges"], "splits_this_run": stats["splits"]})
            refused_meta = table_metadata(con, "core", "refused_merges", timer.seconds, {
                "refused_by_reason": {r: int(n) for r, n in con.execute(
                    "SELECT reason, count(*) FROM core.refused_merges GROUP BY 1").fetchall()}})
            link_meta = table_metadata(con, "core", "identity_links", timer.seconds, {
                "links_by_rule": {r: int(n) for r, n in con.execute(
                    "SELECT rule, count(*) FROM core.identity_links GROUP BY 1").fetchall()},
                "candidate_pairs": stats["candidate_pairs"]})
        yield dg.MaterializeResult(asset_key=SOURCES, metadata=meta)
        yield dg.MaterializeResult(asset_key=MERGE_LOG, metadata=log_meta)
        yield dg.MaterializeResult(asset_key=REFUSED, metadata=refused_meta)
        yield dg.MaterializeResult(asset_key=LINKS, metadata=link_meta)

    @dg.asset_check(pool=POOL, asset=SOURCES, name="every_source_record_has_one_customer", blocking=True)
    def one_customer(warehouse: DuckDBResource):
        with warehouse.get_connection() as con:
            row = con.execute("""
                SELECT (SELECT count(*) FROM staging.contacts) AS staged,
                       (SELECT count(*) FROM core.customer_sources) AS mapped,
                       (SELECT count(*) FROM (SELECT source, source_record_id FROM core.customer_sources
                                              GROUP BY ALL HAVING count(*) > 1)) AS dupes""").fetchone()
        return dg.AssetCheckResult(passed=row[0] == row[1] and row[2] == 0,
                                   metadata={"staged": int(row[0]), "mapped": int(row[1]),
                                             "records_with_several_customers": int(row[2])})

    return [customer_sources], [one_customer]
