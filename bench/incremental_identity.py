"""Identity and golden records on an incremental day beside a full one (issue 19 item 2).

    python bench/incremental_identity.py --persons 20000 [--rounds 2] [--changed 0.01]

The part of ``bench/incremental.py`` that identity and golden records cost, without the
rest of the daily job (whose other stages are full either way and bury the difference at
a small scale): the sample's contact, consent, unsubscribe and bounce sources only,
identity by the rules alone, or with probabilistic matching as shipped when the
environment sets ``PROBABILISTIC=1`` (the fit stored on day 1 scores day 2 in both). Day 1 is
loaded, staged, resolved and made golden with ``incremental: true``; day 2 (``--changed``
of the contact records change, ``bench/pipeline.py``'s ``day2_changes``) is staged
incrementally on copies of the day-1 warehouse (its changed keys recorded once, as a
run does), then resolved and made golden in full or
incrementally, interleaved, each in its own process: seconds of ``resolve`` and
``build_customers``, records re-resolved, customers rewritten, peak RSS. Finally the
identity and golden tables of the last pair are compared (clock columns left out).
JSON under ``bench/out/incremental_identity_<persons>.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

ENTITIES = ("contact", "bounce", "unsubscribe", "consent")
TABLES = ("customer_sources", "identity_links", "refused_merges", "merge_log", "customers", "customer_field_lineage")
CLOCK = {"resolved_at", "linked_at", "golden_built_at", "decided_at"}
PROBABILISTIC = os.environ.get("PROBABILISTIC") == "1"


def _deployment():
    from tessera.deployment import load_deployment

    dep = load_deployment(ROOT / "examples" / "demo").model_copy(update={"incremental": True})
    if PROBABILISTIC:
        return dep
    ident = dep.identity.model_copy(update={
        "probabilistic": dep.identity.probabilistic.model_copy(update={"enabled": False})})
    return dep.model_copy(update={"identity": ident})


def _stage(con, dep, landing: Path, day: dt.date) -> None:
    from tessera.ingest.changed_keys import ChangeRun
    from tessera.ingest.load import ingest_source
    from tessera.ingest.staging import build_contacts, build_entity

    now = dt.datetime.combine(day, dt.time(6, 0))
    for src in dep.sources:
        if src.entity in ENTITIES:
            ingest_source(con, dep, src, landing, f"b-{day}", now)
    for entity in ENTITIES:
        if entity == "contact":
            build_contacts(con, dep, ChangeRun(f"run-{day}", now))
        elif dep.sources_of(entity):
            build_entity(con, dep, entity, ChangeRun(f"run-{day}", now))
    for table in ("unsubscribes", "bounces"):
        con.execute(f"CREATE TABLE IF NOT EXISTS staging.{table} (email_key VARCHAR, channel VARCHAR, "
                    "bounce_type VARCHAR)")


def _resolve_and_golden(con, dep, day: dt.date, incremental: bool) -> dict:
    from tessera.identity.golden import build_customers
    from tessera.identity.resolve import resolve
    from tessera.privacy.consent import build_consents

    run_at = dt.datetime.combine(day, dt.time(7, 0))
    t = time.perf_counter()
    ident = resolve(con, run_at, f"r-{day}", dep.identity, incremental=incremental)
    t_ident = time.perf_counter() - t
    build_consents(con, dep, run_at)
    t = time.perf_counter()
    golden = build_customers(con, dep, run_at, incremental=incremental, run_key=f"r-{day}")
    t_golden = time.perf_counter() - t
    return {"identity_s": round(t_ident, 2), "golden_s": round(t_golden, 2),
            "records": ident["records"], "customers": golden["customers"],
            "identity_mode": ident["identity_mode"], "identity_full_reason": ident["identity_full_reason"],
            "affected_records": ident.get("affected_records"),
            "golden_mode": golden.get("golden_mode"), "rebuilt_customers": golden.get("rebuilt_customers"),
            "merges": ident["merges"], "splits": ident["splits"]}


def child(wh: Path, landing: Path, day: dt.date, incremental: bool, stage_only: bool) -> dict:
    from tessera.engine.warehouse import connect, ensure_warehouse

    dep = _deployment()
    con = connect(wh)
    ensure_warehouse(con)
    t = time.perf_counter()
    _stage(con, dep, landing, day)
    staged = round(time.perf_counter() - t, 2)
    out = {"staging_s": staged}
    if not stage_only:
        out.update(_resolve_and_golden(con, dep, day, incremental))
    con.close()
    out["peak_rss_mb"] = round(next(int(ln.split()[1]) for ln in Path("/proc/self/status").read_text().splitlines()
                                    if ln.startswith("VmHWM:")) / 1024)
    return out


def _run(wh: Path, landing: Path, day: dt.date, incremental: bool, stage_only: bool = False) -> dict:
    cmd = [sys.executable, __file__, "--child", str(wh), "--landing", str(landing), "--day", day.isoformat()]
    cmd += ["--incremental"] if incremental else []
    cmd += ["--stage-only"] if stage_only else []
    res = subprocess.run(cmd, capture_output=True, text=True)
    lines = [ln for ln in res.stdout.splitlines() if ln.startswith("RESULT ")]
    if res.returncode or not lines:
        sys.stderr.write(res.stdout[-4000:] + res.stderr[-4000:])
        raise SystemExit("a run failed")
    return json.loads(lines[-1][7:])


def compare(a: Path, b: Path) -> dict:
    import duckdb

    con = duckdb.connect()
    con.execute(f"ATTACH '{a}' AS a (READ_ONLY)")
    con.execute(f"ATTACH '{b}' AS b (READ_ONLY)")
    differ = {}
    for t in TABLES:
        cols = [c for c, in con.execute("""SELECT column_name FROM duckdb_columns() WHERE database_name = 'a'
            AND schema_name = 'core' AND table_name = ? ORDER BY column_index""", [t]).fetchall() if c not in CLOCK]
        sel = ", ".join(f'"{c}"' for c in cols)
        n = con.execute(f"""SELECT (SELECT count(*) FROM (SELECT {sel} FROM a.core.{t} EXCEPT ALL
                                    SELECT {sel} FROM b.core.{t}))
                                 + (SELECT count(*) FROM (SELECT {sel} FROM b.core.{t} EXCEPT ALL
                                    SELECT {sel} FROM a.core.{t}))""").fetchone()[0]
        if n:
            differ[t] = int(n)
    con.close()
    return {"tables_compared": len(TABLES), "differ": differ}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--persons", type=int, default=20000)
    parser.add_argument("--changed", type=float, default=0.01)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--landing", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--day", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--incremental", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--stage-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        out = child(Path(args.child), Path(args.landing), dt.date.fromisoformat(args.day), args.incremental,
                    args.stage_only)
        print("RESULT " + json.dumps(out))
        return 0

    from pipeline import AS_OF, day2_changes
    from tessera.sampledata.generator import generate

    work = Path(tempfile.mkdtemp(prefix="tessera-incr-id-"))
    landing = work / "landing"
    generate(landing, contacts=args.persons, seed=args.seed, as_of=AS_OF, orders_scale=0.05, events_scale=0.05)
    day1 = _run(work / "day1.duckdb", landing, AS_OF, True)
    print(f"day 1 ({day1['records']:,} contact records, {day1['customers']:,} customers): identity "
          f"{day1['identity_s']} s, golden records {day1['golden_s']} s (full, recording the state)", flush=True)
    day2 = AS_OF + dt.timedelta(days=1)
    changes = day2_changes(landing, day2, args.changed, args.seed)
    runs = []
    for r in range(args.rounds):
        for incremental in (False, True):
            wh = work / f"day2_{'inc' if incremental else 'full'}.duckdb"
            shutil.copy(work / "day1.duckdb", wh)
            out = {"round": r + 1, "incremental": incremental, **_run(wh, landing, day2, incremental)}
            runs.append(out)
            mode = "incremental" if incremental else "full"
            why = f": {out['identity_full_reason']}" if out["identity_full_reason"] else ""
            redone = out["affected_records"] if out["identity_mode"] == "incremental" else out["records"]
            rewrote = out["rebuilt_customers"] if out["golden_mode"] == "incremental" else out["customers"]
            print(f"day 2 {mode:<11} round {r + 1}: identity {out['identity_s']} s "
                  f"({out['records'] / out['identity_s']:,.0f} records of the table/s), "
                  f"golden records {out['golden_s']} s; re-resolved {redone:,} records "
                  f"({out['identity_mode']}{why}), rewrote {rewrote:,} "
                  f"customers; peak RSS {out['peak_rss_mb']} MB", flush=True)
    same = compare(work / "day2_full.duckdb", work / "day2_inc.duckdb")
    print(f"full vs incremental: {same['tables_compared'] - len(same['differ'])}/{same['tables_compared']} "
          f"identity and golden tables identical; differ: {same['differ'] or 'none'}")

    def best(inc: bool, key: str) -> float:
        return min(x[key] for x in runs if x["incremental"] == inc)

    summary = {k: {"full": best(False, k), "incremental": best(True, k)}
               for k in ("identity_s", "golden_s", "peak_rss_mb")}
    print("best of rounds: " + "; ".join(f"{k} full {v['full']} / incremental {v['incremental']}"
                                         for k, v in summary.items()))
    res = ROOT / "bench" / "out"
    res.mkdir(parents=True, exist_ok=True)
    (res / f"incremental_identity_{args.persons}{'_prob' if PROBABILISTIC else ''}.json").write_text(json.dumps(
        {"persons": args.persons, "changed": args.changed, "day2_changes": changes, "day1": day1,
         "day2_runs": runs, "best": summary, "comparison": same}, indent=2, default=str))
    shutil.rmtree(work, ignore_errors=True)
    return 0 if not same["differ"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
