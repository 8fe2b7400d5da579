"""Exports: one asset per configured feed, ``exports.<feed>``, plus its published files
(full, or added / changed / removed) and, for a feed with an HTTP destination, its
signed batches delivered."""


import datetime as dt
from contextlib import nullcontext

import dagster as dg
from dagster_duckdb import DuckDBResource

from assets._common import DAY_INPUTS, POOL, day_engine_of, day_inputs, described_schema, report_swept_temps
from pipelines.partitions import daily_backfill, daily_partitions
from resources import FeedStore, PrivacySettings
from resources.spark import SparkEngineResource
from tessera.engine.warehouse import Timer, table_exists
from tessera.feeds.checks import (erased_in_last_delivery, last_two_deliveries,
                                  unconsented_in_last_delivery)
from tessera.feeds.publish import build_feed, prepare_feed
from tessera.privacy import suppression as privacy_core
from tessera.settings import Deployment
from tessera.feeds.selection import uses_predictions
from tessera.vocabulary import ACTION_FIELDS

GROUP = "exports"


def _feed_asset(deployment: Deployment, feed):
    key = dg.AssetKey(["exports", feed.name])
    deps = [dg.AssetKey(["marts", "contact_cards"]), dg.AssetKey(["marketing", "rfm_scores"]),
            dg.AssetKey(["core", "bounce_status"])]
    if feed.segment:
        deps.append(dg.AssetKey(["segments", feed.segment]))
    if feed.view:
        deps.append(dg.AssetKey(["views", f"{feed.view}_contact_cards"]))
    fields = set(feed.source_fields)
    if (feed.row_source == "score_actions" or fields & set(ACTION_FIELDS)) and deployment.scores:
        deps.append(dg.AssetKey(["marketing", "score_actions"]))
    if fields & {"stage", "stage_rank"}:
        deps.append(dg.AssetKey(["marketing", "stages"]))
    if "recommended_products" in fields or feed.row_source == "recommendations":
        deps.append(dg.AssetKey(["recommendations", "contact_products"]))
    if feed.row_source == "mart":
        deps.append(dg.AssetKey(["marts", feed.mart]))
    if uses_predictions(feed):
        deps.append(dg.AssetKey(["predictions", "customer_predictions"]))
    kinds = {"duckdb", feed.format} | ({"http"} if feed.destination else set())

    @dg.asset(key=key, group_name=GROUP, pool=POOL, deps=[*deps, DAY_INPUTS], kinds=kinds,
              partitions_def=daily_partitions, backfill_policy=daily_backfill,
              description=f"Feed '{feed.name}': {feed.description} (channel: {feed.channel}, "
                          f"{feed.format}, {feed.mode}).",
              metadata={"fields": dg.MetadataValue.json([c.out for c in feed.columns]),
                        "channel": feed.channel, "format": feed.format, "mode": feed.mode,
                        "weekdays": ", ".join(feed.weekdays or ["every day"])})
    def _feed(context: dg.AssetExecutionContext, warehouse: DuckDBResource,
              feeds: FeedStore, privacy: PrivacySettings,
              spark: SparkEngineResource) -> dg.MaterializeResult:
        timer = Timer()
        day = dt.date.fromisoformat(context.partition_key)
        with warehouse.get_connection() as con:
            privacy_core.ensure_tables(con)
            privacy_core.install_hmac(con, privacy.suppression_key)
            delivered = feed.delivered_on(day.weekday())
            if delivered:  # the tables as the day will read them, before any hand-over
                prepare_feed(day_inputs(con, day), feed, day)
            # engine: spark selects the day's rows and computes the diff on Spark; the
            # files, delivery and records are written here (ARCHITECTURE.md, "Engine: spark")
            with day_engine_of(spark, con, day) if delivered else nullcontext() as compute:
                stats = build_feed(day_inputs(con, day), feed, day, feeds.path,
                                   dt.datetime.now().replace(microsecond=0), compute=compute)
            schema = (described_schema(con, "exports", feed.name, "contact")
                      if table_exists(con, "exports", feed.name) else None)
        if stats["skipped"]:
            context.log.info(f"feed {feed.name}: {day:%A} is not one of its delivery days")
            return dg.MaterializeResult(metadata={"skipped": True, "dagster/row_count": 0})
        meta = {
            "dagster/row_count": stats["rows"],
            "file": dg.MetadataValue.path(stats["file"]),
            "sha256": stats["sha256"],
            "manifest": dg.MetadataValue.json(stats["manifest"]),
            "previous_delivery": str(stats["previous_delivery"] or ""),
            "duration_s": dg.MetadataValue.float(timer.seconds),
        }
        if schema is not None:
            meta["dagster/column_schema"] = schema
        # a diff day on the changed contacts only, or compared in full and why (counts only)
        meta["diff_path"] = stats["diff_path"]
        if stats["diff_candidates"] is not None:
            meta["diff_candidates"] = dg.MetadataValue.int(stats["diff_candidates"])
        for f in stats["files"]:
            meta[f"rows_{f['kind']}"] = dg.MetadataValue.int(f["rows"])
        for k, v in stats.get("delivery", {}).items():
            meta[k] = v
        for k, v in stats.items():
            if k.startswith(("retention_", "erasure_")):
                meta[k] = dg.MetadataValue.int(v)
        report_swept_temps(context, stats, meta)
        return dg.MaterializeResult(metadata=meta)

    @dg.asset_check(pool=POOL, asset=key, name="no_export_without_consent", blocking=True,
                    description="Every exported person has consent on the feed's channel today and no suppression.")
    def _consent(warehouse: DuckDBResource, privacy: PrivacySettings):
        with warehouse.get_connection() as con:
            privacy_core.ensure_tables(con)
            privacy_core.install_hmac(con, privacy.suppression_key)
            bad = unconsented_in_last_delivery(con, feed)
        return dg.AssetCheckResult(passed=bad == 0, metadata={"rows_without_consent": bad})

    @dg.asset_check(pool=POOL, asset=key, name="no_erased_person_exported", blocking=True,
                    description="No erased person is among the rows of the last delivery.")
    def _erased(warehouse: DuckDBResource, privacy: PrivacySettings):
        with warehouse.get_connection() as con:
            privacy_core.ensure_tables(con)
            bad = erased_in_last_delivery(con, feed)
        return dg.AssetCheckResult(passed=bad == 0, metadata={"erased_rows": bad})

    @dg.asset_check(pool=POOL, asset=key, name="row_count_holds_against_previous_delivery",
                    description=f"WARN when the last delivery has less than "
                                f"{1 - feed.max_row_drop:.0%} of the previous one's rows.")
    def _drop(warehouse: DuckDBResource):
        with warehouse.get_connection() as con:
            last = last_two_deliveries(con, feed)
        if len(last) < 2 or not last[1][1]:
            return dg.AssetCheckResult(passed=True, metadata={"compared": False})
        ratio = last[0][1] / last[1][1]
        return dg.AssetCheckResult(
            passed=ratio >= 1 - feed.max_row_drop, severity=dg.AssetCheckSeverity.WARN,
            metadata={"rows": int(last[0][1]), "previous_rows": int(last[1][1]),
                      "ratio": float(round(ratio, 4))})

    return _feed, [_consent, _erased, _drop]


def build(deployment: Deployment):
    assets, checks = [], []
    for feed in deployment.feeds:
        a, c = _feed_asset(deployment, feed)
        assets.append(a)
        checks.extend(c)
    return assets, checks
