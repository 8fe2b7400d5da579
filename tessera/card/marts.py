"""The contact card mart: one row per golden customer, the 360-degree view in a table.

Profile and consents come from ``core.customers``; the e-commerce totals use the
names analysts know from the contact card (ORDER_NUMBER, ORDER_SUMMARY, ORDER_AVG),
as lower-case columns; behaviour is summarised from ``core.events``.
"""

from __future__ import annotations

import duckdb

from tessera.engine.warehouse import transaction


def build_contact_cards(con: duckdb.DuckDBPyConnection, companies: bool = False) -> dict:
    """With ``companies`` (the deployment has company users), the card also carries the
    person's company (``tessera.vocabulary.CARD_COMPANY_FIELDS``) and co-worker count."""
    from tessera.card.annotations import CARD_SQL as ANNOTATIONS_CARD_SQL
    from tessera.card.annotations import ensure_tables as ensure_annotation_tables
    from tessera.companies.registry import card_company_sql
    from tessera.privacy.consent import BULK_EDITS_DDL, SOFT_DELETED_SQL

    ensure_annotation_tables(con)

    con.execute(BULK_EDITS_DDL)
    with transaction(con):
        con.execute(f"""
            CREATE OR REPLACE TABLE marts.contact_cards AS
            WITH soft_deleted AS (
                -- soft-deleted people disappear from cards (so from segments and feeds)
                -- until restored or purged
                {SOFT_DELETED_SQL}
            ),
            a AS ({ANNOTATIONS_CARD_SQL}),
            o AS (
                SELECT customer_id, count(*) AS order_number, sum(amount) AS order_summary,
                       CAST(round(avg(amount), 2) AS DECIMAL(18,2)) AS order_avg,
                       min(order_date) AS first_order_date, max(order_date) AS last_order_date
                FROM core.orders WHERE customer_id IS NOT NULL GROUP BY customer_id
            ),
            e AS (
                SELECT customer_id, count(*) AS event_count, max(occurred_at) AS last_event_at,
                       count(*) FILTER (WHERE event_type = 'page_view') AS page_views,
                       count(*) FILTER (WHERE event_type = 'email_open') AS email_opens
                FROM core.events WHERE customer_id IS NOT NULL GROUP BY customer_id
            ){f", k AS ({card_company_sql()})" if companies else ""}
            SELECT c.*,
                   coalesce(o.order_number, 0) AS order_number,
                   coalesce(o.order_summary, 0)::DECIMAL(18,2) AS order_summary,
                   o.order_avg, o.first_order_date, o.last_order_date,
                   coalesce(e.event_count, 0) AS event_count, e.last_event_at,
                   coalesce(e.page_views, 0) AS page_views, coalesce(e.email_opens, 0) AS email_opens,
                   coalesce(a.note_count, 0) AS note_count, a.last_note_at,
                   coalesce(a.open_tasks, 0) AS open_tasks, a.next_task_due_at
                   {", k.* EXCLUDE (customer_id, coworker_count), coalesce(k.coworker_count, 0) AS coworker_count"
                    if companies else ""}
            FROM core.customers c
            LEFT JOIN o USING (customer_id)
            LEFT JOIN e USING (customer_id)
            LEFT JOIN a USING (customer_id)
            {"LEFT JOIN k USING (customer_id)" if companies else ""}
            WHERE c.customer_id NOT IN (SELECT customer_id FROM soft_deleted)
            ORDER BY c.customer_id""")
    row = con.execute("""SELECT count(*), count(*) FILTER (WHERE order_number > 0),
                                coalesce(sum(order_summary), 0) FROM marts.contact_cards""").fetchone()
    return {"cards": int(row[0]), "buyers": int(row[1]), "revenue": float(row[2])}
