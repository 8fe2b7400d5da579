"""The contact card's entities: ``core.messages``, ``core.app_events``,
``core.mobile_profiles`` and ``core.contact_details`` linked to golden customers."""


import dagster as dg
from dagster_duckdb import DuckDBResource

from assets._common import POOL, table_metadata
from tessera.card.contact_data import build_contact_data
from tessera.engine.warehouse import Timer
from tessera.settings import Deployment
from tessera.vocabulary import CARD_ENTITIES, ENTITY_TABLES

GROUP = "golden"

_SPECS = {
    "messages": "E-mails, SMS and web pushes sent to each customer, with SALESmanago's delivery "
                "status code, opens and clicks (no address kept).",
    "app_events": "Mobile app events (install, launch, session end, location) with the customer they "
                  "are about.",
    "mobile_profiles": "The mobile profile per customer and app: app, language, system and version, "
                       "last location, first and last launch, time in app.",
    "contact_details": "Standard and dictionary details (key/value) of each customer, the latest value "
                       "per key.",
}


def build(deployment: Deployment):
    staged = [dg.AssetKey(["staging", ENTITY_TABLES[e]]) for e in CARD_ENTITIES if deployment.sources_of(e)]
    if not staged:
        return [], []
    deps = [*staged, dg.AssetKey(["core", "customer_sources"]), dg.AssetKey(["staging", "contacts"])]

    @dg.multi_asset(
        name="core_contact_data", group_name=GROUP, pool=POOL,
        specs=[dg.AssetSpec(["core", t], deps=deps, kinds={"duckdb"}, group_name=GROUP, description=d)
               for t, d in _SPECS.items()])
    def contact_data(warehouse: DuckDBResource):
        timer = Timer()
        with warehouse.get_connection() as con:
            stats = build_contact_data(con, deployment)
            for table in _SPECS:
                prefix = {"contact_details": "details", "mobile_profiles": "mobile_profiles"}.get(table, table)
                extra = {k: v for k, v in stats.items() if k.startswith(prefix)}
                yield dg.MaterializeResult(asset_key=["core", table],
                                           metadata=table_metadata(con, "core", table, timer.seconds, extra))

    return [contact_data], []
