"""The day's predictions per contact, and the back-test that says how far to trust them.

Two families of models, because each is right for a different question:

* the customer-base models (BG/NBD for the purchase process, Gamma-Gamma for spend, see
  :mod:`tessera.predictions.models`) need only each buyer's (x, t_x, T, mean spend), give
  a probability of being alive, expected purchases at any horizon and a lifetime value,
  and extrapolate to horizons no label has been seen for;
* supervised gradient boosting (scikit-learn) on features computed in SQL (recency,
  frequency, spend, tenure, inter-purchase time, recent windows, web and e-mail
  behaviour, and the customer-base models' own outputs) learns "buys in the next N days",
  "churns (no purchase in the next M days)" and "how many purchases in the next N days"
  from an earlier cut-off whose outcome is known, so it can use behaviour the
  customer-base models cannot see, and never-buyers too.

The back-test runs inside every build: the last window is held out, every model is
trained and fitted on the history before it, and its accuracy on the held-out window is
stored beside that of naive baselines (recency only, a logistic regression on RFM
quintiles, a plain BG/NBD, "predicts zero", "same as the last window"). Production
models are then refitted on the latest labelled window and applied at the day.

Set-based where the work is: features and outcomes are SQL steps over the warehouse
(``sql/*.sql``); the models work on whole numpy columns; there is no per-customer loop.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import pickle
import time
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
from scipy.stats import rankdata
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import OneHotEncoder
from threadpoolctl import threadpool_limits

from tessera.engine import Engine, SqlStep, as_engine, step_from_file
from tessera.engine.steps import ddl_statements
from tessera.predictions import metrics, models
from tessera.settings.predictions import PredictionSettings

MODEL_FAMILY = "bgnbd-gg+hgb.2"

# Where the stage reads from. The warehouse by default; the CLI points them at a CSV.
CARD_POPULATION = "SELECT customer_id FROM marts.contact_cards"
WAREHOUSE_ORDERS = "SELECT customer_id, order_date, amount FROM core.orders"
WAREHOUSE_EVENTS = "SELECT customer_id, event_type, occurred_at FROM core.events"
NO_EVENTS = ("SELECT CAST(NULL AS BIGINT) AS customer_id, CAST(NULL AS VARCHAR) AS event_type, "
             "CAST(NULL AS TIMESTAMP) AS occurred_at WHERE 1 = 0")

STATUSES = ("scored", "not_enough_history", "no_purchases")
# the candidates that are Tessera's own models; every other name in the accuracy table is a
# baseline the asset check holds them to
OURS = frozenset({"gradient_boosting", "blend", "gradient_boosting_poisson",
                  "gradient_boosting_poisson_sharpened", "bgnbd_sharpened"})
BANDS = ("low", "medium", "high")


@dataclass(frozen=True)
class Inputs:
    """The relations the stage reads, as SELECTs written by code (never by configuration)."""

    population: str = CARD_POPULATION
    orders: str = WAREHOUSE_ORDERS
    events: str | None = WAREHOUSE_EVENTS


def table_steps() -> list[SqlStep]:
    """DDL of the predictions tables (``sql/tables.sql``), idempotent."""
    return [SqlStep("predictions.schema", "CREATE SCHEMA IF NOT EXISTS predictions"),
            *ddl_statements(__package__, "tables.sql")]


def model_version(settings: PredictionSettings) -> str:
    """The model family and a digest of the settings: two rows with the same version were
    made by the same code and the same configuration."""
    # the cadence is left out: a model trained every week is the model trained every day
    digest = hashlib.sha256(json.dumps(settings.model_dump(mode="json", exclude={"retrain_every_days"}),
                                       sort_keys=True)
                            .encode()).hexdigest()[:8]
    return f"{MODEL_FAMILY}-{digest}"


def _input_steps(engine: Engine, inputs: Inputs) -> list[SqlStep]:
    events = inputs.events
    if events == WAREHOUSE_EVENTS and not engine.table_exists("core", "events"):
        events = None
    views = {"pred_population": inputs.population, "pred_orders": inputs.orders,
             "pred_events": events or NO_EVENTS}
    return [*(SqlStep(f"predictions.input_{name}", f"CREATE OR REPLACE TEMP VIEW {name} AS {sql}")
              for name, sql in views.items()),
            # the order lines summed per purchase day once per build: every cut-off's
            # features and every window's outcomes read this instead of the order lines
            SqlStep("predictions.input_pred_days",
                    "CREATE OR REPLACE TEMP TABLE pred_days AS SELECT customer_id, "
                    "order_date AS d, sum(amount) AS value, count(*) AS orders FROM pred_orders "
                    "WHERE customer_id IS NOT NULL GROUP BY customer_id, order_date")]


# ------------------------------------------------------------------ frames (one per cut-off)

FEATURES = ("purchase_days", "orders", "recency_days", "tenure_days", "active_span_days",
            "spend", "mean_value", "max_value", "days_30", "days_90", "days_365",
            "days_prev_365", "days_season_last_year", "spend_365", "events_30", "events_90", "views_30", "carts_90",
            "email_90", "days_since_event")


@dataclass
class Frame:
    """Every contact's features at a cut-off, with the customer-base models fitted there."""

    cutoff: dt.date
    ids: np.ndarray
    cols: dict[str, np.ndarray]
    bgnbd: models.BgNbd | None = None
    gg: models.GammaGamma | None = None
    buyers: int = 0
    out: dict[str, np.ndarray] = field(default_factory=dict)

    def matrix(self, rows: np.ndarray | slice = slice(None)) -> np.ndarray:
        """The supervised models' inputs for ``rows`` (a mask or indices; all by default):
        the SQL features, the mean gap between purchases and the customer-base models'
        outputs at this cut-off (NaN where undefined). Only the rows asked for are
        stacked: a million contacts by 25 columns is 200 MB per copy."""
        c = {k: v[rows] for k, v in self.cols.items()}
        out = {k: v[rows] for k, v in self.out.items()}
        with np.errstate(divide="ignore", invalid="ignore"):
            gap = np.where(c["purchase_days"] > 1, c["active_span_days"] / (c["purchase_days"] - 1),
                           np.nan)
        extra = [gap, out["p_alive"], out["expected_window"], out["p_window"],
                 out["expected_value"]]
        return np.column_stack([c[f] for f in FEATURES] + extra)


def _columns(tbl: pa.Table) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The features step's result as numpy: ids, and float columns (NULL becomes NaN)."""
    cols = {n: tbl.column(n).cast(pa.float64()).to_numpy() for n in (*FEATURES, "valued_days")}
    return tbl.column("customer_id").to_numpy(), cols


def _frame(columns: tuple[np.ndarray, dict[str, np.ndarray]], cutoff: dt.date,
           settings: PredictionSettings, window_days: int, production: bool,
           fitted: tuple | None = None) -> Frame:
    """``fitted``: the models already fitted at this cut-off (for another window; the
    columns are shared with that other window's frame, read only), or at the training day
    whose stored models score this day (one it could not fit is fitted here)."""
    ids, cols = columns
    fr = Frame(cutoff, ids, cols)
    buyer = cols["purchase_days"] >= 1
    fr.buyers = int(buyer.sum())
    n = len(ids)
    nan = np.full(n, np.nan)
    fr.out = {"p_alive": nan.copy(), "expected_window": nan.copy(), "p_window": nan.copy(),
              "expected_value": nan.copy()}
    if fr.buyers < settings.min_buyers:
        return fr
    x = cols["purchase_days"][buyer] - 1
    tx = cols["active_span_days"][buyer]
    T = cols["tenure_days"][buyer]
    # four (or three) parameters are pinned down long before a million customers: the
    # fits see a seeded sample of at most max_training_rows; every buyer is scored
    fit_rows = _sample(len(x), settings.max_training_rows, settings.seed)
    fr.bgnbd = (fitted[0] if fitted and fitted[0] is not None
                else models.fit_bgnbd(x[fit_rows], tx[fit_rows], T[fit_rows]))
    # every closed form runs once per distinct (x, t_x, T), found once per frame
    ux, utx, uT, inv = models.distinct(x, tx, T)

    def per_buyer(fn, *head) -> np.ndarray:
        return fn.__wrapped__(fr.bgnbd, *head, ux, utx, uT)[inv]

    fr.out["p_alive"][buyer] = per_buyer(models.p_alive)
    fr.out["expected_window"][buyer] = per_buyer(models.expected_purchases, window_days)
    fr.out["p_window"][buyer] = per_buyer(models.p_purchase, window_days)
    spenders = cols["valued_days"] >= 1
    if spenders.sum() >= settings.min_buyers:
        spend_rows = np.flatnonzero(spenders)[_sample(int(spenders.sum()),
                                                      settings.max_training_rows, settings.seed)]
        fr.gg = (fitted[1] if fitted and fitted[1] is not None
                 else models.fit_gamma_gamma(cols["valued_days"][spend_rows], cols["mean_value"][spend_rows]))
        fr.out["expected_value"][buyer] = models.expected_value(
            fr.gg, cols["valued_days"][buyer], cols["mean_value"][buyer])
    if production:
        for h in (30, 90, 365):
            arr = nan.copy()
            arr[buyer] = per_buyer(models.expected_purchases, h)
            fr.out[f"expected_{h}"] = arr
        if fr.gg is not None:
            arr = nan.copy()
            arr[buyer] = per_buyer(models.discounted_purchases, settings.clv_horizon_days,
                                   settings.annual_discount_rate, 30) * fr.out["expected_value"][buyer]
            fr.out["clv"] = arr
    return fr


def _outcomes(engine: Engine, start: dt.date, end: dt.date) -> tuple[np.ndarray, np.ndarray]:
    tbl = engine.arrow(step_from_file(__package__, "outcomes.sql", start=start, end=end))
    return (tbl.column("purchases").cast(pa.float64()).to_numpy(),
            tbl.column("spend").cast(pa.float64()).to_numpy())


# ------------------------------------------------------------------ supervised models

def _sample(n: int, limit: int, seed: int) -> np.ndarray:
    """A fixed, seeded subset of at most ``limit`` rows (all of them when fewer)."""
    if n <= limit:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, limit, replace=False))


def _judged(mask: np.ndarray, settings: PredictionSettings) -> np.ndarray:
    """The contacts the back-test judges: all of ``mask``, or a fixed, seeded sample of
    ``max_backtest_rows`` of them. AUC, Brier or MAE on 200 000 contacts is as exact as
    on a million (its standard error is far below the third decimal), and scoring every
    back-test model on the whole base was most of the stage's time at a million."""
    count = int(mask.sum())
    if count <= settings.max_backtest_rows:
        return mask
    out = np.zeros_like(mask)
    out[np.flatnonzero(mask)[_sample(count, settings.max_backtest_rows, settings.seed + 1)]] = True
    return out


def _best(judged: dict[str, dict[str, float]], metric: str, higher: bool) -> str:
    """The candidate with the best back-test figure; the first listed wins a tie and a
    missing figure (a hold-out with one class only) never wins."""
    best, best_v = next(iter(judged)), None
    for name, fig in judged.items():
        v = fig.get(metric)
        if v is None or np.isnan(v):
            continue
        if best_v is None or (v > best_v if higher else v < best_v):
            best, best_v = name, v
    return best


# the sharpness exponents the back-test tries (1: the model's own expectations)
SHARPNESS = (1.0, 1.1, 1.2, 1.3, 1.4, 1.5, 1.75, 2.0)


def sharpen(pred: np.ndarray, gamma: float) -> np.ndarray:
    """``pred ** gamma`` rescaled to ``pred``'s own total. Why: a purchase count in a window
    is mostly zero, and the absolute error of a contact is lowest at the median of their
    count, not at its mean; raising the expectations to a power above one moves the
    unlikely buyers towards zero and the likely ones up, in the same order and with the
    same total, so the error of the total is untouched while the per-contact error falls.
    The exponent is chosen on the back-test (:func:`choose_sharpness`), never on the day."""
    pred = np.clip(np.nan_to_num(np.asarray(pred, float)), 0.0, None)
    total = pred.sum()
    if gamma == 1.0 or total <= 0:
        return pred
    z = np.power(pred, gamma)
    return z * (total / z.sum())


def choose_sharpness(actual: np.ndarray, pred: np.ndarray) -> float:
    """The exponent of :data:`SHARPNESS` with the lowest absolute error of ``pred`` against
    ``actual`` (the back-test's window); the smaller exponent wins a tie."""
    errors = [float(np.abs(sharpen(pred, g) - actual).mean()) for g in SHARPNESS]
    return SHARPNESS[int(np.argmin(errors))]


def seasonal_factor(predicted: np.ndarray, actual: np.ndarray) -> float | None:
    """Purchases that happened over purchases the customer-base model expected, in the
    window that began on the same day a year earlier (clipped to [0.5, 2]): BG/NBD has no
    calendar, so a Christmas quarter or a summer lull shows as the same ratio every year.
    None when the model expected nothing there (no fit, or no history a year back)."""
    expected = float(np.nansum(predicted))
    if expected <= 0:
        return None
    return float(np.clip(float(np.sum(actual)) / expected, 0.5, 2.0))


def _never_rate(fr: Frame, mask: np.ndarray, y: np.ndarray) -> float:
    """What the never-buyers among ``mask`` did in the window after ``fr``'s cut-off (the
    rate of buying, or purchases per head): BG/NBD's stand-in for the people it cannot
    score, learnt from a window whose outcome is known."""
    never = mask & (fr.cols["purchase_days"] < 1)
    return float(y[never].mean()) if never.any() else 0.0


def _bgnbd_probability(fr: Frame, rows: np.ndarray, never_rate: float) -> np.ndarray:
    """BG/NBD's probability of a purchase in the frame's window for ``rows``; never-buyers
    get ``never_rate``."""
    return np.nan_to_num(fr.out["p_window"][rows], nan=never_rate)


def _leaf(rows: int) -> int:
    """Smallest leaf: 100 contacts on a large base, fewer (but never under 20: a leaf of a
    handful of contacts learns their noise) on a small one."""
    return int(min(100, max(20, rows // 100)))


def _classifier(seed: int, rows: int) -> HistGradientBoostingClassifier:
    return HistGradientBoostingClassifier(max_iter=60, learning_rate=0.12, max_leaf_nodes=15,
                                          min_samples_leaf=_leaf(rows), l2_regularization=1.0,
                                          early_stopping=False, random_state=seed)


def _regressor(seed: int, rows: int) -> HistGradientBoostingRegressor:
    return HistGradientBoostingRegressor(loss="poisson", max_iter=60, learning_rate=0.12,
                                         max_leaf_nodes=15, min_samples_leaf=_leaf(rows),
                                         l2_regularization=1.0, early_stopping=False,
                                         random_state=seed)


def _rfm_quintiles(fr: Frame) -> np.ndarray:
    """Recency, frequency and monetary quintiles (1-5; 0 for never-buyers), as RFM does."""
    c = fr.cols
    buyer = c["purchase_days"] >= 1
    out = np.zeros((len(fr.ids), 3))
    for j, v in enumerate((-c["recency_days"], c["purchase_days"], c["spend"])):
        vb = v[buyer]
        if len(vb):
            out[buyer, j] = np.ceil(rankdata(vb, method="ordinal") / len(vb) * 5)
    return out


def _rfm_logistic(seed: int):
    from sklearn.pipeline import make_pipeline
    return make_pipeline(OneHotEncoder(handle_unknown="ignore"),
                         LogisticRegression(max_iter=500, random_state=seed))


def _fit(make, X_train, y_train) -> tuple:
    """Fit on the training rows; a column the training rows never fill (no events in a
    deployment without event sources) is left out, and remembered for scoring."""
    keep = ~np.all(np.isnan(X_train), axis=0)
    model = make(len(X_train))
    model.fit(X_train[:, keep], y_train)
    return model, keep


def _predict(fitted: tuple, X_apply, proba: bool) -> np.ndarray:
    model, keep = fitted
    X = X_apply[:, keep]
    return model.predict_proba(X)[:, 1] if proba else model.predict(X)


def _fit_predict(make, X_train, y_train, X_apply, proba: bool) -> np.ndarray:
    return _predict(_fit(make, X_train, y_train), X_apply, proba)


@dataclass
class _Task:
    """One supervised question: who is asked (a mask per frame) and what counts as yes."""

    target: str
    window: int
    population: callable          # Frame -> bool mask: who is trained on and judged
    scored: callable              # Frame -> bool mask: who gets the day's prediction
    label: callable               # purchases in the window -> 0/1


def _buyers(fr: Frame) -> np.ndarray:
    return fr.cols["purchase_days"] >= 1


def _everyone(fr: Frame) -> np.ndarray:
    return np.ones(len(fr.ids), bool)


def _known(fr: Frame) -> np.ndarray:
    """The contacts a cut-off knew of: they had bought or done something by then. Training
    and judging on everybody known today would leak the future: a contact who first appears
    (with a purchase) after a cut-off would sit in that cut-off's frame as a never-buyer
    who then certainly buys."""
    return (fr.cols["purchase_days"] >= 1) | ~np.isnan(fr.cols["days_since_event"])


# ------------------------------------------------------------------ the build

def build_predictions(engine: Engine, settings: PredictionSettings, as_of: dt.date,
                      inputs: Inputs = Inputs(), reuse_models: bool = False) -> dict:
    """Score every contact for the day; replace the day's rows of
    ``predictions.customer_predictions``, ``predictions.accuracy`` and
    ``predictions.model_parameters`` in one transaction. Returns counts and figures.

    The models are fitted, back-tested and stored (``predictions.models``) on a training
    day. With ``reuse_models`` (the daily asset), a day less than ``retrain_every_days``
    after a stored training under the same version scores with those models and repeats
    that day's back-test rows: the back-test and the fits are most of the stage's time,
    and a week-old model scores a quiet day as well as a fresh one. Without it (the CLI's
    evaluation over an orders file) every call trains."""
    # OpenMP threads spin while they wait: on a shared, loaded machine more threads than
    # free cores made the boosting ten times slower (measured: 99 s against 9 s on two busy
    # cores), so the thread count is a setting, one by default
    with threadpool_limits(limits=settings.threads):
        return _build(as_engine(engine), settings, as_of, inputs, reuse_models)


@dataclass
class _Recipe:
    """How one target's day scores are made from a training day's fitted models.

    ``parts`` are averaged (a single part for a lone model): ``("gradient_boosting",
    fitted)``, ``("rfm_logistic", fitted)``, ``("bgnbd", never_rate)`` for a
    probability; ``("gradient_boosting_poisson", fitted)`` or ``("bgnbd", never_rate)``
    for the purchase count, then sharpened by ``gamma`` and scaled by ``factor``."""

    parts: list[tuple[str, object]]
    churn: bool = False
    gamma: float = 1.0
    factor: float | None = None


@dataclass
class _Served:
    """Everything a day needs to score its contacts without fitting: stored as one
    pickled value per training day (the warehouse is the trusted store of the models, as
    it is of the data they read)."""

    trained_on: dt.date
    fitted: tuple                      # (BG/NBD, Gamma-Gamma) fitted at the training day
    recipes: dict[str, _Recipe]
    rfm_purchase: tuple | None         # the purchase task's RFM logistic (a baseline)
    chosen: dict[str, str]
    skipped: dict[str, str]
    untrained: dict[str, str]
    seasonal: dict


def _runtime() -> str:
    """The libraries a pickled model depends on: another version retrains."""
    import sklearn
    return f"scikit-learn {sklearn.__version__}; numpy {np.__version__}; {MODEL_FAMILY}"


def _usable(engine: Engine, settings: PredictionSettings, version: str, day: dt.date) -> _Served | None:
    """The stored models a build of ``day`` scores with: the latest trained before
    ``day``, less than ``retrain_every_days`` before it, under the same version and
    libraries (so a backfill of a past day finds the models its own run used); None when
    a training is due. A run of a training day trains again: its models are what that
    day knew."""
    if settings.retrain_every_days <= 1:
        return None
    rows = engine.rows(SqlStep("predictions.usable_model", """
        SELECT model FROM predictions.models
        WHERE trained_on < $day AND trained_on > $since AND model_version = $version
          AND runtime = $runtime
        ORDER BY trained_on DESC LIMIT 1""", {
        "day": day, "since": day - dt.timedelta(days=settings.retrain_every_days),
        "version": version, "runtime": _runtime()}))
    if not rows:
        return None
    return pickle.loads(base64.b64decode(rows[0][0]))


def _store_model(engine: Engine, served: _Served, version: str) -> None:
    blob = base64.b64encode(pickle.dumps(served, protocol=pickle.HIGHEST_PROTOCOL)).decode("ascii")
    engine.run(SqlStep("predictions.model_delete",
                       "DELETE FROM predictions.models WHERE trained_on = $day AND model_version = $version",
                       {"day": served.trained_on, "version": version}),
               SqlStep("predictions.model_store", """
        INSERT INTO predictions.models VALUES (CAST($day AS DATE), $version, $runtime, $model,
                                               CAST($now AS TIMESTAMP))""", {
                   "day": served.trained_on, "version": version, "runtime": _runtime(),
                   "model": blob, "now": dt.datetime.now().replace(microsecond=0)}))


def _probability(recipe: _Recipe, ft: Frame, mt: np.ndarray, qt: np.ndarray) -> np.ndarray:
    """A classification target's day scores for the rows ``mt`` of ``ft``."""
    values = []
    for kind, payload in recipe.parts:
        if kind == "gradient_boosting":
            values.append(_predict(payload, ft.matrix(mt), True))
        elif kind == "rfm_logistic":
            values.append(_predict(payload, qt, True)[mt])
        else:
            p = _bgnbd_probability(ft, np.ones(len(ft.ids), bool), payload)[mt]
            values.append(1.0 - p if recipe.churn else p)
    return sum(values) / len(values)


def _count(recipe: _Recipe, today: Frame) -> np.ndarray:
    """The purchase count's day scores for every contact of ``today``."""
    kind, payload = recipe.parts[0]
    raw = (_predict(payload, today.matrix(), False) if kind == "gradient_boosting_poisson"
           else np.nan_to_num(today.out["expected_window"], nan=payload))
    return sharpen(raw, recipe.gamma) * (recipe.factor or 1.0)


def _rows_of_day(trained: bool, name: str, fresh: str, columns: str, copied: dict) -> SqlStep:
    """The day's rows of ``predictions.<name>``: the ones a training day computed
    (``fresh``, a select of the registered Arrow table), or on a day between the training
    day's rows (``columns`` after the date) repeated under the day's own date."""
    if trained:
        return SqlStep(f"predictions.store_{name}", fresh)
    return SqlStep(f"predictions.repeat_{name}",
                   f"SELECT CAST($as_of AS DATE), {columns} FROM predictions.{name} "
                   "WHERE as_of_date = $day AND model_version = $version", copied)


def _build(engine: Engine, settings: PredictionSettings, as_of: dt.date, inputs: Inputs,
           reuse_models: bool) -> dict:
    t0 = time.perf_counter()
    version = model_version(settings)
    engine.run(*table_steps(), *_input_steps(engine, inputs))
    served = _usable(engine, settings, version, as_of) if reuse_models else None
    acc_rows: list[tuple] = []
    params: list[tuple] = []
    features: dict[dt.date, tuple[np.ndarray, dict[str, np.ndarray]]] = {}
    frames: dict[tuple[dt.date, int], Frame] = {}

    def frame(cutoff: dt.date, window: int) -> Frame:
        # a frame's model outputs depend on the window (expected purchases in it), so a
        # cut-off shared by two windows has a frame for each; the SQL runs once. A day
        # scored with stored models takes the customer-base models of the training day.
        if cutoff not in features:
            features[cutoff] = _columns(engine.arrow(step_from_file(__package__, "features.sql",
                                                                    cutoff=cutoff)))
        if (cutoff, window) not in frames:
            same = [f for (cut, _), f in frames.items() if cut == cutoff]
            fitted = ((same[0].bgnbd, same[0].gg) if same
                      else served.fitted if served is not None and cutoff == as_of else None)
            frames[(cutoff, window)] = _frame(features[cutoff], cutoff, settings, window,
                                              cutoff == as_of, fitted)
        return frames[(cutoff, window)]

    t_fit = time.perf_counter()
    if served is None:
        served = _train(engine, settings, as_of, version, frame, acc_rows)
        for (cutoff, _), fr in sorted(frames.items()):
            if any(p[3] == cutoff for p in params):
                continue  # the same fit, kept for a second window
            for name, fitted in (("bgnbd", fr.bgnbd), ("gamma_gamma", fr.gg)):
                if fitted is not None:
                    params += [(as_of, version, name, cutoff, k, round(v, 8), fr.buyers)
                               for k, v in fitted.params().items()]
        trained = True
    else:
        trained = False
    fit_seconds = time.perf_counter() - t_fit

    # ------------------------------------------------------------ the day's scores
    w, wc = settings.window_days, settings.churn_days
    today = frame(as_of, w)
    n = len(today.ids)
    qt = _rfm_quintiles(today)
    scores: dict[str, np.ndarray] = {}
    for target, window, scored in (("purchase", w, _everyone), ("churn", wc, _buyers)):
        if target in served.recipes:
            ft = frame(as_of, window)
            full = np.full(n, np.nan)
            mt = scored(ft)
            full[mt] = _probability(served.recipes[target], ft, mt, qt)
            scores[target] = full
    if "purchases" in served.recipes:
        scores["purchases"] = _count(served.recipes["purchases"], today)
    baselines: dict[str, np.ndarray] = {}
    if served.rfm_purchase is not None:
        # the baselines' own predictions for the day, kept for scoring against the
        # future (tessera predict): the RFM logistic refitted like the model, and the
        # plain BG/NBD's expected purchases in the window (every buyer, new ones too)
        baselines["rfm_logistic"] = _predict(served.rfm_purchase, qt, True)
        baselines["bgnbd"] = np.nan_to_num(today.out["expected_window"], nan=0.0)
        baselines["bgnbd_probability"] = np.nan_to_num(today.out["p_window"], nan=0.0)

    # ------------------------------------------------------------ per-contact rows
    c = today.cols
    purchases = c["purchase_days"]
    enough = (purchases >= 1) & (c["tenure_days"] >= settings.min_history_days) & (
        today.bgnbd is not None)
    status = np.where(purchases < 1, "no_purchases",
                      np.where(enough, "scored", "not_enough_history"))
    nan = np.full(n, np.nan)

    def only_scored(a: np.ndarray | None) -> np.ndarray:
        return np.where(enough, a, np.nan) if a is not None else nan

    churn = only_scored(scores.get("churn"))
    bands = settings.churn_bands
    band = np.where(np.isnan(churn), None,
                    np.where(churn >= bands.high, "high",
                             np.where(churn >= bands.medium, "medium", "low")))

    def col(a: np.ndarray) -> pa.Array:
        return pa.array(np.round(a, 6), pa.float64(), mask=np.isnan(a))

    result = pa.table({
        "customer_id": pa.array(today.ids, pa.int64()),
        "status": pa.array(status, pa.string()),
        "purchases": pa.array(purchases.astype(np.int64)),
        "days_since_last_purchase": pa.array(np.nan_to_num(c["recency_days"], nan=0).astype(np.int32),
                                             mask=np.isnan(c["recency_days"])),
        "p_alive": col(only_scored(today.out["p_alive"])),
        "e30": col(only_scored(today.out.get("expected_30"))),
        "e90": col(only_scored(today.out.get("expected_90"))),
        "e365": col(only_scored(today.out.get("expected_365"))),
        "expected_purchases": col(scores.get("purchases", nan)),
        "expected_order_value": col(only_scored(today.out["expected_value"])),
        "clv": col(only_scored(today.out.get("clv"))),
        "purchase_propensity": col(scores.get("purchase", nan)),
        "churn_risk": col(churn),
        "churn_band": pa.array(band, pa.string()),
    })
    acc = pa.table(list(zip(*acc_rows)) if acc_rows else [[]] * 11, names=[
        "as_of_date", "model_version", "target", "model", "is_baseline", "metric", "value",
        "cutoff_date", "window_days", "customers", "positives"])
    par = pa.table(list(zip(*params)) if params else [[]] * 7, names=[
        "as_of_date", "model_version", "model", "cutoff_date", "parameter", "value", "customers"])

    engine.register_arrow("pred_result", result)
    engine.register_arrow("pred_accuracy", acc)
    engine.register_arrow("pred_parameters", par)
    # a day scored with stored models repeats its training day's back-test and fitted
    # parameters under its own date: what the day served, and how far to trust it
    copied = {"day": served.trained_on, "version": version, "as_of": as_of}
    accuracy_rows = _rows_of_day(
        trained, "accuracy",
        "SELECT CAST(as_of_date AS DATE), model_version, target, model, is_baseline, "
        "metric, CAST(value AS DOUBLE), CAST(cutoff_date AS DATE), window_days, customers, "
        "positives FROM pred_accuracy",
        "model_version, target, model, is_baseline, metric, value, cutoff_date, window_days, "
        "customers, positives", copied)
    parameter_rows = _rows_of_day(
        trained, "model_parameters",
        "SELECT CAST(as_of_date AS DATE), model_version, model, CAST(cutoff_date AS DATE), "
        "parameter, CAST(value AS DOUBLE), customers FROM pred_parameters",
        "model_version, model, cutoff_date, parameter, value, customers", copied)
    try:
        with engine.together():
            written = engine.replace_partition(
                "predictions.customer_predictions", {"as_of_date": as_of}, SqlStep(
                    "predictions.store_contacts",
                    "SELECT CAST($as_of AS DATE), customer_id, status, purchases, "
                    "days_since_last_purchase, p_alive, e30, e90, e365, expected_purchases, "
                    "expected_order_value, clv, purchase_propensity, churn_risk, churn_band, "
                    "$version FROM pred_result", {"as_of": as_of, "version": version}))
            engine.replace_partition("predictions.accuracy", {"as_of_date": as_of}, accuracy_rows)
            engine.replace_partition("predictions.model_parameters", {"as_of_date": as_of},
                                     parameter_rows)
            if trained and reuse_models:
                _store_model(engine, served, version)
    finally:
        for name in ("pred_result", "pred_accuracy", "pred_parameters"):
            engine.unregister(name)
    if not trained:
        acc_rows = [tuple(r) for r in engine.rows(SqlStep(
            "predictions.accuracy_of_day", "SELECT * FROM predictions.accuracy WHERE as_of_date = $day",
            {"day": as_of}))]
        params = [tuple(r) for r in engine.rows(SqlStep(
            "predictions.parameters_of_day",
            "SELECT * FROM predictions.model_parameters WHERE as_of_date = $day", {"day": as_of}))]

    by_status = {s: int((status == s).sum()) for s in STATUSES}
    by_band = {b: int((band == b).sum()) for b in BANDS}
    return {
        "contacts": written, "model_version": version, "by_status": by_status,
        "by_churn_band": by_band, "skipped": served.skipped, "chosen": served.chosen,
        "boosting_not_trained": served.untrained, "seasonal_factor": served.seasonal,
        "trained_on": served.trained_on.isoformat(), "trained": trained,
        "accuracy": accuracy_summary(acc_rows),
        "parameters": {m: {k: v for _, _, m2, cut, k, v, _ in params
                           if m2 == m and cut == served.trained_on}
                       for m in ("bgnbd", "gamma_gamma")},
        "fit_seconds": round(fit_seconds, 3),
        "seconds": round(time.perf_counter() - t0, 3),
        # per-contact arrays (in customer_id order), never for metadata
        "baseline_scores": {"customer_id": today.ids, **baselines},
    }


def _train(engine: Engine, settings: PredictionSettings, as_of: dt.date, version: str,
           frame, acc_rows: list) -> _Served:
    """The back-test of every target and the fits the day serves: appends the accuracy
    rows, returns the served models (what a day between trainings scores with)."""
    seed = settings.seed
    w, wc = settings.window_days, settings.churn_days
    days = lambda n: as_of - dt.timedelta(days=n)  # noqa: E731
    outcome_cache: dict[tuple, tuple] = {}

    def outcome(start: dt.date, end: dt.date):
        if (start, end) not in outcome_cache:
            outcome_cache[(start, end)] = _outcomes(engine, start, end)
        return outcome_cache[(start, end)]

    def season(cutoff: dt.date) -> float | None:
        """The seasonal factor for a window starting at ``cutoff``: BG/NBD fitted a year
        before it, against what that year-ago window's buyers then did (all of it on or
        before ``cutoff``, so the day's own future is never read)."""
        if w > 365:
            return None
        year_ago = cutoff - dt.timedelta(days=365)
        fr = frame(year_ago, w)
        if fr.bgnbd is None:
            return None
        buyers = _buyers(fr)
        happened = outcome(year_ago, year_ago + dt.timedelta(days=w))[0]
        return seasonal_factor(fr.out["expected_window"][buyers], happened[buyers])

    today = frame(as_of, w)
    skipped: dict[str, str] = {}
    untrained: dict[str, str] = {}   # targets served without a boosting candidate, and why
    seasonal: dict[str, float | bool | None] = {}   # the purchase count's calendar factor
    recipes: dict[str, _Recipe] = {}
    chosen: dict[str, str] = {}
    rfm_purchase = None

    def record(target, model, baseline, figures, cutoff, window, customers, positives):
        for metric, value in figures.items():
            acc_rows.append((as_of, version, target, model, baseline, metric,
                             None if value is None or np.isnan(value) else round(float(value), 6),
                             cutoff, window, int(customers), float(positives)))

    def trainable(fr: Frame, y: np.ndarray, mask: np.ndarray, classes: bool) -> bool:
        if fr.bgnbd is None or mask.sum() < settings.min_buyers:
            return False
        return not classes or 0 < y[mask].sum() < mask.sum()

    tasks = [
        _Task("purchase", w, _known, _everyone, lambda p: (p > 0).astype(int)),
        _Task("churn", wc, _buyers, _buyers, lambda p: (p == 0).astype(int)),
    ]
    for task in tasks:
        c1, c0 = days(task.window), days(2 * task.window)
        f1, f0 = frame(c1, task.window), frame(c0, task.window)
        y0 = task.label(outcome(c0, c1)[0])
        y1 = task.label(outcome(c1, as_of)[0])
        m0, m1full = task.population(f0), task.population(f1)
        if not (trainable(f0, y0, m0, True) and trainable(f1, y1, m1full, True)):
            skipped[task.target] = (f"not enough history: needs buyers and both outcomes at "
                                    f"{c0} and {c1} ({2 * task.window} days before the day)")
            continue
        idx0 = np.flatnonzero(m0)[_sample(int(m0.sum()), settings.max_training_rows, seed)]
        idx1 = np.flatnonzero(m1full)[_sample(int(m1full.sum()), settings.max_training_rows, seed)]
        m1 = _judged(m1full, settings)
        yt, pos = y1[m1], int(y1[m1].sum())
        # the candidates, each judged on the hold-out (trained on the window before it) and,
        # for the one served, refitted on the latest labelled window
        judged: dict[str, dict[str, float]] = {}
        refit: dict[str, callable] = {}
        probs: dict[str, np.ndarray] = {}   # each candidate's probabilities on the hold-out
        if len(idx0) >= settings.min_boosting_rows:
            p = _fit_predict(lambda rows: _classifier(seed, rows), f0.matrix(idx0), y0[idx0],
                             f1.matrix(m1), True)
            judged["gradient_boosting"] = metrics.classification(yt, p, True)
            probs["gradient_boosting"] = p
            refit["gradient_boosting"] = lambda: _fit(
                lambda rows: _classifier(seed, rows), f1.matrix(idx1), y1[idx1])
        else:
            untrained[task.target] = (
                f"{len(idx0)} contacts to train on, fewer than min_boosting_rows "
                f"({settings.min_boosting_rows}): the day serves the best baseline")
        rec = np.nan_to_num(f1.cols["recency_days"][m1], nan=1e9)
        record(task.target, "recency_only", True,
               metrics.classification(yt, rec if task.target == "churn" else -rec, False),
               c1, task.window, m1.sum(), pos)
        q0, q1 = _rfm_quintiles(f0), _rfm_quintiles(f1)
        pr = _fit_predict(lambda rows: _rfm_logistic(seed), q0[idx0], y0[idx0], q1[m1], True)
        judged["rfm_logistic"] = metrics.classification(yt, pr, True)
        rfm_fit: list = []

        def rfm_refit():
            if not rfm_fit:
                rfm_fit.append(_fit(lambda rows: _rfm_logistic(seed), q1[idx1], y1[idx1]))
            return rfm_fit[0]
        refit["rfm_logistic"] = rfm_refit
        # the customer-base model's own probability of a purchase in the window (not
        # 1 - p_alive for churn: BG/NBD holds every one-time buyer alive, p_alive = 1); a
        # never-buyer, whom it cannot score, gets the rate at which the training window's
        # never-buyers bought
        bg_judged = _bgnbd_probability(f1, m1, _never_rate(f0, m0, y0))
        if task.target == "churn":
            bg_judged = 1.0 - bg_judged
        judged["bgnbd"] = metrics.classification(yt, bg_judged, True)
        refit["bgnbd"] = lambda: _never_rate(f1, m1full, y1)
        # the mean of the probabilities: the boosting (where trained), the RFM logistic and
        # BG/NBD err on different contacts (the boosting on the few with unusual features,
        # the quintiles at their bucket edges, BG/NBD on recent one-time buyers), so their
        # average ranks better than each on sparse real histories (CDNOW: above each at all
        # three cut-offs; Online Retail, too small for the boosting: the two baselines'
        # mean above each at both cut-offs); still a probability, so Brier and the bands hold
        probs["rfm_logistic"], probs["bgnbd"] = pr, bg_judged
        parts = [k for k in ("gradient_boosting", "rfm_logistic", "bgnbd") if k in probs]
        judged["blend"] = metrics.classification(
            yt, sum(probs[k] for k in parts) / len(parts), True)
        pick = _best(judged, "auc", higher=True)
        for name, fig in judged.items():
            record(task.target, name, name not in OURS, fig, c1, task.window, m1.sum(), pos)
        record(task.target, pick, pick not in OURS, {"served": 1.0}, c1, task.window,
               m1.sum(), pos)
        recipes[task.target] = _Recipe([(k, refit[k]()) for k in (parts if pick == "blend" else [pick])],
                                       churn=task.target == "churn")
        chosen[task.target] = pick
        if task.target == "purchase":
            rfm_purchase = rfm_refit()

    # purchase counts and spend in the window: the Poisson booster against the plain
    # customer-base models, "predicts zero" and "same as the last window"
    c1, c0 = days(w), days(2 * w)
    f1, f0 = frame(c1, w), frame(c0, w)
    n0, _ = outcome(c0, c1)
    n1, s1 = outcome(c1, as_of)
    k0, k1full = _known(f0), _known(f1)
    if trainable(f0, n0, k0, False) and trainable(f1, n1, k1full, False) and n0[k0].sum() > 0:
        idx0 = np.flatnonzero(k0)[_sample(int(k0.sum()), settings.max_training_rows, seed)]
        idx1 = np.flatnonzero(k1full)[_sample(int(k1full.sum()), settings.max_training_rows, seed)]
        k1 = _judged(k1full, settings)
        n1k, s1k = n1[k1], s1[k1]
        nk, pos, spos = int(k1.sum()), float(n1k.sum()), float(s1k.sum())
        # a never-buyer's next purchase is worth the population's mean spend
        pop_value = (models.expected_value(f1.gg, np.zeros(1), np.zeros(1))[0]
                     if f1.gg is not None else 0.0)
        value1 = np.nan_to_num(f1.out["expected_value"][k1], nan=pop_value)
        counts: dict[str, np.ndarray] = {}
        refit = {}
        if len(idx0) >= settings.min_boosting_rows:
            counts["gradient_boosting_poisson"] = _fit_predict(
                lambda rows: _regressor(seed, rows), f0.matrix(idx0), n0[idx0], f1.matrix(k1), False)
            refit["gradient_boosting_poisson"] = lambda: _fit(
                lambda rows: _regressor(seed, rows), f1.matrix(idx1), n1[idx1])
        else:
            untrained["purchases"] = (
                f"{len(idx0)} contacts to train on, fewer than min_boosting_rows "
                f"({settings.min_boosting_rows}): the day serves BG/NBD")
        # BG/NBD's expectation; a never-buyer expects what the training window's did
        counts["bgnbd"] = np.nan_to_num(f1.out["expected_window"][k1],
                                        nan=_never_rate(f0, k0, n0))
        refit["bgnbd"] = lambda: _never_rate(f1, k1full, n1)
        judged = {name: metrics.counts(n1k, pred) for name, pred in counts.items()}
        # each model also sharpened (same order, same total, see sharpen) by the exponent
        # its hold-out liked best: one number learnt on the back-test, none on the day
        gammas = {name: choose_sharpness(n1k, pred) for name, pred in counts.items()}
        for name, pred in counts.items():
            judged[f"{name}_sharpened"] = {**metrics.counts(n1k, sharpen(pred, gammas[name])),
                                           "sharpness": gammas[name]}
        pick = _best(judged, "mae", higher=False)
        base = pick.removesuffix("_sharpened")
        spend_name = {"gradient_boosting_poisson": "gradient_boosting_poisson_x_gamma_gamma",
                      "bgnbd": "bgnbd_gamma_gamma"}
        for name, fig in judged.items():
            record("purchases", name, name not in OURS, fig, c1, w, nk, pos)
        for name in counts:
            record("spend", spend_name[name], name not in OURS,
                   metrics.counts(s1k, counts[name] * value1), c1, w, nk, spos)
        record("purchases", "predicts_zero", True, metrics.counts(n1k, np.zeros(nk)), c1, w, nk, pos)
        record("purchases", "last_window", True, metrics.counts(n1k, n0[k1]), c1, w, nk, pos)
        s0 = outcome(c0, c1)[1][k1]
        record("spend", "predicts_zero", True, metrics.counts(s1k, np.zeros(nk)), c1, w, nk, spos)
        record("spend", "last_window", True, metrics.counts(s1k, s0), c1, w, nk, spos)
        # BG/NBD has no calendar: its total is scaled by what the same window a year earlier
        # showed (seasonal_factor), when the history reaches that far back. Where it also
        # reaches a year before the hold-out, the back-test decides: the factor is used only
        # if it brought the hold-out's total closer; otherwise a year's season is the prior.
        factor = season(as_of) if base == "bgnbd" else None
        seasonal = {"day": factor, "hold_out": None, "applied": False}
        if factor is not None:
            inner = seasonal["hold_out"] = season(c1)
            if inner is not None:
                fig = metrics.counts(n1k, sharpen(counts[base], gammas[base]) * inner)
                record("purchases", f"{pick}_seasonal", False, {**fig, "seasonal_factor": inner},
                       c1, w, nk, pos)
                if fig["abs_total_error_pct"] >= judged[pick]["abs_total_error_pct"]:
                    factor = None
        for target, name in (("purchases", pick), ("spend", spend_name[base])):
            record(target, name, (pick if target == "purchases" else base) not in OURS,
                   {"served": 1.0}, c1, w, nk,
                   pos if target == "purchases" else spos)
        if factor is not None:
            record("purchases", pick, pick not in OURS, {"seasonal_factor": factor}, c1, w, nk, pos)
        seasonal["applied"] = factor is not None
        recipes["purchases"] = _Recipe([(base, refit[base]())], gamma=gammas[base], factor=factor)
        chosen["purchases"] = pick
    else:
        skipped["purchases"] = (f"not enough history: needs buyers and purchases at {c0} and "
                                f"{c1} ({2 * w} days before the day)")
    return _Served(as_of, (today.bgnbd, today.gg), recipes, rfm_purchase, chosen, skipped,
                   untrained, seasonal)


def accuracy_summary(rows: list[tuple]) -> dict[str, dict[str, dict[str, float | None]]]:
    """``{target: {model: {metric: value}}}`` of a day's accuracy rows (for metadata)."""
    out: dict = {}
    for _, _, target, model, _, metric, value, *_ in rows:
        out.setdefault(target, {}).setdefault(model, {})[metric] = value
    return out
