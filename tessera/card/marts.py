"""The contact card mart: one row per golden customer, the 360-degree view in a table.

Profile and consents come from ``core.customers``; the e-commerce totals use the
names analysts know from the contact card (ORDER_NUMBER, ORDER_SUMMARY, ORDER_AVG),
as lower-case columns; behaviour is summarised from ``core.events``.
"""

from __future__ import annotations

import datetime as dt

from tessera.card import incremental as card_inc
from tessera.card.annotations import CARD_SQL as ANNOTATIONS_CARD_SQL
from tessera.card.annotations import annotation_table_steps
from tessera.companies.registry import card_company_columns, card_company_sql
from tessera.engine import Engine, SqlStep, as_engine
from tessera.engine.steps import sql_file
from tessera.privacy.consent import SOFT_DELETED_SQL, bulk_edits_ddl


# Contact properties set by automations and journeys (a tag action's ``property: value``).
# The card owns the table's shape because it reads it; the activation stage writes it.
SET_PROPERTIES_STEPS = [
    SqlStep("card.activation_schema", "CREATE SCHEMA IF NOT EXISTS activation"),
    SqlStep("card.set_properties_ddl", """
        CREATE TABLE IF NOT EXISTS activation.contact_properties (
            customer_id BIGINT NOT NULL, property VARCHAR NOT NULL, value VARCHAR,
            set_on DATE NOT NULL, origin VARCHAR NOT NULL, action_key VARCHAR NOT NULL)"""),
]


def set_property_types(deployment) -> dict[str, str]:
    """Property -> SQL type, for the extended contact properties an action sets."""
    if deployment is None or not hasattr(deployment, "automations"):
        return {}
    from tessera.settings.activation import set_properties

    types = {p.name: p.sql_type for p in deployment.properties_of("contact")}
    return {p: types[p] for p in set_properties(deployment.automations, deployment.journeys) if p in types}


def _set_properties_sql(props: dict[str, str], columns: list[str] | None = None) -> tuple[str, str, str]:
    """(cte, join, customer columns): the latest value an action set for each property
    wins over the sources' golden value (the action is the newer, deliberate write).

    With ``columns`` (those of ``core.customers``, in order) the select names every
    column, so Spark runs it too; without, it is DuckDB's ``c.* REPLACE``."""
    if not props:
        return "", "", "c.*"
    pivot = ", ".join(f"max(CASE WHEN property = '{p}' THEN value END) AS \"_set_{p}\"" for p in props)
    cte = f""",
sp AS (
    SELECT customer_id, {pivot}
    FROM (SELECT customer_id, property, value,
                 row_number() OVER (PARTITION BY customer_id, property
                                    ORDER BY set_on DESC, action_key DESC) AS nth
          FROM activation.contact_properties
          WHERE property IN ({", ".join(f"'{p}'" for p in props)})) x
    WHERE nth = 1 GROUP BY customer_id
)"""
    overlay = {p: f'coalesce(TRY_CAST(sp."_set_{p}" AS {t}), c."{p}") AS "{p}"' for p, t in props.items()}
    if columns is not None:
        select = ", ".join(overlay.get(c, f'c."{c}"') for c in columns)
    else:
        select = f"c.* REPLACE ({', '.join(overlay.values())})"
    return cte, "LEFT JOIN sp USING (customer_id)", select


def order_summary_sql(orders: str = "core.orders") -> str:
    """Per customer: order count, sum, first and last date, and the mean in exact cents
    rounded half away from zero. Why not ``round(avg(amount), 2)``: avg() of a DECIMAL is a
    DOUBLE on DuckDB and an exact DECIMAL on Spark, and a mean such as 1.005 rounded to 1.00
    on one and 1.01 on the other (155 of 67 k cards in the whole-job comparison)."""
    return f"""
    SELECT customer_id, order_number, order_summary, first_order_date, last_order_date,
           CAST(CAST(CASE WHEN cents >= 0 THEN (2 * cents + order_number) // (2 * order_number)
                          ELSE -((order_number - 2 * cents) // (2 * order_number)) END
                     AS DECIMAL(18,0)) * 0.01 AS DECIMAL(18,2)) AS order_avg
    FROM (
        SELECT customer_id, count(*) AS order_number, sum(amount) AS order_summary,
               CAST(sum(amount) * 100 AS BIGINT) AS cents,
               min(order_date) AS first_order_date, max(order_date) AS last_order_date
        FROM {orders} WHERE customer_id IS NOT NULL GROUP BY customer_id
    ) AS sums
"""


def contact_cards_step(companies: bool = False, deployment=None,
                       customer_columns: list[str] | None = None) -> SqlStep:
    """The card's select: company columns only when the deployment has company users
    (with ``deployment``: its extended company properties in, switched-off ones out, and
    the properties its automations and journeys set; ``customer_columns``, those of
    ``core.customers``, make the overlay of set properties portable)."""
    set_cte, set_join, customer_columns = _set_properties_sql(set_property_types(deployment), customer_columns)
    sql = sql_file(__package__, "contact_cards.sql").format(
        set_cte=set_cte, set_join=set_join, customer_columns=customer_columns,
        order_summary=order_summary_sql(), soft_deleted=SOFT_DELETED_SQL, annotations=ANNOTATIONS_CARD_SQL,
        company_cte=f", k AS ({card_company_sql(deployment)})" if companies else "",
        company_columns=f",\n       {card_company_columns(deployment)}" if companies else "",
        company_join="LEFT JOIN k USING (customer_id)" if companies else "")
    return SqlStep("card.contact_cards", sql)


def view_cards_step(deployment, view: str, card_columns: list[str]) -> SqlStep:
    """A view node's contact cards: the main card with the view's golden profile (and its
    source count, nodes and recency) in place of the main one, for the customers the view
    has. Orders, behaviour, consent and company stay the person's.

    ``card_columns`` (those of ``marts.contact_cards``, in order): the select names every
    column, the view's where it has one, instead of DuckDB's ``c.* REPLACE``, so that the
    same step runs on Spark."""
    from tessera.vocabulary import contact_golden_fields

    fields = {*contact_golden_fields(deployment), "source_count", "nodes", "updated_at"}
    select = ", ".join(f'v."{c}" AS "{c}"' if c in fields else f'c."{c}"' for c in card_columns)
    return SqlStep(f"card.view_cards.{view}", f"""
        SELECT {select}
        FROM marts.contact_cards c JOIN views.{view}_customers v ON v.customer_id = c.customer_id
        ORDER BY c.customer_id""")


def build_view_cards(engine: Engine, deployment, view: str) -> dict:
    engine = as_engine(engine)
    columns = list(engine.columns(SqlStep("card.card_columns",
                                          "SELECT * FROM marts.contact_cards LIMIT 0")))
    with engine.together():
        rows = engine.replace_table(f"views.{view}_contact_cards",
                                    view_cards_step(deployment, view, columns))
    return {"cards": int(rows)}


def build_contact_cards(engine: Engine, companies: bool = False, deployment=None,
                        incremental: bool = False, run_at: dt.datetime | None = None) -> dict:
    """With ``companies`` (the deployment has company users), the card also carries the
    person's company (``tessera.vocabulary.CARD_COMPANY_FIELDS``) and co-worker count.

    With ``incremental``, the behaviour columns are aggregated from ``core.events`` only
    for the customers whose events moved (:mod:`tessera.card.incremental`), the others'
    are carried over from the stored card, where that is exact; the table is rewritten
    whole either way."""
    engine = as_engine(engine)
    engine.run(*annotation_table_steps(), bulk_edits_ddl())
    columns = None
    if set_property_types(deployment):
        engine.run(*SET_PROPERTIES_STEPS)
        columns = list(engine.columns(SqlStep("card.customer_columns", "SELECT * FROM core.customers LIMIT 0")))
    step = contact_cards_step(companies, deployment, columns)
    mode, reason, extra = "full", "incremental is off", {}
    if incremental:
        run_at = run_at or dt.datetime.now().replace(microsecond=0)
        reason, state = card_inc.full_reason(engine, step.sql, run_at)
        if reason is None:
            mode = "incremental"
            extra = card_inc.carried_events(engine, state)
            step = SqlStep("card.contact_cards.incremental", card_inc.with_carried_events(step.sql), step.params)
    else:
        card_inc.drop_state(engine)
    with engine.together():
        engine.replace_table("marts.contact_cards", step)
        if incremental:
            card_inc.record_state(engine, run_at, contact_cards_step(companies, deployment, columns).sql,
                                  mode, reason)
    if mode == "incremental":
        card_inc.drop_temps(engine)
    cards, buyers, revenue = engine.rows(SqlStep("card.totals", """
        SELECT count(*), count(*) FILTER (WHERE order_number > 0), coalesce(sum(order_summary), 0)
        FROM marts.contact_cards"""))[0]
    out = {"cards": int(cards), "buyers": int(buyers), "revenue": float(revenue)}
    if incremental:
        out.update(card_mode=mode, card_full_reason=reason or "", **extra)
    return out
