"""Marketing: RFM, scores (with threshold actions), funnel stages per day, and one asset per
configured segment (``segments.<name>``). Thin wrappers over tessera.marketing.rfm / scoring /
stages / segments; metadata carries counts only."""


import datetime as dt

import dagster as dg
from dagster_duckdb import DuckDBResource

from resources.spark import SparkEngineResource
from assets._common import DAY_INPUTS, POOL, day_engine_of, described_schema, markdown_counts, table_metadata
from pipelines.partitions import daily_backfill, daily_partitions
from tessera.settings import Deployment
from tessera.marketing.rfm import build_rfm
from tessera.marketing.scoring import build_scores
from tessera.marketing.segments import build_segment, member_sample, size_history
from tessera.marketing.rules import referenced_fields, referenced_segments, segment_order
from tessera.marketing.stages import build_stages
from tessera.engine.warehouse import Timer
from tessera.vocabulary import PREDICTION_FIELDS

GROUP = "marketing"
RFM = dg.AssetKey(["marketing", "rfm_scores"])
CARDS = dg.AssetKey(["marts", "contact_cards"])
SCORES = dg.AssetKey(["marketing", "scores"])
ACTIONS = dg.AssetKey(["marketing", "score_actions"])
STAGES = dg.AssetKey(["marketing", "stages"])
STAGE_HISTORY = dg.AssetKey(["marketing", "stage_history"])
FUNNEL = dg.AssetKey(["marketing", "funnel_daily"])


def _day(context) -> dt.date:
    return dt.date.fromisoformat(context.partition_key)


def build(deployment: Deployment):
    deps = [dg.AssetKey(["core", "orders"])] if deployment.sources_of("order") else []
    deps.append(CARDS)

    @dg.asset(key=RFM, group_name=GROUP, pool=POOL, deps=[*deps, DAY_INPUTS], kinds={"duckdb"},
              partitions_def=daily_partitions, backfill_policy=daily_backfill,
              description="Recency, frequency, monetary quintiles and RFM group per customer, per day.")
    def rfm_scores(context: dg.AssetExecutionContext, warehouse: DuckDBResource,
            spark: SparkEngineResource) -> dg.MaterializeResult:
        timer = Timer()
        day = _day(context)
        with warehouse.get_connection() as con:
            with day_engine_of(spark, con, day) as engine:
                stats = build_rfm(engine, day)
            meta = table_metadata(con, "marketing", "rfm_scores", timer.seconds,
                                  {"scored": stats["scored"]}, "as_of_date = ?", [day])
            meta["by_group"] = markdown_counts("rfm_group", list(stats["groups"].items()))
        return dg.MaterializeResult(metadata=meta)

    @dg.asset_check(pool=POOL, asset=RFM, name="rfm_scores_in_range", blocking=True)
    def rfm_range(warehouse: DuckDBResource):
        with warehouse.get_connection() as con:
            bad = con.execute("""SELECT count(*) FROM marketing.rfm_scores
                WHERE r_score NOT BETWEEN 1 AND 5 OR f_score NOT BETWEEN 1 AND 5
                   OR m_score NOT BETWEEN 1 AND 5 OR recency_days < 0 OR rfm_group IS NULL""").fetchone()[0]
        return dg.AssetCheckResult(passed=bad == 0, metadata={"bad_rows": int(bad)})

    assets, checks = [rfm_scores], [rfm_range]
    upstream = [CARDS, RFM]
    if deployment.scores:
        a, c = _scores_asset(deployment)
        assets.append(a)
        checks.append(c)
        upstream.append(SCORES)
    if deployment.stages:
        a, c = _stages_asset(deployment, upstream)
        assets.append(a)
        checks.append(c)
        upstream.append(STAGES)
    for segment in segment_order(deployment.segments):
        a, c = _segment_asset(deployment, segment, upstream)
        assets.append(a)
        checks.append(c)
    return assets, checks


def _scores_asset(deployment: Deployment):
    deps = [CARDS]
    if deployment.sources_of("event"):
        deps.append(dg.AssetKey(["core", "events"]))

    @dg.multi_asset(
        specs=[
            dg.AssetSpec(SCORES, group_name=GROUP, deps=[*deps, DAY_INPUTS], kinds={"duckdb"},
                         description="Score per contact, per score type (scoring.yaml), per day."),
            dg.AssetSpec(ACTIONS, group_name=GROUP, deps=[*deps, DAY_INPUTS], kinds={"duckdb"},
                         description="Threshold actions (tag, notify, feed), fired once per upward crossing."),
        ],
        pool=POOL, partitions_def=daily_partitions, backfill_policy=daily_backfill,
    )
    def scores(context: dg.AssetExecutionContext, warehouse: DuckDBResource,
            spark: SparkEngineResource):
        timer = Timer()
        day = _day(context)
        with warehouse.get_connection() as con:
            with day_engine_of(spark, con, day) as engine:
                stats = build_scores(engine, deployment, day)
            meta = table_metadata(con, "marketing", "scores", timer.seconds,
                                  {"scored": stats["scored"]}, "as_of_date = ?", [day])
            meta["by_type"] = dg.MetadataValue.json(stats["by_type"])
            act = table_metadata(con, "marketing", "score_actions", timer.seconds,
                                 {"fired_today": stats["actions"]}, "as_of_date = ?", [day])
            act["by_action"] = markdown_counts("action", con.execute(
                "SELECT score_type || ' >= ' || threshold || ': ' || action, count(*) "
                "FROM marketing.score_actions WHERE as_of_date = ? GROUP BY 1 ORDER BY 1", [day]).fetchall())
        yield dg.MaterializeResult(asset_key=SCORES, metadata=meta)
        yield dg.MaterializeResult(asset_key=ACTIONS, metadata=act)

    @dg.asset_check(pool=POOL, asset=ACTIONS, name="actions_fire_once_per_crossing", blocking=True)
    def once(warehouse: DuckDBResource):
        with warehouse.get_connection() as con:
            bad = con.execute("""SELECT count(*) FROM (
                SELECT as_of_date, score_type, threshold, customer_id, action, target, count(*) n
                FROM marketing.score_actions GROUP BY ALL HAVING n > 1)""").fetchone()[0]
        return dg.AssetCheckResult(passed=bad == 0, metadata={"duplicates": int(bad)})

    return scores, once


def _stages_asset(deployment: Deployment, upstream: list):
    @dg.multi_asset(
        specs=[
            dg.AssetSpec(STAGES, group_name=GROUP, deps=[*upstream, DAY_INPUTS], kinds={"duckdb"},
                         description="Funnel stage per contact per day (stages.yaml, furthest matching stage)."),
            dg.AssetSpec(STAGE_HISTORY, group_name=GROUP, deps=[*upstream, DAY_INPUTS], kinds={"duckdb"},
                         description="When each contact entered and left each stage."),
            dg.AssetSpec(FUNNEL, group_name=GROUP, deps=[*upstream, DAY_INPUTS], kinds={"duckdb"},
                         description="Contacts per stage per day, and at-or-beyond each stage."),
        ],
        pool=POOL, partitions_def=daily_partitions, backfill_policy=daily_backfill,
    )
    def stages(context: dg.AssetExecutionContext, warehouse: DuckDBResource,
            spark: SparkEngineResource):
        timer = Timer()
        day = _day(context)
        with warehouse.get_connection() as con:
            with day_engine_of(spark, con, day) as engine:
                stats = build_stages(engine, deployment, day)
            meta = table_metadata(con, "marketing", "stages", timer.seconds,
                                  {"staged": stats["staged"]}, "as_of_date = ?", [day])
            meta["funnel"] = markdown_counts("stage", list(stats["funnel"].items()))
            hist = table_metadata(con, "marketing", "stage_history", timer.seconds,
                                  {"entered_today": stats["entered_today"]})
            funnel = table_metadata(con, "marketing", "funnel_daily", timer.seconds, None,
                                    "as_of_date = ?", [day])
            funnel["funnel"] = meta["funnel"]
        yield dg.MaterializeResult(asset_key=STAGES, metadata=meta)
        yield dg.MaterializeResult(asset_key=STAGE_HISTORY, metadata=hist)
        yield dg.MaterializeResult(asset_key=FUNNEL, metadata=funnel)

    @dg.asset_check(pool=POOL, asset=STAGES, name="one_stage_per_contact_per_day", blocking=True)
    def one_stage(warehouse: DuckDBResource):
        with warehouse.get_connection() as con:
            bad = con.execute("""SELECT count(*) FROM (SELECT as_of_date, customer_id FROM marketing.stages
                                 GROUP BY ALL HAVING count(*) > 1)""").fetchone()[0]
        return dg.AssetCheckResult(passed=bad == 0, metadata={"duplicates": int(bad)})

    return stages, one_stage


def _segment_asset(deployment: Deployment, segment, upstream: list):
    key = dg.AssetKey(["segments", segment.name])
    deps = list(upstream) + [dg.AssetKey(["segments", s])
                             for s in dict.fromkeys(referenced_segments(segment.rule))]
    if set(referenced_fields(segment.rule)) & set(PREDICTION_FIELDS):
        deps.append(dg.AssetKey(["predictions", "customer_predictions"]))
    if segment.view:
        deps.append(dg.AssetKey(["views", f"{segment.view}_contact_cards"]))

    @dg.asset(key=key, group_name="segments", pool=POOL, deps=[*deps, DAY_INPUTS], kinds={"duckdb"},
              partitions_def=daily_partitions, backfill_policy=daily_backfill,
              description=f"Segment '{segment.name}' ({segment.kind}): {segment.description}",
              metadata={"rule": dg.MetadataValue.json(segment.rule), "kind": segment.kind})
    def _segment(context: dg.AssetExecutionContext, warehouse: DuckDBResource,
            spark: SparkEngineResource) -> dg.MaterializeResult:
        timer = Timer()
        day = _day(context)
        with warehouse.get_connection() as con:
            with day_engine_of(spark, con, day) as engine:
                stats = build_segment(engine, deployment, segment, day)
            sizes = size_history(con, segment.name)
            sample = member_sample(con, segment.name, day)
            schema = described_schema(con, "segments", segment.name, "contact")
        return dg.MaterializeResult(metadata={
            "dagster/column_schema": schema,
            "dagster/row_count": stats["members"],
            "members": stats["members"], "entered": stats["entered"], "left": stats["left"],
            # customer ids only (no names, no e-mails): open them in the contact card page
            "sample_member_ids": dg.MetadataValue.json(sample),
            "size_over_time": markdown_counts("day", [(d.isoformat(), n) for d, n in sizes]),
            "duration_s": dg.MetadataValue.float(timer.seconds),
        })

    @dg.asset_check(pool=POOL, asset=key, name="members_are_customers", blocking=True)
    def _members_ok(warehouse: DuckDBResource):
        with warehouse.get_connection() as con:
            bad = con.execute("""SELECT count(*) FROM marketing.segment_members m
                WHERE segment = ? AND customer_id NOT IN (SELECT customer_id FROM core.customers)""",
                              [segment.name]).fetchone()[0]
        return dg.AssetCheckResult(passed=bad == 0, metadata={"unknown_customers": int(bad)})

    return _segment, _members_ok
