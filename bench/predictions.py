"""Benchmark of the predictions stage: fit, back-test and score N customers, beside a plain
BG/NBD fit and score on the same data, and the accuracy of both against the known future.

    python bench/predictions.py --customers 1000000 [--threads 1]

Order histories are drawn from known BG/NBD and Gamma-Gamma parameters
(tessera/predictions/synthetic.py: first purchases spread over three years, so about 3.4
orders per customer) into an in-process DuckDB as ``core.orders``, with every customer a
contact card. The orders after the day are kept aside: they are the future both models
are scored against. Prints wall time, customers/s and the process's peak resident memory
(DuckDB runs in process, so it is included) for:

* ``plain BG/NBD``: the purchase-day summary in SQL, one BG/NBD fit, p_alive and expected
  purchases in the window (the alternative: what the lifetimes notebooks do);
* ``predictions stage``: everything the daily asset does (features at five cut-offs,
  BG/NBD and Gamma-Gamma at each, the supervised models, the back-test, the stored rows).

Results also go to bench/out/predictions_<N>.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

AS_OF = dt.date(2026, 11, 1)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--customers", type=int, default=100_000)
    ap.add_argument("--threads", type=int, default=1, help="threads of the model fits")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--lines", type=int, default=1,
                    help="order lines per purchase day (the amount split between them): 5 "
                         "gives about 11 M lines at 1 M customers (2.3 purchase days each by the day)")
    args = ap.parse_args()

    import duckdb
    import numpy as np
    from threadpoolctl import threadpool_limits

    from tessera.engine import DuckDBEngine, SqlStep
    from tessera.predictions import models, synthetic
    from tessera.predictions.build import build_predictions
    from tessera.predictions.future import score_future
    from tessera.settings.predictions import PredictionSettings

    n = args.customers
    settings = PredictionSettings(threads=args.threads, seed=args.seed)
    t = time.perf_counter()
    orders = synthetic.orders(n, seed=args.seed, as_of=AS_OF)
    con = duckdb.connect()
    con.execute(f"SET threads = {int(args.threads)}")
    con.register("sim", orders)
    con.execute("CREATE SCHEMA core; CREATE SCHEMA marts")
    con.execute("CREATE TABLE all_orders AS SELECT customer_id, order_date::DATE AS order_date, "
                "(amount / $k)::DECIMAL(18,2) AS amount FROM sim, range($k)",
                {"k": max(1, args.lines)})
    con.unregister("sim")
    del orders
    con.execute("CREATE TABLE core.orders AS SELECT * FROM all_orders WHERE order_date <= ?", [AS_OF])
    con.execute(f"CREATE TABLE marts.contact_cards AS SELECT range::BIGINT AS customer_id "
                f"FROM range(1, {n + 1})")
    n_orders = con.execute("SELECT count(*) FROM core.orders").fetchone()[0]
    gen_s = time.perf_counter() - t
    print(f"{n:,} customers, {n_orders:,} orders up to {AS_OF} (generated in {gen_s:.1f} s)")
    engine = DuckDBEngine(con)

    # the alternative: a plain BG/NBD fit and score
    t, c = time.perf_counter(), time.process_time()
    with threadpool_limits(limits=args.threads):
        summ = con.execute("""SELECT count(DISTINCT order_date) - 1 AS x,
                date_diff('day', min(order_date), max(order_date)) AS t_x,
                date_diff('day', min(order_date), ?::DATE) AS T
            FROM core.orders GROUP BY customer_id ORDER BY customer_id""", [AS_OF]).fetchnumpy()
        fit = models.fit_bgnbd(summ["x"], summ["t_x"], summ["T"])
        models.p_alive(fit, summ["x"], summ["t_x"], summ["T"])
        plain = models.expected_purchases(fit, settings.window_days, summ["x"], summ["t_x"], summ["T"])
    plain_s, plain_cpu = time.perf_counter() - t, time.process_time() - c
    plain_mb = peak_rss_mb()

    t, c = time.perf_counter(), time.process_time()
    stats = build_predictions(engine, settings, AS_OF)
    stage_s, stage_cpu = time.perf_counter() - t, time.process_time() - c
    stage_mb = peak_rss_mb()

    future = score_future(engine, AS_OF, settings.window_days,
                          "SELECT customer_id, order_date, amount FROM all_orders",
                          stats["baseline_scores"], settings.churn_days)
    truth = {f"{target}/{model}/{metric}": round(v, 4) for target, model, metric, v in future}
    actual_total = con.execute("SELECT count(*) FROM (SELECT DISTINCT customer_id, order_date "
                               "FROM all_orders WHERE order_date > ? AND order_date <= ?)",
                               [AS_OF, AS_OF + dt.timedelta(days=settings.window_days)]).fetchone()[0]
    stored = engine.scalar(SqlStep("n", "SELECT count(*) FROM predictions.customer_predictions "
                                        "WHERE as_of_date = $d", {"d": AS_OF}))
    # CPU seconds beside wall seconds: on a shared machine the wall time measures the
    # neighbours as much as the code
    print(f"\n{'':22}{'seconds':>9}{'cpu s':>8}{'customers/s':>14}{'peak MB':>9}")
    print(f"{'plain BG/NBD':22}{plain_s:9.1f}{plain_cpu:8.1f}{n / plain_s:14,.0f}{plain_mb:9.0f}")
    print(f"{'predictions stage':22}{stage_s:9.1f}{stage_cpu:8.1f}{n / stage_s:14,.0f}{stage_mb:9.0f}"
          f"   (model fits {stats['fit_seconds']:.1f} s; {stored:,} rows stored)")
    print(f"\nagainst the known future ({settings.window_days} days after {AS_OF}; "
          f"{actual_total:,} purchase days happened):")
    print(f"  plain BG/NBD total predicted {plain.sum():,.0f}")
    for key in sorted(truth):
        print(f"  {key:55} {truth[key]}")
    print("\nback-test inside the stage (last window before the day):")
    for target, by_model in stats["accuracy"].items():
        for model, figures in by_model.items():
            shown = ", ".join(f"{k} {v:.4g}" for k, v in figures.items()
                              if v is not None and k != "total_error_pct")
            print(f"  {target:9} {model:40} {shown}")
    fitted = stats["parameters"]["bgnbd"]
    print(f"\nBG/NBD at the day: {json.dumps(fitted)}  (truth {json.dumps(synthetic.TRUTH.params())})")

    out = ROOT / "bench" / "out"
    out.mkdir(parents=True, exist_ok=True)
    (out / f"predictions_{n}.json").write_text(json.dumps({
        "customers": n, "orders": n_orders, "threads": args.threads,
        "plain_bgnbd_s": round(plain_s, 2), "plain_bgnbd_cpu_s": round(plain_cpu, 2),
        "stage_cpu_s": round(stage_cpu, 2), "plain_bgnbd_peak_mb": round(plain_mb),
        "stage_s": round(stage_s, 2), "stage_fit_s": stats["fit_seconds"],
        "stage_peak_mb": round(stage_mb), "future": truth, "backtest": stats["accuracy"],
        "bgnbd_fitted": fitted, "bgnbd_truth": synthetic.TRUTH.params(),
        "plain_bgnbd_total": float(np.sum(plain)), "actual_total": int(actual_total),
    }, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
