"""Recommendations: every kind's lists per contact and day, the back-test against the best
sellers, and the product ids the catalogue lacks. Thin over tessera.recommendations.daily;
metadata carries counts and evaluation figures, never a person or a list."""


import datetime as dt

import dagster as dg
from dagster_duckdb import DuckDBResource

from assets._common import DAY_INPUTS, POOL, day_engine_of, table_metadata
from pipelines.partitions import daily_backfill, daily_partitions
from resources.spark import SparkEngineResource
from tessera.engine.warehouse import Timer
from tessera.recommendations.checks import list_problems
from tessera.recommendations.daily import worse_than_popular
from tessera.recommendations.daily import build_recommendations
from tessera.settings import Deployment

GROUP = "recommendations"
LISTS = dg.AssetKey(["recommendations", "contact_products"])
EVALUATION = dg.AssetKey(["recommendations", "evaluation"])
UNKNOWN = dg.AssetKey(["recommendations", "unknown_products"])
_FIGURES = ("hit_rate", "precision_at_k", "recall_at_k", "map_at_k", "ndcg_at_k", "coverage")


def _table(rows: list[dict], k: int) -> dg.MetadataValue:
    head = ["mode", "kind", "contacts", *[f.replace("_at_k", f"@{k}") for f in _FIGURES]]
    lines = ["| " + " | ".join(head) + " |", "| --- | --- |" + " ---: |" * (len(head) - 2)]
    for r in rows:
        lines.append(f"| {r['mode']} | {r['kind']} | {r['contacts']} | "
                     + " | ".join(f"{r[f]:.4f}" for f in _FIGURES) + " |")
    return dg.MetadataValue.md("\n".join(lines))


def build(deployment: Deployment):
    settings = deployment.recommendations
    if settings is None:
        return [], []
    deps = [dg.AssetKey(["core", "orders"]), dg.AssetKey(["staging", "order_lines"]),
            dg.AssetKey(["staging", "products"]), dg.AssetKey(["marts", "contact_cards"])]
    if deployment.sources_of("event"):
        deps.append(dg.AssetKey(["core", "events"]))

    @dg.multi_asset(
        specs=[
            dg.AssetSpec(LISTS, group_name=GROUP, deps=[*deps, DAY_INPUTS], kinds={"duckdb"},
                         description="Top products per contact, per kind (collaborative, bought after "
                                     "viewing, viewed together, bought together, combined, buy again, "
                                     "popular), per day; views recommendations.<kind> show the latest day."),
            dg.AssetSpec(EVALUATION, group_name=GROUP, deps=[*deps, DAY_INPUTS], kinds={"duckdb"},
                         description="Back-test per day: every kind and the best sellers on the held-out "
                                     "last weeks of purchases (hit rate, precision, recall, MAP, NDCG, coverage)."),
            dg.AssetSpec(UNKNOWN, group_name=GROUP, deps=[*deps, DAY_INPUTS], kinds={"duckdb"},
                         description="Product ids named by orders or views that the catalogue lacks (never recommended)."),
        ],
        pool=POOL, partitions_def=daily_partitions, backfill_policy=daily_backfill,
    )
    def recommendations(context: dg.AssetExecutionContext, warehouse: DuckDBResource,
                        spark: SparkEngineResource):
        timer = Timer()
        day = dt.date.fromisoformat(context.partition_key)
        with warehouse.get_connection() as con:
            # engine: spark runs the co-occurrence, buy-again and popular SQL and the
            # back-test on Spark; the ALS fit stays in Python over the collected matrix
            with day_engine_of(spark, con, day) as engine:
                stats = build_recommendations(engine, settings, day)
            lists = table_metadata(con, "recommendations", "contact_products", timer.seconds, {
                "contacts": stats["contacts"], "cold_contacts": stats["cold_contacts"],
                "contacts_per_kind": stats["contacts_per_kind"], "item_pairs": stats["item_pairs"],
                "als_contacts": stats["als_contacts"], "als_products": stats["als_products"],
                "als_candidate_products": stats["als_candidate_products"],
                "als_iterations": stats["als_iterations"],
            }, "as_of_date = ?", [day])
            ev = table_metadata(con, "recommendations", "evaluation", timer.seconds, {
                "holdout_days": settings.evaluation.holdout_days,
                "back_test_run": stats["back_test_run"],
                # the figures' contacts: those with a held-out purchase, and the scored sample
                "held_out_contacts": stats["held_out_contacts"],
                "evaluated_contacts": stats["evaluated_contacts"],
                "sample_contacts": settings.evaluation.sample_contacts,
                "worse_than_popular": ", ".join(stats["worse_than_popular"]) or "none",
                "combination_weight_set": stats["weight_set"],
                "combination_weights": {k: float(w) for k, w in stats["weights"].items()},
            }, "as_of_date = ?", [day])
            unknown = table_metadata(con, "recommendations", "unknown_products", timer.seconds,
                                     {"by_origin": stats["unknown_product_ids"]}, "as_of_date = ?", [day])
        rows = stats["evaluation"]
        ev["evaluation"] = _table(rows, settings.evaluation.k)
        for r in rows:
            for f in ("hit_rate", "recall_at_k", "ndcg_at_k"):
                ev[f"{r['mode']}/{r['kind']}/{f}"] = dg.MetadataValue.float(float(r[f]))
        yield dg.MaterializeResult(asset_key=LISTS, metadata=lists)
        yield dg.MaterializeResult(asset_key=EVALUATION, metadata=ev)
        yield dg.MaterializeResult(asset_key=UNKNOWN, metadata=unknown)

    @dg.asset_check(pool=POOL, asset=LISTS, name="lists_respect_contacts_and_exclusions", blocking=True,
                    description="On the latest day: every listed contact has a card (no erased or "
                                "deleted person), ranks run 1..N once per kind and contact, every "
                                "product is in the catalogue and not excluded, and no discovery kind "
                                "offers a product the contact bought (when exclude_bought is on).")
    def lists_ok(warehouse: DuckDBResource):
        with warehouse.get_connection() as con:
            problems = list_problems(con, settings)
        return dg.AssetCheckResult(passed=not any(problems.values()), metadata=problems)

    @dg.asset_check(pool=POOL, asset=EVALUATION, name="kinds_beat_popularity", blocking=False,
                    description="WARN when a kind's NDCG on the held-out purchases is below the best "
                                "sellers' (discovery kinds and the combination on new items, buy again "
                                "on all items).")
    def beat_popular(warehouse: DuckDBResource):
        with warehouse.get_connection() as con:
            cols = ["mode", "kind", "contacts", "ndcg_at_k"]
            rows = [dict(zip(cols, r)) for r in con.execute(
                "SELECT mode, kind, contacts, ndcg_at_k FROM recommendations.evaluation "
                "WHERE as_of_date = (SELECT max(as_of_date) FROM recommendations.evaluation)").fetchall()]
        worse = worse_than_popular(rows)
        return dg.AssetCheckResult(passed=not worse, severity=dg.AssetCheckSeverity.WARN,
                                   metadata={"worse_than_popular": ", ".join(worse) or "none",
                                             "evaluated_rows": len(rows)})

    return [recommendations], [lists_ok, beat_popular]
