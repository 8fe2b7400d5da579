"""B2B: golden companies, the people of each company, co-workers and potential companies.

Thin wrappers around ``tessera.companies``: each asset reads staging, writes its table
and reports counts (ids and counts only, never names or e-mails). Built only for the
entities a deployment has sources of.
"""


import datetime as dt

import dagster as dg
from dagster_duckdb import DuckDBResource

from assets._common import (DAY_INPUTS, POOL, day_inputs,
                            published_contract_problems, report_swept_temps, table_metadata)
from pipelines.partitions import daily_backfill, daily_partitions
from resources import FeedStore
from resources.spark import SparkEngineResource
from tessera.companies.registry import (
    build_company_contacts,
    build_coworkers,
    build_potential_companies,
    resolve_companies,
)
from tessera.settings import Deployment
from tessera.reports.potential_unsubscribes import (
    WITHHELD_MESSAGE,
    build_potential_unsubscribes,
    export_potential_companies,
    pending_counts,
)
from tessera.engine.warehouse import Timer, ensure_warehouse

GROUP = "companies"
COMPANIES = dg.AssetKey(["core", "companies"])
COMPANY_SOURCES = dg.AssetKey(["core", "company_sources"])
COMPANY_LINEAGE = dg.AssetKey(["core", "company_field_lineage"])
COMPANY_CONTACTS = dg.AssetKey(["core", "company_contacts"])
COWORKERS = dg.AssetKey(["marts", "coworkers"])
POTENTIAL = dg.AssetKey(["core", "potential_companies"])
POTENTIAL_UNSUBS = dg.AssetKey(["core", "potential_unsubscribes"])


def _now() -> dt.datetime:
    return dt.datetime.now().replace(microsecond=0)


def build(deployment: Deployment):
    assets, checks = [], []
    has_companies = bool(deployment.sources_of("company"))
    if has_companies:
        upstream = [dg.AssetKey(["staging", "companies"])]

        @dg.multi_asset(
            specs=[
                dg.AssetSpec(COMPANY_SOURCES, group_name=GROUP, deps=upstream, kinds={"duckdb"},
                             description="Which golden company each company record belongs to "
                                         "(matched by VAT, then normalised legal name)."),
                dg.AssetSpec(COMPANIES, group_name=GROUP, deps=[COMPANY_SOURCES, *upstream],
                             kinds={"duckdb"},
                             description="One golden record per company; company_id stable across runs."),
                dg.AssetSpec(COMPANY_LINEAGE, group_name=GROUP, deps=[COMPANY_SOURCES, *upstream],
                             kinds={"duckdb"},
                             description="For every golden company field: node, source and record it came from."),
            ],
            pool=POOL,
        )
        def companies(warehouse: DuckDBResource, spark: SparkEngineResource):
            timer = Timer()
            with warehouse.get_connection() as con:
                ensure_warehouse(con)
                with spark.stage_engine(con) as engine:
                    stats = resolve_companies(engine, deployment, _now())
                by_rule = dict(con.execute("SELECT matched_by, count(*) FROM core.company_sources "
                                           "GROUP BY ALL ORDER BY 1").fetchall())
                src = table_metadata(con, "core", "company_sources", timer.seconds,
                                     {"matched_by": dg.MetadataValue.json(
                                         {k: int(v) for k, v in by_rule.items()})})
                gold = table_metadata(con, "core", "companies", timer.seconds, stats)
                lin = table_metadata(con, "core", "company_field_lineage", timer.seconds)
            yield dg.MaterializeResult(asset_key=COMPANY_SOURCES, metadata=src)
            yield dg.MaterializeResult(asset_key=COMPANIES, metadata=gold)
            yield dg.MaterializeResult(asset_key=COMPANY_LINEAGE, metadata=lin)

        @dg.asset_check(pool=POOL, asset=COMPANIES, name="company_ids_are_unique", blocking=True,
                        description="company_id is unique, and every company record has one company.")
        def company_ids_unique(warehouse: DuckDBResource):
            with warehouse.get_connection() as con:
                n, d, recs, staged = con.execute("""
                    SELECT (SELECT count(*) FROM core.companies),
                           (SELECT count(DISTINCT company_id) FROM core.companies),
                           (SELECT count(DISTINCT (source, source_record_id)) FROM core.company_sources),
                           (SELECT count(*) FROM staging.companies)""").fetchone()
            return dg.AssetCheckResult(passed=n == d and recs == staged,
                                       metadata={"companies": int(n), "distinct_ids": int(d),
                                                 "records_mapped": int(recs), "records_staged": int(staged)})

        @dg.asset_check(pool=POOL, asset=COMPANIES, name="companies_match_published_contract", blocking=True,
                        description="Columns promised in data_contracts/published/core.companies.yaml "
                                    "exist with their types.")
        def companies_contract(warehouse: DuckDBResource):
            with warehouse.get_connection() as con:
                problems = published_contract_problems(con, "core.companies", deployment.switched_off_of("company"))
            return dg.AssetCheckResult(passed=not problems, metadata={"problems": dg.MetadataValue.json(problems)})

        assets.append(companies)
        checks += [company_ids_unique, companies_contract]

    if deployment.sources_of("company_user"):
        deps = [dg.AssetKey(["staging", "company_users"]), dg.AssetKey(["core", "customer_sources"])]
        if has_companies:
            deps.append(COMPANY_SOURCES)

        @dg.asset(key=COMPANY_CONTACTS, group_name=GROUP, pool=POOL, deps=deps, kinds={"duckdb"},
                  description="(customer_id, company_id, role, source) for every company user "
                              "linked to a company: the people of each company.")
        def company_contacts(warehouse: DuckDBResource, spark: SparkEngineResource) -> dg.MaterializeResult:
            timer = Timer()
            with warehouse.get_connection() as con:
                ensure_warehouse(con)
                _ensure_company_tables(con)
                with spark.stage_engine(con) as engine:
                    stats = build_company_contacts(engine, deployment)
                stats["unlinked_company_users"] = int(con.execute(
                    "SELECT count(*) FROM ops.unlinked_company_users").fetchone()[0])
                meta = table_metadata(con, "core", "company_contacts", timer.seconds, stats)
            return dg.MaterializeResult(metadata=meta)

        @dg.asset(key=COWORKERS, group_name=GROUP, pool=POOL, deps=[COMPANY_CONTACTS],
                  kinds={"duckdb"},
                  description="A view: (customer_id, coworker_id, company_id) for people of the same company.")
        def coworkers(warehouse: DuckDBResource, spark: SparkEngineResource) -> dg.MaterializeResult:
            timer = Timer()
            with warehouse.get_connection() as con:
                with spark.stage_engine(con) as engine:  # the view is handed back as its SQL
                    stats = build_coworkers(engine)
                meta = table_metadata(con, "marts", "coworkers", timer.seconds, stats)
            return dg.MaterializeResult(metadata=meta)

        assets += [company_contacts, coworkers]

    if deployment.sources_of("potential_company"):
        deps = [dg.AssetKey(["staging", "potential_companies"])]
        if has_companies:
            deps.append(COMPANY_SOURCES)
        unsub_deps = [dg.AssetKey(["staging", "potential_companies"])]
        if deployment.sources_of("unsubscribe"):
            unsub_deps.append(dg.AssetKey(["staging", "unsubscribes"]))

        @dg.multi_asset(
            specs=[
                dg.AssetSpec(POTENTIAL, group_name=GROUP, deps=deps, kinds={"duckdb"},
                             description="Purchased potential companies, apart from companies and "
                                         "contacts; marked registered (with the company id) once a "
                                         "company with the same VAT or legal name exists."),
                dg.AssetSpec(POTENTIAL_UNSUBS, group_name=GROUP, deps=unsub_deps, kinds={"duckdb"},
                             description="Unsubscribe requests from potential companies and the "
                                         "decision on each (unfreeze, block, download)."),
            ],
            pool=POOL,
        )
        def potential_companies(warehouse: DuckDBResource, spark: SparkEngineResource):
            timer = Timer()
            with warehouse.get_connection() as con:
                ensure_warehouse(con)
                with spark.stage_engine(con) as engine:
                    stats = build_potential_companies(engine, _now(), deployment)
                # the unsubscribe requests stay on DuckDB: their decisions are written by
                # the CLI into the DuckDB warehouse, a few rows per request
                meta = table_metadata(con, "core", "potential_companies", timer.seconds, stats)
                ucounts = build_potential_unsubscribes(con)
                if ucounts["undecided"]:
                    ucounts["export_blocked"] = WITHHELD_MESSAGE.format(n=ucounts["undecided"])
                umeta = table_metadata(con, "core", "potential_unsubscribes", timer.seconds, ucounts)
            yield dg.MaterializeResult(asset_key=POTENTIAL, metadata=meta)
            yield dg.MaterializeResult(asset_key=POTENTIAL_UNSUBS, metadata=umeta)

        @dg.asset_check(pool=POOL, asset=POTENTIAL_UNSUBS, name="potential_unsubscribes_are_decided",
                        blocking=True,
                        description="Every unsubscribe request from a potential company has a "
                                    "decision; until then the potential registry feeds no export.")
        def decided(warehouse: DuckDBResource):
            with warehouse.get_connection() as con:
                counts = pending_counts(con)
            meta = {k: int(v) for k, v in counts.items()}
            if counts["undecided"]:
                meta["message"] = WITHHELD_MESSAGE.format(n=counts["undecided"])
            return dg.AssetCheckResult(passed=counts["undecided"] == 0, metadata=meta)

        export_key = dg.AssetKey(["exports", "potential_companies"])

        @dg.asset(key=export_key, group_name="exports", pool=POOL, deps=[POTENTIAL, POTENTIAL_UNSUBS, DAY_INPUTS],
                  partitions_def=daily_partitions, backfill_policy=daily_backfill, kinds={"duckdb", "csv"},
                  description="The potential-companies registry (still potential, not blocked by an "
                              "unsubscribe decision), published with a manifest; withheld while "
                              "unsubscribe requests await a decision.")
        def potential_export(context: dg.AssetExecutionContext, warehouse: DuckDBResource,
                             feeds: FeedStore) -> dg.MaterializeResult:
            timer = Timer()
            day = dt.date.fromisoformat(context.partition_key)
            with warehouse.get_connection() as con:
                stats = export_potential_companies(day_inputs(con, day), day, feeds.path, _now())
            if stats["withheld"]:
                context.log.warning(stats["message"])
            meta = {"dagster/row_count": stats["rows"], "withheld": stats["withheld"],
                    "undecided_unsubscribes": stats["undecided"],
                    "duration_s": dg.MetadataValue.float(timer.seconds)}
            if stats["withheld"]:
                meta["message"] = stats["message"]
            else:
                meta["file"] = dg.MetadataValue.path(stats["file"])
                meta["sha256"] = stats["sha256"]
            report_swept_temps(context, stats, meta)
            return dg.MaterializeResult(metadata=meta)

        assets += [potential_companies, potential_export]
        checks.append(decided)
    return assets, checks


def _ensure_company_tables(con) -> None:
    """Without a company source, users link to nothing: empty company tables."""
    con.execute("CREATE TABLE IF NOT EXISTS core.company_sources (source VARCHAR, "
                "source_record_id VARCHAR, company_id BIGINT)")
    con.execute("CREATE TABLE IF NOT EXISTS core.companies (company_id BIGINT, legal_name VARCHAR, "
                "vat_number VARCHAR, city VARCHAR, province VARCHAR, sector_macro BIGINT, "
                "sector_micro BIGINT, company_type VARCHAR, revenue DECIMAL(18,2), employees BIGINT)")
