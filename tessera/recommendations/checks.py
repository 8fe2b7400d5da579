"""The invariants a user relies on in the stored lists, counted on the latest day.

Why counted apart from the build: the asset check must catch a list that reaches an
erased person or offers an excluded or already-bought product even when the fault
comes from a later edit (an erasure, a catalogue change), not only from this code.
"""

from __future__ import annotations

from tessera.engine import Engine, SqlStep, as_engine
from tessera.settings.recommendations import DISCOVERY_KINDS, RecommendationSettings

_PROBLEMS = SqlStep("recommendations.list_problems", """
    WITH day AS (SELECT max(as_of_date) AS d FROM recommendations.contact_products),
    l AS (SELECT p.* FROM recommendations.contact_products p JOIN day ON p.as_of_date = day.d),
    ranks AS (
        SELECT kind, customer_id, count(*) AS n, count(DISTINCT rank) AS ranks,
               count(DISTINCT product_id) AS products, min(rank) AS lo, max(rank) AS hi
        FROM l GROUP BY kind, customer_id)
    SELECT
      (SELECT count(DISTINCT customer_id) FROM l
       WHERE customer_id NOT IN (SELECT customer_id FROM marts.contact_cards)) AS contacts_without_card,
      (SELECT count(*) FROM ranks
       WHERE n <> ranks OR n <> products OR lo <> 1 OR hi <> n OR n > $top) AS broken_rankings,
      (SELECT count(*) FROM l
       WHERE product_id NOT IN (SELECT CAST(source_record_id AS VARCHAR) FROM staging.products
                                WHERE source_record_id IS NOT NULL)
          OR list_contains($excluded, product_id)) AS excluded_or_unknown_products,
      (SELECT count(*) FROM l
       WHERE $exclude_bought AND list_contains($discovery, l.kind)
         AND EXISTS (SELECT 1 FROM core.orders o JOIN staging.order_lines ol ON ol.order_id = o.order_id
                     WHERE o.customer_id = l.customer_id AND CAST(ol.product_id AS VARCHAR) = l.product_id
                       AND o.order_date <= l.as_of_date)) AS bought_products_offered""")


def list_problems(engine: Engine, settings: RecommendationSettings) -> dict[str, int]:
    """Counts of broken invariants on the latest day (all zero when the lists are sound)."""
    engine = as_engine(engine)
    if not engine.table_exists("recommendations", "contact_products"):
        return {"missing_table": 1}
    step = _PROBLEMS.bind(top=settings.top_n, excluded=list(settings.exclude_products),
                          exclude_bought=settings.exclude_bought,
                          discovery=[*DISCOVERY_KINDS, "combined", "popular"])
    cols = engine.columns(step)
    return {name: int(values[0] or 0) for name, values in cols.items()}
