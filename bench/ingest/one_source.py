"""One source's files loaded alone, as the daily job loads them: time, rate, peak RSS.

    .venv/bin/python bench/ingest/one_source.py web_events /path/to/landing [--memory-limit 6GB]

Loads every file of the demo deployment's source ``SOURCE`` under ``LANDING`` (its
``path`` pattern, e.g. ``web/web_events_*.jsonl``) into a fresh warehouse with
``ingest_source``, printing the progress lines of ``tessera run`` (each file's read,
check and comparison steps) and at the end the wall and CPU seconds and the peak RSS of
the process. Used for the reference event file of ``make bench SCALE=1`` (issue #19):
point LANDING at the bench's kept landing folder.
"""

from __future__ import annotations

import argparse
import datetime as dt
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("source")
    ap.add_argument("landing")
    ap.add_argument("--memory-limit", default=None, help="the warehouse's bound (default: 30%% of the machine)")
    ap.add_argument("--warehouse", default=None, help="warehouse file (default: a temporary one)")
    args = ap.parse_args()

    from tessera.deployment import load_deployment
    from tessera.engine.warehouse import connect, ensure_warehouse
    from tessera.ingest.load import ingest_source

    dep = load_deployment(ROOT / "examples" / "demo")
    src = dep.source(args.source)
    with tempfile.TemporaryDirectory(prefix="tessera-one-source-") as tmp:
        wh = Path(args.warehouse) if args.warehouse else Path(tmp) / "warehouse.duckdb"
        con = connect(wh, memory_limit=args.memory_limit)
        ensure_warehouse(con)
        limit = con.execute("SELECT current_setting('memory_limit')").fetchone()[0]
        t, c = time.perf_counter(), time.process_time()
        out = ingest_source(con, dep, src, Path(args.landing), "bench", now=dt.datetime.now().replace(microsecond=0),
                            progress=print)
        wall, cpu = time.perf_counter() - t, time.process_time() - c
        con.close()
    records = out.total("records")
    print(f"{args.source}: {len(out.files)} file(s), {records:,} records in {wall:.1f} s wall "
          f"({records / max(wall, 1e-3):,.0f}/s), {cpu:.1f} CPU s, peak RSS "
          f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:,.0f} MB, warehouse limit {limit}")
    return 0 if all(f.status in ("loaded", "already_loaded", "empty") for f in out.files) else 1


if __name__ == "__main__":
    sys.exit(main())
