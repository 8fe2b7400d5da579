"""Consent: the ledger of consent events and the state per person and channel."""

import datetime as dt

import dagster as dg
from dagster_duckdb import DuckDBResource

from resources.spark import SparkEngineResource
from assets._common import POOL, markdown_counts, table_metadata
from tessera.settings import Deployment
from resources import PrivacySettings
from tessera.privacy import suppression as privacy_core
from tessera.privacy.bounces import build_bounce_status
from tessera.privacy.consent import build_consents
from tessera.engine.warehouse import Timer, ensure_warehouse

GROUP = "consent"
EVENTS = dg.AssetKey(["core", "consent_events"])
CONSENTS = dg.AssetKey(["core", "consents"])


def build(deployment: Deployment):
    deps = [dg.AssetKey(["core", "customer_sources"]), dg.AssetKey(["staging", "contacts"])]
    deps += [dg.AssetKey(["raw", s.name]) for s in deployment.sources_of("contact")]
    deps += [dg.AssetKey(["raw", s.name]) for s in deployment.sources_of("company_user")]
    for entity, table in (("unsubscribe", "unsubscribes"), ("consent", "consents")):
        if deployment.sources_of(entity):
            deps.append(dg.AssetKey(["staging", table]))

    @dg.multi_asset(
        specs=[
            dg.AssetSpec(EVENTS, group_name=GROUP, deps=deps, kinds={"duckdb"},
                         description="Every dated consent signal per person and channel: import flags of every "
                                     "record version, unsubscribes, explicit consent events, bulk edits."),
            dg.AssetSpec(CONSENTS, group_name=GROUP, deps=deps, kinds={"duckdb"},
                         description="Consent state per person and channel: a withdrawal wins unless an "
                                     "explicit grant is newer."),
        ],
        pool=POOL,
    )
    def consents(warehouse: DuckDBResource, spark: SparkEngineResource):
        timer = Timer()
        with warehouse.get_connection() as con:
            ensure_warehouse(con)
            with spark.stage_engine(con) as engine:
                stats = build_consents(engine, deployment, dt.datetime.now().replace(microsecond=0))
            ev = table_metadata(con, "core", "consent_events", timer.seconds, {"events": stats["events"]})
            st = table_metadata(con, "core", "consents", timer.seconds)
            st["by_state"] = markdown_counts("channel:state", sorted(stats["states"].items()))
        yield dg.MaterializeResult(asset_key=EVENTS, metadata=ev)
        yield dg.MaterializeResult(asset_key=CONSENTS, metadata=st)

    @dg.asset_check(pool=POOL, asset=CONSENTS, name="opt_out_is_never_lifted_by_an_import", blocking=True,
                    description="No channel is granted while its latest withdrawal is newer than its latest "
                                "explicit grant.")
    def opt_out_sticky(warehouse: DuckDBResource):
        with warehouse.get_connection() as con:
            bad = con.execute("""
                SELECT count(*) FROM core.consents c
                JOIN (SELECT customer_id, channel,
                             max(occurred_at) FILTER (WHERE state = 'withdrawn') AS w,
                             max(occurred_at) FILTER (WHERE state = 'granted' AND explicit) AS g
                      FROM core.consent_events GROUP BY ALL) e USING (customer_id, channel)
                WHERE c.state = 'granted' AND e.w IS NOT NULL AND (e.g IS NULL OR e.g <= e.w)""").fetchone()[0]
        return dg.AssetCheckResult(passed=bad == 0, metadata={"violations": int(bad)})

    bounce_deps = [dg.AssetKey(["core", "customer_sources"]), dg.AssetKey(["staging", "contacts"])]
    if deployment.sources_of("bounce"):
        bounce_deps.append(dg.AssetKey(["staging", "bounces"]))

    @dg.asset(key=["core", "bounce_status"], group_name=GROUP, pool=POOL, deps=bounce_deps, kinds={"duckdb"},
              description="Per bounced address: hard/soft counts, bounces in the last 3 campaigns, "
                          "state blocked / to_handle; hard bounces suppress e-mail for that address.")
    def bounce_status(warehouse: DuckDBResource, privacy: PrivacySettings) -> dg.MaterializeResult:
        timer = Timer()
        with warehouse.get_connection() as con:
            ensure_warehouse(con)
            privacy_core.ensure_tables(con)
            privacy_core.install_hmac(con, privacy.suppression_key)
            stats = build_bounce_status(con, dt.datetime.now().replace(microsecond=0))
            return dg.MaterializeResult(metadata=table_metadata(con, "core", "bounce_status", timer.seconds, stats))

    return [consents, bounce_status], [opt_out_sticky]
