"""CSV ingestion throughput against DuckDB's own reader, on one generated file.

    python bench/ingest_csv.py [--rows 100000] [--encoding cp1252]

Writes a CRM-like export (``;``-separated, quoted fields with embedded newlines,
Italian and Polish names) with the demo's crm_contacts header, then times:

- ``fingerprint``: sha256 + strict decode pass;
- ``read``: Tessera's reader into Arrow batches (the rows/s that matter here);
- ``ingest``: the whole ``ingest_source`` (read, typing and validation SQL, one
  transaction) into a fresh DuckDB file;
- ``duckdb read_csv``: DuckDB's reader on a UTF-8 copy of the same file with a declared
  dialect, all_varchar and strict mode: the reference, which has no line numbers and
  no cp1250/cp1252 decoding without an extension download.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import io
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

FIRST = ["Niccolò", "Anna", "Łukasz", "Zoë", "Luca", "Giulia", "Wojciech", "Chiara", "Marco"]
LAST = ["D'Amato", "Rossi", "Wójcik", "Bianchi", "Esposito", "Kowalski", "Ricci", "Müller"]


def make_file(path: Path, rows: int, encoding: str, seed: int = 1) -> None:
    from tessera.config import load_deployment

    src = load_deployment(ROOT / "examples" / "demo").source("crm_contacts")
    rnd = random.Random(seed)
    buf = io.StringIO(newline="")
    w = csv.writer(buf, delimiter=";", lineterminator="\r\n")
    w.writerow(list(src.columns.values()))
    for i in range(rows):
        first, last = rnd.choice(FIRST), rnd.choice(LAST)
        if encoding == "cp1252":
            first, last = first.replace("Ł", "L"), last
        note = "Via Roma 1\r\nscala B" if i % 50 == 0 else f"Via Garibaldi {i % 300}"
        w.writerow([f"C{i:07d}", first, last, f"user{i}@example.it", f"+39 347 {i % 10_000_000:07d}",
                    f"{1 + i % 28:02d}/{1 + i % 12:02d}/{1950 + i % 50}", rnd.choice("MF"), note,
                    f"{i % 100000:05d}", "Roma", "RM", "IT", "", rnd.choice(["si", "no"]),
                    "01/10/2026 10:30", rnd.choice(["gold", "silver", ""])])
    path.write_bytes(buf.getvalue().encode(encoding))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--encoding", default="cp1252")
    ap.add_argument("--repeat", type=int, default=5, help="runs per measurement; the best is shown")
    args = ap.parse_args()

    import duckdb

    from tessera.config import load_deployment
    from tessera.ingest.load import ingest_source
    from tessera.ingest.readers import (READERS, ReadResult, fingerprint_and_check_encoding,
                                        read_csv_python)
    from tessera.warehouse import connect, ensure_warehouse

    dep = load_deployment(ROOT / "examples" / "demo")
    src = dep.source("crm_contacts")
    if args.encoding != "cp1252":
        src = src.model_copy(update={"csv": src.csv.model_copy(update={"encoding": args.encoding})})
    work = Path(tempfile.mkdtemp(prefix="tessera-csv-bench-"))
    landing = work / "landing"
    path = landing / "crm" / "crm_contacts_20261101.csv"
    path.parent.mkdir(parents=True)
    make_file(path, args.rows, args.encoding)
    utf8 = work / "utf8.csv"
    utf8.write_bytes(path.read_bytes().decode(args.encoding).encode("utf-8"))
    mb = path.stat().st_size / 1e6
    out = {}

    cols = {c: "VARCHAR" for c in src.columns.values()}

    def best(fn) -> float:
        times = []
        for _ in range(args.repeat):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
        return min(times)

    def read_with(reader):
        def run():
            res = ReadResult()
            n = sum(b.num_rows for b in reader(path, src, res))
            assert n == args.rows, (n, res.problems[:3])
        return run

    def ingest():
        wh = work / "wh.duckdb"
        wh.unlink(missing_ok=True)
        con = connect(wh)
        ensure_warehouse(con)
        outcome = ingest_source(con, dep, src, landing, "bench", dt.datetime(2026, 11, 1))
        f = outcome.files[0]
        assert f.records == args.rows and f.rejected == 0, (f.records, f.rejected)
        con.close()

    def duck():
        m = duckdb.connect()
        m.execute("CREATE TABLE x AS SELECT * FROM read_csv(?, delim=';', quote='\"', escape='\"', "
                  "header=true, all_varchar=true, strict_mode=true, auto_detect=false, columns=?)",
                  [str(utf8), cols])
        assert m.execute("SELECT count(*) FROM x").fetchone()[0] == args.rows

    out["fingerprint + encoding check"] = best(lambda: fingerprint_and_check_encoding(path, args.encoding))
    out["read (pyarrow fast path)"] = best(read_with(READERS["csv"]))
    out["read (Python csv path)"] = best(read_with(read_csv_python))
    out["ingest_source (whole)"] = best(ingest)
    out["duckdb read_csv into table"] = best(duck)

    print(f"{args.rows} rows, {mb:.1f} MB, {args.encoding}, best of {args.repeat}")
    for k, v in out.items():
        print(f"  {k:<28} {v:7.3f} s  {args.rows / v:>12,.0f} rows/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
