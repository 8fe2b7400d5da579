"""Benchmark of the whole daily job at a chosen scale.

    python bench/pipeline.py --contacts 1000000 [--memory-limit 8GB] [--keep]

Generates the sample data set (seeded) for N persons, runs the daily job in process
on a fresh warehouse, and prints per-asset wall time, records ingested per second, and
the process's peak resident memory (DuckDB runs in process, so it is included).
Results are also written as JSON under bench/out/.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DAGSTER_DISABLE_TELEMETRY", "1")
os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
os.environ.setdefault("TESSERA_SUPPRESSION_KEY", "bench-only-key")

AS_OF = dt.date(2026, 11, 1)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--contacts", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--memory-limit", default=None, help="DuckDB memory_limit, e.g. 8GB")
    parser.add_argument("--workdir", default=None, help="folder for data and warehouse (default: temp)")
    parser.add_argument("--keep", action="store_true", help="keep the generated data and warehouse")
    args = parser.parse_args()

    import dagster as dg

    from pipelines.definitions import build_definitions
    from tessera.deployment import load_deployment
    from tessera.sampledata.generator import generate
    from tessera.engine.warehouse import connect

    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="tessera-bench-"))
    landing = work / "landing"
    t0 = time.perf_counter()
    if not (landing / "_truth").exists():
        generate(landing, contacts=args.contacts, seed=args.seed, as_of=AS_OF)
    t_gen = time.perf_counter() - t0
    input_bytes = sum(p.stat().st_size for p in landing.rglob("*") if p.is_file() and "_truth" not in p.parts)
    wh = work / "warehouse.duckdb"
    if wh.exists():
        wh.unlink()
    shutil.rmtree(work / "feeds", ignore_errors=True)

    defs = build_definitions(load_deployment(ROOT / "examples" / "demo"), wh, landing,
                             work / "feeds", args.memory_limit)
    job = defs.resolve_job_def("daily_job")
    t1 = time.perf_counter()
    result = job.execute_in_process(partition_key=AS_OF.isoformat(),
                                    instance=dg.DagsterInstance.ephemeral(), raise_on_error=False)
    t_run = time.perf_counter() - t1

    steps = []
    for ev in result.get_asset_materialization_events():
        mat = ev.event_specific_data.materialization
        dur = mat.metadata.get("duration_s")
        rows = mat.metadata.get("dagster/row_count")
        steps.append((mat.asset_key.to_user_string(), dur.value if dur else None, rows.value if rows else None))

    con = connect(wh)
    try:
        records, rejected = con.execute(
            "SELECT coalesce(sum(records), 0), coalesce(sum(rejected), 0) FROM ops.import_report").fetchone()
        customers = con.execute("SELECT count(*) FROM core.customers").fetchone()[0]
        contact_records = con.execute("SELECT count(*) FROM core.customer_sources").fetchone()[0]
        # identity quality against the generator's truth
        truth = landing / "_truth" / "records.csv"
        q = con.execute(f"""
            WITH t AS (SELECT * FROM read_csv('{truth}', all_varchar = true)),
            p AS (SELECT t.person_id, cs.customer_id FROM t JOIN core.customer_sources cs USING (source, source_record_id)),
            tp AS (SELECT sum(n * (n - 1) / 2) AS v FROM (SELECT count(*) n FROM p GROUP BY person_id, customer_id)),
            tt AS (SELECT sum(n * (n - 1) / 2) AS v FROM (SELECT count(*) n FROM p GROUP BY person_id)),
            pp AS (SELECT sum(n * (n - 1) / 2) AS v FROM (SELECT count(*) n FROM p GROUP BY customer_id))
            SELECT (SELECT v FROM tp), (SELECT v FROM tt), (SELECT v FROM pp)""").fetchone()
    finally:
        con.close()
    tp, true_pairs, pred_pairs = (float(x or 0) for x in q)
    precision = tp / pred_pairs if pred_pairs else 1.0
    recall = tp / true_pairs if true_pairs else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0

    ingest_s = sum(d or 0 for k, d, _ in steps if k.startswith("raw/"))
    out = {
        "contacts": args.contacts, "success": result.success, "generate_s": round(t_gen, 1),
        "run_s": round(t_run, 1), "ingest_s": round(ingest_s, 1),
        "records_read": int(records), "records_rejected": int(rejected),
        "ingest_records_per_s": round(records / ingest_s) if ingest_s else None,
        "input_mb": round(input_bytes / 1e6, 1), "contact_records": int(contact_records),
        "golden_customers": int(customers), "peak_rss_mb": round(peak_rss_mb()),
        "identity_precision": round(precision, 4), "identity_recall": round(recall, 4),
        "identity_f1": round(f1, 4), "steps": steps,
    }
    print(f"\nTessera pipeline benchmark: {args.contacts:,} persons "
          f"({out['input_mb']} MB of landing files, {records:,} records)")
    print(f"  {'asset':<40} {'seconds':>8} {'rows':>12}")
    for key, dur, rows in steps:
        print(f"  {key:<40} {dur if dur is not None else '':>8} {rows if rows is not None else '':>12}")
    print(f"  generate: {out['generate_s']} s   daily job: {out['run_s']} s (wall, in process)")
    print(f"  ingestion: {out['ingest_records_per_s']} records/s   peak memory: {out['peak_rss_mb']} MB")
    print(f"  identity vs the generator's truth: precision {out['identity_precision']} "
          f"recall {out['identity_recall']} F1 {out['identity_f1']}")
    res_dir = ROOT / "bench" / "out"
    res_dir.mkdir(parents=True, exist_ok=True)
    (res_dir / f"pipeline_{args.contacts}.json").write_text(json.dumps(out, indent=2, default=str))
    if not args.keep and not args.workdir:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if result.success else 1


if __name__ == "__main__":
    sys.exit(main())
