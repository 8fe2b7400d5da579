"""Stored predictions against what happened after their day: the check an analyst runs
when the future has arrived (and the acceptance check on a history with a known future)."""

from __future__ import annotations

import datetime as dt

import numpy as np

from tessera.engine import Engine, SqlStep, step_from_file
from tessera.predictions import metrics


def score_future(engine: Engine, day: dt.date, window_days: int, orders_sql: str,
                 baselines: dict[str, np.ndarray] | None = None,
                 churn_days: int | None = None) -> list[tuple[str, str, str, float]]:
    """``(target, model, metric, value)`` of the day's stored predictions (model ``served``:
    whichever the back-test picked) against the purchases in
    the ``window_days`` after it, from ``orders_sql`` (a SELECT written by code). Empty
    when no order falls after the day. ``baselines`` (the build's ``baseline_scores``)
    adds the RFM-quintile logistic regression and the plain BG/NBD beside the models."""
    end = day + dt.timedelta(days=window_days)
    churn_end = day + dt.timedelta(days=churn_days or window_days)
    engine.run(SqlStep("predictions.future_orders",
                       f"CREATE OR REPLACE TEMP VIEW pred_future_orders AS {orders_sql}"))
    if not engine.scalar(SqlStep("predictions.future_exists", "SELECT count(*) FROM "
                                 "pred_future_orders WHERE order_date > $day", {"day": day})):
        return []
    cols = engine.columns(step_from_file(__package__, "future.sql", day=day, end=end,
                                         churn_end=max(end, churn_end)))
    arr = {k: np.array([np.nan if v is None else v for v in vals], float) for k, vals in cols.items()}
    actual = arr["actual_purchases"]
    bought = (actual > 0).astype(int)
    out = []

    def add(target, model, figures):
        out.extend((target, model, k, float(v)) for k, v in figures.items() if not np.isnan(v))

    if not np.isnan(arr["purchase_propensity"]).all():
        add("purchase", "served",
            metrics.classification(bought, np.nan_to_num(arr["purchase_propensity"]), True))
    add("purchase", "recency_only", metrics.classification(
        bought, -np.nan_to_num(arr["days_since_last_purchase"], nan=1e9), False))
    if not np.isnan(arr["expected_purchases"]).all():
        add("purchases", "served",
            metrics.counts(actual, np.nan_to_num(arr["expected_purchases"])))
    # churn, judged only where the whole churn window has happened: the buyers scored
    last = engine.scalar(SqlStep("predictions.future_last", "SELECT max(order_date) FROM "
                                 "pred_future_orders"))
    churned_known = churn_days is not None and last is not None and last >= churn_end
    scored = ~np.isnan(arr["churn_risk"])
    if churned_known and scored.sum() and not np.isnan(arr["churn_risk"]).all():
        gone = (arr["churn_window_purchases"][scored] == 0).astype(int)
        add("churn", "served",
            metrics.classification(gone, arr["churn_risk"][scored], True))
        add("churn", "recency_only",
            metrics.classification(gone, arr["days_since_last_purchase"][scored], False))
    base = dict(baselines or {})
    if base and not np.array_equal(np.asarray(base.pop("customer_id")), arr["customer_id"]):
        raise ValueError("baseline scores are not those of the stored day's contacts")
    if "rfm_logistic" in base:
        add("purchase", "rfm_logistic", metrics.classification(bought, base["rfm_logistic"], True))
    if "bgnbd_probability" in base:
        add("purchase", "bgnbd", metrics.classification(bought, base["bgnbd_probability"], True))
    if "bgnbd" in base:
        add("purchases", "bgnbd", metrics.counts(actual, base["bgnbd"]))
    add("purchases", "predicts_zero", metrics.counts(actual, np.zeros(len(actual))))
    return out
