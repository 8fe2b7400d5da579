"""The whole daily job on DuckDB and on Spark, on the same generated data, step by step.

    python bench/spark/daily.py --persons 67000 --workdir DIR --engine duckdb   # one run per call
    python bench/spark/daily.py --persons 67000 --workdir DIR --engine spark [--master local[2]]
    python bench/spark/daily.py --workdir DIR --compare                         # parity + the table

The generator's sample at ``--persons`` (about 1.5 contact records per person: 67,000 give
~100 k contact records) is written once into ``DIR/landing``. Each engine's run is the
real daily job (``pipelines/definitions.py``, in process, one Dagster run) in its own
process and warehouse: ``DIR/duckdb`` with the demo deployment, ``DIR/spark`` with the
same deployment plus ``engine: spark`` (local Spark, the Spark warehouse in
``DIR/spark/spark_wh``). On Spark, ingestion and the DuckDB-path stages run on DuckDB as
in production, and every stage on the seam runs on Spark between the two hand-overs (the
raw tables published as Parquet at the first one). Recorded per Dagster step (an asset,
or an asset's checks): wall seconds from the step's start to its end; per run: wall time,
the peak resident memory of the Python process (DuckDB runs in it) and of its child
processes (Spark's JVM and its Python UDF workers), sampled every 0.2 s.

``--compare`` prints both runs' steps side by side and compares every table of the
daily job's output that both runs write (the parity lane's key tables of
``tests/spark/test_daily.py`` plus every staging table) row for row, in the two DuckDB
warehouses (the Spark run hands its tables back): wall-clock and run-id columns left out.
Exit status 1 if any differs. JSON in bench/out/spark_daily_<persons>.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import shutil
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DAGSTER_DISABLE_TELEMETRY", "1")
os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
os.environ.setdefault("TESSERA_SUPPRESSION_KEY", "bench-only-key")

AS_OF = dt.date(2026, 11, 1)
SEED = 7


def _children_rss_mb(pid: int) -> float:
    """Resident memory of every descendant of ``pid`` (the JVM, Spark's Python workers)."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    parents[int(entry)] = int(fh.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    todo, seen, total = [pid], set(), 0.0
    while todo:
        p = todo.pop()
        for child, parent in parents.items():
            if parent == p and child not in seen:
                seen.add(child)
                todo.append(child)
    page = os.sysconf("SC_PAGE_SIZE")
    for child in seen:
        try:
            with open(f"/proc/{child}/statm") as fh:
                total += int(fh.read().split()[1]) * page / 1024 ** 2
        except OSError:
            continue
    return total


class Memory:
    """Peak RSS of this process and of its children, sampled while the run goes."""

    def __init__(self, every_s: float = 0.2) -> None:
        self.every_s, self.children_peak = every_s, 0.0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.wait(self.every_s):
            self.children_peak = max(self.children_peak, _children_rss_mb(os.getpid()))

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join()


def prepare(work: Path, persons: int) -> Path:
    from tessera.sampledata.generator import generate

    landing = work / "landing"
    if not (landing / "_truth").exists():
        generate(landing, contacts=persons, seed=SEED, as_of=AS_OF)
    return landing


def config_for(work: Path, engine: str, master: str) -> Path:
    """The demo deployment; for Spark, the same with ``engine: spark`` (one line, plus the
    session's settings), as a user would switch it."""
    config = work / engine / "config"
    shutil.rmtree(config, ignore_errors=True)
    shutil.copytree(ROOT / "examples" / "demo", config)
    if engine == "spark":
        with (config / "tessera.yaml").open("a", encoding="utf-8") as f:
            f.write(f"\nengine: spark\nspark:\n  master: {master}\n  warehouse: {work / 'spark' / 'spark_wh'}\n"
                    "  conf: {spark.sql.shuffle.partitions: 4, spark.ui.enabled: false}\n")
    return config


def step_times(instance, run_id: str) -> dict:
    """Per Dagster step: its start (seconds after the run's first event) and its wall time."""
    logs = [e for e in instance.all_logs(run_id) if e.dagster_event is not None]
    t0 = logs[0].timestamp if logs else 0.0
    starts, steps = {}, {}
    assets = {e.dagster_event.step_key for e in logs if e.dagster_event.event_type_value == "ASSET_MATERIALIZATION"}
    for entry in logs:
        kind, key = entry.dagster_event.event_type_value, entry.dagster_event.step_key
        if kind == "STEP_START":
            starts[key] = entry.timestamp
        elif kind in ("STEP_SUCCESS", "STEP_FAILURE") and key in starts:
            steps[key] = {"start": round(starts[key] - t0, 2), "seconds": round(entry.timestamp - starts[key], 2),
                          "ok": kind == "STEP_SUCCESS", "asset": key in assets}
    return steps


def materialized(instance) -> set:
    """The asset keys every run of ``instance`` materialized."""
    import dagster as dg

    keys = set()
    for record in instance.get_run_records():
        for e in instance.all_logs(record.dagster_run.run_id,
                                   of_type=dg.DagsterEventType.ASSET_MATERIALIZATION):
            keys.add(e.dagster_event.asset_key)
    return keys


def run(work: Path, engine: str, master: str, persons: int, resume: bool = False) -> dict:
    """One engine's daily job. ``resume``: run only the assets the engine's earlier,
    interrupted call left unmaterialized (those the DuckDB run materialized), on the same
    warehouses, and add its steps to the earlier ones (a run longer than one call)."""
    import dagster as dg

    from pipelines.definitions import build_definitions
    from tessera.deployment import load_deployment

    landing = prepare(work, persons)
    home = work / engine
    before = json.loads((home / "run.json").read_text()) if resume else None
    if not resume:
        for stale in ("warehouse.duckdb", "warehouse.duckdb.wal", "spark_wh", "feeds", "dagster_home"):
            p = home / stale
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
        config_for(work, engine, master)
        (home / "dagster_home").mkdir(parents=True)
        shutil.copyfile(ROOT / "dagster.yaml", home / "dagster_home" / "dagster.yaml")
    defs = build_definitions(load_deployment(home / "config"), home / "warehouse.duckdb", landing, home / "feeds")
    instance = dg.DagsterInstance.from_config(str(home / "dagster_home"))
    job = defs.resolve_job_def("daily_job")
    selection = None
    if resume:
        reference = dg.DagsterInstance.from_config(str(work / "duckdb" / "dagster_home"))
        selection = sorted(materialized(reference) - materialized(instance), key=lambda k: k.to_user_string())
        print(f"resuming {len(selection)} assets: {', '.join(k.to_user_string() for k in selection)}")
    t0 = time.perf_counter()
    with Memory() as memory:
        result = job.execute_in_process(partition_key=AS_OF.isoformat(), instance=instance, raise_on_error=False,
                                        asset_selection=selection)
    wall = time.perf_counter() - t0
    steps = step_times(instance, result.run_id)
    failures = [e.message for e in result.all_events if e.is_failure][:3]
    out = {"engine": engine, "master": master if engine == "spark" else None, "persons": persons,
           "success": result.success, "failures": failures, "wall_s": round(wall, 1),
           "peak_rss_mb_python_duckdb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
           "peak_rss_mb_children": round(memory.children_peak), "steps": steps, "calls": 1}
    if before is not None:  # the earlier call's completed steps, then this call's
        offset = max(v["start"] + v["seconds"] for v in before["steps"].values())
        kept = {k: v for k, v in before["steps"].items() if v["ok"]}
        interrupted = sum(v["seconds"] for v in before["steps"].values() if not v["ok"])
        out["steps"] = {**kept, **{k: {**v, "start": round(v["start"] + offset, 2)} for k, v in steps.items()}}
        out["wall_s"] = round(before["wall_s"] - interrupted + wall, 1)
        out["interrupted_s"] = round(interrupted, 1)
        out["calls"] = before.get("calls", 1) + 1
        out["peak_rss_mb_python_duckdb"] = max(out["peak_rss_mb_python_duckdb"], before["peak_rss_mb_python_duckdb"])
        out["peak_rss_mb_children"] = max(out["peak_rss_mb_children"], before["peak_rss_mb_children"])
    (home / "run.json").write_text(json.dumps(out, indent=2))
    print(f"{engine}: {'ok' if result.success else 'FAILED'} in {wall:.1f} s (this call); peak RSS Python+DuckDB "
          f"{out['peak_rss_mb_python_duckdb']} MB, children (JVM) {out['peak_rss_mb_children']} MB; "
          f"{len(out['steps'])} steps in {out['calls']} call(s), {out['wall_s']} s in all")
    for f in failures:
        print("  ", f[:300])
    return out


def compared_tables(con) -> dict[str, tuple[str, ...]]:
    """The lane's key tables (tests/spark/test_daily.py) and every staging table."""
    from tests.spark.test_daily import KEY_TABLES

    # _loaded_at: when each run's ingestion loaded the file (its own clock)
    staging = {f"staging.{t}": ("_loaded_at",) for (t,) in con.execute(
        "SELECT table_name FROM information_schema.tables WHERE table_catalog = 'd' "
        "AND table_schema = 'staging' ORDER BY 1").fetchall()}
    return {**staging, **KEY_TABLES}


def table_difference(con, table: str, exclude: tuple[str, ...]) -> str:
    """``identical``, or how the table differs between ``d`` (DuckDB run) and ``s`` (Spark
    run), attached to one DuckDB connection: rows as a multiset (EXCEPT ALL both ways),
    doubles to 9 places, the excluded (clock) columns left out. Set-based: the lane's
    Python comparison is quadratic on tables that differ."""
    schema, name = table.split(".")
    def columns(db):
        return con.execute("SELECT column_name, data_type FROM information_schema.columns WHERE table_catalog = ? "
                           "AND table_schema = ? AND table_name = ? ORDER BY ordinal_position",
                           [db, schema, name]).fetchall()
    dc, sc = columns("d"), columns("s")
    if [c for c, _ in dc] != [c for c, _ in sc]:
        return f"columns differ: {[c for c, _ in dc]} vs {[c for c, _ in sc]}"
    cols = ", ".join(f'round("{c}", 9)' if t in ("DOUBLE", "FLOAT") else f'"{c}"' for c, t in dc if c not in exclude)
    only_d, only_s, n_d, n_s = con.execute(f"""
        SELECT (SELECT count(*) FROM (SELECT {cols} FROM d.{table} EXCEPT ALL SELECT {cols} FROM s.{table})),
               (SELECT count(*) FROM (SELECT {cols} FROM s.{table} EXCEPT ALL SELECT {cols} FROM d.{table})),
               (SELECT count(*) FROM d.{table}), (SELECT count(*) FROM s.{table})""").fetchone()
    if only_d == only_s == 0:
        return "identical"
    return f"{n_d} vs {n_s} rows, {only_d} only on DuckDB, {only_s} only on Spark"


def compare(work: Path) -> int:
    import duckdb

    runs = {e: json.loads((work / e / "run.json").read_text()) for e in ("duckdb", "spark")}
    con = duckdb.connect()
    con.execute(f"ATTACH '{work / 'duckdb' / 'warehouse.duckdb'}' AS d (READ_ONLY)")
    con.execute(f"ATTACH '{work / 'spark' / 'warehouse.duckdb'}' AS s (READ_ONLY)")
    con.execute("USE d")
    parity, rows = {}, {}
    try:
        for table, exclude in compared_tables(con).items():
            schema, name = table.split(".")
            if not con.execute("SELECT count(*) FROM information_schema.tables WHERE table_catalog = 'd' "
                               "AND table_schema = ? AND table_name = ?", [schema, name]).fetchone()[0]:
                continue
            parity[table] = table_difference(con, table, exclude)
            rows[table] = con.execute(f"SELECT count(*) FROM d.{table}").fetchone()[0]
        counts = {k: con.execute(q).fetchone()[0] for k, q in {
            "contact_records": "SELECT count(*) FROM d.core.customer_sources",
            "customers": "SELECT count(*) FROM d.core.customers",
            "orders": "SELECT count(*) FROM d.core.orders",
            "order_lines": "SELECT count(*) FROM d.staging.order_lines",
            "events": "SELECT count(*) FROM d.core.events"}.items()}
    finally:
        con.close()
    d, s = runs["duckdb"], runs["spark"]
    print(f"\nThe daily job on DuckDB and on Spark ({s['master']}), {d['persons']:,} persons generated: "
          + ", ".join(f"{v:,} {k.replace('_', ' ')}" for k, v in counts.items()))
    order = sorted(set(d["steps"]) | set(s["steps"]), key=lambda k: s["steps"].get(k, d["steps"].get(k))["start"])
    layers: dict[str, list[float]] = {}
    for key in order:
        layer = key.split("__")[0] + ("" if s["steps"].get(key, d["steps"].get(key))["asset"] else " (checks)")
        sums = layers.setdefault(layer, [0.0, 0.0, 0])
        sums[0] += d["steps"].get(key, {}).get("seconds", 0.0)
        sums[1] += s["steps"].get(key, {}).get("seconds", 0.0)
        sums[2] += 1
    print(f"  {'layer (steps)':<58} {'DuckDB s':>9} {'Spark s':>9}")
    for layer, (a, b, n) in layers.items():
        print(f"  {f'{layer} ({n})':<58} {a:>9.1f} {b:>9.1f}")
    print(f"  {'asset (job order)':<58} {'DuckDB s':>9} {'Spark s':>9}")
    for key in order:
        if not s["steps"].get(key, d["steps"].get(key))["asset"]:
            continue
        a, b = d["steps"].get(key, {}).get("seconds", ""), s["steps"].get(key, {}).get("seconds", "")
        print(f"  {key[:58]:<58} {a:>9} {b:>9}")
    ingest = [k for k in order if k.startswith("raw__")]

    def after_ingest(r):
        return round(sum(v["seconds"] for k, v in r["steps"].items() if k not in ingest), 1)
    print(f"  whole job: DuckDB {d['wall_s']} s, Spark {s['wall_s']} s wall; steps after ingestion "
          f"(sum): DuckDB {after_ingest(d)} s, Spark {after_ingest(s)} s")
    for r in (d, s):
        print(f"  peak RSS {r['engine']}: Python + DuckDB {r['peak_rss_mb_python_duckdb']} MB, "
              f"child processes (Spark's JVM, UDF workers) {r['peak_rss_mb_children']} MB")
    same = [t for t, v in parity.items() if v == "identical"]
    print(f"  identical tables: {len(same)} of {len(parity)}")
    for table, verdict in parity.items():
        print(f"    {table:<44} {rows[table]:>9} rows  {verdict if verdict == 'identical' else 'DIFFERS: ' + verdict[:300]}")
    out = {"counts": counts, "duckdb": d, "spark": s, "parity": parity, "rows": rows,
           "after_ingest_s": {"duckdb": after_ingest(d), "spark": after_ingest(s)}}
    res = ROOT / "bench" / "out"
    res.mkdir(parents=True, exist_ok=True)
    (res / f"spark_daily_{d['persons']}.json").write_text(json.dumps(out, indent=2, default=str))
    return 0 if len(same) == len(parity) and d["success"] and s["success"] else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--persons", type=int, default=2000)
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--engine", choices=["duckdb", "spark"])
    parser.add_argument("--master", default="local[2]")
    parser.add_argument("--prepare", action="store_true", help="only generate the landing files")
    parser.add_argument("--compare", action="store_true")
    parser.add_argument("--resume", action="store_true",
                        help="run what the engine's earlier, interrupted call left (one call = at most 12 min here)")
    args = parser.parse_args()
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    if args.prepare:
        t = time.perf_counter()
        prepare(work, args.persons)
        print(f"generated {args.persons:,} persons in {time.perf_counter() - t:.1f} s")
        return 0
    if args.compare:
        return compare(work)
    if not args.engine:
        parser.error("--engine, --prepare or --compare")
    return 0 if run(work, args.engine, args.master, args.persons, args.resume)["success"] else 1


if __name__ == "__main__":
    sys.exit(main())
