"""The invariants a user relies on in the stored lists, counted on the latest day.

Why counted apart from the build: the asset check must catch a list that reaches an
erased person or offers an excluded or already-bought product even when the fault
comes from a later edit (an erasure, a catalogue change), not only from this code.
"""

from __future__ import annotations

from tessera.engine import Engine, SqlStep, as_engine, step_from_file
from tessera.settings.recommendations import DISCOVERY_KINDS, RecommendationSettings


def list_problems(engine: Engine, settings: RecommendationSettings) -> dict[str, int]:
    """Counts of broken invariants on the latest day (all zero when the lists are sound)."""
    engine = as_engine(engine)
    if not engine.table_exists("recommendations", "contact_products"):
        return {"missing_table": 1}
    step = step_from_file(__package__, "list_problems.sql", top=settings.top_n,
                          excluded=list(settings.exclude_products),
                          exclude_bought=settings.exclude_bought,
                          discovery=[*DISCOVERY_KINDS, "combined", "popular"])
    # distinct ranks: the bits set in a BIGINT mask while every sound rank fits one (a rank
    # outside 1..62 sets none and fails the count, as a rank outside 1..n should)
    distinct_ranks = ("bit_count(bit_or(CASE WHEN rank BETWEEN 1 AND 62 THEN CAST(1 AS BIGINT) << "
                      "CAST(rank AS INTEGER) ELSE CAST(0 AS BIGINT) END))" if settings.top_n <= 62
                      else "array_length(list_distinct(list(rank)))")
    # distinct known products: the bits their catalogue indexes set in a HUGEINT mask
    # while the catalogue fits one (list_distinct ignores the unknown NULLs too)
    catalogue = int(engine.scalar(SqlStep("recommendations.list_problems_catalogue", """
        SELECT count(DISTINCT source_record_id) FROM staging.products""")) or 0)
    distinct_products = ("bit_count(bit_or(CAST(1 AS HUGEINT) << idx))" if catalogue <= 127
                         else "array_length(list_distinct(list(idx)))")
    step = SqlStep(step.name, step.sql.replace("{distinct_ranks}", distinct_ranks)
                   .replace("{distinct_products}", distinct_products), step.params)
    cols = engine.columns(step)
    return {name: int(values[0] or 0) for name, values in cols.items()}
