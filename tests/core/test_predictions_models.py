"""The customer-base models recover the parameters they were simulated from, and their
per-customer outputs behave as an analyst expects; the back-test's measures are right on
cases worked by hand."""

from __future__ import annotations

import numpy as np
import pytest

from tessera.predictions import metrics, models

TRUE = models.BgNbd(0.24, 4.41, 0.79, 2.43)      # the CDNOW estimates (weeks)
SPEND = models.GammaGamma(6.25, 3.74, 15.44)


@pytest.fixture(scope="module")
def sim():
    return models.simulate_bgnbd(TRUE, 20_000, observe_days=273, holdout_days=273, seed=1,
                                 spend=SPEND, start_spread_days=84)


def test_bgnbd_recovers_simulated_parameters(sim):
    fit = models.fit_bgnbd(sim["x"], sim["t_x"], sim["T"])
    assert fit.converged
    for got, want in zip(fit.params().values(), TRUE.params().values()):
        assert got == pytest.approx(want, rel=0.2)


def test_gamma_gamma_recovers_simulated_parameters(sim):
    fit = models.fit_gamma_gamma(sim["x"] + 1, sim["mean_value"])
    assert fit.converged
    assert fit.p == pytest.approx(SPEND.p, rel=0.15)
    # q and gamma trade off; their ratio (the scale of the mean spend) is identified well
    assert fit.p * fit.gamma / (fit.q - 1) == pytest.approx(
        SPEND.p * SPEND.gamma / (SPEND.q - 1), rel=0.05)


def test_holdout_total_and_spend_are_close_to_the_truth(sim):
    fit = models.fit_bgnbd(sim["x"], sim["t_x"], sim["T"])
    pred = models.expected_purchases(fit, 273, sim["x"], sim["t_x"], sim["T"])
    assert pred.sum() == pytest.approx(sim["holdout"].sum(), rel=0.08)
    gg = models.fit_gamma_gamma(sim["x"] + 1, sim["mean_value"])
    value = models.expected_value(gg, sim["x"] + 1, sim["mean_value"])
    assert np.corrcoef(value, sim["zeta"])[0, 1] > 0.8


def test_outputs_for_one_order_a_long_gap_and_a_regular_buyer():
    m = TRUE
    # one purchase 10 weeks ago; 5 purchases, the last 30 weeks ago; 5, the last a week ago
    x = np.array([0, 4, 4])
    t_x = np.array([0, 40, 69]) * 7.0
    T = np.array([70, 70, 70]) * 7.0
    alive = models.p_alive(m, x, t_x, T)
    assert alive[0] == 1.0                         # BG/NBD: drop-out only after a repeat
    assert alive[1] < 0.5 < alive[2]               # a long silence means probably gone
    e30, e365 = (models.expected_purchases(m, d, x, t_x, T) for d in (30, 365))
    assert np.all(e30 >= 0) and np.all(e365 > e30)
    assert e365[2] > e365[1] and e365[2] > e365[0]
    value = np.full(3, 50.0)
    clv = models.clv(m, value, x, t_x, T, 365, 0.10)
    undiscounted = models.clv(m, value, x, t_x, T, 365, 0.0)
    assert np.all(clv > 0) and np.all(clv < undiscounted)
    assert undiscounted == pytest.approx(e365 * 50.0)


def test_expected_value_shrinks_to_the_population_mean():
    gg = SPEND
    pop = gg.p * gg.gamma / (gg.q - 1)
    one, many = models.expected_value(gg, np.array([1, 50]), np.array([200.0, 200.0]))
    assert pop < one < many < 200.0                # more purchases, more trust in their mean
    assert models.expected_value(gg, np.array([0]), np.array([np.nan]))[0] == pytest.approx(pop)


def test_classification_measures_on_a_worked_case():
    y = np.array([1, 0, 1, 0, 0, 0, 0, 0, 0, 0])
    perfect = metrics.classification(y, np.array([9, 1, 8, 1, 1, 1, 1, 1, 1, 0.0]) / 10, True)
    assert perfect["auc"] == 1.0 and perfect["average_precision"] == 1.0
    assert perfect["top_decile_lift"] == pytest.approx(1 / 0.2)   # top 1 of 10 is a buyer
    assert perfect["brier"] == pytest.approx(np.mean((np.array([.9, .1, .8, .1, .1, .1, .1, .1, .1, 0]) - y) ** 2))
    assert metrics.classification(y, -np.arange(10.0), False)["auc"] == pytest.approx(
        (8 + 7) / 16)   # the buyer at 2 ranks below the non-buyer at 1


def test_count_measures():
    got = metrics.counts(np.array([0, 1, 3]), np.array([0.5, 1, 2]))
    assert got["mae"] == pytest.approx(0.5)
    assert got["total_error_pct"] == pytest.approx(-12.5)
    assert got["abs_total_error_pct"] == pytest.approx(12.5)


def test_probability_of_a_purchase_matches_the_simulated_share(sim):
    fit = models.fit_bgnbd(sim["x"], sim["t_x"], sim["T"])
    p = models.p_purchase(fit, 273, sim["x"], sim["t_x"], sim["T"])
    assert np.all((p >= 0) & (p <= 1))
    assert p.mean() == pytest.approx((sim["holdout"] > 0).mean(), rel=0.06)
    # it never exceeds being alive, and grows with the window
    assert np.all(p <= models.p_alive(fit, sim["x"], sim["t_x"], sim["T"]) + 1e-12)
    assert np.all(models.p_purchase(fit, 30, sim["x"], sim["t_x"], sim["T"]) <= p + 1e-12)
