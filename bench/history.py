"""As-of versions (tessera.history) against a full copy per day, on the same synthetic cards.

Prints, for a first day and a day with ``--changed`` of the rows changed: seconds, rows
stored and rows/s for the versions and for the alternative (a full snapshot table per
day), the rows each keeps, the time to read a past day back, and peak RSS.
"""

from __future__ import annotations

import argparse
import datetime as dt
import resource
import tempfile
import time
from pathlib import Path

from tessera.engine import DuckDBEngine, SqlStep
from tessera.engine.warehouse import connect
from tessera.history import day_engine, record_day

D1, D2 = dt.date(2026, 11, 1), dt.date(2026, 11, 2)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rows", type=int, default=1_000_000, help="contact cards")
    ap.add_argument("--changed", type=float, default=0.01, help="share of cards changed on day 2")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        con = connect(Path(tmp) / "bench.duckdb")
        con.execute("SET enable_progress_bar = false")
        con.execute("CREATE SCHEMA marts")
        con.execute(f"""CREATE TABLE marts.contact_cards AS SELECT range AS customer_id,
            'name' || range AS first_name, 'surname' || (range % 5000) AS last_name,
            'p' || range || '@example.org' AS email, range % 97 AS order_number,
            CAST(range % 1000 AS DECIMAL(18,2)) AS order_summary,
            DATE '2020-01-01' + CAST(range % 1500 AS INTEGER) AS last_order_date,
            ['a', 'b'] AS nodes, now() AS golden_built_at FROM range({args.rows})""")
        engine = DuckDBEngine(con)
        every = max(1, round(1 / args.changed))
        print(f"{args.rows:,} contact cards, {1 / every:.1%} changed on day 2")
        for day in (D1, D2):
            if day == D2:
                con.execute(f"UPDATE marts.contact_cards SET order_number = order_number + 1 "
                            f"WHERE customer_id % {every} = 0")
            t = time.perf_counter()
            out = record_day(engine, day, f"bench-{day}", dt.datetime.now())["tables"]["marts.contact_cards"]
            versions = time.perf_counter() - t
            t = time.perf_counter()
            con.execute(f"CREATE TABLE marts.cards_{day:%Y%m%d} AS SELECT * FROM marts.contact_cards")
            copy = time.perf_counter() - t
            print(f"  {day}: versions {versions:6.2f} s, {out['opened']:,} opened + {out['closed']:,} closed "
                  f"({args.rows / versions:,.0f} rows/s read) | full copy {copy:6.2f} s, {args.rows:,} rows "
                  f"({args.rows / copy:,.0f} rows/s)")
        kept = con.execute("SELECT count(*) FROM history.marts__contact_cards").fetchone()[0]
        print(f"  rows kept for two days: versions {kept:,} | full copies {2 * args.rows:,}")
        t = time.perf_counter()
        total = day_engine(engine, D1).scalar(
            SqlStep("bench.read", "SELECT sum(order_number) FROM marts.contact_cards"))
        read = time.perf_counter() - t
        t = time.perf_counter()
        con.execute(f"SELECT sum(order_number) FROM marts.cards_{D1:%Y%m%d}").fetchone()
        print(f"  read day 1 back: versions {read:.2f} s | full copy {time.perf_counter() - t:.2f} s "
              f"(sum {total:,})")
        print(f"  peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:,.0f} MB")
        con.close()


if __name__ == "__main__":
    main()
