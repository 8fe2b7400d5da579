"""The invariants a user relies on in the stored lists, counted on the latest day.

Why counted apart from the build: the asset check must catch a list that reaches an
erased person or offers an excluded or already-bought product even when the fault
comes from a later edit (an erasure, a catalogue change), not only from this code.
"""

from __future__ import annotations

from tessera.engine import Engine, as_engine, step_from_file
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
    cols = engine.columns(step)
    return {name: int(values[0] or 0) for name, values in cols.items()}
