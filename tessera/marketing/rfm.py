"""RFM: recency, frequency and monetary quintiles and named groups, kept per day.

Scores are 1-5 quintiles over the customers who bought on or before the day
(5 = most recent / most frequent / highest spend). Groups follow the usual RFM map
on recency and frequency: champions, loyal, potential, at risk, hibernating, lost.
A day's scores are replaced in one transaction, so a re-run or backfill of that day
gives the same table.
"""

from __future__ import annotations

import datetime as dt

import duckdb

from tessera.engine.warehouse import transaction

GROUPS = ("champions", "loyal", "potential", "at_risk", "hibernating", "lost")

DDL = """
CREATE TABLE IF NOT EXISTS marketing.rfm_scores (
    as_of_date DATE NOT NULL, customer_id BIGINT NOT NULL, recency_days INTEGER,
    frequency BIGINT, monetary DECIMAL(18,2), r_score TINYINT, f_score TINYINT,
    m_score TINYINT, rfm_score VARCHAR, rfm_group VARCHAR)
"""


def build_rfm(con: duckdb.DuckDBPyConnection, as_of: dt.date) -> dict:
    con.execute(DDL)
    with transaction(con):
        con.execute("DELETE FROM marketing.rfm_scores WHERE as_of_date = ?", [as_of])
        con.execute("""
            INSERT INTO marketing.rfm_scores
            WITH base AS (
                SELECT customer_id, CAST(? AS DATE) - max(order_date) AS recency_days,
                       count(*) AS frequency, sum(amount) AS monetary
                FROM core.orders
                WHERE customer_id IS NOT NULL AND order_date <= ?
                GROUP BY customer_id
            ),
            scored AS (
                SELECT *,
                       ntile(5) OVER (ORDER BY recency_days DESC, customer_id) AS r_score,
                       ntile(5) OVER (ORDER BY frequency, monetary, customer_id) AS f_score,
                       ntile(5) OVER (ORDER BY monetary, customer_id) AS m_score
                FROM base
            )
            SELECT ?, customer_id, recency_days, frequency, monetary, r_score, f_score, m_score,
                   r_score::VARCHAR || f_score::VARCHAR || m_score::VARCHAR,
                   CASE WHEN r_score >= 4 AND f_score >= 4 THEN 'champions'
                        WHEN r_score >= 3 AND f_score >= 3 THEN 'loyal'
                        WHEN r_score >= 3 THEN 'potential'
                        WHEN f_score >= 3 THEN 'at_risk'
                        WHEN r_score = 2 THEN 'hibernating'
                        ELSE 'lost' END
            FROM scored ORDER BY customer_id""", [as_of, as_of, as_of])
    groups = dict(con.execute(
        "SELECT rfm_group, count(*) FROM marketing.rfm_scores WHERE as_of_date = ? GROUP BY ALL",
        [as_of]).fetchall())
    return {"scored": int(sum(groups.values())), "groups": {g: int(groups.get(g, 0)) for g in GROUPS}}
