"""The marketing stages on DuckDB and on Spark, on the same synthetic warehouse.

    python bench/spark/run.py --contacts 10000 --events 200000 [--segments 5] [--master local[2]]

Generates the marketing benchmark's warehouse in DuckDB (bench/segments.py: customers,
orders, lines, events with JSON properties, the contact card), copies its tables into a
Spark warehouse (Parquet, tessera.engine.spark_engine), then runs RFM, scoring, stages and
the first N benchmark segments for one day on each engine, timing each step, and checks
that the output tables are identical row for row. Prints seconds per step on both engines,
rows/s of the whole run, and the peak memory of this process (DuckDB runs in it; Spark's
JVM is a separate process, reported apart). Results go to bench/out/ as JSON.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

AS_OF = dt.date(2026, 11, 1)
OUTPUTS = ["marketing.rfm_scores", "marketing.scores", "marketing.score_actions", "marketing.stages",
           "marketing.segment_members", "marketing.segment_history"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--contacts", type=int, default=10_000)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--segments", type=int, default=5)
    parser.add_argument("--master", default="local[2]")
    args = parser.parse_args()

    from segments import generate, peak_rss_mb, segment_rules

    from tessera.card.marts import build_contact_cards
    from tessera.deployment import load_deployment
    from tessera.engine import DuckDBEngine, SqlStep
    from tessera.engine.spark_engine import SparkEngine, spark_session
    from tessera.engine.warehouse import connect, ensure_warehouse
    from tessera.marketing.rfm import build_rfm
    from tessera.marketing.rules import segment_order
    from tessera.marketing.scoring import build_scores
    from tessera.marketing.segments import build_segment, ensure_marketing_tables
    from tessera.marketing.stages import build_stages
    from tessera.settings import SegmentDef

    work = Path(tempfile.mkdtemp(prefix="tessera-bench-spark-"))
    con = connect(work / "warehouse.duckdb")
    ensure_warehouse(con)
    base = load_deployment(ROOT / "examples" / "demo")
    segments = [SegmentDef.model_validate(s) for s in segment_rules(50)]
    # the first N in dependency order (a segment-of-segment rule needs its base)
    chosen = segment_order(segments)[: args.segments]
    deployment = base.model_copy(update={"segments": chosen, "feeds": []})
    generate(con, args.contacts, args.events)
    build_contact_cards(con)
    ensure_marketing_tables(con)
    duck = DuckDBEngine(con)

    t0 = time.perf_counter()
    spark = spark_session(args.master, conf={"spark.sql.shuffle.partitions": "4", "spark.ui.enabled": "false"})
    spark.sparkContext.setLogLevel("ERROR")
    t_start = time.perf_counter() - t0
    sp = SparkEngine(spark, work / "spark")
    tables = [f"{s}.{t}" for s, t in con.execute(
        "SELECT table_schema, table_name FROM information_schema.tables "
        "WHERE table_schema NOT IN ('information_schema', 'pg_catalog', 'main')").fetchall()]
    t0 = time.perf_counter()
    with sp.together():  # Parquet written by pyarrow, one catalog switch (as the hand-over does)
        for name in tables:
            sp.load_arrow(name, con.execute(f"SELECT * FROM {name}").to_arrow_table())
    t_copy = time.perf_counter() - t0

    def steps():
        yield "rfm", lambda e: build_rfm(e, AS_OF)["scored"]
        yield "scoring", lambda e: build_scores(e, deployment, AS_OF)["scored"]
        yield "stages", lambda e: build_stages(e, deployment, AS_OF)["staged"]
        for seg in chosen:
            yield f"segment {seg.name}", lambda e, seg=seg: build_segment(e, deployment, seg, AS_OF)["members"]

    rows = []
    for name, fn in steps():
        times = []
        for engine in (duck, sp):
            t = time.perf_counter()
            n = fn(engine)
            times.append(round(time.perf_counter() - t, 2))
        rows.append((name, times[0], times[1], n))

    def content(engine, table):
        return sorted(map(repr, engine.rows(SqlStep("all", f"SELECT * FROM {table}"))))
    parity = {t: content(duck, t) == content(sp, t) for t in OUTPUTS}
    counts = con.execute("SELECT (SELECT count(*) FROM core.customers), (SELECT count(*) FROM core.events)").fetchone()
    d_total = sum(r[1] for r in rows)
    s_total = sum(r[2] for r in rows)
    out = {"contacts": counts[0], "events": counts[1], "segments": len(chosen), "master": args.master,
           "spark_start_s": round(t_start, 1), "copy_to_spark_s": round(t_copy, 1),
           "duckdb_s": round(d_total, 1), "spark_s": round(s_total, 1), "parity": parity,
           "peak_rss_mb_python_and_duckdb": round(peak_rss_mb()), "steps": rows}
    print(f"\nMarketing stages on DuckDB and Spark ({args.master}): {counts[0]:,} contacts, {counts[1]:,} events")
    print(f"  {'step':<24} {'DuckDB s':>9} {'Spark s':>9} {'rows':>9}")
    for name, d, s, n in rows:
        print(f"  {name:<24} {d:>9} {s:>9} {n:>9}")
    print(f"  total {d_total:.1f} s on DuckDB ({counts[0] / max(d_total, 1e-9):,.0f} contacts/s), "
          f"{s_total:.1f} s on Spark ({counts[0] / max(s_total, 1e-9):,.0f} contacts/s); "
          f"Spark start {t_start:.1f} s, copy in {t_copy:.1f} s (not counted)")
    print(f"  identical tables: {sum(parity.values())} of {len(parity)} "
          f"{[t for t, ok in parity.items() if not ok] or ''}")
    print(f"  peak memory of this process (Python + DuckDB; Spark's JVM apart): {out['peak_rss_mb_python_and_duckdb']} MB")
    res = ROOT / "bench" / "out"
    res.mkdir(parents=True, exist_ok=True)
    (res / f"spark_{args.contacts}_{args.events}.json").write_text(json.dumps(out, indent=2, default=str))
    con.close()
    spark.stop()
    shutil.rmtree(work, ignore_errors=True)
    return 0 if all(parity.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
