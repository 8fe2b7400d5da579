"""Benchmark of the web page: search and card latency through the real server.

    python bench/web.py --contacts 100000 --events 5000000 [--requests 40]

Generates the synthetic warehouse of ``bench/segments.py`` (customers, orders, lines,
events with JSON properties over a year) and gives every customer a name, surname,
mobile and birth date, builds the contact card and RFM, then starts ``tessera.web`` with
uvicorn in its own process and times, over HTTP, searches (a surname, a surname and a
birth year, an e-mail, phone digits) and card tabs (profile, orders, timeline, RFM) of
random customers. Each request opens the warehouse read-only, as in production.

Three settings of the same data, measured one after the other while the server runs:

1. the warehouse read directly (read-only per request), with ``marts.contact_search``:
   what the page did before the snapshot, and still does before the first publication;
2. the published snapshot (``tessera.web.snapshot``: Parquet in customer order), which
   the daily job now writes at its end; publishing is timed;
3. the snapshot while a writer holds the warehouse (as a running daily job does): the
   first setting answers 503 then; this one must answer as fast as the second.

Prints p50 / p95 / max milliseconds per kind, requests per second, and the peak memory
of the server and of this process. Results go to bench/out/ as JSON.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import random
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SURNAMES = ["Rossi", "Russo", "Ferrari", "Esposito", "Bianchi", "Romano", "Colombo", "Ricci",
            "Marino", "Greco", "Bruno", "Gallo", "Conti", "De Luca", "Mancini", "Costa",
            "Giordano", "Rizzo", "Lombardi", "Moretti", "Nowak", "Kowalski", "Wiśniewski",
            "Wójcik", "Kowalczyk", "Kamiński", "Lewandowski", "Zieliński", "Szymański", "Niccolò"]
NAMES = ["Marco", "Giulia", "Luca", "Francesca", "Andrea", "Sara", "Matteo", "Chiara",
         "Piotr", "Anna", "Krzysztof", "Maria", "Tomasz", "Katarzyna", "Lorenzo", "Martina"]


def _segments_bench():
    spec = importlib.util.spec_from_file_location("bench_segments", ROOT / "bench" / "segments.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def build(warehouse: Path, contacts: int, events: int, memory_limit: str | None) -> dict:
    from tessera.card.marts import build_contact_cards
    from tessera.engine.warehouse import connect, ensure_warehouse
    from tessera.marketing.rfm import build_rfm

    con = connect(warehouse, memory_limit=memory_limit)
    ensure_warehouse(con)
    t0 = time.perf_counter()
    seg = _segments_bench()
    seg.generate(con, contacts, events)
    _heavy_people(con)
    surnames = "[" + ", ".join(f"'{s}'" for s in SURNAMES) + "]"
    names = "[" + ", ".join(f"'{s}'" for s in NAMES) + "]"
    con.execute(f"""
        CREATE OR REPLACE TABLE core.customers AS
        SELECT customer_id, 'ERP' || customer_id AS erp_id, email,
               {names}[1 + (hash(customer_id * 53) % {len(NAMES)})::INT] AS first_name,
               {surnames}[1 + (hash(customer_id * 59) % {len(SURNAMES)})::INT] AS last_name,
               '+393' || lpad(CAST(hash(customer_id * 61) % 1000000000 AS VARCHAR), 9, '0') AS mobile,
               '' AS phone, '' AS address, '' AS postcode, city, '' AS province, country,
               birth_date, gender, '' AS tax_code, loyalty_tier, email_consent, sms_consent,
               email_hard_bounced, source_count, ['bench'] AS nodes,
               TIMESTAMP '2026-11-01 00:00:00' AS updated_at, now()::TIMESTAMP AS golden_built_at
        FROM core.customers""")
    # the columns of core.orders the synthetic warehouse leaves out
    con.execute("ALTER TABLE core.orders ADD COLUMN source VARCHAR DEFAULT 'shop_orders'")
    con.execute("ALTER TABLE core.orders ADD COLUMN customer_ref VARCHAR")
    _activation_and_costs(con)
    con.execute("CHECKPOINT")
    generated = time.perf_counter() - t0
    t0 = time.perf_counter()
    build_contact_cards(con)
    build_rfm(con, seg.AS_OF)
    con.execute("CHECKPOINT")
    marts = time.perf_counter() - t0
    counts = con.execute("SELECT (SELECT count(*) FROM marts.contact_cards), "
                         "(SELECT count(*) FROM core.events), (SELECT count(*) FROM core.orders)").fetchone()
    con.close()
    return {"generate_s": round(generated, 1), "card_and_rfm_s": round(marts, 1),
            "contacts": counts[0], "events": counts[1], "orders": counts[2]}


# People with far more events than the mean of 50 (a shop's own staff, a bot that signed
# up): the timeline, activity and visits tabs of these must answer within the target too.
HEAVY = {1: 20_000, 2: 50_000}


def _heavy_people(con) -> None:
    for cid, n in HEAVY.items():
        con.execute(f"""
            INSERT INTO core.events (customer_id, event_type, occurred_at, properties)
            SELECT {cid}, (['page_view', 'page_view', 'email_open', 'email_click', 'cart'])[1 + (i % 5)::INT],
                   TIMESTAMP '2026-11-01 23:59:59' - to_seconds(CAST(hash(i * 11 + {cid}) % (365 * 86400) AS BIGINT)),
                   '{{"url": "/it/prodotti/' || (i % 60) || '", "device": "' ||
                   (['mobile', 'desktop', 'tablet'])[1 + (i % 3)::INT] || '", "campaign_id": "C' || (i % 10) || '"}}'
            FROM range({n}) t(i)""")


def _activation_and_costs(con) -> None:
    """What the coupons, journeys and ROAS read: a coupon for every 5th customer (half of
    them redeemed), a journey entry for every 3rd with two moves, two outbox rows for every
    2nd, and a cost per campaign and channel of the events' campaigns."""
    con.execute("CREATE SCHEMA IF NOT EXISTS activation")
    con.execute((ROOT / "tessera" / "activation" / "sql" / "tables.sql").read_text(encoding="utf-8"))
    con.execute("""
        INSERT INTO activation.coupons
        SELECT upper(substr(md5(CAST(customer_id AS VARCHAR)), 1, 10)), 'C' || (customer_id % 10),
               customer_id, 'journey', 'bench_journey', 'r', DATE '2026-10-01', DATE '2026-10-11',
               '15%', md5(CAST(customer_id AS VARCHAR))
        FROM core.customers WHERE customer_id % 5 = 0""")
    con.execute("""
        INSERT INTO core.events (customer_id, event_type, occurred_at, properties)
        SELECT customer_id, 'coupon_redeemed', TIMESTAMP '2026-10-05 10:00:00',
               '{"campaign": "C' || (customer_id % 10) || '"}'
        FROM core.customers WHERE customer_id % 10 = 0""")
    con.execute("""
        INSERT INTO activation.journey_state
        SELECT 'bench_journey', 'v1', customer_id, DATE '2026-10-01', 'check', DATE '2026-10-02',
               NULL, 'active', DATE '2026-10-02'
        FROM core.customers WHERE customer_id % 3 = 0""")
    con.execute("""
        INSERT INTO activation.journey_history
        SELECT 'bench_journey', 'v1', customer_id, DATE '2026-10-01', DATE '2026-10-01' + CAST(s AS INTEGER),
               CASE s WHEN 0 THEN 'coupon' ELSE 'check' END, CASE s WHEN 0 THEN 'acted' ELSE 'waited' END,
               'check', NULL
        FROM core.customers, range(2) t(s) WHERE customer_id % 3 = 0""")
    con.execute("""
        INSERT INTO activation.outbox
        SELECT md5(customer_id || '-' || s), DATE '2026-10-01', 'journey', 'bench_journey',
               CASE s WHEN 0 THEN 'coupon' ELSE 'mail' END, customer_id, 'r',
               CASE s WHEN 0 THEN 'coupon' ELSE 'email' END, CASE s WHEN 0 THEN 'none' ELSE 'email' END,
               CASE s WHEN 0 THEN 'C1' ELSE email END, NULL, 'sent', 1, NULL,
               TIMESTAMP '2026-10-01 06:00:00', TIMESTAMP '2026-10-01 06:00:01', NULL, 'v1'
        FROM core.customers, range(2) t(s) WHERE customer_id % 2 = 0""")
    con.execute("CREATE SCHEMA IF NOT EXISTS staging")
    con.execute("""
        CREATE OR REPLACE TABLE staging.campaign_costs AS
        SELECT 'bench' AS source, 'C' || c || '-' || ch AS source_record_id, 'C' || c AS campaign_id,
               ch AS channel, DATE '2026-10-01' AS spend_date, CAST(100 + 10 * c AS DECIMAL(18, 2)) AS cost
        FROM range(10) a(c), (VALUES ('email'), ('social')) b(ch)""")


def reused(warehouse: Path) -> dict:
    from tessera.engine.warehouse import connect

    con = connect(warehouse)
    counts = con.execute("SELECT (SELECT count(*) FROM marts.contact_cards), "
                         "(SELECT count(*) FROM core.events), (SELECT count(*) FROM core.orders)").fetchone()
    con.close()
    return {"generate_s": 0, "card_and_rfm_s": 0, "contacts": counts[0], "events": counts[1],
            "orders": counts[2]}


def add_search_table(warehouse: Path, memory_limit: str | None) -> float:
    from tessera.card.search import build_contact_search
    from tessera.engine.warehouse import connect

    t0 = time.perf_counter()
    con = connect(warehouse, memory_limit=memory_limit)
    build_contact_search(con)
    con.execute("CHECKPOINT")
    con.close()
    return round(time.perf_counter() - t0, 1)


VIEW = "bench_half"


def add_view_cards(warehouse: Path) -> None:
    """A view node's cards (``views.<node>_contact_cards``): every second person, as a
    node of the tree holding half the records would have them; and the day's new /
    updated / deleted counts (``marts.contact_changes``, an asset before the snapshot)."""
    import datetime as dt

    from tessera.card.changes import build_contact_changes
    from tessera.engine.warehouse import connect

    con = connect(warehouse)
    if not con.execute("SELECT count(*) FROM information_schema.tables WHERE table_schema = 'marts' "
                       "AND table_name = 'contact_changes'").fetchone()[0]:
        build_contact_changes(con, dt.date(2026, 11, 1))
    con.execute("CREATE SCHEMA IF NOT EXISTS views")
    con.execute(f'CREATE TABLE IF NOT EXISTS views."{VIEW}_contact_cards" AS '
                "SELECT * FROM marts.contact_cards WHERE customer_id % 2 = 0 ORDER BY customer_id")
    con.execute("CHECKPOINT")
    con.close()


def build_report(warehouse: Path, work: Path) -> dict:
    """What the daily job's ``marts/analytics_report`` asset does after the snapshot: the
    analytics page as one HTML file, read from the published folder (``write_report``)."""
    import datetime as dt

    from tessera.engine import read_snapshot
    from tessera.web.report import write_report
    from tessera.web.snapshot import current

    t0 = time.perf_counter()
    with read_snapshot(current(warehouse)) as engine:
        stats = write_report(engine, work / "reports", dt.date(2026, 11, 1))
    return {"report_s": round(time.perf_counter() - t0, 1), "bytes": stats["bytes"],
            "charts": stats["charts"], "tables": stats["tables"]}


def publish_snapshot(warehouse: Path, memory_limit: str | None) -> dict:
    """What the daily job's last asset does: copy the page's tables to Parquet."""
    from tessera.engine import as_engine
    from tessera.engine.warehouse import connect
    from tessera.web.snapshot import publish

    t0 = time.perf_counter()
    con = connect(warehouse, memory_limit=memory_limit)
    stats = publish(as_engine(con), warehouse)
    con.close()
    return {"publish_s": round(time.perf_counter() - t0, 1), "tables": stats["tables"],
            "rows": stats["rows"], "mb": round(stats["bytes"] / 2**20, 1)}


LAYOUTS = ("warehouse read-only", "published snapshot", "snapshot, writer busy")
CITIES = ("Roma", "Milano", "Napoli", "Torino", "Bologna", "Firenze", "Warszawa")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def peak_kb_of(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def cpu_s_of(pid: int) -> float:
    """The process's user + system CPU seconds: on a shared machine, what a request costs
    whatever the load (wall time waits for the other sessions' processes too)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def requests_plan(contacts: int, n: int, rng: random.Random) -> list[tuple[str, str, dict]]:
    """``n`` of each kind: four searches (a surname, a surname and a birth year, an e-mail,
    phone digits), a search with two filters, one in a view node, every tab of the card of
    a random person and the timeline, visits and messages of a person with 20-50 k events."""
    from tessera.web.queries import TABS

    plan = []
    for _ in range(n):
        cid = rng.randint(1, contacts)
        surname = rng.choice(SURNAMES)
        heavy = rng.choice(list(HEAVY))
        plan += [
            ("search surname", "/", {"q": surname.lower()}),
            ("search surname + year", "/", {"q": f"{surname} {rng.randint(1950, 2004)}"}),
            ("search e-mail", "/", {"q": f"c{cid}@example.invalid"}),
            ("search phone digits", "/", {"q": str(rng.randint(1000000, 9999999))}),
            ("search + filters", "/", {"q": surname.lower(), "f_city": rng.choice(CITIES),
                                       "f_gender": rng.choice("MF")}),
            ("search in a view", "/", {"q": f"{surname} {rng.randint(1950, 2004)}", "view": VIEW}),
            *((f"card {tab}", f"/card/{cid}", {"tab": tab}) for tab, _label in TABS),
            *((f"heavy card {tab}", f"/card/{heavy}", {"tab": tab})
              for tab in ("timeline", "visits", "messages")),
            ("analytics (cached)", "/analytics", {}),
        ]
    rng.shuffle(plan)
    return plan


def measure(client, base: str, plan, pid: int | None = None) -> dict[str, list[float]]:
    """Wall milliseconds per request by kind; with the server's ``pid``, its CPU
    milliseconds per request too (under ``kind + " cpu"``)."""
    times: dict[str, list[float]] = {}
    for kind, path, params in plan:
        cpu = cpu_s_of(pid) if pid else 0.0
        t = time.perf_counter()
        r = client.get(base + path, params=params)
        elapsed = (time.perf_counter() - t) * 1000
        if r.status_code != 200:
            raise SystemExit(f"{kind}: HTTP {r.status_code}")
        times.setdefault(kind, []).append(elapsed)
        if pid:
            times.setdefault(kind + " cpu", []).append((cpu_s_of(pid) - cpu) * 1000)
    return times


def summary(times: dict[str, list[float]]) -> dict[str, dict]:
    out = {}
    for kind, ms in times.items():
        if kind.endswith(" cpu"):
            continue
        ms = sorted(ms)
        cpu = times.get(kind + " cpu")
        out[kind] = {"n": len(ms), "p50_ms": round(statistics.median(ms), 1),
                     "p95_ms": round(ms[max(0, int(len(ms) * 0.95) - 1)], 1), "max_ms": round(ms[-1], 1),
                     "cpu_mean_ms": round(statistics.fmean(cpu), 1) if cpu else None}
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--contacts", type=int, default=100_000)
    parser.add_argument("--events", type=int, default=5_000_000)
    parser.add_argument("--requests", type=int, default=40, help="requests of each kind per layout")
    parser.add_argument("--memory-limit", default=None, help="DuckDB memory_limit when building")
    parser.add_argument("--workdir", default=None, help="folder for the warehouse (default: temp)")
    parser.add_argument("--reuse", action="store_true",
                        help="keep the warehouse already in --workdir (rebuild its search index and snapshot only)")
    parser.add_argument("--generate-only", action="store_true",
                        help="build the warehouse in --workdir and stop (then measure with --reuse)")
    parser.add_argument("--keep-snapshot", action="store_true",
                        help="with --reuse: measure the snapshot already published in --workdir "
                             "(no new publication; its time is the one recorded then)")
    parser.add_argument("--snapshot-only", action="store_true",
                        help="measure the published snapshot only (what the page reads after a run)")
    args = parser.parse_args()
    layouts = LAYOUTS[1:2] if args.snapshot_only else LAYOUTS
    import httpx2 as httpx

    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="tessera-bench-web-"))
    work.mkdir(parents=True, exist_ok=True)
    warehouse = work / "warehouse.duckdb"
    if args.reuse and warehouse.exists():
        built = reused(warehouse)
    else:
        warehouse.unlink(missing_ok=True)
        built = build(warehouse, args.contacts, args.events, args.memory_limit)
    if not (args.reuse and built["generate_s"] == 0):
        built["search_table_s"] = add_search_table(warehouse, args.memory_limit)
        (work / "built.json").write_text(json.dumps(built))
    else:
        built["search_table_s"] = "kept"
        if (work / "built.json").exists():  # how long the kept warehouse took to generate
            built = {**json.loads((work / "built.json").read_text()), **{k: built[k] for k in
                     ("contacts", "events", "orders")}, "reused": True}
    add_view_cards(warehouse)
    if args.generate_only:
        print(json.dumps(built))
        return 0

    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-c", "import sys; from tessera.web.app import serve; "
         "serve(sys.argv[1], host='127.0.0.1', port=int(sys.argv[2]))", str(warehouse), str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ})
    base = f"http://127.0.0.1:{port}"
    results: dict = {"built": built, "layouts": {}}
    try:
        with httpx.Client(timeout=60) as client:
            deadline = time.monotonic() + 60
            while True:
                try:
                    client.get(base + "/static/tessera.css")
                    break
                except httpx.TransportError:
                    if time.monotonic() > deadline or server.poll() is not None:
                        raise SystemExit("the server did not start")
                    time.sleep(0.2)
            rng = random.Random(42)
            writer = None
            for layout in layouts:
                if layout == LAYOUTS[1]:
                    from tessera.web.snapshot import current

                    kept = work / "snapshot.json"
                    if args.keep_snapshot and args.reuse and current(warehouse) and kept.exists():
                        results["snapshot"] = {**json.loads(kept.read_text()), "kept": True}
                    else:
                        results["snapshot"] = publish_snapshot(warehouse, args.memory_limit)
                        kept.write_text(json.dumps(results["snapshot"]))
                    results["report"] = build_report(warehouse, work)
                if layout == LAYOUTS[2]:
                    from tessera.engine.warehouse import connect

                    writer = connect(warehouse)  # holds DuckDB's lock, as a run does
                    if client.get(base + "/", params={"q": "rossi"}).status_code != 200:
                        raise SystemExit("the snapshot did not answer while the warehouse was busy")
                plan = requests_plan(built["contacts"], args.requests, rng)
                measure(client, base, plan[:8])  # warm the OS cache
                t0, cpu0 = time.perf_counter(), cpu_s_of(server.pid)
                times = measure(client, base, plan, server.pid)
                wall, cpu = time.perf_counter() - t0, cpu_s_of(server.pid) - cpu0
                results["layouts"][layout] = {"requests": len(plan), "wall_s": round(wall, 1),
                                              "requests_per_s": round(len(plan) / wall, 1),
                                              "server_cpu_ms_per_request": round(cpu * 1000 / len(plan), 1),
                                              "load_avg_1m": round(os.getloadavg()[0], 1),
                                              "kinds": summary(times)}
            if writer is not None:
                writer.close()
        results["server_peak_rss_mb"] = round(peak_kb_of(server.pid) / 1024)
    finally:
        server.terminate()
        server.wait(10)
    results["bench_peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)

    print(f"\nTessera web benchmark: {built['contacts']:,} contacts, {built['events']:,} events, "
          f"{built['orders']:,} orders (generate {built['generate_s']} s, card + RFM "
          f"{built['card_and_rfm_s']} s, not counted)")
    kinds = sorted(next(iter(results["layouts"].values()))["kinds"])
    results["generated_s"] = built["generate_s"]
    print(f"  p50 / p95 ms per request (and the server's mean CPU ms per request); {args.requests} of each kind per layout")
    print(f"  {'request':<22}" + "".join(f" | {layout:>42}" for layout in layouts))
    for kind in kinds:
        cells = []
        for layout in layouts:
            k = results["layouts"][layout]["kinds"][kind]
            cells.append(f"{k['p50_ms']:>8} / {k['p95_ms']:>8} (CPU {k['cpu_mean_ms']:>6})")
        print(f"  {kind:<22}" + "".join(f" | {c:>42}" for c in cells))
    print(f"  {'requests/s':<22}" + "".join(
        f" | {results['layouts'][layout]['requests_per_s']:>42}" for layout in layouts))
    print(f"  {'server CPU ms/request':<22}" + "".join(
        f" | {results['layouts'][layout]['server_cpu_ms_per_request']:>42}" for layout in layouts))
    print(f"  {'load average (1 min)':<22}" + "".join(
        f" | {results['layouts'][layout]['load_avg_1m']:>42}" for layout in layouts))
    snap = results["snapshot"]
    print(f"  building marts.contact_search: {built['search_table_s']} s; publishing the snapshot: "
          f"{snap['publish_s']} s ({snap['tables']} tables, {snap['rows']:,} rows, {snap['mb']} MB, "
          f"{snap['rows'] / max(snap['publish_s'], 0.1):,.0f} rows/s)")
    rep = results["report"]
    print(f"  the day's analytics report (write_report over the snapshot, as the daily job's asset): "
          f"{rep['report_s']} s ({rep['charts']} charts, {rep['tables']} tables, {rep['bytes']:,} bytes)")
    print(f"  peak memory (RSS): server {results['server_peak_rss_mb']} MB, "
          f"builder {results['bench_peak_rss_mb']} MB")
    out = ROOT / "bench" / "out"
    out.mkdir(parents=True, exist_ok=True)
    (out / f"web_{args.contacts}_{args.events}.json").write_text(json.dumps(results, indent=2))
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
