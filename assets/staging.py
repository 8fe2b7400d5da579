"""Staging: one asset per entity, the latest version of each source record, normalised."""


import dagster as dg
from dagster_duckdb import DuckDBResource

from assets._common import POOL, table_metadata
from tessera.config import Deployment
from tessera.staging import ENTITY_TABLES, build_contacts, build_entity
from tessera.warehouse import Timer, ensure_warehouse

GROUP = "staging"


def _entity_asset(deployment: Deployment, entity: str):
    table = ENTITY_TABLES[entity]
    key = dg.AssetKey(["staging", table])
    deps = [dg.AssetKey(["raw", s.name]) for s in deployment.sources_of(entity)]

    @dg.asset(key=key, group_name=GROUP, pool=POOL, deps=deps, kinds={"duckdb"},
              description=f"Latest version of every {entity} record from its sources, typed and normalised.")
    def _build(warehouse: DuckDBResource) -> dg.MaterializeResult:
        timer = Timer()
        with warehouse.get_connection() as con:
            ensure_warehouse(con)
            if entity == "contact":
                build_contacts(con, deployment)
                extra = dict(con.execute("""
                    SELECT 'records_with_email_key', count(email_key) FROM staging.contacts
                    UNION ALL SELECT 'records_with_mobile', count(mobile) FROM staging.contacts""").fetchall())
            else:
                build_entity(con, deployment, entity)
                extra = {}
            meta = table_metadata(con, "staging", table, timer.seconds, extra)
        return dg.MaterializeResult(metadata=meta)

    checks = []

    @dg.asset_check(asset=key, name="keys_are_unique", blocking=True,
                    description="One row per (source, source_record_id).")
    def _unique(warehouse: DuckDBResource):
        with warehouse.get_connection() as con:
            dupes = con.execute(f"""
                SELECT count(*) FROM (SELECT source, source_record_id FROM staging.{table}
                GROUP BY ALL HAVING count(*) > 1)""").fetchone()[0]
        return dg.AssetCheckResult(passed=dupes == 0, metadata={"duplicate_keys": int(dupes)})

    checks.append(_unique)
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
