"""An incremental day beside a full one on the same data (issue 19 item 2).

    python bench/incremental.py --scale 0.01 [--rounds 2] [--changed 0.01]

Generates the sample at ``bench/pipeline.py``'s reference proportions, runs day 1 with
``incremental: true`` (a full build that records its state), keeps that warehouse, adds
day 2's changes (1 % of the contact records change, 1 % more events), then runs day 2 on
copies of the day-1 warehouse, alternately with ``incremental: false`` and ``true``
(interleaved, ``--rounds`` of each, since the machine is shared), each in its own process:
wall and CPU seconds, peak RSS, and the staging assets' seconds. Finally it compares the
tables of the last full and the last incremental day 2 (staging, identity, golden records,
consents, the card, marketing), leaving out the columns that hold the run's clock. JSON
under ``bench/out/incremental_<scale>.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
os.environ.setdefault("DAGSTER_DISABLE_TELEMETRY", "1")
os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
os.environ.setdefault("TESSERA_SUPPRESSION_KEY", "bench-only-key")

# columns that say when a row was (re)built, not what it says
CLOCK_COLUMNS = {"golden_built_at", "resolved_at", "logged_at", "refused_at", "built_at", "computed_at",
                 "updated_at_run", "run_at", "recorded_at", "loaded_at", "created_at", "scored_at",
                 "as_of_ts", "merged_at", "checked_at", "rejected_at", "decided_at", "linked_at", "trained_at",
                 "_loaded_at"}
COMPARED_SCHEMAS = ("staging", "core", "marketing", "marts")


def one_day(work: Path, wh: Path, day: dt.date, incremental: bool, memory_limit: str | None,
            deterministic: bool = False) -> dict:
    """Run the daily job for ``day`` on ``wh`` in this process; print what it cost."""
    import dagster as dg

    from pipeline import run_day
    from pipelines.definitions import build_definitions
    from tessera.deployment import load_deployment

    dep = load_deployment(ROOT / "examples" / "demo").model_copy(update={"incremental": incremental})
    if deterministic:  # identity by the rules alone: the configuration incremental identity covers
        ident = dep.identity.model_copy(update={
            "probabilistic": dep.identity.probabilistic.model_copy(update={"enabled": False})})
        dep = dep.model_copy(update={"identity": ident})
    defs = build_definitions(dep, wh, work / "landing", wh.parent / "feeds", memory_limit)
    t, cpu = time.perf_counter(), time.process_time()
    out = run_day(defs, dg.DagsterInstance.ephemeral(), day)
    me = resource.getrusage(resource.RUSAGE_SELF)
    # this process's own high-water mark (ru_maxrss keeps the parent's across fork + exec)
    hwm = next(int(ln.split()[1]) for ln in Path("/proc/self/status").read_text().splitlines()
               if ln.startswith("VmHWM:"))
    staging = {k: v["seconds"] for k, v in out["assets"].items() if k.startswith("staging/")}
    return {"incremental": incremental, "success": out["success"], "failed_checks": out["failed_checks"],
            "wall_s": round(time.perf_counter() - t, 1), "cpu_s": round(me.ru_utime + me.ru_stime, 1),
            "cpu_s_job": round(time.process_time() - cpu, 1), "peak_rss_mb": round(hwm / 1024),
            "staging_s": round(sum(v or 0 for v in staging.values()), 2),
            # identity (one multi-asset step) and golden records (one multi-asset step)
            "identity_s": out["assets"].get("core/customer_sources", {}).get("seconds"),
            "golden_s": out["assets"].get("core/customers", {}).get("seconds"),
            # the events' linkage and the card (incremental since #19's fourth increment)
            "events_s": out["assets"].get("core/events", {}).get("seconds"),
            "card_s": out["assets"].get("marts/contact_cards", {}).get("seconds"),
            "slowest_assets": dict(sorted(((k, v["seconds"]) for k, v in out["assets"].items()
                                           if v["seconds"] is not None), key=lambda kv: -kv[1])[:8]),
            "assets_s": {k: v["seconds"] for k, v in out["assets"].items()}}


def _child(work: Path, wh: Path, day: dt.date, incremental: bool, memory_limit: str | None,
           deterministic: bool = False) -> dict:
    cmd = [sys.executable, __file__, "--one-day", str(work), "--warehouse", str(wh), "--day", day.isoformat()]
    if incremental:
        cmd.append("--incremental")
    if deterministic:
        cmd.append("--deterministic")
    if memory_limit:
        cmd += ["--memory-limit", memory_limit]
    res = subprocess.run(cmd, capture_output=True, text=True)
    lines = [ln for ln in res.stdout.splitlines() if ln.startswith("RESULT ")]
    if res.returncode or not lines:
        sys.stderr.write(res.stdout[-4000:] + res.stderr[-4000:])
        raise SystemExit(f"the day-{day} run failed ({'incremental' if incremental else 'full'})")
    return json.loads(lines[-1][7:])


def compare(a: Path, b: Path) -> dict:
    """Tables that differ between two warehouses (clock columns left out)."""
    import duckdb

    con = duckdb.connect()
    con.execute("SET enable_progress_bar = false")
    con.execute(f"ATTACH '{a}' AS a (READ_ONLY)")
    con.execute(f"ATTACH '{b}' AS b (READ_ONLY)")
    tables = con.execute(f"""
        SELECT schema_name, table_name FROM duckdb_tables() WHERE database_name = 'a'
        AND schema_name IN {COMPARED_SCHEMAS} ORDER BY 1, 2""").fetchall()
    same, differ = [], {}
    for schema, table in tables:
        cols = [c for c, in con.execute("""
            SELECT column_name FROM duckdb_columns() WHERE database_name = 'a' AND schema_name = ?
            AND table_name = ? ORDER BY column_index""", [schema, table]).fetchall() if c not in CLOCK_COLUMNS]
        sel = ", ".join(f'"{c}"' for c in cols)
        try:
            n = con.execute(f"""SELECT (SELECT count(*) FROM (SELECT {sel} FROM a.{schema}.{table}
                                        EXCEPT ALL SELECT {sel} FROM b.{schema}.{table}))
                                     + (SELECT count(*) FROM (SELECT {sel} FROM b.{schema}.{table}
                                        EXCEPT ALL SELECT {sel} FROM a.{schema}.{table}))""").fetchone()[0]
        except duckdb.Error as exc:
            differ[f"{schema}.{table}"] = f"not comparable: {str(exc).splitlines()[0][:120]}"
            continue
        (same.append(f"{schema}.{table}") if n == 0 else differ.__setitem__(f"{schema}.{table}", int(n)))
    con.close()
    return {"tables_compared": len(tables), "identical": len(same), "differ": differ}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=float, default=0.01)
    parser.add_argument("--changed", type=float, default=0.01)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--memory-limit", default=None)
    parser.add_argument("--deterministic", action="store_true",
                        help="identity by the rules alone (probabilistic matching keeps identity full)")
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--one-day", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--warehouse", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--day", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--incremental", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one_day:
        out = one_day(Path(args.one_day), Path(args.warehouse), dt.date.fromisoformat(args.day),
                      args.incremental, args.memory_limit, args.deterministic)
        print("RESULT " + json.dumps(out))
        return 0

    from pipeline import AS_OF, EVENTS_SCALE, ORDERS_SCALE, REFERENCE_PERSONS, day2_changes
    from tessera.sampledata.generator import generate

    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="tessera-incr-"))
    persons = max(50, round(REFERENCE_PERSONS * args.scale))
    if not (work / "landing" / "_truth").exists():
        generate(work / "landing", contacts=persons, seed=args.seed, as_of=AS_OF,
                 orders_scale=ORDERS_SCALE, events_scale=EVENTS_SCALE)
    day2 = AS_OF + dt.timedelta(days=1)
    for stale in [*(work / "landing" / "crm").glob(f"crm_contacts_{day2:%Y%m%d}.csv"),
                  *(work / "landing" / "web").glob(f"web_events_{day2:%Y%m%d}.jsonl")]:
        stale.unlink()  # a kept workdir: day 2's files come after day 1
    day1_dir = work / "day1"
    shutil.rmtree(day1_dir, ignore_errors=True)
    day1_dir.mkdir()
    print(f"day 1 ({persons:,} persons), incremental: true (a full build recording its state) ...", flush=True)
    day1 = _child(work, day1_dir / "warehouse.duckdb", AS_OF, True, args.memory_limit, args.deterministic)
    print(f"  {day1['wall_s']} s wall, {day1['cpu_s']} s CPU, {day1['peak_rss_mb']} MB", flush=True)
    changes = day2_changes(work / "landing", day2, args.changed, args.seed)
    runs = []
    for r in range(args.rounds):
        for incremental in (False, True):
            d = work / f"day2_{'inc' if incremental else 'full'}"
            shutil.rmtree(d, ignore_errors=True)
            shutil.copytree(day1_dir, d)
            out = _child(work, d / "warehouse.duckdb", day2, incremental, args.memory_limit, args.deterministic)
            runs.append({"round": r + 1, **out})
            print(f"day 2 {'incremental' if incremental else 'full':<11} round {r + 1}: {out['wall_s']} s wall, "
                  f"{out['cpu_s']} s CPU, {out['peak_rss_mb']} MB peak; staging assets {out['staging_s']} s, "
                  f"identity {out['identity_s']} s, golden records {out['golden_s']} s, "
                  f"events {out['events_s']} s, card {out['card_s']} s",
                  flush=True)
    same = compare(work / "day2_full" / "warehouse.duckdb", work / "day2_inc" / "warehouse.duckdb")
    print(f"day 2 full vs incremental: {same['identical']}/{same['tables_compared']} tables identical; "
          f"differ: {same['differ'] or 'none'}")

    def best(inc: bool, key: str) -> float:
        return min((x[key] for x in runs if x["incremental"] == inc and x[key] is not None), default=None)

    summary = {k: {"full": best(False, k), "incremental": best(True, k)}
               for k in ("wall_s", "cpu_s", "peak_rss_mb", "staging_s", "identity_s", "golden_s",
                                  "events_s", "card_s")}
    print("best of rounds: " + "; ".join(f"{k} full {v['full']} / incremental {v['incremental']}"
                                         for k, v in summary.items()))
    out = {"scale": args.scale, "persons": persons, "deterministic": args.deterministic,
           "changed": args.changed, "day2_changes": changes,
           "day1": day1, "day2_runs": runs, "best": summary, "comparison": same}
    res = ROOT / "bench" / "out"
    res.mkdir(parents=True, exist_ok=True)
    (res / f"incremental_{args.scale:g}.json").write_text(json.dumps(out, indent=2, default=str))
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if not same["differ"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
