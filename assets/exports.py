"""Exports: one asset per configured feed, ``exports.<feed>``, plus its published file."""


import datetime as dt

import dagster as dg
from dagster_duckdb import DuckDBResource

from assets._common import POOL, report_swept_temps
from pipelines.partitions import daily_partitions
from resources import FeedStore, PrivacySettings
from tessera.privacy import suppression as privacy_core
from tessera.settings import Deployment
from tessera.feeds.publish import build_feed
from tessera.feeds.selection import delivery_filter, uses_predictions
from tessera.engine.warehouse import Timer

GROUP = "exports"


def _feed_asset(deployment: Deployment, feed):
    key = dg.AssetKey(["exports", feed.name])
    deps = [dg.AssetKey(["marts", "contact_cards"]), dg.AssetKey(["marketing", "rfm_scores"]),
            dg.AssetKey(["core", "bounce_status"])]
    if feed.segment:
        deps.append(dg.AssetKey(["segments", feed.segment]))
    if feed.score_actions and deployment.scores:
        deps.append(dg.AssetKey(["marketing", "score_actions"]))
    if uses_predictions(feed):
        deps.append(dg.AssetKey(["predictions", "customer_predictions"]))

    @dg.asset(key=key, group_name=GROUP, pool=POOL, deps=deps, kinds={"duckdb", "csv"},
              partitions_def=daily_partitions,
              description=f"Feed '{feed.name}': {feed.description} (channel: {feed.channel}).",
              metadata={"fields": dg.MetadataValue.json(list(feed.fields)), "channel": feed.channel})
    def _feed(context: dg.AssetExecutionContext, warehouse: DuckDBResource,
              feeds: FeedStore, privacy: PrivacySettings) -> dg.MaterializeResult:
        timer = Timer()
        day = dt.date.fromisoformat(context.partition_key)
        with warehouse.get_connection() as con:
            privacy_core.ensure_tables(con)
            privacy_core.install_hmac(con, privacy.suppression_key)
            stats = build_feed(con, feed, day, feeds.path, dt.datetime.now().replace(microsecond=0))
        meta = {
            "dagster/row_count": stats["rows"],
            "file": dg.MetadataValue.path(stats["file"]),
            "sha256": stats["sha256"],
            "duration_s": dg.MetadataValue.float(timer.seconds),
        }
        report_swept_temps(context, stats, meta)
        return dg.MaterializeResult(metadata=meta)

    @dg.asset_check(pool=POOL, asset=key, name="no_export_without_consent", blocking=True,
                    description="Every exported person has consent on the feed's channel today and no suppression.")
    def _consent(warehouse: DuckDBResource, privacy: PrivacySettings):
        with warehouse.get_connection() as con:
            privacy_core.ensure_tables(con)
            privacy_core.install_hmac(con, privacy.suppression_key)
            bad = con.execute(f"""
                SELECT count(*) FROM marts.contact_cards
                WHERE customer_id IN (SELECT customer_id FROM exports.{feed.name}
                                      WHERE as_of_date = (SELECT max(as_of_date) FROM exports.feed_deliveries
                                                          WHERE feed = '{feed.name}'))
                  AND NOT ({delivery_filter(feed.channel)})""").fetchone()[0]
        return dg.AssetCheckResult(passed=bad == 0, metadata={"rows_without_consent": int(bad)})

    return _feed, _consent


def build(deployment: Deployment):
    assets, checks = [], []
    for feed in deployment.feeds:
        a, c = _feed_asset(deployment, feed)
        assets.append(a)
        checks.append(c)
    return assets, checks
