"""Predictions: purchase propensity, churn risk, expected purchases and lifetime value per
contact per day, with the back-test's accuracy beside naive baselines. A thin wrapper over
tessera.predictions.build; metadata carries counts and model figures only."""


import datetime as dt

import dagster as dg
from dagster_duckdb import DuckDBResource

from assets._common import DAY_INPUTS, POOL, day_engine_of, markdown_counts, table_metadata
from pipelines.partitions import daily_backfill, daily_partitions
from resources.spark import SparkEngineResource
from tessera.predictions.build import build_predictions
from tessera.predictions.checks import baseline_shortfalls, prediction_problems
from tessera.engine.warehouse import Timer
from tessera.settings import Deployment

GROUP = "predictions"
PREDICTIONS = dg.AssetKey(["predictions", "customer_predictions"])
ACCURACY = dg.AssetKey(["predictions", "accuracy"])
PARAMETERS = dg.AssetKey(["predictions", "model_parameters"])
CARDS = dg.AssetKey(["marts", "contact_cards"])

# columns of the accuracy preview, in the order an analyst reads them
_SHOWN = ("auc", "average_precision", "brier", "top_decile_lift", "mae", "total_error_pct")


def _accuracy_md(summary: dict) -> dg.MetadataValue:
    """The back-test as a table: one row per target and model, the one served marked."""
    lines = ["| target | model | served | " + " | ".join(_SHOWN) + " |",
             "| --- | --- | --- | " + " | ".join("---:" for _ in _SHOWN) + " |"]
    for target, by_model in summary.items():
        for model, figures in by_model.items():
            cells = [("" if figures.get(m) is None else f"{figures[m]:.4g}") for m in _SHOWN]
            served = "yes" if figures.get("served") else ""
            lines.append(f"| {target} | {model} | {served} | " + " | ".join(cells) + " |")
    return dg.MetadataValue.md("\n".join(lines))


def build(deployment: Deployment):
    if not deployment.sources_of("order"):
        return [], []
    deps = [dg.AssetKey(["core", "orders"]), CARDS]
    if deployment.sources_of("event"):
        deps.append(dg.AssetKey(["core", "events"]))
    settings = deployment.predictions

    @dg.multi_asset(
        specs=[
            dg.AssetSpec(PREDICTIONS, group_name=GROUP, deps=[*deps, DAY_INPUTS], kinds={"duckdb", "scikitlearn"},
                         description="Per contact per day: p_alive, expected purchases (30/90/365 "
                                     "days and the window), expected order value, CLV, purchase "
                                     "propensity, churn risk and band, with a status."),
            dg.AssetSpec(ACCURACY, group_name=GROUP, deps=[*deps, DAY_INPUTS], kinds={"duckdb"},
                         description="The back-test of the models the day serves: each model "
                                     "and its naive baselines on the held-out last window (AUC, "
                                     "average precision, Brier, lift, MAE, error of the total), "
                                     "run on the training day and repeated on the days between."),
            dg.AssetSpec(PARAMETERS, group_name=GROUP, deps=[*deps, DAY_INPUTS], kinds={"duckdb"},
                         description="Fitted BG/NBD and Gamma-Gamma parameters at each cut-off."),
        ],
        check_specs=[
            dg.AssetCheckSpec("every_contact_has_one_prediction", asset=PREDICTIONS, blocking=True),
            dg.AssetCheckSpec("models_beat_their_baselines", asset=ACCURACY),
        ],
        pool=POOL, partitions_def=daily_partitions, backfill_policy=daily_backfill,
    )
    def predictions(context: dg.AssetExecutionContext, warehouse: DuckDBResource,
                    spark: SparkEngineResource):
        timer = Timer()
        day = dt.date.fromisoformat(context.partition_key)
        with warehouse.get_connection() as con:
            # engine: spark runs the SQL (purchase days, features at every cut-off, the
            # windows' outcomes, the stored rows) on Spark; the fits stay in Python over
            # the collected feature columns (ARCHITECTURE.md, "Engine: spark")
            with day_engine_of(spark, con, day) as engine:
                stats = build_predictions(engine, settings, day, reuse_models=True)
            meta = table_metadata(con, "predictions", "customer_predictions", timer.seconds, {
                "model_version": stats["model_version"], "fit_seconds": stats["fit_seconds"],
                "models_trained_on": stats["trained_on"], "trained_today": stats["trained"]},
                "as_of_date = ?", [day])
            meta["by_status"] = markdown_counts("status", list(stats["by_status"].items()))
            meta["by_churn_band"] = markdown_counts("churn band", list(stats["by_churn_band"].items()))
            meta["not_fitted"] = dg.MetadataValue.json(stats["skipped"])
            meta["production_model"] = dg.MetadataValue.json(stats["chosen"])
            meta["boosting_not_trained"] = dg.MetadataValue.json(stats["boosting_not_trained"])
            meta["seasonal_factor"] = dg.MetadataValue.json(stats["seasonal_factor"])
            acc = table_metadata(con, "predictions", "accuracy", timer.seconds,
                                 {"model_version": stats["model_version"],
                                  "models_trained_on": stats["trained_on"]}, "as_of_date = ?", [day])
            acc["backtest"] = _accuracy_md(stats["accuracy"])
            acc["served"] = dg.MetadataValue.json(stats["chosen"])
            acc["figures"] = dg.MetadataValue.json(stats["accuracy"])
            par = table_metadata(con, "predictions", "model_parameters", timer.seconds, None,
                                 "as_of_date = ?", [day])
            par["fitted_at_the_day"] = dg.MetadataValue.json(stats["parameters"])
            problems = prediction_problems(con, day)
            shortfalls = baseline_shortfalls(con, day)
        yield dg.MaterializeResult(asset_key=PREDICTIONS, metadata=meta)
        yield dg.MaterializeResult(asset_key=ACCURACY, metadata=acc)
        yield dg.MaterializeResult(asset_key=PARAMETERS, metadata=par)
        yield dg.AssetCheckResult(
            check_name="every_contact_has_one_prediction", asset_key=PREDICTIONS,
            passed=not any(problems.values()), metadata={k: int(v) for k, v in problems.items()})
        yield dg.AssetCheckResult(
            check_name="models_beat_their_baselines", asset_key=ACCURACY,
            passed=not shortfalls, severity=dg.AssetCheckSeverity.WARN,
            metadata={"shortfalls": dg.MetadataValue.json(shortfalls),
                      "not_fitted": dg.MetadataValue.json(stats["skipped"])})

    return [predictions], []
