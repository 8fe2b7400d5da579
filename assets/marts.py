"""Marts: the contact card, one row per golden customer."""


import dagster as dg
from dagster_duckdb import DuckDBResource

from assets._common import POOL, table_metadata
from tessera.settings import Deployment
from tessera.privacy.consent import SOFT_DELETED_SQL
from tessera.card.marts import build_contact_cards, build_view_cards
from tessera.card.search import build_contact_search
from tessera.engine.warehouse import Timer
from resources.spark import SparkEngineResource

GROUP = "marts"
CARDS = dg.AssetKey(["marts", "contact_cards"])
SEARCH = dg.AssetKey(["marts", "contact_search"])


def build(deployment: Deployment):
    deps = [dg.AssetKey(["core", "customers"])]
    if deployment.sources_of("order"):
        deps.append(dg.AssetKey(["core", "orders"]))
    if deployment.sources_of("event"):
        deps.append(dg.AssetKey(["core", "events"]))
    companies = bool(deployment.sources_of("company_user"))
    if companies:
        deps += [dg.AssetKey(["core", "company_contacts"]), dg.AssetKey(["marts", "coworkers"])]
        if deployment.sources_of("company"):
            deps.append(dg.AssetKey(["core", "companies"]))
    if deployment.sources_of("note") or deployment.sources_of("task"):
        deps += [dg.AssetKey(["core", "notes"]), dg.AssetKey(["core", "tasks"])]

    @dg.asset(key=CARDS, group_name=GROUP, pool=POOL, deps=deps, kinds={"duckdb"},
              description="The 360-degree contact card: golden profile, consents, "
                          "ORDER_NUMBER / ORDER_SUMMARY / ORDER_AVG, behaviour.")
    def contact_cards(warehouse: DuckDBResource, spark: SparkEngineResource) -> dg.MaterializeResult:
        timer = Timer()
        with warehouse.get_connection() as con:
            con.execute("CREATE TABLE IF NOT EXISTS core.orders (order_id VARCHAR, customer_id BIGINT, "
                        "order_date DATE, amount DECIMAL(18,2))")
            con.execute("CREATE TABLE IF NOT EXISTS core.events (event_id VARCHAR, customer_id BIGINT, "
                        "event_type VARCHAR, occurred_at TIMESTAMP)")
            with spark.stage_engine(con) as engine:
                # incremental: behaviour aggregated only for the customers whose events moved
                stats = build_contact_cards(engine, companies=companies, deployment=deployment,
                                            incremental=deployment.incremental)
            return dg.MaterializeResult(metadata=table_metadata(con, "marts", "contact_cards", timer.seconds, stats))

    @dg.asset_check(pool=POOL, asset=CARDS, name="one_card_per_customer", blocking=True,
                    description="One card per golden customer who is not soft-deleted.")
    def one_card(warehouse: DuckDBResource):
        with warehouse.get_connection() as con:
            cards, customers, distinct, stray = con.execute(f"""
                SELECT (SELECT count(*) FROM marts.contact_cards),
                       (SELECT count(*) FROM core.customers WHERE customer_id NOT IN (
                            SELECT customer_id FROM ({SOFT_DELETED_SQL}))),
                       (SELECT count(DISTINCT customer_id) FROM marts.contact_cards),
                       (SELECT count(*) FROM marts.contact_cards
                        WHERE customer_id NOT IN (SELECT customer_id FROM core.customers))""").fetchone()
        return dg.AssetCheckResult(passed=cards == customers == distinct and stray == 0,
                                   metadata={"cards": int(cards), "customers": int(customers)})

    @dg.asset(key=SEARCH, group_name=GROUP, pool=POOL, deps=[CARDS], kinds={"duckdb"},
              description="The contact cards' search keys, folded once per run (lower case, no "
                          "accents) for the web page's search, in registry order.")
    def contact_search(warehouse: DuckDBResource) -> dg.MaterializeResult:
        timer = Timer()
        with warehouse.get_connection() as con:
            stats = build_contact_search(con)
            return dg.MaterializeResult(metadata=table_metadata(con, "marts", "contact_search", timer.seconds, stats))

    views = [_view_cards_asset(deployment, v.name) for v in deployment.tree.views]
    return [contact_cards, contact_search, *views], [one_card]


def _view_cards_asset(deployment: Deployment, view: str):
    """``views/<view>_contact_cards``: the card with the view node's golden profile, for
    the feeds that choose that view."""

    @dg.asset(key=["views", f"{view}_contact_cards"], group_name=GROUP, pool=POOL,
              deps=[CARDS, dg.AssetKey(["views", f"{view}_customers"])], kinds={"duckdb"},
              description=f"Contact cards with the golden profile of the view node '{view}'.")
    def view_cards(warehouse: DuckDBResource, spark: SparkEngineResource) -> dg.MaterializeResult:
        timer = Timer()
        with warehouse.get_connection() as con:
            with spark.stage_engine(con) as engine:
                stats = build_view_cards(engine, deployment, view)
            return dg.MaterializeResult(metadata=table_metadata(
                con, "views", f"{view}_contact_cards", timer.seconds, stats))

    return view_cards

