"""The combination's weights, tuned by the back-test.

Why: fixed weights are a guess, and on the bench the guess ranked below collaborative
filtering alone. The back-test already holds every kind's list on the held-out window,
so a few weight sets are scored there and the best one makes the day's combination.
First the discovery weights, on new items (the mode where discovery competes with the
best sellers):

- ``configured``: the weights from ``recommendations.yaml`` (kept on a tie);
- ``only:<kind>``: one kind alone (the best sellers fill in with a small weight);
- ``ndcg^p``: each kind weighted by its own NDCG share to the power p (1, 2, 4): the
  stronger kinds count more, the sharper the power the more.

Then, with "buy again" among the kinds, its weight (0, 0.25, 1 or 4 beside the chosen
discovery weights, or buy again alone) on all items, the mode of repeat purchases. It takes part in the
day's combination only when ``exclude_bought`` is off (a repeat-purchase catalogue).

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
_REPEAT = (0.0, 0.25, 1.0, 4.0)  # buy again's weights tried beside the discovery weights


def weight_kinds(settings: RecommendationSettings) -> list[str]:
    return [*(k for k in DISCOVERY_KINDS if k in settings.kinds), BASELINE]


def configured_weights(settings: RecommendationSettings) -> dict[str, float]:
    out = {k: float(settings.weights.get(k, 0.0)) for k in weight_kinds(settings)}
    if "buy_again" in settings.kinds:
        out["buy_again"] = float(settings.weights.get("buy_again", 0.0))
    return out


def _score(engine: Engine, sets: dict[str, dict[str, float]], k: int, mode: str) -> dict[str, float]:
    rows = [(name, kind, float(w)) for name, ws in sets.items() for kind, w in ws.items()]
    engine.register_arrow("_rec_weight_sets_arrow", pa.table({
        "set_id": [r[0] for r in rows], "kind": [r[1] for r in rows], "w": [r[2] for r in rows]}))
    engine.run(SqlStep("recommendations.weight_sets", """
        CREATE OR REPLACE TEMP TABLE _rec_weight_sets AS
        SELECT set_id, kind, w FROM _rec_weight_sets_arrow"""))
    engine.unregister("_rec_weight_sets_arrow")
    got = dict(engine.rows(step_from_file(__package__, "weight_sets.sql", k=k, mode=mode)))
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


def _best(sets: dict[str, dict[str, float]], scores: dict[str, float], keep: str) -> str:
    """The best NDCG; on a tie ``keep``, then the earlier set."""
    order = list(sets)
    return max(sets, key=lambda n: (round(scores[n], 9), n == keep, -order.index(n)))


def _rows(mode: str, sets: dict[str, dict[str, float]], scores: dict[str, float], chosen: str) -> list[dict]:
    return [{"mode": mode, "weight_set": name, "kind": kind, "weight": w, "ndcg_at_k": scores[name],
             "chosen": name == chosen} for name, ws in sets.items() for kind, w in ws.items()]


def tune_discovery(engine: Engine, settings: RecommendationSettings,
                   k: int) -> tuple[str, dict[str, float], list[dict]]:
    """Score the discovery weight sets on the new items mode (``_rec_lists`` of that mode
    and ``_rec_truth`` in place). Returns the chosen set's name and weights, and every
    set with its weights and NDCG."""
    kinds = weight_kinds(settings)
    configured = configured_weights(settings)
    sets = {CONFIGURED: {kind: configured[kind] for kind in kinds}}
    for kind in kinds:
        sets[f"only:{kind}"] = {kind: 1.0} if kind == BASELINE else {kind: 1.0, BASELINE: _FILL}
    scores = _score(engine, sets, k, "new_items")
    more = candidate_sets(settings, {kind: scores[f"only:{kind}"] for kind in kinds})
    if more:
        sets.update(more)
        scores.update(_score(engine, more, k, "new_items"))
    chosen = _best(sets, scores, CONFIGURED)
    return chosen, sets[chosen], _rows("new_items", sets, scores, chosen)


def tune_repeat(engine: Engine, settings: RecommendationSettings, k: int, name: str,
                weights: dict[str, float]) -> tuple[str, dict[str, float], list[dict]]:
    """Buy again's weight beside the chosen discovery ``weights``, on the all items mode
    (``_rec_lists`` of that mode in place)."""
    configured = float(settings.weights.get("buy_again", 0.0))
    tries = dict.fromkeys((configured, *_REPEAT))
    sets = {f"{name}+buy_again:{w:g}": {**weights, "buy_again": w} for w in tries}
    sets["only:buy_again"] = {"buy_again": 1.0, BASELINE: _FILL}
    scores = _score(engine, sets, k, "all_items")
    chosen = _best(sets, scores, f"{name}+buy_again:{configured:g}")
    return chosen, sets[chosen], _rows("all_items", sets, scores, chosen)
