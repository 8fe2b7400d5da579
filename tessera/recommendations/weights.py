"""The combination's weights, tuned by the back-test.

Why: fixed weights are a guess, and on the bench the guess ranked below collaborative
filtering alone. The back-test already holds every kind's list on the held-out window,
so a few weight sets are scored there (NDCG at k on new items, the mode where the
combination competes) and the best one is used for the day's combination:

- ``configured``: the weights from ``recommendations.yaml`` (kept on a tie);
- ``only:<kind>``: one kind alone (the best sellers fill in with a small weight);
- ``ndcg^p``: each kind weighted by its own NDCG share to the power p (1, 2, 4): the
  stronger kinds count more, the sharper the power the more.

Honest limit: the winner is chosen and reported on the same window (a handful of
candidates, so the optimism is small, but it is in-sample). The sets and their NDCG are
stored in ``recommendations.combination_weights`` so the choice can be checked.
"""

from __future__ import annotations

import pyarrow as pa

from tessera.engine import Engine, SqlStep, step_from_file
from tessera.settings.recommendations import BASELINE, DISCOVERY_KINDS, RecommendationSettings

CONFIGURED = "configured"
_FILL = 0.01  # the best sellers' weight in a one-kind set: fills short lists, never leads


def weight_kinds(settings: RecommendationSettings) -> list[str]:
    return [*(k for k in DISCOVERY_KINDS if k in settings.kinds), BASELINE]


def configured_weights(settings: RecommendationSettings) -> dict[str, float]:
    return {k: float(settings.weights.get(k, 0.0)) for k in weight_kinds(settings)}


def _score(engine: Engine, sets: dict[str, dict[str, float]], k: int) -> dict[str, float]:
    rows = [(name, kind, float(w)) for name, ws in sets.items() for kind, w in ws.items()]
    engine.register_arrow("_rec_weight_sets_arrow", pa.table({
        "set_id": [r[0] for r in rows], "kind": [r[1] for r in rows], "w": [r[2] for r in rows]}))
    engine.run(SqlStep("recommendations.weight_sets", """
        CREATE OR REPLACE TEMP TABLE _rec_weight_sets AS
        SELECT set_id, kind, w FROM _rec_weight_sets_arrow"""))
    engine.unregister("_rec_weight_sets_arrow")
    got = dict(engine.rows(step_from_file(__package__, "weight_sets.sql", k=k)))
    return {name: float(got.get(name) or 0.0) for name in sets}


def candidate_sets(settings: RecommendationSettings, own: dict[str, float]) -> dict[str, dict[str, float]]:
    """The proportional sets from each kind's own NDCG (``own``: kind -> NDCG)."""
    kinds = weight_kinds(settings)
    top = max((own.get(k, 0.0) for k in kinds), default=0.0)
    sets = {}
    if top > 0:
        for p in (1, 2, 4):
            sets[f"ndcg^{p}"] = {k: round((own.get(k, 0.0) / top) ** p, 6) for k in kinds}
    return sets


def tune_weights(engine: Engine, settings: RecommendationSettings, k: int) -> tuple[str, dict[str, float], list[dict]]:
    """Score the weight sets on the back-test (``_rec_lists`` of the new items mode and
    ``_rec_truth`` in place). Returns the chosen set's name and weights, and every set
    with its weights and NDCG."""
    kinds = weight_kinds(settings)
    sets = {CONFIGURED: configured_weights(settings)}
    for kind in kinds:
        sets[f"only:{kind}"] = {kind: 1.0} if kind == BASELINE else {kind: 1.0, BASELINE: _FILL}
    scores = _score(engine, sets, k)
    more = candidate_sets(settings, {kind: scores[f"only:{kind}"] for kind in kinds})
    if more:
        sets.update(more)
        scores.update(_score(engine, more, k))
    # the best NDCG; on a tie the configured weights, then the earlier set
    chosen = max(sets, key=lambda name: (round(scores[name], 9), name == CONFIGURED, -list(sets).index(name)))
    rows = [{"weight_set": name, "kind": kind, "weight": w, "ndcg_at_k": scores[name],
             "chosen": name == chosen} for name, ws in sets.items() for kind, w in ws.items()]
    return chosen, sets[chosen], rows
