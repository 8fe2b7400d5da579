"""Feed export benchmark: a contact feed of N rows in each format, and a diff day with 1 %
of the contacts changed against a full export, on a synthetic warehouse.

    .venv/bin/python bench/feeds.py --rows 1000000 [--formats csv,jsonl,parquet,xml,xlsx]
        [--repeat 2]

The diff feed carries the card's fields (no RFM; ``csv_card`` is its full export on the
same day), and the card's versions are recorded
(``history/days``, untimed) on both days, so the 1 % day can select only the changed
contacts (``diff_1pct``); ``diff_1pct_full`` is the same day compared in full (what every
diff day did before), each on its own copy of the same warehouse, alternately
(``--repeat`` pairs), with wall and CPU seconds (the machine is shared).

Each export runs in its own process (so each peak RSS is its own). The alternative on
the same data is the writer the feeds had before (all rows fetched into Python, then the
csv module), for CSV. Prints, and writes to bench/out/feeds.json: seconds, rows/s, file
size and peak RSS per run.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import multiprocessing as mp
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DAY = dt.date(2026, 11, 2)
FIELDS = ["customer_id", "email", "mobile", "first_name", "last_name", "city", "rfm_group",
          "order_summary"]
DIFF_FIELDS = [f for f in FIELDS if f != "rfm_group"]


def _world(path: Path, rows: int) -> None:
    from tessera.engine.warehouse import connect, ensure_warehouse
    from tessera.privacy import suppression as privacy_core

    con = connect(path)
    ensure_warehouse(con)
    privacy_core.ensure_tables(con)
    con.execute(f"""
        CREATE TABLE marts.contact_cards AS
        SELECT range AS customer_id, 'person' || range || '@example.it' AS email,
               '+39 3' || lpad(CAST(range % 100000000 AS VARCHAR), 9, '0') AS mobile,
               (['Anna', 'Łucja', 'Zoë', 'Marco', '=cmd'])[1 + range % 5] AS first_name,
               'Rossi' || (range % 977) AS last_name,
               (['Milano', 'Torino', 'Kraków', 'Città di Castello'])[1 + range % 4] AS city,
               CAST((range % 100000) / 100.0 AS DECIMAL(12, 2)) AS order_summary,
               CASE WHEN range % 10 = 0 THEN 'denied' ELSE 'granted' END AS email_consent,
               'granted' AS sms_consent, FALSE AS email_hard_bounced
        FROM range({rows})""")
    con.execute("""CREATE TABLE marketing.rfm_scores AS SELECT customer_id, DATE '2026-11-02' AS as_of_date,
                   (['champions', 'loyal', 'at_risk'])[1 + customer_id % 3] AS rfm_group
                   FROM marts.contact_cards""")
    _record(con, DAY)
    con.close()


def _record(con, day: dt.date) -> None:
    from tessera.engine import as_engine
    from tessera.history import record_day

    record_day(as_engine(con), day, f"bench-{day}", dt.datetime(2026, 11, 2, 5))


def _next_day(db: str) -> None:
    """1 % of the contacts change for the next day, whose versions are recorded."""
    from tessera.engine.warehouse import connect

    con = connect(Path(db))
    con.execute("UPDATE marts.contact_cards SET city = 'Bologna' WHERE customer_id % 100 = 7")
    con.execute("INSERT INTO marketing.rfm_scores SELECT customer_id, DATE '2026-11-03', rfm_group "
                "FROM marketing.rfm_scores WHERE as_of_date = DATE '2026-11-02'")
    _record(con, DAY + dt.timedelta(days=1))
    con.close()


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _run(kind: str, db: str, out: str, queue) -> None:
    from tessera.engine.warehouse import connect
    from tessera.feeds.publish import build_feed, publish_csv
    from tessera.feeds.selection import feed_rows_step
    from tessera.privacy import suppression as privacy_core
    from tessera.settings.feeds import FeedDef

    con = connect(Path(db))
    privacy_core.install_hmac(con, "bench-key")
    now = dt.datetime(2026, 11, 2, 6)
    base, cpu = time.perf_counter(), _cpu()
    if kind == "python_csv":  # the writer before: every row a Python tuple, then csv
        f = FeedDef(name="old", channel="email", fields=FIELDS)
        step = feed_rows_step(f, DAY)
        table = con.execute(step.sql, step.params).to_arrow_table()
        rows = list(zip(*table.to_pydict().values()))
        publish_csv(Path(out) / "old.csv", table.column_names, rows, False)
        n, size = len(rows), (Path(out) / "old.csv").stat().st_size
    elif kind == "csv_card":  # the full export of the diff feed's fields, on the same day
        f = FeedDef(name="full_card", channel="email", format="csv", fields=DIFF_FIELDS)
        stats = build_feed(con, f, DAY + dt.timedelta(days=1), Path(out), now)
        n = stats["rows"]
        size = (Path(out) / f.name / stats["files"][0]["file"]).stat().st_size
    elif kind.startswith("diff"):
        f = FeedDef(name="dif", channel="email", mode="diff", format="csv", fields=DIFF_FIELDS)
        if kind == "diff_first":
            stats = build_feed(con, f, DAY, Path(out), now)
        else:  # 1 % of the contacts changed the next day (_next_day)
            stats = build_feed(con, f, DAY + dt.timedelta(days=1), Path(out), now,
                               incremental=kind == "diff_1pct")
            assert stats["diff_path"] == ("incremental" if kind == "diff_1pct" else "incremental off")
        n = sum(x["rows"] for x in stats["files"])
        size = sum((Path(out) / "dif" / x["file"]).stat().st_size for x in stats["files"])
    else:
        f = FeedDef(name=f"f_{kind}", channel="email", format=kind, fields=FIELDS)
        stats = build_feed(con, f, DAY, Path(out), now)
        n = stats["rows"]
        size = (Path(out) / f.name / stats["files"][0]["file"]).stat().st_size
    seconds, cpu = time.perf_counter() - base, _cpu() - cpu
    con.close()
    queue.put({"run": kind, "rows": n, "seconds": round(seconds, 2), "cpu_s": round(cpu, 2),
               "rows_per_s": round(n / seconds) if seconds else None,
               "file_mb": round(size / 1e6, 1), "peak_rss_mb": round(_peak_mb())})


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--formats", default="csv,jsonl,parquet,xml,xlsx")
    ap.add_argument("--no-baseline", action="store_true")
    ap.add_argument("--repeat", type=int, default=2, help="pairs of 1 %% diff days (full, changed only)")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="tessera-bench-feeds-"))
    try:
        db = work / "w.duckdb"
        t = time.perf_counter()
        _world(db, args.rows)
        print(f"synthetic warehouse: {args.rows} contacts in {time.perf_counter() - t:.1f} s")
        runs = args.formats.split(",") + ([] if args.no_baseline else ["python_csv"])
        runs += ["diff_first"] + ["csv_card", "diff_1pct_full", "diff_1pct"] * args.repeat
        results = []
        ctx = mp.get_context("spawn")
        snap = work / "day2.duckdb"
        for kind in runs:
            target = db
            if kind.startswith("diff_1pct") or kind == "csv_card":
                if not snap.exists():  # the day after diff_first, prepared once, untimed
                    p = ctx.Process(target=_next_day, args=(str(db),))
                    p.start()
                    p.join()
                    shutil.copy(db, snap)
                    shutil.copytree(work / "out", work / "out_day1")
                target = work / "run.duckdb"
                shutil.copy(snap, target)
                shutil.rmtree(work / "out", ignore_errors=True)
                shutil.copytree(work / "out_day1", work / "out")
            q = ctx.Queue()
            p = ctx.Process(target=_run, args=(kind, str(target), str(work / "out"), q))
            p.start()
            r = q.get()
            p.join()
            results.append(r)
            print(f"{r['run']:>14}: {r['rows']:>9} rows in {r['seconds']:>7.2f} s "
                  f"(CPU {r['cpu_s']:>6.2f} s, {r['rows_per_s'] or 0:>9} rows/s), "
                  f"{r['file_mb']:>7.1f} MB, peak RSS {r['peak_rss_mb']} MB")
        full = [r for r in results if r["run"] == "csv_card"]
        for kind in ("diff_1pct_full", "diff_1pct"):
            mine = [r for r in results if r["run"] == kind]
            print(f"{kind}: " + ", ".join(f"{d['seconds'] / c['seconds']:.0%} (CPU {d['cpu_s'] / c['cpu_s']:.0%})"
                                          for d, c in zip(mine, full))
                  + " of the full CSV export of the same fields, run just before it")
        out = ROOT / "bench" / "out"
        out.mkdir(exist_ok=True)
        (out / "feeds.json").write_text(json.dumps({"rows": args.rows, "runs": results}, indent=2))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
