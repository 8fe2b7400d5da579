"""A second (and third) day of the daily job at scale, with merges and splits (#20).

    python bench/second_day.py --contacts 100000 [--changed 0.01] [--memory-limit 8GB]

Day 1 is the generated sample (seeded). Day 2 brings a CRM file in which ``--changed``
of the CRM contacts changed: half take another CRM contact's e-mail address (a merge),
half move to a new address (a split where the record was linked by e-mail). Day 3
brings nothing new. Before issue #20 every run after the first real merge failed its
segments' ``members_are_customers`` check. Prints wall time and success per day, the
merges and splits, and the rows re-keyed; JSON under bench/out/.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import io
import json
import os
import random
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--contacts", type=int, default=100_000)
    parser.add_argument("--changed", type=float, default=0.01)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--memory-limit", default=None)
    parser.add_argument("--workdir", default=None)
    args = parser.parse_args()

    import dagster as dg

    from pipelines.definitions import build_definitions
    from tessera.deployment import load_deployment
    from tessera.engine.warehouse import connect
    from tessera.sampledata.generator import generate

    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="tessera-day2-"))
    landing, wh = work / "landing", work / "warehouse.duckdb"
    generate(landing, contacts=args.contacts, seed=args.seed, as_of=AS_OF)
    defs = build_definitions(load_deployment(ROOT / "examples" / "demo"), wh, landing, work / "feeds",
                             args.memory_limit)
    job = defs.resolve_job_def("daily_job")
    instance = dg.DagsterInstance.ephemeral()

    def run(day: dt.date) -> dict:
        t = time.perf_counter()
        result = job.execute_in_process(partition_key=day.isoformat(), instance=instance, raise_on_error=False)
        failed_checks = sorted({e.check_name for e in result.get_asset_check_evaluations() if not e.passed})
        return {"day": day.isoformat(), "success": result.success, "wall_s": round(time.perf_counter() - t, 1),
                "failed_checks": failed_checks}

    days = [run(AS_OF)]
    # day 2: a CRM file with the changed contacts
    src = next((landing / "crm").glob("crm_contacts_*.csv"))
    rows = list(csv.reader(io.StringIO(src.read_text(encoding="cp1252")), delimiter=";"))
    header, body = rows[0], [r for r in rows[1:] if len(r) == len(rows[0]) and r[0]]
    i_email, i_mod = header.index("email"), header.index("data_modifica")
    rng = random.Random(args.seed)
    picked = rng.sample(range(len(body)), int(len(body) * args.changed))
    out = []
    for n, i in enumerate(picked):
        r = list(body[i])
        if n % 2 == 0:
            r[i_email] = body[rng.randrange(len(body))][i_email]  # someone else's address: a merge
        else:
            r[i_email] = f"moved.{n}@example.org"                  # a new address: a split
        r[i_mod] = "01/11/2026 12:00"
        out.append(r)
    buf = io.StringIO()
    csv.writer(buf, delimiter=";", lineterminator="\n").writerows([header, *out])
    day2 = AS_OF + dt.timedelta(days=1)
    (landing / "crm" / f"crm_contacts_{day2:%Y%m%d}.csv").write_bytes(buf.getvalue().encode("cp1252", "replace"))
    days.append(run(day2))
    con = connect(wh)
    try:
        merges, splits = con.execute("""
            SELECT count(*) FILTER (WHERE event = 'merged'), count(*) FILTER (WHERE event = 'split')
            FROM core.merge_log WHERE logged_at = (SELECT max(logged_at) FROM core.merge_log
                                                   WHERE event IN ('merged', 'split'))""").fetchone()
    finally:
        con.close()
    days.append(run(day2 + dt.timedelta(days=1)))
    result = {"contacts": args.contacts, "changed_records": len(out), "merges_day2": int(merges),
              "splits_day2": int(splits), "days": days}
    print(json.dumps(result, indent=2))
    res_dir = ROOT / "bench" / "out"
    res_dir.mkdir(parents=True, exist_ok=True)
    (res_dir / f"second_day_{args.contacts}.json").write_text(json.dumps(result, indent=2))
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if all(d["success"] for d in days) else 1


if __name__ == "__main__":
    sys.exit(main())
