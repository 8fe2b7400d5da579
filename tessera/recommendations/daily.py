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
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import pyarrow as pa

from tessera.engine import Engine, SqlStep, as_engine, step_from_file
from tessera.engine.steps import ddl_statements
from tessera.recommendations.collaborative import Factors
from tessera.recommendations.lists import build_candidates, file_steps, load_inputs, rank_lists
from tessera.recommendations.weights import CONFIGURED, configured_weights, tune_discovery, tune_repeat
from tessera.settings.recommendations import BASELINE, DISCOVERY_KINDS, RecommendationSettings

TABLE = "recommendations.contact_products"
EVALUATION = "recommendations.evaluation"
UNKNOWN = "recommendations.unknown_products"
WEIGHTS = "recommendations.combination_weights"
MODES = ("new_items", "all_items")
# the scratch tables of a build (lists.py, collaborative.py, the back-test)
_SCRATCH = ("_rec_catalogue", "_rec_bought", "_rec_purchases", "_rec_viewed", "_rec_pairs",
            "_rec_item_candidates", "_rec_popular", "_rec_candidates", "_rec_lists", "_rec_targets",
            "_rec_als_inter", "_rec_als_users", "_rec_als_items", "_rec_als", "_rec_truth",
            "_rec_eval_lists", "_rec_eval_kinds", "_rec_weight_sets", "_rec_sessions", "_rec_pids",
            "_rec_held")
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
    _, factors = build_candidates(engine, settings, cutoff)
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


def build_recommendations(engine: Engine, settings: RecommendationSettings, day: dt.date) -> dict:
    """Evaluate, then replace the day's lists for every contact card. Returns counts and
    the evaluation figures (no personal data)."""
    engine = as_engine(engine)
    engine.run(*table_steps())
    stored = stored_back_test(engine, settings, day) if settings.evaluation.enabled else None
    evaluated = settings.evaluation.enabled and stored is None
    if not settings.evaluation.enabled:
        back = BackTest([], None, configured_weights(settings), CONFIGURED)
    else:
        back = stored or evaluate(engine, settings, day)
    evaluation = back.rows

    until = day + dt.timedelta(days=1)  # the day's own orders and views are known
    load_inputs(engine, settings, until)
    _targets(engine, "SELECT customer_id FROM marts.contact_cards")
    stats, _ = build_candidates(engine, settings, until, back.factors)
    back.factors = None  # the factors are large: free them before the ranking
    rank_lists(engine, settings, exclude=settings.exclude_bought, weights=back.weights)
    kinds = stored_kinds(settings)
    with engine.together():
        written = engine.replace_partition(TABLE, {"as_of_date": day}, SqlStep(
            "recommendations.lists_of_day", """
            SELECT CAST($day AS DATE), kind, customer_id, rank, product_id, score FROM _rec_lists
            WHERE list_contains($kinds, kind)""", {"day": day, "kinds": kinds}))
        engine.run(SqlStep("recommendations.drop_old_days",
                           f"DELETE FROM {TABLE} WHERE as_of_date <= $oldest",
                           {"oldest": day - dt.timedelta(days=settings.keep_days)}))
        engine.replace_partition(UNKNOWN, {"as_of_date": day}, step_from_file(
            __package__, "unknown_products.sql", day=day, until=until,
            since=until - dt.timedelta(days=settings.history_days)))
    engine.run(*file_steps("views.sql"))
    # every stored list has one rank 1: a filter on the scratch lists, not a distinct count
    # over the day's stored rows
    per_kind = dict(engine.rows(SqlStep("recommendations.contacts_per_kind", """
        SELECT kind, count(*) FROM _rec_lists WHERE rank = 1 AND list_contains($kinds, kind)
        GROUP BY kind ORDER BY kind""", {"kinds": kinds})))
    unknown = dict(engine.rows(SqlStep("recommendations.unknown_counts", f"""
        SELECT origin, count(*) FROM {UNKNOWN} WHERE as_of_date = $day GROUP BY origin ORDER BY origin""",
                                       {"day": day})))
    contacts = int(engine.scalar(SqlStep("recommendations.target_count",
                                         "SELECT count(*) FROM _rec_targets")) or 0)
    # the scratch tables hold every candidate: give their memory back now, not when the
    # connection closes
    engine.run(*(SqlStep("recommendations.drop_scratch_views", f"DROP VIEW IF EXISTS {v}") for v in _SCRATCH_VIEWS),
               *(SqlStep("recommendations.drop_scratch", f"DROP TABLE IF EXISTS {t}") for t in _SCRATCH))
    return {
        "rows": int(written),
        "contacts": contacts,
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
        "held_out_contacts": back.held_out_contacts,
        "evaluated_contacts": back.evaluated_contacts,
        "weight_set": back.weight_set,
        "weights": back.weights,
        "worse_than_popular": worse_than_popular(evaluation),
    }
