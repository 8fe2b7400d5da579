"""A day of recommendations: the back-test, then the lists for every current contact.

Why the back-test runs in the pipeline: a kind that does not beat "recommend the best
sellers" on the purchases that came after is not worth sending, and the figures must
follow the data as it changes. The last ``holdout_days`` of purchases are hidden, every
kind is built on the rest with the same code as the daily lists, and the hidden
purchases are scored in two modes: ``new_items`` (only products the contact had not
bought before the cut; lists exclude bought products) and ``all_items`` (every
purchase; lists keep bought products, which is where "buy again" competes).

Lists go to every contact card (so never to an erased or soft-deleted person), are
replaced per day in one transaction, and days older than ``keep_days`` are dropped.

Why a model on a cadence: the lists are a function of a model (item pairs, best sellers,
repeat rates, the collaborative product factors) and of each contact's own inputs. The
model is trained every ``retrain_every_days`` (with the back-test, when due) and stored
(``recommendations.model_*``); a day between trainings loads it, signs every contact's
inputs (``signatures.sql``), ranks only the contacts whose signature is new, and carries
the others' lists from the last day ranked in the same context (model, settings,
catalogue). At the reference scale a training day's model is most of the stage's time;
the contacts a day's events and orders touch are what it costs between.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass

import pyarrow as pa

from tessera.engine import Engine, SqlStep, as_engine, step_from_file
from tessera.engine.steps import ddl_statements
from tessera.recommendations.collaborative import Factors
from tessera.recommendations.lists import (build_candidates, file_steps, load_inputs, load_model, rank_lists,
                                           store_model, train)
from tessera.recommendations.weights import CONFIGURED, configured_weights, tune_discovery, tune_repeat
from tessera.settings.recommendations import BASELINE, DISCOVERY_KINDS, RecommendationSettings

TABLE = "recommendations.contact_products"
EVALUATION = "recommendations.evaluation"
UNKNOWN = "recommendations.unknown_products"
WEIGHTS = "recommendations.combination_weights"
MODELS = "recommendations.models"
LIST_DAYS = "recommendations.list_days"
LIST_INPUTS = "recommendations.list_inputs"
_MODEL_TABLES = ("recommendations.model_products", "recommendations.model_factors", "recommendations.model_pairs")
MODES = ("new_items", "all_items")
# the scratch tables of a build (lists.py, collaborative.py, the back-test)
_SCRATCH = ("_rec_catalogue", "_rec_bought", "_rec_purchases", "_rec_viewed", "_rec_pairs",
            "_rec_item_candidates", "_rec_popular", "_rec_candidates", "_rec_lists", "_rec_targets",
            "_rec_als_inter", "_rec_als_users", "_rec_als_items", "_rec_als", "_rec_truth",
            "_rec_eval_lists", "_rec_eval_kinds", "_rec_weight_sets", "_rec_sessions", "_rec_pids",
            "_rec_held", "_rec_repeat", "_rec_als_model", "_rec_als_factors", "_rec_signatures",
            "_rec_carried")
# views over the scratch tables (inputs.sql, lists.py)
_SCRATCH_VIEWS = ("_rec_views", "_rec_events")


def table_steps() -> list[SqlStep]:
    return ddl_statements(__package__, "tables.sql")


def stored_kinds(settings: RecommendationSettings) -> list[str]:
    """The kinds written to the table: the configured ones and the best sellers."""
    return [*settings.kinds, BASELINE]


def _targets(engine: Engine, select: str, **params) -> None:
    engine.run(SqlStep("recommendations.targets",
                       f"CREATE OR REPLACE TEMP TABLE _rec_targets AS {select}", params))


@dataclass
class BackTest:
    """What the day's lists take from the back-test: its figures, the collaborative fit
    to start from, and the combination's weights (tuned, or as configured)."""

    rows: list[dict]
    factors: Factors | None
    weights: dict[str, float]
    weight_set: str
    # contacts with a held-out purchase, and how many of them were scored (the sample)
    held_out_contacts: int = 0
    evaluated_contacts: int = 0


def evaluate(engine: Engine, settings: RecommendationSettings, day: dt.date) -> BackTest:
    """Back-test as of ``day``: train before the cut, score the held-out purchases."""
    ev = settings.evaluation
    cutoff = day - dt.timedelta(days=ev.holdout_days - 1)
    load_inputs(engine, settings, cutoff)
    # the truth: held-out purchases of current contacts, all of them and the new ones
    engine.run(*file_steps("truth.sql", cutoff=cutoff, day=day, sample=ev.sample_contacts))
    held = int(engine.scalar(SqlStep("recommendations.held_out_contacts",
                                     "SELECT count(DISTINCT customer_id) FROM _rec_held")) or 0)
    _targets(engine, "SELECT DISTINCT customer_id FROM _rec_truth")
    evaluated = int(engine.scalar(SqlStep("recommendations.evaluated_contacts",
                                          "SELECT count(*) FROM _rec_targets")) or 0)
    _, factors = train(engine, settings, cutoff)
    build_candidates(engine, settings, cutoff)
    weights, weight_set, tuning = configured_weights(settings), CONFIGURED, []
    engine.run(SqlStep("recommendations.eval_lists_empty", """
        CREATE OR REPLACE TEMP TABLE _rec_eval_lists (mode VARCHAR, kind VARCHAR,
            customer_id BIGINT, rank INTEGER, product_id VARCHAR, score DOUBLE)"""))
    for mode in MODES:
        exclude = mode == "new_items"
        if ev.tune_weights:
            # the kinds' lists of the mode, then the weights tuned on it
            rank_lists(engine, settings, exclude=exclude, weights=weights)
            if exclude:
                weight_set, weights, rows = tune_discovery(engine, settings, ev.k)
            elif "buy_again" in settings.kinds:
                weight_set, weights, rows = tune_repeat(engine, settings, ev.k, weight_set, weights)
            else:
                rows = []
            tuning += rows
        rank_lists(engine, settings, exclude=exclude, weights=weights, combine_only=ev.tune_weights)
        engine.run(SqlStep("recommendations.eval_lists", """
            INSERT INTO _rec_eval_lists
            SELECT $mode, kind, customer_id, rank, product_id, score FROM _rec_lists""",
                           {"mode": mode}))
    engine.register_arrow("_rec_weights_arrow", pa.table({
        name: [r[name] for r in tuning] for name in ("mode", "weight_set", "kind", "weight", "ndcg_at_k", "chosen")},
        schema=pa.schema([("mode", pa.string()), ("weight_set", pa.string()), ("kind", pa.string()),
                          ("weight", pa.float64()), ("ndcg_at_k", pa.float64()), ("chosen", pa.bool_())])))
    engine.replace_partition(WEIGHTS, {"as_of_date": day}, SqlStep("recommendations.weights_of_day", """
        SELECT CAST($day AS DATE), mode, weight_set, kind, weight, ndcg_at_k, chosen
        FROM _rec_weights_arrow""", {"day": day}))
    engine.unregister("_rec_weights_arrow")
    kinds = [*settings.kinds, BASELINE]
    engine.register_arrow("_rec_eval_kinds_arrow", pa.table({"kind": kinds}))
    engine.run(SqlStep("recommendations.eval_kinds",
                       "CREATE OR REPLACE TEMP TABLE _rec_eval_kinds AS SELECT kind FROM _rec_eval_kinds_arrow"))
    engine.unregister("_rec_eval_kinds_arrow")
    catalogue = int(engine.scalar(SqlStep("recommendations.catalogue_size",
                                          "SELECT count(*) FROM _rec_catalogue")) or 0)
    step = step_from_file(__package__, "evaluation.sql", day=day, k=ev.k, cutoff=cutoff,
                          catalogue=max(catalogue, 1))
    engine.replace_partition(EVALUATION, {"as_of_date": day}, step)
    cols = engine.columns(SqlStep("recommendations.evaluation_of_day", f"""
        SELECT mode, kind, contacts, hit_rate, precision_at_k, recall_at_k, map_at_k, ndcg_at_k, coverage
        FROM {EVALUATION} WHERE as_of_date = $day ORDER BY mode, kind""", {"day": day}))
    names = list(cols)
    return BackTest([dict(zip(names, row)) for row in zip(*cols.values())], factors, weights, weight_set,
                    held, evaluated)


def stored_back_test(engine: Engine, settings: RecommendationSettings, day: dt.date) -> BackTest | None:
    """The weights of a back-test run less than ``evaluation.every_days`` before ``day``
    (its chosen all items set, which holds buy again's weight, else the new items one),
    or None when the back-test is due. Figures stay those of that day's table rows."""
    every = settings.evaluation.every_days
    if every <= 1:
        return None
    last = engine.scalar(SqlStep("recommendations.last_back_test", f"""
        SELECT max(as_of_date) FROM {EVALUATION} WHERE as_of_date < $day AND as_of_date > $since""",
                                 {"day": day, "since": day - dt.timedelta(days=every)}))
    if last is None:
        return None
    chosen = engine.rows(SqlStep("recommendations.stored_weights", f"""
        SELECT mode, weight_set, kind, weight FROM {WEIGHTS} WHERE as_of_date = $last AND chosen
        ORDER BY mode, kind""", {"last": last}))
    mode = "all_items" if any(r[0] == "all_items" for r in chosen) else "new_items"
    rows = [r for r in chosen if r[0] == mode]
    if not rows:  # tuning was off: the configured weights
        return BackTest([], None, configured_weights(settings), CONFIGURED)
    return BackTest([], None, {r[2]: float(r[3]) for r in rows}, f"{rows[0][1]} (back-test of {last})")


def worse_than_popular(rows: list[dict]) -> list[str]:
    """Kinds whose NDCG is below the best sellers' in a mode where they compete: the
    discovery kinds and the combination on new items, buy again on all items."""
    base = {r["mode"]: r["ndcg_at_k"] for r in rows if r["kind"] == BASELINE}
    worse = []
    for r in rows:
        competes = (r["mode"] == "new_items" and r["kind"] in (*DISCOVERY_KINDS, "combined")) or \
                   (r["mode"] == "all_items" and r["kind"] == "buy_again")
        if competes and r["contacts"] and r["ndcg_at_k"] < base.get(r["mode"], 0.0):
            worse.append(f"{r['kind']} ({r['mode']})")
    return worse


def settings_hash(settings: RecommendationSettings) -> str:
    """What a stored model was trained under: another setting, another model."""
    return hashlib.sha256(settings.model_dump_json().encode()).hexdigest()[:16]


def usable_model(engine: Engine, settings: RecommendationSettings, day: dt.date) -> dt.date | None:
    """The day of the stored model a build of ``day`` ranks with: the latest trained
    before ``day``, less than ``retrain_every_days`` before it, under the same settings
    (so a backfill of a past day finds the model its own run used); None when the model
    is due. A run of a training day trains again: its model is what that day knew."""
    if not engine.table_exists("recommendations", "models"):
        return None
    return engine.scalar(SqlStep("recommendations.usable_model", f"""
        SELECT max(trained_on) FROM {MODELS}
        WHERE trained_on < $day AND trained_on > $since AND settings_hash = $hash""",
                                 {"day": day, "since": day - dt.timedelta(days=settings.retrain_every_days),
                                  "hash": settings_hash(settings)}))


def _stored_weights(engine: Engine, trained_on: dt.date) -> tuple[dict[str, float], str]:
    weights, weight_set = engine.rows(SqlStep("recommendations.model_weights", f"""
        SELECT weights, weight_set FROM {MODELS} WHERE trained_on = $day""", {"day": trained_on}))[0]
    return {k: float(v) for k, v in json.loads(weights).items()}, weight_set


def build_recommendations(engine: Engine, settings: RecommendationSettings, day: dt.date) -> dict:
    """Train the model when due (the back-test first, when due too), then replace the
    day's lists for every contact card: ranked for the contacts whose inputs changed
    since the last day ranked with the same model, carried for the others. Returns
    counts and the evaluation figures (no personal data)."""
    engine = as_engine(engine)
    engine.run(*table_steps())
    until = day + dt.timedelta(days=1)  # the day's own orders and views are known
    trained_on = usable_model(engine, settings, day)
    evaluated = trained = False
    if trained_on is None:
        trained = True
        stored = stored_back_test(engine, settings, day) if settings.evaluation.enabled else None
        evaluated = settings.evaluation.enabled and stored is None
        if not settings.evaluation.enabled:
            back = BackTest([], None, configured_weights(settings), CONFIGURED)
        else:
            back = stored or evaluate(engine, settings, day)
        load_inputs(engine, settings, until)
        model_stats, _ = train(engine, settings, until, back.factors)
        back.factors = None  # the factors are large: free them before the ranking
        with engine.together():
            store_model(engine, day)
            engine.run(SqlStep("recommendations.model_row_delete", f"DELETE FROM {MODELS} WHERE trained_on = $day",
                               {"day": day}),
                       SqlStep("recommendations.model_row", f"""
                INSERT INTO {MODELS} VALUES (CAST($day AS DATE), $hash, $weight_set, $weights,
                                             CAST($now AS TIMESTAMP))""",
                               {"day": day, "hash": settings_hash(settings), "weight_set": back.weight_set,
                                "weights": json.dumps(back.weights, sort_keys=True),
                                "now": dt.datetime.now().replace(microsecond=0)}))
        trained_on, weights, weight_set, evaluation = day, back.weights, back.weight_set, back.rows
        held, scored = back.held_out_contacts, back.evaluated_contacts
    else:
        load_inputs(engine, settings, until)
        model_stats = load_model(engine, trained_on)
        weights, weight_set = _stored_weights(engine, trained_on)
        evaluation, held, scored = [], 0, 0

    # every card's inputs signed; ranked: the contacts whose signature the last day
    # ranked in the same context does not hold (every contact when there is none)
    engine.run(*file_steps("signatures.sql", recent_since=until - dt.timedelta(days=settings.recent_days)))
    catalogue = engine.scalar(SqlStep("recommendations.catalogue_signature", """
        SELECT CAST(coalesce(sum(hash(product_id) % 4294967291), 0) AS VARCHAR) || '/'
               || CAST(count(*) AS VARCHAR) FROM _rec_catalogue"""))
    context = f"{trained_on}|{settings_hash(settings)}|{catalogue}"
    previous = engine.scalar(SqlStep("recommendations.previous_list_day", f"""
        SELECT max(d.as_of_date) FROM {LIST_DAYS} d
        WHERE d.as_of_date < $day AND d.context = $context
          AND EXISTS (SELECT 1 FROM {TABLE} t WHERE t.as_of_date = d.as_of_date)""",
                                     {"day": day, "context": context}))
    if previous is None:
        _targets(engine, "SELECT customer_id FROM _rec_signatures")
    else:
        _targets(engine, f"""
            SELECT s.customer_id FROM _rec_signatures s
            WHERE NOT EXISTS (SELECT 1 FROM {LIST_INPUTS} i WHERE i.as_of_date = $previous
                              AND i.customer_id = s.customer_id AND i.signature = s.signature)""",
                 previous=previous)
    engine.run(SqlStep("recommendations.carried", """
        CREATE OR REPLACE TEMP TABLE _rec_carried AS
        SELECT customer_id FROM _rec_signatures WHERE customer_id NOT IN (SELECT customer_id FROM _rec_targets)"""))
    stats = build_candidates(engine, settings, until)
    stats.update(model_stats)
    rank_lists(engine, settings, exclude=settings.exclude_bought, weights=weights)
    kinds = stored_kinds(settings)
    ranked = int(engine.scalar(SqlStep("recommendations.target_count", "SELECT count(*) FROM _rec_targets")) or 0)
    carried = int(engine.scalar(SqlStep("recommendations.carried_count", "SELECT count(*) FROM _rec_carried")) or 0)
    oldest = day - dt.timedelta(days=settings.keep_days)
    with engine.together():
        written = engine.replace_partition(TABLE, {"as_of_date": day}, SqlStep(
            "recommendations.lists_of_day", f"""
            SELECT CAST($day AS DATE), kind, customer_id, rank, product_id, score FROM _rec_lists
            WHERE list_contains($kinds, kind)
            UNION ALL
            SELECT CAST($day AS DATE), kind, customer_id, rank, product_id, score FROM {TABLE}
            WHERE as_of_date = $previous AND customer_id IN (SELECT customer_id FROM _rec_carried)""",
            {"day": day, "kinds": kinds, "previous": previous or day}))
        engine.replace_partition(LIST_INPUTS, {"as_of_date": day}, SqlStep(
            "recommendations.list_inputs_of_day",
            "SELECT CAST($day AS DATE), customer_id, signature FROM _rec_signatures", {"day": day}))
        engine.replace_partition(LIST_DAYS, {"as_of_date": day}, SqlStep(
            "recommendations.list_day", "SELECT CAST($day AS DATE), CAST($trained_on AS DATE), $context, "
            "CAST($ranked AS BIGINT), CAST($carried AS BIGINT)",
            {"day": day, "trained_on": trained_on, "context": context, "ranked": ranked, "carried": carried}))
        for table in (TABLE, LIST_INPUTS, LIST_DAYS):
            engine.run(SqlStep("recommendations.drop_old_days", f"DELETE FROM {table} WHERE as_of_date <= $oldest",
                               {"oldest": oldest}))
        # models no kept day was ranked with go, but never the newest
        for table in (*_MODEL_TABLES, MODELS):
            engine.run(SqlStep("recommendations.drop_old_models", f"""
                DELETE FROM {table} WHERE trained_on < (SELECT max(trained_on) FROM {MODELS})
                  AND trained_on NOT IN (SELECT trained_on FROM {LIST_DAYS})"""))
        engine.replace_partition(UNKNOWN, {"as_of_date": day}, step_from_file(
            __package__, "unknown_products.sql", day=day, until=until,
            since=until - dt.timedelta(days=settings.history_days)))
    engine.run(*file_steps("views.sql"))
    # every stored list has one rank 1
    per_kind = dict(engine.rows(SqlStep("recommendations.contacts_per_kind", f"""
        SELECT kind, count(*) FROM {TABLE} WHERE as_of_date = $day AND rank = 1
        GROUP BY kind ORDER BY kind""", {"day": day})))
    unknown = dict(engine.rows(SqlStep("recommendations.unknown_counts", f"""
        SELECT origin, count(*) FROM {UNKNOWN} WHERE as_of_date = $day GROUP BY origin ORDER BY origin""",
                                       {"day": day})))
    contacts = int(engine.scalar(SqlStep("recommendations.card_count",
                                         "SELECT count(*) FROM _rec_signatures")) or 0)
    # the scratch tables hold every candidate: give their memory back now, not when the
    # connection closes
    engine.run(*(SqlStep("recommendations.drop_scratch_views", f"DROP VIEW IF EXISTS {v}") for v in _SCRATCH_VIEWS),
               *(SqlStep("recommendations.drop_scratch", f"DROP TABLE IF EXISTS {t}") for t in _SCRATCH))
    return {
        "rows": int(written),
        "contacts": contacts,
        "ranked_contacts": ranked,
        "carried_contacts": carried,
        "model_trained_on": str(trained_on),
        "model_trained": trained,
        "contacts_per_kind": {k: int(per_kind.get(k, 0)) for k in kinds},
        "cold_contacts": stats["cold_contacts"],
        "item_pairs": {k: int(v) for k, v in stats["item_pairs"].items()},
        "als_contacts": stats["als_contacts"],
        "als_products": stats["als_products"],
        "als_candidate_products": stats["als_candidate_products"],
        "als_iterations": stats["als_iterations"],
        "unknown_product_ids": {k: int(v) for k, v in unknown.items()},
        "evaluation": evaluation,
        "back_test_run": evaluated,
        # the back-test's contacts: with a held-out purchase, and scored (the sample)
        "held_out_contacts": held,
        "evaluated_contacts": scored,
        "weight_set": weight_set,
        "weights": weights,
        "worse_than_popular": worse_than_popular(evaluation),
    }
