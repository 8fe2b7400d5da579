"""The recommendation lists of every kind, for a set of target contacts, as of a cut.

Why one builder for the daily lists and the back-test: the evaluation must score the
very code that fills the tables, only with the data cut earlier. Everything before the
cut is training; the builder never reads an order or a view at or after ``until``.

The steps run in temporary tables of the caller's connection (``_rec_*``):
``_rec_catalogue`` (recommendable products), ``_rec_bought`` (everything each contact
ever bought), ``_rec_purchases`` / ``_rec_views`` (the window), ``_rec_pairs``
(item-to-item scores), ``_rec_candidates`` (kind, contact, product, score) and the
result ``_rec_lists`` (kind, contact, rank, product, score).
"""

from __future__ import annotations

import datetime as dt
import re

from tessera.engine import Engine, SqlStep
from tessera.engine.steps import sql_file
from tessera.identity.linkage import product_id_sql
from tessera.recommendations.collaborative import Factors, als_candidates, fit_items
from tessera.recommendations.item_candidates import item_candidates
from tessera.settings.recommendations import RecommendationSettings

_PARAM = re.compile(r"\$([a-z_]+)")


def file_steps(name: str, text_for: dict[str, str] | None = None, **params) -> list[SqlStep]:
    """The statements of ``sql/<name>``, each bound to the parameters it names, after each
    ``{key}`` marker of ``text_for`` in the file is replaced by its SQL text (a clause the
    caller builds, such as the product id of a view)."""
    text = "\n".join(line for line in sql_file(__package__, name).splitlines()
                     if not line.lstrip().startswith("--"))
    for placeholder, sql in (text_for or {}).items():
        text = text.replace("{" + placeholder + "}", sql)
    steps = []
    for i, part in enumerate(p.strip() for p in text.split(";")):
        if part:
            used = set(_PARAM.findall(part))
            steps.append(SqlStep(f"recommendations.{name.removesuffix('.sql')}[{i}]", part,
                                 {k: v for k, v in params.items() if k in used}))
    return steps


def _weights(weights: dict[str, float], exclude: bool) -> dict[str, float]:
    names = ("collaborative", "bought_after_viewing", "viewed_together", "bought_together", "popular")
    out = {f"w_{k}": float(weights.get(k, 0.0)) for k in names}
    out["w_buy_again"] = 0.0 if exclude else float(weights.get("buy_again", 0.0))
    return out


def events_view(engine: Engine) -> str:
    """``_rec_events``: the linked events, or none for a deployment without event sources
    (then only the purchase kinds have anything to say). Returns the SQL of a viewed
    product's id: the one ``core.events`` stored as it linked the event, or read from the
    properties here where it stored none (a table built before it kept the column, as
    the recorded versions of earlier days are, or by ``recommend-csv``). Both give the
    same id: the build reads it with the same expression and pattern."""
    read = product_id_sql("properties", "$pattern")
    if not engine.table_exists("core", "events"):
        engine.run(SqlStep("recommendations.events", """
            CREATE OR REPLACE TEMP VIEW _rec_events AS
            SELECT CAST(NULL AS BIGINT) AS customer_id, CAST(NULL AS VARCHAR) AS event_type,
                   CAST(NULL AS TIMESTAMP) AS occurred_at, CAST(NULL AS VARCHAR) AS properties,
                   CAST(NULL AS VARCHAR) AS product_id WHERE false"""))
        return read
    stored = "product_id" in engine.arrow(SqlStep(
        "recommendations.events_columns", "SELECT * FROM core.events LIMIT 0")).schema.names
    engine.run(SqlStep("recommendations.events", f"""
        CREATE OR REPLACE TEMP VIEW _rec_events AS
        SELECT customer_id, event_type, occurred_at, properties,
               {'product_id' if stored else 'CAST(NULL AS VARCHAR) AS product_id'} FROM core.events"""))
    # an event with a product but none stored: the column predates the build that fills it
    if stored and engine.scalar(SqlStep("recommendations.events_products", """
            SELECT count(*) FROM (SELECT 1 FROM core.events WHERE product_id IS NOT NULL LIMIT 1)""")):
        return "product_id"
    return read


def load_inputs(engine: Engine, settings: RecommendationSettings, until: dt.date) -> None:
    """The catalogue, purchases and views of the window before ``until`` (exclusive)."""
    engine.run(*file_steps(
        "inputs.sql", {"product_id": events_view(engine)},
        until=until, since=until - dt.timedelta(days=settings.history_days),
        excluded=list(settings.exclude_products), pattern=settings.product_url_pattern,
        view_types=list(settings.view_event_types)))


def train(engine: Engine, settings: RecommendationSettings, until: dt.date,
          warm: Factors | None = None) -> tuple[dict, Factors | None]:
    """The model as of ``until`` (``load_inputs`` ran for it): the catalogue's numbers
    and the item-to-item pairs (``_rec_pids``, ``_rec_pairs``), best sellers and repeat
    rates (``_rec_popular``, ``_rec_repeat``), and the collaborative fit
    (``_rec_als_model``, ``_rec_als_factors``). ``warm``: an earlier fit to start from.
    Returns counts and the fit's factors."""
    engine.run(*file_steps("item_pairs.sql", min_support=settings.min_support, lift=settings.lift,
                           after_days=settings.after_view_days, neighbours=settings.neighbours,
                           max_basket=settings.max_basket))
    engine.run(*file_steps("model_counts.sql",
                           popular_since=until - dt.timedelta(days=settings.popularity_days)))
    stats, factors = fit_items(engine, settings.als, warm)
    stats["item_pairs"] = dict(engine.rows(SqlStep(
        "recommendations.pair_counts", "SELECT kind, count(*) FROM _rec_pairs GROUP BY kind ORDER BY kind")))
    return stats, factors


def load_model(engine: Engine, trained_on: dt.date) -> dict:
    """A stored model into the tables ``train`` fills (``load_inputs`` ran: the catalogue
    of the day limits its products). Returns its counts."""
    engine.run(*file_steps("model_load.sql", trained_on=trained_on))
    engine.run(SqlStep("recommendations.model_factors_load", """
        CREATE OR REPLACE TEMP TABLE _rec_als_factors AS
        SELECT als_i AS i, k, value FROM recommendations.model_factors WHERE trained_on = $trained_on""",
                       {"trained_on": trained_on}))
    counts = engine.rows(SqlStep("recommendations.model_counts", """
        SELECT count(*), count(*) FILTER (WHERE candidate) FROM _rec_als_model"""))[0]
    return {"als_products": int(counts[0] or 0), "als_candidate_products": int(counts[1] or 0),
            "als_iterations": 0,
            "item_pairs": dict(engine.rows(SqlStep(
                "recommendations.pair_counts", "SELECT kind, count(*) FROM _rec_pairs GROUP BY kind ORDER BY kind")))}


def store_model(engine: Engine, day: dt.date) -> None:
    """The model ``train`` left in the build's tables, as the model trained on ``day``
    (the caller holds the transaction with the model's row)."""
    engine.run(*file_steps("model_store.sql", day=day))
    engine.run(SqlStep("recommendations.model_factors_delete",
                       "DELETE FROM recommendations.model_factors WHERE trained_on = $day", {"day": day}),
               SqlStep("recommendations.model_factors_store", """
        INSERT INTO recommendations.model_factors SELECT CAST($day AS DATE), i, k, value FROM _rec_als_factors""",
                       {"day": day}))


def build_candidates(engine: Engine, settings: RecommendationSettings, until: dt.date) -> dict:
    """Candidates of every kind for the contacts in ``_rec_targets`` (which the caller
    fills) from the model in the build's tables (``train`` or ``load_model`` ran for
    the same ``until``'s inputs). Returns counts."""
    n = settings.top_n
    pool = n + settings.candidates
    item_candidates(engine, until - dt.timedelta(days=settings.recent_days))
    engine.run(*file_steps("candidates.sql", pool=pool, top=n))
    stats = als_candidates(engine, settings.als, n, settings.candidates)
    # Collaborative: the model's scores, and the best sellers for contacts it never saw.
    engine.run(SqlStep("recommendations.collaborative_candidates", """
        INSERT INTO _rec_candidates
        SELECT 'collaborative', customer_id, product_id, score FROM _rec_als
        UNION ALL
        SELECT 'collaborative', customer_id, product_id, score FROM _rec_candidates
        WHERE kind = 'popular' AND customer_id NOT IN (SELECT customer_id FROM _rec_als_users)"""))
    stats["cold_contacts"] = int(engine.scalar(SqlStep("recommendations.cold_contacts", """
        SELECT count(*) FROM _rec_targets
        WHERE customer_id NOT IN (SELECT customer_id FROM _rec_als_users)""")) or 0)
    return stats


def rank_lists(engine: Engine, settings: RecommendationSettings, exclude: bool,
               weights: dict[str, float] | None = None, combine_only: bool = False) -> None:
    """``_rec_lists``: every kind's top N (and the weighted combination, by ``weights`` or
    else the configured ones) from the candidates. ``combine_only``: the kinds' lists are
    in place (same ``exclude``), only the combination is made again (new weights)."""
    steps = file_steps("lists.sql", top=settings.top_n, exclude=exclude,
                       **_weights(settings.weights if weights is None else weights, exclude))
    if combine_only:
        steps = [SqlStep("recommendations.lists_drop_combined",
                         "DELETE FROM _rec_lists WHERE kind = 'combined'"), *steps[1:]]
    engine.run(*steps)
