"""Ingestion benchmark: CSV and XML contacts, XML order lines, against DuckDB's read_csv.

    python bench/ingest/run.py --contacts 1000000 --lines 10000000 [--workdir DIR] [--keep]
                               [--baseline /path/to/other/checkout] [--repeat 1]

Generates, with DuckDB SQL (parallel, seconds even at 10 M records):

- ``crm/contacts.csv``: the demo's ``crm_contacts`` layout, ``;``-separated UTF-8, accented
  Italian and Polish names, a quoted address with a line break in every 50th record;
- ``erp/contacts_<n>.xml``: the Sendero ``anagrafiche-b2c`` layout (``<utente>``), at the
  full size and at a tenth of it, to show that the XML reader's memory does not grow
  with the file;
- ``ecommerce/dettaglio-ordini.xml``: the Sendero ``dettaglio-ordini`` layout
  (``<dettaglio>``), LINES records;
- ``web/web_events.jsonl``: the demo's ``web_events`` layout (JSON lines, a nested
  ``properties`` object), as many events as contacts.

Then runs every case in its own Python process, so that each peak RSS
(``ru_maxrss``) belongs to that case alone: Tessera's whole contract-checked
``ingest_source`` (fingerprint, encoding check, reading, typing and validation, one
transaction into ``raw``, closing the warehouse file) for each file, and DuckDB's plain
``read_csv`` of the same CSV into a table of a database file (declared dialect, all
strings, strict mode, no sniffing; closed too). It prints records/s, MB/s and peak
RSS per case, and the CSV ratio against DuckDB. ``--baseline DIR`` runs the Tessera
cases a second time with the ``tessera`` package of another checkout (before/after).
Results go to ``bench/out/ingest_<contacts>_<lines>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

CSV_HEADER = ["crm_id", "nome", "cognome", "email", "cellulare", "data_nascita", "sesso",
              "indirizzo", "cap", "citta", "provincia", "paese", "codice_fiscale",
              "consenso_email", "data_modifica", "livello_fedelta", "proprietario"]
FIRST = ["Niccolò", "Anna", "Łukasz", "Zoë", "Luca", "Giulia", "Wojciech", "Chiara", "Marco",
         "Agnieszka"]
LAST = ["D'Amato", "Rossi", "Wójcik", "Bianchi", "Esposito", "Kowalski", "Ricci", "Müller",
        "Żak", "Colombo"]


def _pick(values: list[str], salt: int) -> str:
    arr = "[" + ", ".join("'" + v.replace("'", "''") + "'" for v in values) + "]"
    return f"{arr}[(hash(i + {salt}) % {len(values)})::INT + 1]"


def _sendero(table: str, container: str, tag: str, fields: list[tuple[str, str]], n: int,
             path: Path) -> None:
    """One Sendero XML file of n records, written by DuckDB's COPY in record order."""
    import duckdb

    head = (f'<?xml version="1.0" encoding="UTF-8"?>\n<sincronizza>\n<commons>\n'
            f"<table>{table}</table>\n</commons>\n<{container}>\n")
    foot = f"\n</{container}>\n</sincronizza>"
    body = " || ".join([f"'<{tag}>\n'"] + [f"'<{name}>' || ({expr}) || '</{name}>\n'"
                                             for name, expr in fields] + [f"'</{tag}>'"])
    con = duckdb.connect()
    con.execute(f"""
        COPY (SELECT CASE WHEN i = 0 THEN ? ELSE '' END || {body}
                     || CASE WHEN i = {n - 1} THEN ? ELSE '' END
              FROM range({n}) r(i))
        TO '{path}' (FORMAT csv, HEADER false, QUOTE '', ESCAPE '', DELIMITER '\x01')""",
                [head, foot])
    con.close()


def generate(landing: Path, contacts: int, lines: int) -> dict[str, Path]:
    import duckdb

    files = {"csv": landing / "csv" / "contacts.csv",
             "xml_small": landing / "xml_small" / f"contacts_{max(1, contacts // 10)}.xml",
             "xml": landing / "xml" / f"contacts_{contacts}.xml",
             "order_lines": landing / "order_lines" / "dettaglio-ordini.xml",
             "events": landing / "web" / "web_events.jsonl"}
    for p in files.values():
        p.parent.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect()
    con.execute(f"""
        COPY (SELECT printf('C%08d', i) AS crm_id, {_pick(FIRST, 1)} AS nome,
                     {_pick(LAST, 2)} AS cognome, 'user' || i || '@example.it' AS email,
                     printf('+39 347 %07d', i % 10000000) AS cellulare,
                     printf('%02d/%02d/%d', 1 + i % 28, 1 + i % 12, 1950 + i % 50) AS data_nascita,
                     CASE WHEN i % 2 = 0 THEN 'F' ELSE 'M' END AS sesso,
                     CASE WHEN i % 50 = 0 THEN 'Via Roma 1' || chr(13) || chr(10) || 'scala B'
                          ELSE 'Via Garibaldi ' || (i % 300) END AS indirizzo,
                     printf('%05d', i % 100000) AS cap, 'Roma' AS citta, 'RM' AS provincia,
                     'IT' AS paese, '' AS codice_fiscale,
                     CASE WHEN i % 3 = 0 THEN 'no' ELSE 'si' END AS consenso_email,
                     '01/10/2026 10:30' AS data_modifica,
                     {_pick(['gold', 'silver', ''], 3)} AS livello_fedelta,
                     {_pick(['m.rossi', 'a.nowak', ''], 4)} AS proprietario
              FROM range({contacts}) r(i))
        TO '{files["csv"]}' (HEADER, DELIMITER ';', QUOTE '"', NEW_LINE '\r\n')""")
    con.close()
    erp = [("idgestionale", "printf('ERP%08d', i)"), ("nome", _pick(FIRST, 1)),
           ("cognome", _pick(LAST, 2)), ("email", "'user' || i || '@example.it'"),
           ("telefonocellulare", "printf('+39 347 %07d', i % 10000000)"),
           ("telefonofisso", "''"), ("indirizzo", "'Via Garibaldi ' || (i % 300)"),
           ("cap", "printf('%05d', i % 100000)"), ("citta", "'Roma'"), ("provinciaiso", "'RM'"),
           ("paeseiso", "'IT'"),
           ("datanascita", "printf('%02d/%02d/%d', 1 + i % 28, 1 + i % 12, 1950 + i % 50)"),
           ("sesso", "CASE WHEN i % 2 = 0 THEN 'F' ELSE 'M' END"), ("codicefiscale", "''"),
           ("datamodifica", "'2026-10-01T10:30:00'")]
    _sendero("anagrafiche-b2c", "utenti", "utente", erp, max(1, contacts // 10), files["xml_small"])
    _sendero("anagrafiche-b2c", "utenti", "utente", erp, contacts, files["xml"])
    det = [("idDettaglioOrdine", "i + 1"), ("idOrdine", "i // 2 + 1"),
           ("idProdotto", "1 + hash(i) % 5000"), ("idServizio", "''"),
           ("quantita", "1 + i % 4"), ("prezzo", "printf('%d.%02d', 5 + i % 200, i % 100)")]
    _sendero("dettaglio-ordini", "ordini", "dettaglio", det, lines, files["order_lines"])
    con = duckdb.connect()
    con.execute(f"""
        COPY (SELECT printf('EV%08d', i) AS event_id,
                     {_pick(['page_view', 'email_open', 'cart', 'form_fill'], 5)} AS type,
                     strftime(TIMESTAMP '2026-08-01' + to_seconds(i), '%Y-%m-%dT%H:%M:%SZ') AS occurred_at,
                     'user' || (i % 100000) || '@example.it' AS email,
                     {{'url': '/it/prodotti/' || (i % 500), 'device': 'mobile',
                       'os': 'Android', 'browser': 'Chrome'}} AS properties
              FROM range({contacts}) r(i))
        TO '{files["events"]}' (FORMAT JSON)""")
    con.close()
    return files


# --------------------------------------------------------------------------- #
# One case, in its own process
# --------------------------------------------------------------------------- #
def run_case(case: str, path: Path, warehouse: Path) -> dict:
    import datetime as dt

    warehouse.unlink(missing_ok=True)
    if case == "duckdb_read_csv":
        import duckdb

        cols = {f"c{i}": "VARCHAR" for i in range(len(CSV_HEADER))}
        t = time.perf_counter()
        con = duckdb.connect(str(warehouse))
        con.execute("CREATE TABLE contacts AS SELECT * FROM read_csv(?, delim = ';', quote = '\"', "
                    "escape = '\"', header = true, auto_detect = false, strict_mode = true, "
                    "columns = ?)", [str(path), cols])
        records = con.execute("SELECT count(*) FROM contacts").fetchall()[0][0]
        con.close()
        seconds = time.perf_counter() - t
        return {"records": records, "rejected": 0, "seconds": seconds,
                "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}

    from tessera.deployment import load_deployment
    from tessera.ingest.load import ingest_source
    from tessera.engine.warehouse import connect, ensure_warehouse

    import tessera

    # The demo configuration of the checkout whose code runs (a baseline has its own).
    dep = load_deployment(Path(tessera.__file__).resolve().parents[1] / "examples" / "demo")
    name = {"csv": "crm_contacts", "xml": "erp_contacts", "xml_small": "erp_contacts",
            "order_lines": "shop_order_lines", "events": "web_events"}[case]
    src = dep.source(name)
    update = {"path": path.name}
    if case == "csv":
        update["csv"] = src.csv.model_copy(update={"encoding": "utf-8"})
    src = src.model_copy(update=update)
    con = connect(warehouse, memory_limit=os.environ.get("TESSERA_BENCH_MEMORY_LIMIT") or None)
    ensure_warehouse(con)
    t = time.perf_counter()
    outcome = ingest_source(con, dep, src, path.parent, "bench", dt.datetime(2026, 11, 1))
    con.close()
    seconds = time.perf_counter() - t
    f = outcome.files[0]
    return {"records": f.records, "rejected": f.rejected, "status": f.status, "seconds": seconds,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def _subprocess(case: str, path: Path, warehouse: Path, code: Path,
                memory_limit: str | None = None) -> dict:
    env = dict(os.environ, PYTHONPATH=str(code), GX_ANALYTICS_ENABLED="False",
               TESSERA_BENCH_MEMORY_LIMIT=memory_limit or "")
    out = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--case", case, "--file", str(path),
         "--warehouse", str(warehouse)],
        env=env, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f"case {case} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--contacts", type=int, default=100_000)
    ap.add_argument("--lines", type=int, default=1_000_000)
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--repeat", type=int, default=1, help="runs per case; the fastest is kept")
    ap.add_argument("--baseline", default=None, help="another checkout whose tessera to time too")
    ap.add_argument("--memory-limit", default=None,
                    help="DuckDB memory_limit for Tessera's warehouse, e.g. 512MB (default: DuckDB's)")
    ap.add_argument("--cases", default="duckdb_read_csv,csv,xml_small,xml,order_lines,events",
                    help="comma-separated subset of the cases")
    ap.add_argument("--case", help=argparse.SUPPRESS)
    ap.add_argument("--file", help=argparse.SUPPRESS)
    ap.add_argument("--warehouse", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.case:
        print(json.dumps(run_case(args.case, Path(args.file), Path(args.warehouse))))
        return 0

    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="tessera-ingest-"))
    t = time.perf_counter()
    files = generate(work / "landing", args.contacts, args.lines)
    t_gen = time.perf_counter() - t
    print(f"generated {args.contacts:,} contacts (CSV, XML, XML/10), as many events (JSON lines) and {args.lines:,} order "
          f"lines in {t_gen:.1f} s under {work}")
    cases = [("duckdb_read_csv", "csv"), ("csv", "csv"), ("xml_small", "xml_small"),
             ("xml", "xml"), ("order_lines", "order_lines"), ("events", "events")]
    wanted = set(args.cases.split(","))
    cases = [(c, k) for c, k in cases if c in wanted]
    codes = [("tessera", ROOT)] + ([("baseline", Path(args.baseline).resolve())] if args.baseline else [])
    results = []
    for label, code in codes:
        for case, key in cases:
            if case == "duckdb_read_csv" and label != "tessera":
                continue
            path = files[key]
            runs = [_subprocess(case, path, work / f"{case}.duckdb", code, args.memory_limit)
                    for _ in range(args.repeat)]
            best = min(runs, key=lambda r: r["seconds"])
            mb = path.stat().st_size / 1e6
            best.update(code=label, case=case, file=path.name, file_mb=round(mb, 1),
                        rows_per_s=best["records"] / best["seconds"], mb_per_s=mb / best["seconds"])
            results.append(best)
            print(f"  {label:<8} {case:<16} {best['records']:>11,} rec {mb:>8.1f} MB "
                  f"{best['seconds']:>7.2f} s {best['rows_per_s']:>11,.0f} rec/s "
                  f"{best['mb_per_s']:>6.1f} MB/s  peak RSS {best['peak_rss_mb']:>6.0f} MB", flush=True)
    ref = next((r for r in results if r["case"] == "duckdb_read_csv"), None)
    for r in results:
        if r["case"] == "csv" and ref:
            print(f"  {r['code']}: contract-checked CSV ingest at {ref['seconds'] / r['seconds']:.0%} "
                  f"of DuckDB read_csv-into-a-table throughput")
    out_dir = ROOT / "bench" / "out"
    out_dir.mkdir(exist_ok=True)
    out = out_dir / f"ingest_{args.contacts}_{args.lines}.json"
    out.write_text(json.dumps({"contacts": args.contacts, "lines": args.lines,
                               "memory_limit": args.memory_limit,
                               "generate_s": t_gen, "cases": results}, indent=2))
    print(f"results: {out}")
    if not args.keep and not args.workdir:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
