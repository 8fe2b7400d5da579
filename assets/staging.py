"""Staging: one asset per entity, the latest version of each source record, normalised."""


import datetime as dt
from contextlib import nullcontext

import dagster as dg
from dagster_duckdb import DuckDBResource

from assets._common import POOL, table_metadata
from resources.spark import SparkEngineResource
from tessera.companies.registry import link_company_users
from tessera.settings import Deployment
from tessera.ingest.check_scope import duplicate_keys, record_verdict, written_keys
from tessera.ingest.expectations import check_staged
from tessera.vocabulary import ENTITY_TABLES
from tessera.ingest.changed_keys import ChangeRun
from tessera.ingest.staging import build_contacts, build_entity
from tessera.engine.warehouse import Timer, ensure_warehouse

GROUP = "staging"


def _entity_asset(deployment: Deployment, entity: str):
    table = ENTITY_TABLES[entity]
    key = dg.AssetKey(["staging", table])
    deps = [dg.AssetKey(["raw", s.name]) for s in deployment.sources_of(entity)]
    if entity == "contact":
        # company users are people: they feed staging.contacts too
        deps += [dg.AssetKey(["raw", s.name]) for s in deployment.sources_of("company_user")]
    if entity == "company_user" and deployment.sources_of("company"):
        # B2B companies load before their users: users link to staged company records
        deps.append(dg.AssetKey(["staging", "companies"]))

    @dg.asset(key=key, group_name=GROUP, pool=POOL, deps=deps, kinds={"duckdb"},
              description=f"Latest version of every {entity} record from its sources, typed and normalised.")
    def _build(context: dg.AssetExecutionContext, warehouse: DuckDBResource,
               spark: SparkEngineResource) -> dg.MaterializeResult:
        timer = Timer()
        # incremental: only records with a new raw version are recomputed; the keys that
        # changed go to ops.changed_keys (tessera.ingest.changed_keys). That path stays on
        # DuckDB; a full build runs on the deployment's engine (Spark: the raw tables
        # published as Parquet by the hand-over, the staged tables handed back)
        changes = (ChangeRun(context.run_id, dt.datetime.now().replace(microsecond=0))
                   if deployment.incremental else None)
        with warehouse.get_connection() as con:
            ensure_warehouse(con)
            with (spark.stage_engine(con) if changes is None else nullcontext(con)) as engine:
                if entity == "company_user":
                    build_entity(engine, deployment, entity)
                    extra = link_company_users(engine, dt.datetime.now().replace(microsecond=0))
                elif entity == "contact":
                    built = build_contacts(engine, deployment, changes)
                    extra = built if isinstance(built, dict) else {}
                else:
                    built = build_entity(engine, deployment, entity, changes)
                    extra = built if isinstance(built, dict) else {}
            if entity == "company_user" and extra["unlinked"]:
                context.log.warning(f"{extra['unlinked']} company users not linked to a company "
                                    "(ids and reasons in ops.unlinked_company_users)")
            if entity == "contact":
                extra.update(dict(con.execute("""
                    SELECT 'records_with_email_key', count(email_key) FROM staging.contacts
                    UNION ALL SELECT 'records_with_mobile', count(mobile) FROM staging.contacts""").fetchall()))
            meta = table_metadata(con, "staging", table, timer.seconds, extra)
        return dg.MaterializeResult(metadata=meta)

    checks = []

    @dg.asset_check(pool=POOL, asset=key, name="keys_are_unique", blocking=True,
                    description="One row per (source, source_record_id). After an incremental "
                                "build whose previous check passed, the keys this run wrote are "
                                "looked for in the whole table (ops.staging_check_verdicts).")
    def _unique(context: dg.AssetCheckExecutionContext, warehouse: DuckDBResource):
        with warehouse.get_connection() as con:
            ensure_warehouse(con)
            written = written_keys(con, f"staging.{table}", entity, context.run.run_id, "keys_are_unique")
            dupes, judged = duplicate_keys(con, f"staging.{table}", written)
            record_verdict(con, f"staging.{table}", "keys_are_unique", context.run.run_id,
                           "table" if written is None else "written", judged, dupes == 0)
        return dg.AssetCheckResult(passed=dupes == 0, metadata={
            "duplicate_keys": int(dupes),
            "scope": "whole table" if written is None else f"the {int(judged):,} rows this run wrote"})

    checks.append(_unique)

    settings = deployment.expectations_of(entity)
    nulls = ", ".join(f"{c} (at most {r.max_share:.0%} empty{', blocking' if r.blocking else ''})"
                      for c, r in settings.null_rates_of(entity).items()) or "none"

    @dg.asset_check(pool=POOL, asset=key, name=f"{table}_pass_batch_expectations", blocking=True,
                    description=f"great-expectations on the batch: row count not below "
                                f"{settings.row_count_min_ratio:.0%} of the previous load"
                                f"{' (blocking)' if settings.row_count_blocking else ''}, no null or "
                                f"duplicate keys (blocking); null rates: {nulls}. Thresholds in "
                                f"tessera.yaml (expectations: {entity}); results, counts only, in "
                                f"ops.expectation_results.")
    def _expectations(context: dg.AssetCheckExecutionContext, warehouse: DuckDBResource):
        name = f"{table}_pass_batch_expectations"
        with warehouse.get_connection() as con:
            ensure_warehouse(con)
            written = written_keys(con, f"staging.{table}", entity, context.run.run_id, name)
            outcomes = check_staged(con, entity, table, context.run.run_id, settings=settings, written=written)
            failed_blocking = [o for o in outcomes if o.blocking and not o.success]
            judged = next((o.element_count for o in outcomes if o.column == "source_record_id"), None)
            record_verdict(con, f"staging.{table}", name, context.run.run_id,
                           "table" if written is None else "written", judged, not failed_blocking)
        rows = [{"expectation": o.expectation, "column": o.column or "", "blocking": o.blocking,
                 "success": o.success, "unexpected_count": o.unexpected_count,
                 "unexpected_percent": (round(o.unexpected_percent, 2)
                                        if o.unexpected_percent is not None else None),
                 "observed": o.observed_value, "expected": o.expected} for o in outcomes]
        return dg.AssetCheckResult(
            passed=not failed_blocking,
            metadata={"expectations": dg.MetadataValue.json(rows),
                      "scope": "whole table" if written is None else "the rows this run wrote "
                               "(row count: the whole table)",
                      "failed_blocking": len(failed_blocking),
                      "failed_reported": sum(not o.success and not o.blocking for o in outcomes)})

    checks.append(_expectations)
    return _build, checks


def build(deployment: Deployment):
    assets, checks = [], []
    for entity in ENTITY_TABLES:
        if not deployment.sources_of(entity) and entity != "contact":
            continue
        a, c = _entity_asset(deployment, entity)
        assets.append(a)
        checks.extend(c)
    return assets, checks
