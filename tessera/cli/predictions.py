"""Predictions on any purchase history: an orders CSV and a cut-off in, per-customer
predictions and the back-test out, with no warehouse and no code (``tessera predict``)."""

from __future__ import annotations

import csv
import datetime as dt
import json
from pathlib import Path

import click

from tessera.cli.common import DATE


@click.command("predict", short_help="Predictions and back-test from an orders CSV and a cut-off.")
@click.option("--orders", "orders_csv", required=True, type=click.Path(exists=True, dir_okay=False),
              help="CSV with a header: one row per order (customer, date, amount)")
@click.option("--cutoff", "cutoffs", required=True, type=DATE, multiple=True,
              help="a day the predictions are made on (repeatable: one run per cut-off); later "
                   "orders are only used to score them")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="folder for predictions_<day>.csv, backtest.csv, parameters.csv, future.csv")
@click.option("--customer-column", default="customer_id", show_default=True,
              help="the CSV column naming the customer")
@click.option("--date-column", default="order_date", show_default=True,
              help="the CSV column holding the order's day")
@click.option("--amount-column", default="amount", show_default=True,
              help="the CSV column holding the order's amount")
@click.option("--date-format", default="%Y-%m-%d", show_default=True,
              help="strftime format of the date column")
@click.option("--window-days", type=int, default=None,
              help="'buys in the next N days' and the hold-out (default: the settings' 90)")
@click.option("--churn-days", type=int, default=None,
              help="'churns: no purchase in the next N days' (default: the settings' 180)")
@click.option("--threads", type=int, default=None, help="threads of the model fits (default 1)")
def predict_cmd(orders_csv: str, cutoffs: tuple[dt.date, ...], out_dir: str, customer_column: str,
                date_column: str, amount_column: str, date_format: str, window_days: int | None,
                churn_days: int | None, threads: int | None) -> int:
    """Fit, back-test and score every customer of ORDERS as of each CUTOFF.

    Writes, per cut-off, predictions_<day>.csv (one row per customer with an order on or
    before it, under the CSV's own customer id); and for all cut-offs together
    backtest.csv (each model beside its baselines on the last window before each
    cut-off), parameters.csv and, when the file holds orders after a cut-off, future.csv
    (the predictions and the baselines scored against the window after it).
    """
    import duckdb

    from tessera.engine import DuckDBEngine
    from tessera.predictions.build import Inputs, build_predictions
    from tessera.predictions.future import score_future
    from tessera.settings.predictions import PredictionSettings

    overrides = {k: v for k, v in (("window_days", window_days), ("churn_days", churn_days),
                                   ("threads", threads)) if v is not None}
    settings = PredictionSettings(**overrides)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = lambda name: "'" + str(out / name).replace("'", "''") + "'"  # noqa: E731
    future_rows: list[tuple] = []
    con = duckdb.connect()
    try:
        con.execute("CREATE TABLE cli_src AS SELECT * FROM read_csv(?, header = true, "
                    "all_varchar = true)", [orders_csv])
        have = {r[0] for r in con.execute("DESCRIBE cli_src").fetchall()}
        for col in (customer_column, date_column, amount_column):
            if col not in have:
                raise click.UsageError(f"column '{col}' is not in {orders_csv} (it has {sorted(have)})")
        q = lambda c: '"' + c.replace('"', '""') + '"'  # noqa: E731
        con.execute(f"""CREATE TABLE cli_all AS SELECT {q(customer_column)} AS customer,
            CAST(strptime({q(date_column)}, ?) AS DATE) AS order_date,
            CAST({q(amount_column)} AS DOUBLE) AS amount
            FROM cli_src WHERE {q(customer_column)} IS NOT NULL""", [date_format])
        engine = DuckDBEngine(con)
        for cutoff in sorted(set(cutoffs)):
            con.execute("""CREATE OR REPLACE TABLE cli_ids AS SELECT customer,
                row_number() OVER (ORDER BY customer) AS customer_id
                FROM (SELECT DISTINCT customer FROM cli_all WHERE order_date <= ?)""", [cutoff])
            con.execute("""CREATE OR REPLACE TABLE cli_orders AS
                SELECT i.customer_id, a.order_date, a.amount
                FROM cli_all a JOIN cli_ids i USING (customer)""")
            con.execute("CREATE OR REPLACE TABLE cli_cut AS SELECT * FROM cli_orders "
                        "WHERE order_date <= ?", [cutoff])
            stats = build_predictions(engine, settings, cutoff, Inputs(
                population="SELECT customer_id FROM cli_ids",
                orders="SELECT customer_id, order_date, amount FROM cli_cut", events=None))
            con.execute(f"""COPY (SELECT i.customer, p.* EXCLUDE (customer_id)
                FROM predictions.customer_predictions p JOIN cli_ids i USING (customer_id)
                WHERE p.as_of_date = ? ORDER BY i.customer_id)
                TO {path(f"predictions_{cutoff}.csv")} (HEADER)""", [cutoff])
            future = score_future(engine, cutoff, settings.window_days,
                                  "SELECT customer_id, order_date, amount FROM cli_orders",
                                  stats["baseline_scores"], settings.churn_days)
            future_rows += [(cutoff, *row) for row in future]
            _report(cutoff, stats, future)
        for table, name in (("accuracy", "backtest.csv"), ("model_parameters", "parameters.csv")):
            con.execute(f"COPY (SELECT * FROM predictions.{table} ORDER BY ALL) "
                        f"TO {path(name)} (HEADER)")
    finally:
        con.close()
    if future_rows:
        with open(out / "future.csv", "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(["cutoff", "target", "model", "metric", "value"])
            w.writerows(future_rows)
    click.echo(f"written to {out}")
    return 0


def _report(cutoff: dt.date, stats: dict, future: list[tuple]) -> None:
    click.echo(f"{stats['contacts']} customers scored as of {cutoff} "
               f"({stats['seconds']:.1f} s); by status {json.dumps(stats['by_status'])}")
    if stats["skipped"]:
        click.echo(f"not fitted: {json.dumps(stats['skipped'])}")
    for target, by_model in stats["accuracy"].items():
        for model, figures in by_model.items():
            shown = ", ".join(f"{k} {v:.4g}" for k, v in figures.items()
                              if v is not None and k != "total_error_pct")
            click.echo(f"  back-test {target:9} {model:40} {shown}")
    by_model: dict[tuple, list[str]] = {}
    for target, model, metric, value in future:
        if metric != "total_error_pct":
            by_model.setdefault((target, model), []).append(f"{metric} {value:.4g}")
    for (target, model), shown in by_model.items():
        click.echo(f"  after the cut-off {target:9} {model:32} {', '.join(shown)}")


COMMANDS = [predict_cmd]
