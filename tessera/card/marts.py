"""The contact card mart: one row per golden customer, the 360-degree view in a table.

Profile and consents come from ``core.customers``; the e-commerce totals use the
names analysts know from the contact card (ORDER_NUMBER, ORDER_SUMMARY, ORDER_AVG),
as lower-case columns; behaviour is summarised from ``core.events``.
"""

from __future__ import annotations

from tessera.card.annotations import CARD_SQL as ANNOTATIONS_CARD_SQL
from tessera.card.annotations import annotation_table_steps
from tessera.companies.registry import card_company_columns, card_company_sql
from tessera.engine import Engine, SqlStep, as_engine
from tessera.engine.steps import sql_file
from tessera.privacy.consent import SOFT_DELETED_SQL, bulk_edits_ddl


def contact_cards_step(companies: bool = False, deployment=None) -> SqlStep:
    """The card's select: company columns only when the deployment has company users
    (with ``deployment``: its extended company properties in, switched-off ones out)."""
    sql = sql_file(__package__, "contact_cards.sql").format(
        soft_deleted=SOFT_DELETED_SQL, annotations=ANNOTATIONS_CARD_SQL,
        company_cte=f", k AS ({card_company_sql(deployment)})" if companies else "",
        company_columns=f",\n       {card_company_columns(deployment)}" if companies else "",
        company_join="LEFT JOIN k USING (customer_id)" if companies else "")
    return SqlStep("card.contact_cards", sql)


def view_cards_step(deployment, view: str) -> SqlStep:
    """A view node's contact cards: the main card with the view's golden profile (and its
    source count, nodes and recency) in place of the main one, for the customers the view
    has. Orders, behaviour, consent and company stay the person's."""
    from tessera.vocabulary import contact_golden_fields

    fields = [*contact_golden_fields(deployment), "source_count", "nodes", "updated_at"]
    replace = ", ".join(f'v."{f}" AS "{f}"' for f in fields)
    return SqlStep(f"card.view_cards.{view}", f"""
        SELECT c.* REPLACE ({replace})
        FROM marts.contact_cards c JOIN views.{view}_customers v USING (customer_id)
        ORDER BY c.customer_id""")


def build_view_cards(engine: Engine, deployment, view: str) -> dict:
    engine = as_engine(engine)
    with engine.together():
        rows = engine.replace_table(f"views.{view}_contact_cards", view_cards_step(deployment, view))
    return {"cards": int(rows)}


def build_contact_cards(engine: Engine, companies: bool = False, deployment=None) -> dict:
    """With ``companies`` (the deployment has company users), the card also carries the
    person's company (``tessera.vocabulary.CARD_COMPANY_FIELDS``) and co-worker count."""
    engine = as_engine(engine)
    engine.run(*annotation_table_steps(), bulk_edits_ddl())
    with engine.together():
        engine.replace_table("marts.contact_cards", contact_cards_step(companies, deployment))
    cards, buyers, revenue = engine.rows(SqlStep("card.totals", """
        SELECT count(*), count(*) FILTER (WHERE order_number > 0), coalesce(sum(order_summary), 0)
        FROM marts.contact_cards"""))[0]
    return {"cards": int(cards), "buyers": int(buyers), "revenue": float(revenue)}
