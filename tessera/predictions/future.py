"""Stored predictions against what happened after their day: the check an analyst runs
when the future has arrived (and the acceptance check on a history with a known future)."""

from __future__ import annotations

import datetime as dt

import numpy as np

from tessera.engine import Engine, SqlStep, step_from_file
from tessera.predictions import metrics


def score_future(engine: Engine, day: dt.date, window_days: int,
                 orders_sql: str) -> list[tuple[str, str, str, float]]:
    """``(target, model, metric, value)`` of the day's predictions against the purchases in
    the ``window_days`` after it, from ``orders_sql`` (a SELECT written by code). Empty
    when no order falls after the day."""
    end = day + dt.timedelta(days=window_days)
    engine.run(SqlStep("predictions.future_orders",
                       f"CREATE OR REPLACE TEMP VIEW pred_future_orders AS {orders_sql}"))
    if not engine.scalar(SqlStep("predictions.future_exists", "SELECT count(*) FROM "
                                 "pred_future_orders WHERE order_date > $day", {"day": day})):
        return []
    cols = engine.columns(step_from_file(__package__, "future.sql", day=day, end=end))
    arr = {k: np.array([np.nan if v is None else v for v in vals], float) for k, vals in cols.items()}
    actual = arr["actual_purchases"]
    bought = (actual > 0).astype(int)
    out = []

    def add(target, model, figures):
        out.extend((target, model, k, float(v)) for k, v in figures.items() if not np.isnan(v))

    if not np.isnan(arr["purchase_propensity"]).all():
        add("purchase", "gradient_boosting",
            metrics.classification(bought, np.nan_to_num(arr["purchase_propensity"]), True))
    add("purchase", "recency_only", metrics.classification(
        bought, -np.nan_to_num(arr["days_since_last_purchase"], nan=1e9), False))
    if not np.isnan(arr["expected_purchases"]).all():
        add("purchases", "gradient_boosting_poisson",
            metrics.counts(actual, np.nan_to_num(arr["expected_purchases"])))
    horizon = {30: "expected_purchases_30d", 90: "expected_purchases_90d",
               365: "expected_purchases_365d"}.get(window_days)
    if horizon:
        add("purchases", "bgnbd", metrics.counts(actual, np.nan_to_num(arr[horizon])))
    add("purchases", "predicts_zero", metrics.counts(actual, np.zeros(len(actual))))
    return out
