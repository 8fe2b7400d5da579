"""Prediction settings: the windows, horizons and guards of the purchase, churn and value models."""

from __future__ import annotations

from pydantic import Field, model_validator

from tessera.settings.base import _Strict


class ChurnBands(_Strict):
    """Churn risk at or above ``medium`` is medium, at or above ``high`` is high."""

    medium: float = Field(0.5, ge=0, le=1)
    high: float = Field(0.8, ge=0, le=1)

    @model_validator(mode="after")
    def _ordered(self):
        if self.medium > self.high:
            raise ValueError("churn_bands: medium must not be above high")
        return self


class PredictionSettings(_Strict):
    """``predictions:`` in tessera.yaml. Every key has a default, so a deployment with order
    sources gets predictions without configuring anything."""

    # "buys in the next N days": the propensity window, the expected-purchases model's
    # window and the back-test's hold-out (the last window_days before the day)
    window_days: int = Field(90, ge=7, le=730)
    # "churns": no purchase in the next churn_days (its own back-test hold-out)
    churn_days: int = Field(180, ge=7, le=730)
    # the lifetime value's horizon, and the yearly rate its future purchases are discounted at
    clv_horizon_days: int = Field(365, ge=30, le=3650)
    annual_discount_rate: float = Field(0.10, ge=0, le=1)
    # a buyer whose first purchase is more recent than this gets "not_enough_history"
    min_history_days: int = Field(30, ge=0, le=3650)
    # fewer buyers than this at a cut-off: the customer-base models are not fitted
    min_buyers: int = Field(50, ge=10)
    churn_bands: ChurnBands = ChurnBands()
    # the supervised models train on at most this many contacts (a fixed, seeded sample)
    max_training_rows: int = Field(100_000, ge=1000)
    # fewer contacts than this to train on: no gradient boosting (it overfits a small base);
    # the day serves the best of the baselines on the back-test
    min_boosting_rows: int = Field(2000, ge=100)
    # the back-test judges at most this many contacts per target (a fixed, seeded sample)
    max_backtest_rows: int = Field(200_000, ge=1000)
    seed: int = 42
    # threads of the model fits (OpenMP); more than the free cores slows them down
    threads: int = Field(1, ge=1, le=256)
    # the models are trained (with their back-test) when the last training is this many
    # days old; the days between score every contact with the stored models and repeat
    # the training day's back-test figures. 1: train every day.
    retrain_every_days: int = Field(7, ge=1, le=365)
