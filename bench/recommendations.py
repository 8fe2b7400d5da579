"""Recommendations at scale: every kind, the combination and the back-test on synthetic
shop data with structure, beside the best-seller baseline on the same data.

The data (seeded): products in categories of 100 with Zipf popularity inside each;
every product has a partner in its category that is bought with it or after viewing
it; customers have a home and a second category; sessions of a few views on one day;
about a third of sessions end in an order; one category in ten is a consumable that
each customer re-buys (the same product: "buy again"). Reference scale (issue #13):
500 k customers, 50 k products, over 13 M events.

    .venv/bin/python bench/recommendations.py --customers 500000 --products 50000

Prints generation time, the stage's time, events/s, peak memory (RSS of this process,
DuckDB included) and the evaluation table (popular is the alternative).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import resource
import sys
import time
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tessera.cli.recommendations import _SHAPE  # noqa: E402
from tessera.recommendations.daily import build_recommendations  # noqa: E402
from tessera.settings.recommendations import RecommendationSettings  # noqa: E402

AS_OF = dt.date(2026, 11, 30)


def generate(customers: int, products: int, sessions: float, seed: int):
    rng = np.random.default_rng(seed)
    per_cat = 100
    n_cat = max(1, products // per_cat)
    cat_w = 1.0 / np.arange(1, n_cat + 1) ** 0.9
    cat_w /= cat_w.sum()
    in_w = 1.0 / np.arange(1, per_cat + 1) ** 0.8
    in_w /= in_w.sum()
    home = rng.choice(n_cat, customers, p=cat_w)
    second = rng.choice(n_cat, customers, p=cat_w)
    n_sess = rng.poisson(sessions, customers) + 1
    sc = np.repeat(np.arange(customers), n_sess)
    s = len(sc)
    pick = rng.random(s)
    cat = np.where(pick < 0.7, home[sc], np.where(pick < 0.9, second[sc], rng.choice(n_cat, s, p=cat_w)))
    day = rng.integers(0, 365, s)
    consumable = cat % 10 == 0
    # the customer's own product in a consumable category (the same one every time)
    own = (sc * 2654435761 + cat * 40503) % 7
    anchor = np.where(consumable, cat * per_cat + own, cat * per_cat + rng.choice(per_cat, s, p=in_w))
    partner = cat * per_cat + (anchor % per_cat + 1) % per_cat
    n_views = 1 + rng.poisson(3.5, s)
    vs = np.repeat(np.arange(s), n_views)
    first = np.r_[0, np.cumsum(n_views)[:-1]]
    pos = np.arange(len(vs)) - np.repeat(first, n_views)
    others = vs_cat = cat[vs] * per_cat + rng.choice(per_cat, len(vs), p=in_w)
    view_prod = np.where(pos == 0, anchor[vs], np.where(pos == 1, partner[vs], others))
    del vs_cat
    view_at = (np.datetime64(AS_OF) - np.timedelta64(364, "D") + day[vs].astype("timedelta64[D]")
               ).astype("datetime64[s]") + (36000 + pos * 60).astype("timedelta64[s]")
    # a third of sessions buy: the anchor, its partner, or both (consumables: the anchor)
    buys = rng.random(s) < np.where(consumable, 0.6, 0.3)
    what = rng.random(s)
    lines_o, lines_p = [], []
    idx = np.nonzero(buys)[0]
    take_anchor = idx[(what[idx] < 0.6) | consumable[idx]]
    take_partner = idx[(what[idx] >= 0.3) & ~consumable[idx]]
    lines_o += [take_anchor, take_partner]
    lines_p += [anchor[take_anchor], partner[take_partner]]
    line_order = np.concatenate(lines_o)
    line_prod = np.concatenate(lines_p)
    # the order comes a day or two after the views
    order_day = np.minimum(day + rng.integers(0, 3, s), 364)
    orders = pa.table({
        "customer": sc[line_order].astype(np.int64), "order_id": line_order.astype(np.int64),
        "order_date": (np.datetime64(AS_OF) - np.timedelta64(364, "D")
                       + order_day[line_order].astype("timedelta64[D]")),
        "product_id": line_prod.astype(np.int64)})
    views = pa.table({"customer": sc[vs].astype(np.int64), "viewed_at": view_at,
                      "product_id": view_prod.astype(np.int64)})
    return orders, views


PEAKS: list[tuple[str, float]] = []  # (step, peak RSS in MB) each time the peak rose by 50 MB


def _peak_at(name: str) -> None:
    mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if not PEAKS or mb > PEAKS[-1][1] + 50:
        PEAKS.append((name, mb))


def _profile() -> dict[str, float]:
    """CPU seconds of every step the stage runs (and of the collaborative kind as a whole)
    by name, summed over the run: on a shared machine wall time says more about the others."""
    from tessera.engine import duckdb_engine
    from tessera.recommendations import collaborative, lists

    timings: dict[str, float] = {}
    exec_ = duckdb_engine.DuckDBEngine._exec

    def timed(self, step):
        t = time.process_time()
        try:
            return exec_(self, step)
        finally:
            timings[step.name] = timings.get(step.name, 0.0) + time.process_time() - t
            _peak_at(step.name)
    duckdb_engine.DuckDBEngine._exec = timed
    als = collaborative.als_candidates

    def timed_als(*a, **kw):
        t = time.process_time()
        try:
            return als(*a, **kw)
        finally:
            timings["collaborative (all)"] = timings.get("collaborative (all)", 0.0) + time.process_time() - t
    lists.als_candidates = timed_als
    # the model's own phases: the fits and the top lists
    from implicit.cpu.als import AlternatingLeastSquares
    for cls, meth in ((AlternatingLeastSquares, "fit"), (AlternatingLeastSquares, "recommend")):
        orig = getattr(cls, meth)

        def timed_method(*a, _orig=orig, _name=f"als.{meth}", **kw):
            t = time.process_time()
            try:
                return _orig(*a, **kw)
            finally:
                timings[_name] = timings.get(_name, 0.0) + time.process_time() - t
                _peak_at(_name)
        setattr(cls, meth, timed_method)
    return timings


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--customers", type=int, default=50_000)
    ap.add_argument("--products", type=int, default=5_000)
    ap.add_argument("--sessions", type=float, default=5.0, help="mean sessions per customer")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--memory-limit", default="3GB")
    ap.add_argument("--no-lift", action="store_true", help="bought together by raw co-occurrence")
    ap.add_argument("--profile", action="store_true", help="print the slowest steps and CPU seconds")
    ap.add_argument("--every-days", type=int, default=1,
                    help="evaluation.every_days; above 1 the next day is built too (no back-test)")
    ap.add_argument("--als", help='ALS settings as JSON, over the defaults (e.g. \'{"min_buyers": 0}\')')
    ap.add_argument("--evaluation", help='back-test settings as JSON (e.g. \'{"sample_contacts": 0}\')')
    ap.add_argument("--settings", help="other recommendation settings as JSON")
    ap.add_argument("--weights", help='weights of the combination as JSON, e.g. \'{"collaborative": 1}\'')
    args = ap.parse_args()

    t0 = time.perf_counter()
    orders, views = generate(args.customers, args.products, args.sessions, args.seed)
    con = duckdb.connect()
    con.execute(f"SET threads = {int(args.threads)}")
    con.execute("SET memory_limit = ?", [args.memory_limit])
    con.register("_o", orders)
    con.register("_v", views)
    con.execute("""CREATE TABLE _orders_in AS SELECT CAST(customer AS VARCHAR) AS customer,
        CAST(order_id AS VARCHAR) AS order_id, CAST(order_date AS DATE) AS order_date,
        CAST(product_id AS VARCHAR) AS product_id FROM _o""")
    con.execute("""CREATE TABLE _views_in AS SELECT CAST(customer AS VARCHAR) AS customer,
        CAST(viewed_at AS TIMESTAMP) AS viewed_at, CAST(product_id AS VARCHAR) AS product_id FROM _v""")
    con.unregister("_o")
    con.unregister("_v")
    del orders, views
    for stmt in (x.strip() for x in _SHAPE.split(";")):
        if stmt:
            con.execute(stmt)
    n_views = con.execute("SELECT count(*) FROM core.events").fetchone()[0]
    n_lines = con.execute("SELECT count(*) FROM staging.order_lines").fetchone()[0]
    n_orders = con.execute("SELECT count(*) FROM core.orders").fetchone()[0]
    gen_s = time.perf_counter() - t0
    print(f"data: {args.customers:,} customers, {args.products:,} products, {n_views:,} views, "
          f"{n_orders:,} orders, {n_lines:,} order lines ({n_views + n_lines:,} events) "
          f"generated and loaded in {gen_s:.1f} s")

    # The defaults (5 + 2 ALS iterations, als.min_buyers 10, 10 neighbours, the back-test on
    # 20 000 contacts at most: chosen from this bench's back-test and the real-data one,
    # bench/README.md), with --als / --settings / --weights over them.
    settings = RecommendationSettings(**({"als": json.loads(args.als)} if args.als else {}),
                                      **json.loads(args.settings or "{}"),
                                      lift=not args.no_lift, evaluation={
                                          "every_days": args.every_days,
                                          **json.loads(args.evaluation or "{}")},
                                      **({"weights": json.loads(args.weights)} if args.weights else {}))
    timings = _profile() if args.profile else None
    t1, c1 = time.perf_counter(), time.process_time()
    stats = build_recommendations(con, settings, AS_OF)
    secs, cpu = time.perf_counter() - t1, time.process_time() - c1
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    events = n_views + n_lines
    print(f"stage (back-test + lists of every kind for every customer): {secs:.1f} s, "
          f"{events / secs:,.0f} events/s, {cpu:.1f} CPU s, {stats['rows']:,} list rows, "
          f"peak RSS {peak_mb:,.0f} MB")
    print(f"back-test: {stats['evaluated_contacts']:,} of the {stats['held_out_contacts']:,} contacts "
          f"with a held-out purchase scored (evaluation.sample_contacts "
          f"{settings.evaluation.sample_contacts:,})")

    def slowest(label: str) -> dict[str, float]:
        print(f"slowest steps, {label} (CPU s): " + ", ".join(
            f"{name} {t:.1f}" for name, t in sorted(timings.items(), key=lambda x: -x[1])[:24]))
        steps = dict(timings)
        timings.clear()
        return steps
    steps = {"back_test_day": slowest("the back-test day")} if timings is not None else {}
    next_day = None
    if args.every_days > 1:
        t2, c2 = time.perf_counter(), time.process_time()
        nxt = build_recommendations(con, settings, AS_OF + dt.timedelta(days=1))
        next_day = {"stage_s": round(time.perf_counter() - t2, 2), "cpu_s": round(time.process_time() - c2, 1),
                    "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}
        print(f"next day (back-test skipped: {not nxt['back_test_run']}, weights {nxt['weight_set']}): "
              f"{next_day['stage_s']:.1f} s, {next_day['cpu_s']:.1f} CPU s, "
              f"peak RSS over both days {next_day['peak_rss_mb']:,} MB")
        if timings is not None:
            steps["next_day"] = slowest("the next day")
    if timings is not None:
        print("where the peak RSS rose (step: MB after it): "
              + ", ".join(f"{n} {mb:,.0f}" for n, mb in PEAKS[-8:]))
    print(f"item pairs kept: {stats['item_pairs']}; ALS on {stats['als_contacts']:,} x "
          f"{stats['als_products']:,} ({stats['als_candidate_products']:,} products offered); "
          f"cold contacts {stats['cold_contacts']}")
    k = settings.evaluation.k
    print(f"\nback-test at k={k} (last {settings.evaluation.holdout_days} days held out; "
          "popular is the baseline):")
    print(f"{'mode':<10} {'kind':<22} {'contacts':>8} {'hit':>7} {'prec':>7} {'recall':>7} "
          f"{'map':>7} {'ndcg':>7} {'cover':>7}")
    for r in stats["evaluation"]:
        print(f"{r['mode']:<10} {r['kind']:<22} {r['contacts']:>8} {r['hit_rate']:>7.4f} "
              f"{r['precision_at_k']:>7.4f} {r['recall_at_k']:>7.4f} {r['map_at_k']:>7.4f} "
              f"{r['ndcg_at_k']:>7.4f} {r['coverage']:>7.4f}")
    print(f"worse than popular: {', '.join(stats['worse_than_popular']) or 'none'}")
    out = Path(__file__).resolve().parent / "out"
    out.mkdir(exist_ok=True)
    path = out / f"recommendations_{args.customers}_{args.products}.json"
    path.write_text(json.dumps({
        "customers": args.customers, "products": args.products, "views": n_views,
        "order_lines": n_lines, "orders": n_orders, "stage_s": round(secs, 2), "cpu_s": round(cpu, 1),
        "events_per_s": round(events / secs), "peak_rss_mb": round(peak_mb),
        "list_rows": stats["rows"], "settings": settings.model_dump(mode="json"),
        "held_out_contacts": stats["held_out_contacts"], "evaluated_contacts": stats["evaluated_contacts"],
        "next_day": next_day,
        "steps_cpu_s": {day: {k: round(v, 2) for k, v in t.items()} for day, t in steps.items()},
        "evaluation": stats["evaluation"],
        "worse_than_popular": stats["worse_than_popular"]}, indent=1, default=str), encoding="utf-8")
    print(f"figures: {path}")


if __name__ == "__main__":
    main()
