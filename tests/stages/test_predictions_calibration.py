"""The purchase count's calibration (#12): the sharpening of the expectations and the
seasonal factor, learnt on the back-test and a year back, never on the day's future."""

from __future__ import annotations

import datetime as dt

import duckdb
import numpy as np
import pytest

from tessera.engine import DuckDBEngine, SqlStep
from tessera.predictions import models, synthetic
from tessera.predictions.build import (SHARPNESS, build_predictions, choose_sharpness,
                                       seasonal_factor, sharpen)
from tessera.settings.predictions import PredictionSettings

DAY = dt.date(2026, 11, 1)
N = 2500
# no boosting (fewer rows than this): the purchase count is BG/NBD's, so the seasonal
# factor, which calibrates BG/NBD only, is always in play
SETTINGS = PredictionSettings(min_buyers=50, min_boosting_rows=N + 100)


def test_sharpening_keeps_the_order_and_the_total():
    pred = np.array([0.05, 0.2, 0.0, 1.5, 0.6])
    for g in SHARPNESS:
        out = sharpen(pred, g)
        assert out.sum() == pytest.approx(pred.sum())
        assert list(np.argsort(out, kind="stable")) == list(np.argsort(pred, kind="stable"))
        assert out[2] == 0.0
    assert np.array_equal(sharpen(pred, 1.0), pred)
    assert np.array_equal(sharpen(np.zeros(3), 2.0), np.zeros(3))


def test_the_exponent_is_the_one_the_window_liked_best():
    # nine unlikely buyers who buy nothing and a likely one who buys once: moving expectation
    # from the nine to the one lowers the absolute error
    pred = np.array([0.1] * 9 + [0.9])
    actual = np.array([0.0] * 9 + [1.0])
    g = choose_sharpness(actual, pred)
    errors = {h: np.abs(sharpen(pred, h) - actual).mean() for h in SHARPNESS}
    assert g > 1.0 and errors[g] == min(errors.values()) and errors[g] < errors[1.0]
    # everyone alike: no exponent helps, the smallest (the model itself) wins the tie
    assert choose_sharpness(np.array([0.0, 1.0]), np.array([0.5, 0.5])) == 1.0


def test_seasonal_factor_is_what_happened_over_what_was_expected():
    assert seasonal_factor(np.array([1.0, 2.0, np.nan]), np.array([2, 2, 2])) == pytest.approx(2.0)
    assert seasonal_factor(np.array([4.0]), np.array([3])) == pytest.approx(0.75)
    assert seasonal_factor(np.array([1.0]), np.array([10])) == 2.0     # clipped
    assert seasonal_factor(np.array([]), np.array([])) is None


def _warehouse(with_future: bool) -> duckdb.DuckDBPyConnection:
    """BG/NBD histories with a Christmas: every purchase in November or December brings a
    second one the day after, so the window after 1 November is busier than BG/NBD (which
    has no calendar) expects, every year."""
    con = duckdb.connect()
    con.register("sim", synthetic.orders(N, seed=11, as_of=DAY))
    con.execute("CREATE SCHEMA core; CREATE SCHEMA marts")
    cut = "" if with_future else "WHERE order_date <= DATE '2026-11-01'"
    con.execute(f"""CREATE TABLE core.orders AS
        WITH o AS (SELECT customer_id, order_date::DATE AS order_date, amount FROM sim
                   UNION ALL
                   SELECT customer_id, order_date::DATE + 1, amount FROM sim
                   WHERE month(order_date) IN (11, 12))
        SELECT DISTINCT customer_id, order_date, amount::DECIMAL(18,2) AS amount FROM o {cut}""")
    con.execute(f"CREATE TABLE marts.contact_cards AS SELECT range::BIGINT AS customer_id "
                f"FROM range(1, {N + 1})")
    return con


@pytest.fixture(scope="module")
def built():
    con = _warehouse(with_future=False)
    eng = DuckDBEngine(con)
    stats = build_predictions(eng, SETTINGS, DAY)
    yield con, eng, stats
    con.close()


def test_the_seasonal_factor_is_computed_a_year_back(built):
    con, _, stats = built
    w = SETTINGS.window_days
    year_ago = DAY - dt.timedelta(days=365)
    # by hand: BG/NBD fitted on the purchase days up to a year ago, against what those
    # buyers did in the window that followed
    x, tx, T, ids = (np.array(c, float) for c in zip(*con.execute("""
        SELECT count(*) - 1, max(d) - min(d), ?::DATE - min(d), customer_id
        FROM (SELECT DISTINCT customer_id, order_date AS d FROM core.orders WHERE order_date <= ?)
        GROUP BY customer_id ORDER BY customer_id""", [year_ago, year_ago]).fetchall()))
    fit = models.fit_bgnbd(x, tx, T)
    expected = models.expected_purchases(fit, w, x, tx, T).sum()
    happened = con.execute("""SELECT count(DISTINCT (customer_id, order_date)) FROM core.orders
        WHERE order_date > ? AND order_date <= ?::DATE + ? AND customer_id IN
        (SELECT customer_id FROM core.orders WHERE order_date <= ?)""",
                           [year_ago, year_ago, w, year_ago]).fetchone()[0]
    factor = stats["seasonal_factor"]["day"]
    assert factor == pytest.approx(happened / expected, rel=1e-6)
    assert factor > 1.1          # the Christmas window: BG/NBD alone falls short


def test_the_factor_is_used_only_if_it_helped_the_hold_out(built):
    _, eng, stats = built
    seasonal, acc = stats["seasonal_factor"], stats["accuracy"]["purchases"]
    pick = stats["chosen"]["purchases"]
    assert pick in ("bgnbd", "bgnbd_sharpened")
    # the hold-out's own factor comes from a year before the hold-out began, and decides
    assert seasonal["hold_out"] is not None
    helped = acc[f"{pick}_seasonal"]["abs_total_error_pct"] < acc[pick]["abs_total_error_pct"]
    assert seasonal["applied"] == helped
    # the day's total is BG/NBD's, times the factor when applied (sharpening keeps totals)
    served = eng.scalar(SqlStep("t", "SELECT sum(expected_purchases) FROM "
                                     "predictions.customer_predictions WHERE as_of_date = $d",
                                {"d": DAY}))
    plain = stats["baseline_scores"]["bgnbd"].sum()
    assert served == pytest.approx(plain * (seasonal["day"] if helped else 1.0), rel=1e-4)


def test_orders_after_the_day_change_nothing(built):
    """Everything is chosen on windows that end by the day: a warehouse that also holds the
    next two years of orders gives the same predictions and the same back-test."""
    _, eng, _ = built
    con2 = _warehouse(with_future=True)
    assert con2.execute("SELECT count(*) FROM core.orders WHERE order_date > ?", [DAY]).fetchone()[0]
    eng2 = DuckDBEngine(con2)
    build_predictions(eng2, SETTINGS, DAY)
    q = SqlStep("t", "SELECT * EXCLUDE (as_of_date) FROM predictions.customer_predictions "
                     "ORDER BY customer_id")
    assert eng.rows(q) == eng2.rows(q)
    a = SqlStep("t", "SELECT target, model, metric, value FROM predictions.accuracy ORDER BY ALL")
    assert eng.rows(a) == eng2.rows(a)
    con2.close()
