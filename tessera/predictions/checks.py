"""What the predictions promise, checked after every build: one row per contact and none
for anybody else, probabilities that are probabilities, numbers only where the status says
so, and the models no worse than the naive baselines they are shown beside."""

from __future__ import annotations

import datetime as dt

from tessera.engine import Engine, SqlStep, as_engine, step_from_file
from tessera.predictions.metrics import HIGHER_IS_BETTER

# Which baselines each model is held to, per target and metric. "predicts zero" has the
# lowest MAE on any sparse window (most contacts buy nothing) while being useless, so it is
# held to the error of the total only.
COMPARISONS: dict[tuple[str, str], tuple[str, ...]] = {
    ("purchase", "auc"): ("recency_only", "rfm_logistic", "bgnbd"),
    ("churn", "auc"): ("recency_only", "rfm_logistic", "bgnbd"),
    ("purchases", "mae"): ("bgnbd", "last_window"),
    ("purchases", "abs_total_error_pct"): ("bgnbd", "predicts_zero", "last_window"),
    ("spend", "abs_total_error_pct"): ("bgnbd_gamma_gamma", "predicts_zero", "last_window"),
}


def prediction_problems(engine: Engine, day: dt.date) -> dict[str, int]:
    """Counts of broken promises in the day's ``predictions.customer_predictions`` (all zero
    when it is sound): missing contacts, rows for non-contacts (erased, deleted or merged
    away), duplicates, values out of range, numbers on a row whose status has none."""
    row = as_engine(engine).rows(step_from_file(__package__, "prediction_problems.sql", day=day))[0]
    names = ("missing_contacts", "not_a_contact", "duplicates", "out_of_range",
             "numbers_without_history", "scored_without_numbers")
    return dict(zip(names, (int(v or 0) for v in row)))


def baseline_shortfalls(engine: Engine, day: dt.date) -> list[str]:
    """Each (target, metric) on which the model the day serves did worse than one of the
    naive baselines, as a sentence of model names and figures. The served model is the
    back-test's pick (the row with metric ``served``); a day stored before the pick was
    recorded holds its one non-baseline model to them."""
    rows = as_engine(engine).rows(SqlStep(
        "predictions.accuracy_of_day",
        "SELECT target, model, is_baseline, metric, value FROM predictions.accuracy "
        "WHERE as_of_date = $day AND value IS NOT NULL", {"day": day}))
    served = {t: name for t, name, _, m, _ in rows if m == "served"}
    for t, name, base, _, _ in rows:
        if not base:
            served.setdefault(t, name)
    figures = {(t, name, m): v for t, name, _, m, v in rows}
    out = []
    for (target, metric), baselines in COMPARISONS.items():
        name = served.get(target)
        v = figures.get((target, name, metric))
        if v is None:
            continue
        for b in baselines:
            bv = figures.get((target, b, metric))
            if b == name or bv is None:
                continue
            worse = v < bv if HIGHER_IS_BETTER[metric] else v > bv
            if worse:
                out.append(f"{target} {metric}: {name} (served) {v:.4g} vs {b} {bv:.4g}")
    return out
