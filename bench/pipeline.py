"""Benchmark of the whole daily job at the spec's reference proportions, two days.

    python bench/pipeline.py --scale 1 [--memory-limit 8GB] [--keep]     # the reference run
    python bench/pipeline.py --scale 0.002                               # a smoke run (~1 min)

``--scale 1`` is the reference data set of SPEC.md's performance targets: about 1 M
contact records from the contact sources (CRM, ERP, CRM company users; the generator's
duplicates), about 10 M order lines and 50 M web events, with the generator's bad rows,
bounces (3 % of persons) and unsubscribes (4 %). Day 1 loads all of it into a fresh
warehouse; day 2 brings 1 % changes: 1 % of the contact records change (a CRM file with
new mobiles, addresses or e-mails) and 1 % more events (a new web file).

Each day runs the daily job in process, with the progress logger of ``tessera run``
(each step as it starts and ends), and records per asset its wall time, rows, rows/s and
the peak resident memory of the process while the step ran (sampled every 0.2 s; DuckDB
runs in process, so it is included), beside the warehouse's memory limit. The data-set
proportions actually generated are reported too. Results are written as JSON under
``bench/out/pipeline_<scale>.json``.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import io
import json
import os
import random
import resource
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DAGSTER_DISABLE_TELEMETRY", "1")
os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
os.environ.setdefault("TESSERA_SUPPRESSION_KEY", "bench-only-key")

AS_OF = dt.date(2026, 11, 1)
# The generator's persons -> the reference proportions. Measured: 1 440 persons with
# orders_scale 8.4 and events_scale 21.4 gave 2 141 contact records (1.49 per person),
# 20 020 order lines and 99 921 events; scaled to 1 M records, 10 M lines, 50 M events:
REFERENCE_PERSONS = 673_000          # -> ~1 M contact records
ORDERS_SCALE = 9.0                   # -> ~10 M order lines
EVENTS_SCALE = 22.9                  # -> ~50 M events
TARGETS = {"contact_records": 1_000_000, "order_lines": 10_000_000, "events": 50_000_000}
TARGET_PEAK_MB = 8000                # SPEC: peak memory under 8 GB at the reference scale


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1024 ** 2


class StepMemory:
    """Samples the process's RSS and attributes each sample to the steps running then."""

    def __init__(self, printer, every_s: float = 0.2) -> None:
        self.printer, self.every_s = printer, every_s
        self.peak: dict[str, float] = {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="rss sampler", daemon=True)

    def _run(self) -> None:
        while not self.stop.wait(self.every_s):
            rss = rss_mb()
            for step in list(dict(self.printer.started)):
                self.peak[step] = max(self.peak.get(step, 0.0), rss)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join()


def run_day(defs, instance, day: dt.date) -> dict:
    import dagster as dg

    from pipelines.progress import ProgressPrinter

    printer = ProgressPrinter()

    @dg.logger
    def progress(_init):
        import logging

        log = logging.getLogger(f"tessera.bench.{day}")
        log.setLevel(logging.DEBUG)
        log.propagate = False
        log.handlers = [printer]
        return log

    job = defs.resolve_job_def("daily_job").with_logger_defs({"progress": progress})
    t = time.perf_counter()
    with StepMemory(printer) as memory:
        result = job.execute_in_process(partition_key=day.isoformat(), instance=instance, raise_on_error=False,
                                        run_config={"loggers": {"progress": {"config": {}}}})
    wall = time.perf_counter() - t
    steps = {}
    for ev in result.get_asset_materialization_events():
        mat = ev.event_specific_data.materialization
        dur, rows = mat.metadata.get("duration_s"), mat.metadata.get("dagster/row_count")
        d, n = (dur.value if dur else None), (rows.value if rows else None)
        steps[mat.asset_key.to_user_string()] = {
            "seconds": round(d, 2) if d is not None else None, "rows": n,
            "rows_per_s": round(n / d) if d and n else None,
            "peak_rss_mb": round(memory.peak.get(ev.step_key, 0.0)) or None}
    failed = sorted({f"{e.asset_key.to_user_string()}:{e.check_name}"
                     for e in result.get_asset_check_evaluations() if not e.passed})
    # every step's peak, checks included (an asset's table shows only materializations)
    top = dict(sorted(((k, round(v)) for k, v in memory.peak.items()), key=lambda kv: -kv[1])[:10])
    return {"day": day.isoformat(), "success": result.success, "wall_s": round(wall, 1),
            "failed_checks": failed, "peak_rss_mb_so_far": round(peak_rss_mb()),
            "highest_step_peaks_mb": top, "assets": steps}


def day2_changes(landing: Path, day: dt.date, share: float, seed: int) -> dict:
    """1 % of the contact records change (a CRM file) and 1 % more events arrive (a web file)."""
    rng = random.Random(seed)
    src = sorted((landing / "crm").glob("crm_contacts_*.csv"))[0]
    rows = list(csv.reader(io.StringIO(src.read_text(encoding="cp1252")), delimiter=";"))
    header, body = rows[0], [r for r in rows[1:] if len(r) == len(rows[0]) and r[0]]
    contact_records = _contact_records(landing)
    picked = rng.sample(range(len(body)), min(len(body), max(1, round(contact_records * share))))
    i_mob, i_addr, i_email, i_mod = (header.index(c) for c in ("cellulare", "indirizzo", "email", "data_modifica"))
    out = []
    for n, i in enumerate(picked):
        r = list(body[i])
        if n % 3 == 0:
            r[i_mob] = f"+39 347 {rng.randrange(10 ** 7):07d}"
        elif n % 3 == 1:
            r[i_addr] = f"Via Nuova {rng.randrange(1, 200)}"
        else:
            r[i_email] = f"changed.{n}@example.org"
        r[i_mod] = f"{day:%d/%m/%Y} 09:00"
        out.append(r)
    buf = io.StringIO()
    csv.writer(buf, delimiter=";", lineterminator="\r\n").writerows([header, *out])
    (landing / "crm" / f"crm_contacts_{day:%Y%m%d}.csv").write_bytes(buf.getvalue().encode("cp1252", "replace"))

    web = sorted((landing / "web").glob("web_events_*.jsonl"))[0]
    events = 0
    with open(web, encoding="utf-8") as src_fh, \
            open(landing / "web" / f"web_events_{day:%Y%m%d}.jsonl", "w", encoding="utf-8") as dst:
        for line in src_fh:
            if rng.random() >= share:
                continue
            try:
                ev = json.loads(line)
            except ValueError:
                continue  # the generator's deliberately broken lines
            ev["event_id"] = f"D2-{ev.get('event_id')}"
            ev["occurred_at"] = f"{day:%Y-%m-%d}T{rng.randrange(24):02d}:{rng.randrange(60):02d}:00Z"
            dst.write(json.dumps(ev) + "\n")
            events += 1
    return {"changed_contact_records": len(out), "new_events": events}


def _contact_records(landing: Path) -> int:
    with open(landing / "_truth" / "records.csv", encoding="utf-8") as fh:
        return sum(1 for _ in fh) - 1


def data_set(landing: Path, wh: Path) -> dict:
    from tessera.engine.warehouse import connect

    con = connect(wh, read_only=True)
    try:
        q = lambda sql: int(con.execute(sql).fetchone()[0] or 0)  # noqa: E731
        out = {
            "contact_records": q("SELECT count(*) FROM core.customer_sources"),
            "persons_golden": q("SELECT count(*) FROM core.customers"),
            "order_lines": q("SELECT count(*) FROM staging.order_lines"),
            "orders": q("SELECT count(*) FROM staging.orders"),
            "events": q("SELECT count(*) FROM staging.events"),
            "records_read": q("SELECT sum(records) FROM ops.import_report"),
            "records_rejected": q("SELECT sum(rejected) FROM ops.import_report"),
            "bounces": q("SELECT count(*) FROM staging.bounces"),
            "unsubscribes": q("SELECT count(*) FROM staging.unsubscribes"),
            "memory_limit": con.execute("SELECT current_setting('memory_limit')").fetchone()[0],
        }
        truth = landing / "_truth" / "records.csv"  # identity against the generator's truth
        tp, true_pairs, pred_pairs = (float(x or 0) for x in con.execute(f"""
            WITH t AS (SELECT * FROM read_csv('{truth}', all_varchar = true)),
            p AS (SELECT t.person_id, cs.customer_id FROM t JOIN core.customer_sources cs USING (source, source_record_id)),
            tp AS (SELECT sum(n * (n - 1) / 2) AS v FROM (SELECT count(*) n FROM p GROUP BY person_id, customer_id)),
            tt AS (SELECT sum(n * (n - 1) / 2) AS v FROM (SELECT count(*) n FROM p GROUP BY person_id)),
            pp AS (SELECT sum(n * (n - 1) / 2) AS v FROM (SELECT count(*) n FROM p GROUP BY customer_id))
            SELECT (SELECT v FROM tp), (SELECT v FROM tt), (SELECT v FROM pp)""").fetchone())
    finally:
        con.close()
    precision = tp / pred_pairs if pred_pairs else 1.0
    recall = tp / true_pairs if true_pairs else 1.0
    out["identity_f1"] = round(2 * precision * recall / (precision + recall), 4) if precision + recall else 0.0
    out["duplicate_share"] = round(1 - out["persons_golden"] / out["contact_records"], 3) if out["contact_records"] else None
    out["rejected_share"] = round(out["records_rejected"] / out["records_read"], 4) if out["records_read"] else None
    out["input_mb"] = round(sum(p.stat().st_size for p in landing.rglob("*")
                                if p.is_file() and "_truth" not in p.parts) / 1e6, 1)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=float, default=0.1,
                        help="1 = the reference data set (1 M contact records, 10 M order lines, 50 M events)")
    parser.add_argument("--changed", type=float, default=0.01, help="share of records changed on day 2")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--memory-limit", default=None,
                        help="DuckDB memory_limit, e.g. 8GB or 30%% (default: the deployment's, 30%% of the machine)")
    parser.add_argument("--workdir", default=None, help="folder for data and warehouse (default: temp)")
    parser.add_argument("--keep", action="store_true", help="keep the generated data and warehouse")
    parser.add_argument("--incremental", action=argparse.BooleanOptionalAction, default=True,
                        help="run both days with incremental: true (day 1 a full build that records "
                             "its state, day 2 incremental); --no-incremental: day 2 a full rebuild")
    parser.add_argument("--save-day1", default=None, metavar="DIR",
                        help="copy the warehouse, feeds, snapshot and reports after day 1 to DIR")
    parser.add_argument("--from-day1", default=None, metavar="DIR",
                        help="skip day 1: start from the state --save-day1 kept in DIR and run day 2 "
                             "only (for working on the incremental day; needs the same --workdir landing)")
    args = parser.parse_args()

    import dagster as dg

    from pipelines.definitions import build_definitions
    from tessera.deployment import load_deployment
    from tessera.engine.warehouse import memory_limit_bytes
    from tessera.sampledata.generator import generate

    persons = max(50, round(REFERENCE_PERSONS * args.scale))
    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="tessera-bench-"))
    landing = work / "landing"
    t0 = time.perf_counter()
    if not (landing / "_truth").exists():
        generate(landing, contacts=persons, seed=args.seed, as_of=AS_OF,
                 orders_scale=ORDERS_SCALE, events_scale=EVENTS_SCALE)
    else:
        # the data of an earlier run in --workdir is reused (the generation is ~7 minutes
        # at scale 1); its day-2 files go, day 2 writes them again from the same seed
        for later in (AS_OF + dt.timedelta(days=1),):
            for stale in landing.glob(f"*/*_{later:%Y%m%d}.*"):
                stale.unlink()
    t_gen = time.perf_counter() - t0
    wh = work / "warehouse.duckdb"
    for stale in (wh, Path(f"{wh}.wal")):
        stale.unlink(missing_ok=True)
    shutil.rmtree(work / "feeds", ignore_errors=True)

    deployment = load_deployment(ROOT / "examples" / "demo").model_copy(update={"incremental": args.incremental})
    limit = args.memory_limit or os.environ.get("TESSERA_MEMORY_LIMIT") or deployment.warehouse.memory_limit
    defs = build_definitions(deployment, wh, landing, work / "feeds", args.memory_limit)
    instance = dg.DagsterInstance.ephemeral()
    if args.from_day1:
        _copy_state(Path(args.from_day1), work)
        day1 = json.loads((Path(args.from_day1) / "day1.json").read_text())
    else:
        day1 = run_day(defs, instance, AS_OF)
    if args.save_day1:
        _copy_state(work, Path(args.save_day1))
        (Path(args.save_day1) / "day1.json").write_text(json.dumps(day1, default=str))
    day1_data = data_set(landing, wh)
    res_dir = ROOT / "bench" / "out"
    res_dir.mkdir(parents=True, exist_ok=True)
    partial = res_dir / f"pipeline_{args.scale:g}.day1.json"       # kept if day 2 never ends
    partial.write_text(json.dumps({"scale": args.scale, "incremental": args.incremental, "data_set": day1_data,
                                   "day1": day1}, indent=2, default=str))
    day2_date = AS_OF + dt.timedelta(days=1)
    changes = day2_changes(landing, day2_date, args.changed, args.seed)
    day2 = run_day(defs, instance, day2_date)

    peak = round(peak_rss_mb())
    out = {
        "scale": args.scale, "incremental": args.incremental, "persons_generated": persons, "seed": args.seed, "generate_s": round(t_gen, 1),
        "data_set": day1_data, "reference_targets": TARGETS,
        "memory_limit_mb": round(memory_limit_bytes(limit) / 1024 ** 2),
        "peak_rss_mb": peak, "target_peak_mb": TARGET_PEAK_MB, "peak_under_target": peak <= TARGET_PEAK_MB,
        "day1": day1, "day2": {**day2, **changes},
        "day2_share_of_day1": round(day2["wall_s"] / day1["wall_s"], 3) if day1["wall_s"] else None,
        "ingest_records_per_s": _ingest_rate(day1, day1_data),
    }
    _print(out)
    (res_dir / f"pipeline_{args.scale:g}.json").write_text(json.dumps(out, indent=2, default=str))
    partial.unlink(missing_ok=True)
    if not args.keep and not args.workdir:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if day1["success"] and day2["success"] else 1


# what a day leaves beside the landing files (the warehouse's own state, the day's outputs)
_STATE = ("warehouse.duckdb", "warehouse.duckdb.wal", "feeds", "warehouse.web", "warehouse.reports")


def _copy_state(src: Path, dst: Path) -> None:
    dst.mkdir(parents=True, exist_ok=True)
    for name in _STATE:
        s, d = src / name, dst / name
        if d.is_dir():
            shutil.rmtree(d)
        else:
            d.unlink(missing_ok=True)
        if s.is_dir():
            shutil.copytree(s, d)
        elif s.exists():
            shutil.copy2(s, d)


def _ingest_rate(day: dict, data: dict) -> int | None:
    seconds = sum(a["seconds"] or 0 for k, a in day["assets"].items() if k.startswith("raw/"))
    return round(data["records_read"] / seconds) if seconds else None


def _print(out: dict) -> None:
    d = out["data_set"]
    print(f"\nTessera pipeline benchmark, scale {out['scale']:g} ({out['persons_generated']:,} persons generated, "
          f"{d['input_mb']} MB of landing files)")
    print(f"  data set: {d['contact_records']:,} contact records ({d['duplicate_share']:.0%} duplicates, "
          f"{d['persons_golden']:,} golden), {d['order_lines']:,} order lines, {d['events']:,} events, "
          f"{d['bounces']:,} bounces, {d['unsubscribes']:,} unsubscribes, "
          f"{d['records_rejected']:,} rejected of {d['records_read']:,} read; identity F1 {d['identity_f1']}")
    for name in ("day1", "day2"):
        day = out[name]
        print(f"\n  {name} ({day['day']}): {'ok' if day['success'] else 'FAILED'}, {day['wall_s']} s wall")
        print(f"  {'asset':<48} {'seconds':>8} {'rows':>12} {'rows/s':>10} {'peak MB':>8}")
        for key, a in sorted(day["assets"].items(), key=lambda kv: -(kv[1]["seconds"] or 0))[:25]:
            print(f"  {key:<48} {a['seconds'] if a['seconds'] is not None else '':>8} "
                  f"{a['rows'] if a['rows'] is not None else '':>12} {a['rows_per_s'] or '':>10} "
                  f"{a['peak_rss_mb'] or '':>8}")
    print(f"\n  day 2, {'incremental' if out['incremental'] else 'a full rebuild'} "
          f"({out['day2']['changed_contact_records']:,} contact records changed, "
          f"{out['day2']['new_events']:,} new events): {out['day2_share_of_day1']:.1%} of day 1's wall time")
    print(f"  ingestion {out['ingest_records_per_s']} records/s; peak RSS {out['peak_rss_mb']} MB with a "
          f"{out['memory_limit_mb']} MB DuckDB limit (target {out['target_peak_mb']} MB: "
          f"{'met' if out['peak_under_target'] else 'NOT met'})")


if __name__ == "__main__":
    sys.exit(main())
