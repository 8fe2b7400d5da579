"""The predictions' models on a cadence: a training day fits, back-tests and stores them;
the days between score every contact with the stored models (no fit) and repeat the
training day's back-test; a backfill of a day between finds the models its run used."""

from __future__ import annotations

import datetime as dt

import duckdb
import pytest

from tessera.engine import DuckDBEngine, SqlStep
from tessera.predictions import synthetic
from tessera.predictions.build import build_predictions
from tessera.predictions.checks import prediction_problems
from tessera.settings.predictions import PredictionSettings

DAY = dt.date(2026, 11, 1)
# boosting trained on this small base, so a stored model holds every kind of part
SETTINGS = PredictionSettings(min_buyers=50, min_boosting_rows=100, retrain_every_days=7)


def _day(n: int) -> dt.date:
    return DAY + dt.timedelta(days=n)


@pytest.fixture()
def eng(tmp_path):
    con = duckdb.connect(str(tmp_path / "wh.duckdb"))
    con.register("sim", synthetic.orders(4000, seed=5, as_of=_day(10)))
    con.execute("CREATE SCHEMA core; CREATE SCHEMA marts")
    con.execute("""CREATE TABLE core.orders AS SELECT 'O' || row_number() OVER () AS order_id,
        customer_id, order_date::DATE AS order_date, amount::DECIMAL(18,2) AS amount FROM sim""")
    con.execute("CREATE TABLE marts.contact_cards AS SELECT DISTINCT customer_id FROM core.orders "
                "UNION SELECT range FROM range(90000, 90050)")
    con.execute("""CREATE TABLE core.events AS SELECT customer_id, 'page_view' AS event_type,
        order_date::TIMESTAMP - INTERVAL 1 DAY AS occurred_at FROM core.orders""")
    yield DuckDBEngine(con)
    con.close()


def _rows(eng, table: str, day: dt.date, drop: str = "") -> list:
    cols = "* EXCLUDE (as_of_date)" if not drop else f"* EXCLUDE (as_of_date, {drop})"
    return eng.rows(SqlStep("t", f"SELECT {cols} FROM predictions.{table} WHERE as_of_date = $d "
                                 "ORDER BY ALL", {"d": day}))


def test_days_between_trainings_score_with_the_stored_models(eng):
    first = build_predictions(eng, SETTINGS, DAY, reuse_models=True)
    assert first["trained"] and first["trained_on"] == DAY.isoformat()
    assert "gradient_boosting" in first["accuracy"]["purchase"]
    assert eng.scalar(SqlStep("t", "SELECT count(*) FROM predictions.models")) == 1

    second = build_predictions(eng, SETTINGS, _day(3), reuse_models=True)
    assert not second["trained"] and second["trained_on"] == DAY.isoformat()
    assert second["chosen"] == first["chosen"]
    # the back-test and the fitted parameters the day serves: the training day's
    assert _rows(eng, "accuracy", _day(3)) == _rows(eng, "accuracy", DAY)
    assert _rows(eng, "model_parameters", _day(3)) == _rows(eng, "model_parameters", DAY)
    assert second["accuracy"] == first["accuracy"] and second["parameters"] == first["parameters"]
    assert not any(prediction_problems(eng, _day(3)).values())
    # the day's own features: recency moved on, so the scores are the day's, not copies
    assert _rows(eng, "customer_predictions", _day(3)) != _rows(eng, "customer_predictions", DAY)
    assert eng.scalar(SqlStep("t", "SELECT count(*) FROM predictions.models")) == 1

    # due again a week after the training: a new model, its own back-test
    week = build_predictions(eng, SETTINGS, _day(7), reuse_models=True)
    assert week["trained"] and week["trained_on"] == _day(7).isoformat()
    assert eng.scalar(SqlStep("t", "SELECT count(*) FROM predictions.models")) == 2
    # a backfill of the day between finds the models its own run used: the same rows
    before = {t: _rows(eng, t, _day(3)) for t in ("customer_predictions", "accuracy", "model_parameters")}
    again = build_predictions(eng, SETTINGS, _day(3), reuse_models=True)
    assert again["trained_on"] == DAY.isoformat()
    assert {t: _rows(eng, t, _day(3)) for t in before} == before


def test_stored_models_score_exactly_as_the_fresh_fit(eng):
    """The stored models, loaded and applied to the training day's own features, give the
    training day's rows: pickling and the recipes lose nothing."""
    build_predictions(eng, SETTINGS, DAY, reuse_models=True)
    trained = _rows(eng, "customer_predictions", DAY)
    # the stored models as if trained the day before: the day now scores with them
    eng.run(SqlStep("t", "UPDATE predictions.models SET trained_on = $d", {"d": DAY - dt.timedelta(days=1)}))
    again = build_predictions(eng, SETTINGS, DAY, reuse_models=True)
    assert not again["trained"]
    assert _rows(eng, "customer_predictions", DAY) == trained


def test_other_settings_or_no_reuse_train_again(eng):
    build_predictions(eng, SETTINGS, DAY, reuse_models=True)
    other = SETTINGS.model_copy(update={"window_days": 60})
    assert build_predictions(eng, other, _day(1), reuse_models=True)["trained"]
    # the cadence is no part of the model: a cadence of 3 still finds the models
    cadence = SETTINGS.model_copy(update={"retrain_every_days": 3})
    assert not build_predictions(eng, cadence, _day(2), reuse_models=True)["trained"]
    assert build_predictions(eng, cadence, _day(3), reuse_models=True)["trained"]
    # every day (1), and the CLI's evaluation (no reuse), always train
    daily = SETTINGS.model_copy(update={"retrain_every_days": 1})
    assert build_predictions(eng, daily, _day(4), reuse_models=True)["trained"]
    assert build_predictions(eng, SETTINGS, _day(5))["trained"]
