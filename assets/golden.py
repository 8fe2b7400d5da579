"""Golden records by the tree of nodes, field lineage, and customer-linked orders/events."""


import datetime as dt

import dagster as dg
from dagster_duckdb import DuckDBResource

from resources.spark import SparkEngineResource
from assets._common import POOL, markdown_counts, published_contract_problems, table_metadata
from tessera.settings import Deployment
from tessera.identity.golden import build_customers, build_orders, view_tables
from tessera.identity.linkage import build_events, events_linkage, orders_linkage
from tessera.vocabulary import ENTITY_TABLES
from resources import PrivacySettings
from tessera.privacy import suppression as privacy_core
from tessera.privacy.consent import withdrawal_violations
from tessera.engine.warehouse import Timer, column_schema, ensure_warehouse, table_exists

GROUP = "golden"
CUSTOMERS = dg.AssetKey(["core", "customers"])
LINEAGE = dg.AssetKey(["core", "customer_field_lineage"])


def build(deployment: Deployment):
    upstream = [dg.AssetKey(["core", "customer_sources"]), dg.AssetKey(["staging", "contacts"]),
                dg.AssetKey(["core", "consents"])]
    for entity, table in (("unsubscribe", "unsubscribes"), ("bounce", "bounces")):
        if deployment.sources_of(entity):
            upstream.append(dg.AssetKey(["staging", table]))

    @dg.multi_asset(
        specs=[
            dg.AssetSpec(CUSTOMERS, group_name=GROUP, deps=upstream, kinds={"duckdb"},
                         description="One golden record per person (public; stable customer_id)."),
            dg.AssetSpec(LINEAGE, group_name=GROUP, deps=upstream, kinds={"duckdb"},
                         description="For every golden field: node, source, record, time and rule it came from."),
        ],
        pool=POOL,
    )
    def customers(context: dg.AssetExecutionContext, warehouse: DuckDBResource, spark: SparkEngineResource):
        timer = Timer()
        with warehouse.get_connection() as con:
            ensure_warehouse(con)
            if not deployment.sources_of("unsubscribe"):
                con.execute("CREATE TABLE IF NOT EXISTS staging.unsubscribes (email_key VARCHAR, channel VARCHAR)")
            if not deployment.sources_of("bounce"):
                con.execute("CREATE TABLE IF NOT EXISTS staging.bounces (email_key VARCHAR, bounce_type VARCHAR)")
            with spark.stage_engine(con) as engine:
                # incremental: only the customers identity touched in this run, where exact
                stats = build_customers(engine, deployment, dt.datetime.now().replace(microsecond=0),
                                        incremental=deployment.incremental, run_key=context.run_id)
            meta = table_metadata(con, "core", "customers", timer.seconds, stats)
            meta["by_country"] = markdown_counts("country", con.execute(
                "SELECT country, count(*) FROM core.customers GROUP BY ALL ORDER BY 2 DESC LIMIT 10").fetchall())
            meta["by_email_consent"] = markdown_counts("email_consent", con.execute(
                "SELECT email_consent, count(*) FROM core.customers GROUP BY ALL ORDER BY 1").fetchall())
            lin = table_metadata(con, "core", "customer_field_lineage", timer.seconds)
            lin["winning_node"] = markdown_counts("node", con.execute(
                "SELECT node, count(*) FROM core.customer_field_lineage GROUP BY ALL ORDER BY 2 DESC").fetchall())
        yield dg.MaterializeResult(asset_key=CUSTOMERS, metadata=meta)
        yield dg.MaterializeResult(asset_key=LINEAGE, metadata=lin)

    @dg.asset_check(pool=POOL, asset=CUSTOMERS, name="golden_ids_are_unique", blocking=True)
    def ids_unique(warehouse: DuckDBResource):
        with warehouse.get_connection() as con:
            n, d = con.execute("SELECT count(*), count(DISTINCT customer_id) FROM core.customers").fetchone()
        return dg.AssetCheckResult(passed=n == d and n > 0, metadata={"rows": int(n), "distinct_ids": int(d)})

    @dg.asset_check(pool=POOL, asset=CUSTOMERS, name="customers_match_published_contract", blocking=True,
                    description="Columns promised in data_contracts/published/core.customers.yaml exist with their types.")
    def contract(warehouse: DuckDBResource):
        with warehouse.get_connection() as con:
            problems = published_contract_problems(con, "core.customers", deployment.switched_off_of("contact"))
        return dg.AssetCheckResult(passed=not problems, metadata={"problems": dg.MetadataValue.json(problems)})

    @dg.asset_check(pool=POOL, asset=CUSTOMERS, name="no_erased_identifier_in_warehouse", blocking=True,
                    description="No identifier under an erasure suppression is held in staging "
                                "(so none reaches golden records, segments or feeds).")
    def no_erased(warehouse: DuckDBResource, privacy: PrivacySettings):
        with warehouse.get_connection() as con:
            privacy_core.ensure_tables(con)
            privacy_core.install_hmac(con, privacy.suppression_key)
            hits = 0
            for entity, table in ENTITY_TABLES.items():
                fields = privacy_core.IDENTIFIER_FIELDS.get(entity, {})
                if not fields or not table_exists(con, "staging", table):
                    continue
                cols = {c for c, _ in column_schema(con, "staging", table)}
                for field, kind in fields.items():
                    if field in cols:
                        hits += con.execute(f"""
                            SELECT count(*) FROM staging.{table}
                            WHERE tessera_hmac({privacy_core.normalise_sql(kind, field)}) IN
                                  (SELECT id_hash FROM ops.suppressions WHERE kind = ? AND channel = 'all')""",
                                            [kind]).fetchone()[0]
        return dg.AssetCheckResult(passed=hits == 0, metadata={"erased_identifiers_found": int(hits)})

    @dg.asset_check(pool=POOL, asset=CUSTOMERS, name="withdrawals_hold_for_the_person", blocking=True,
                    description="Re-verified after identity, before every feed and action: each explicit "
                                "withdrawal (unsubscribe, SMS STOP, consent event, bulk edit), reaching the "
                                "person by any identifier (e-mail, phone, ERP id, contact id), holds for the "
                                "customer who holds it now unless an explicit grant on that channel is newer.")
    def withdrawals_hold(warehouse: DuckDBResource):
        with warehouse.get_connection() as con:
            c = withdrawal_violations(con, deployment)
        return dg.AssetCheckResult(passed=c["violations"] == 0,
                                   metadata={k: dg.MetadataValue.int(v) for k, v in c.items()})

    assets = [customers]
    checks = [ids_unique, contract, no_erased, withdrawals_hold]

    # Declared view nodes (tree.views): golden records and lineage of each, after the
    # main view (they share its customer ids and consent).
    for view in deployment.tree.views:
        assets.append(_view_asset(deployment, view.name, view.description))

    if deployment.sources_of("order"):
        @dg.asset(key=["core", "orders"], group_name=GROUP, pool=POOL, kinds={"duckdb"},
                  deps=[dg.AssetKey(["staging", "orders"]), dg.AssetKey(["core", "customer_sources"])],
                  description="Orders linked to their golden customer.")
        def orders(warehouse: DuckDBResource, spark: SparkEngineResource) -> dg.MaterializeResult:
            timer = Timer()
            with warehouse.get_connection() as con:
                with spark.stage_engine(con) as engine:
                    stats = build_orders(engine, deployment)
                return dg.MaterializeResult(metadata=table_metadata(con, "core", "orders", timer.seconds, stats))
        assets.append(orders)

        @dg.asset_check(pool=POOL, asset=dg.AssetKey(["core", "orders"]), name="orders_are_linked", blocking=False,
                        description="Every order whose customer_ref is a record of its customer source is "
                                    "linked to that record's customer now (a warning; counts and the "
                                    "anonymous share only).")
        def orders_linked(warehouse: DuckDBResource):
            with warehouse.get_connection() as con:
                c = orders_linkage(con, deployment)
            bad = c["owned_but_unlinked"] + c["linked_elsewhere"] + c["not_a_customer"]
            share = round(c["anonymous"] / c["orders"], 4) if c["orders"] else 0.0
            return dg.AssetCheckResult(passed=bad == 0, severity=dg.AssetCheckSeverity.WARN, metadata={
                **{k: dg.MetadataValue.int(v) for k, v in c.items()},
                "anonymous_share": dg.MetadataValue.float(share)})
        checks.append(orders_linked)

        if deployment.sources_of("offer"):
            @dg.asset_check(pool=POOL, asset=dg.AssetKey(["core", "orders"]), name="orders_name_known_offers",
                            blocking=False, additional_deps=[dg.AssetKey(["staging", "offers"])],
                            description="Every idOfferta on an order is an offer of the offers table "
                                        "(a warning: the offers file may arrive later).")
            def known_offers(warehouse: DuckDBResource):
                with warehouse.get_connection() as con:
                    unknown, ids = con.execute("""
                        SELECT count(*), count(DISTINCT offer_id) FROM core.orders
                        WHERE offer_id IS NOT NULL AND offer_id NOT IN (SELECT source_record_id FROM staging.offers)
                    """).fetchone()
                return dg.AssetCheckResult(passed=unknown == 0, severity=dg.AssetCheckSeverity.WARN,
                                           metadata={"orders_with_unknown_offer": int(unknown),
                                                     "unknown_offer_ids": int(ids)})
            checks.append(known_offers)

    if deployment.sources_of("event"):
        @dg.asset(key=["core", "events"], group_name=GROUP, pool=POOL, kinds={"duckdb"},
                  deps=[dg.AssetKey(["staging", "events"]), dg.AssetKey(["core", "customer_sources"])],
                  description="Behavioural events linked to their golden customer where known.")
        def events(warehouse: DuckDBResource, spark: SparkEngineResource) -> dg.MaterializeResult:
            timer = Timer()
            with warehouse.get_connection() as con:
                with spark.stage_engine(con) as engine:
                    # incremental: only the events a change can move are relinked, where exact
                    stats = build_events(engine, deployment, incremental=deployment.incremental,
                                         run_at=dt.datetime.now().replace(microsecond=0))
                meta = table_metadata(con, "core", "events", timer.seconds, stats)
                if stats["events"]:
                    meta["anonymous_share"] = dg.MetadataValue.float(
                        round(stats["anonymous_events"] / stats["events"], 4))
                return dg.MaterializeResult(metadata=meta)
        assets.append(events)

        @dg.asset_check(pool=POOL, asset=dg.AssetKey(["core", "events"]), name="events_are_linked", blocking=True,
                        description="Every event carrying an identifier (contact record id, e-mail, phone) "
                                    "that belongs to exactly one customer is linked to that customer, and "
                                    "no event names an id that is no customer now. Counts and the "
                                    "anonymous share only.")
        def events_linked(warehouse: DuckDBResource):
            with warehouse.get_connection() as con:
                # incremental: the events whose verdict may have moved since the last passing check
                c = events_linkage(con, deployment, incremental=deployment.incremental)
            bad = c["owned_but_unlinked"] + c["linked_elsewhere"] + c["not_a_customer"]
            share = round(c["anonymous"] / c["events"], 4) if c["events"] else 0.0
            return dg.AssetCheckResult(passed=bad == 0, metadata={
                **{k: dg.MetadataValue.int(v) if isinstance(v, int) else dg.MetadataValue.text(v)
                   for k, v in c.items()},
                "anonymous_share": dg.MetadataValue.float(share)})
        checks.append(events_linked)
    return assets, checks


def _view_asset(deployment: Deployment, name: str, description: str):
    """The multi-asset of one view node: ``views/<name>_customers`` and its lineage."""
    customers_table, lineage_table = view_tables(name)
    keys = [dg.AssetKey(t.split(".")) for t in (customers_table, lineage_table)]

    @dg.multi_asset(
        name=f"view_{name}",
        specs=[
            dg.AssetSpec(keys[0], group_name=GROUP, deps=[CUSTOMERS], kinds={"duckdb"},
                         description=f"Golden records of the view node '{name}' "
                                     f"({description or 'its nodes merged by its own tree'})."),
            dg.AssetSpec(keys[1], group_name=GROUP, deps=[CUSTOMERS], kinds={"duckdb"},
                         description=f"Field lineage of the view node '{name}'."),
        ],
        pool=POOL,
    )
    def view_customers(warehouse: DuckDBResource):
        timer = Timer()
        with warehouse.get_connection() as con:
            stats = build_customers(con, deployment, dt.datetime.now().replace(microsecond=0), view=name)
            schema, table = customers_table.split(".")
            meta = table_metadata(con, schema, table, timer.seconds, stats)
            lschema, ltable = lineage_table.split(".")
            lin = table_metadata(con, lschema, ltable, timer.seconds)
            lin["winning_node"] = markdown_counts("node", con.execute(
                f"SELECT node, count(*) FROM {lineage_table} GROUP BY ALL ORDER BY 2 DESC").fetchall())
        yield dg.MaterializeResult(asset_key=keys[0], metadata=meta)
        yield dg.MaterializeResult(asset_key=keys[1], metadata=lin)

    return view_customers
