"""Activation benchmark: one day of 10 automations and 5 journeys on a synthetic warehouse.

    .venv/bin/python bench/activation.py --contacts 1000000 --events 5000000

The warehouse has N contact cards (70 % with e-mail consent, 40 % with SMS consent) and
E events on the measured day over ten event types; a warm-up day (E/5 events) is
evaluated first so that journeys have contacts in every step. Timed: the measured day's
evaluation (automations, journeys, outbox with the consent gate), sending off (sending
is bounded by the receivers). The alternative on the same data is the floor: one query
per automation that only counts its triggering events joined to the cards (what any
implementation must read). Prints seconds, events/s and peak RSS (DuckDB runs in the
process, so its memory is included), and writes bench/out/activation.json.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DAY = dt.date(2026, 11, 2)
TYPES = ["purchase", "coupon_redeemed", "show_attended", "page_view", "download", "form_fill",
         "cart", "email_open", "email_click", "review"]


def _cpu() -> float:
    """CPU seconds of this process (DuckDB's threads included): on a shared machine the
    wall-clock time also counts other processes' turns."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


@contextlib.contextmanager
def _profiled(on: bool):
    """CPU and wall seconds per SQL step name (every step goes through
    DuckDBEngine._exec, whose execute() materialises the result)."""
    steps: dict[str, list] = {}
    if not on:
        yield steps
        return
    from tessera.engine.duckdb_engine import DuckDBEngine
    original = DuckDBEngine._exec

    def timed(self, step):
        c, w = _cpu(), time.perf_counter()
        try:
            return original(self, step)      # execute() materialises the result
        finally:
            acc = steps.setdefault(step.name, [0.0, 0.0, 0])
            acc[0] += _cpu() - c
            acc[1] += time.perf_counter() - w
            acc[2] += 1

    DuckDBEngine._exec = timed
    try:
        yield steps
    finally:
        DuckDBEngine._exec = original


def _world(con, contacts: int, events: int) -> None:
    from tessera.engine.warehouse import ensure_warehouse
    from tessera.privacy import suppression as privacy_core

    ensure_warehouse(con)
    privacy_core.ensure_tables(con)
    privacy_core.install_hmac(con, "bench-key")
    con.execute(f"""CREATE OR REPLACE TABLE marts.contact_cards AS
        SELECT range AS customer_id, 'Nome' || range AS first_name, 'Rossi' AS last_name,
               CASE WHEN range % 2 = 0 THEN 'F' ELSE 'M' END AS gender,
               'p' || range || '@example.it' AS email, '+39333' || range AS mobile,
               CASE WHEN range % 10 < 8 THEN 'IT' ELSE 'PL' END AS country,
               CASE range % 5 WHEN 0 THEN 'gold' WHEN 1 THEN 'silver' ELSE 'bronze' END AS loyalty_tier,
               CASE WHEN range % 10 < 7 THEN 'granted' ELSE 'withdrawn' END AS email_consent,
               CASE WHEN range % 10 < 4 THEN 'granted' ELSE 'unknown' END AS sms_consent,
               FALSE AS email_hard_bounced
        FROM range(1, {contacts} + 1)""")
    types = "[" + ", ".join(f"'{t}'" for t in TYPES) + "]"
    con.execute("CREATE OR REPLACE TABLE core.events (event_id VARCHAR, customer_id BIGINT, "
                "event_type VARCHAR, occurred_at TIMESTAMP, properties VARCHAR, source VARCHAR, "
                "linked_by VARCHAR)")
    for day, n, seed in ((DAY - dt.timedelta(days=7), events // 5, 1), (DAY, events, 2)):
        con.execute(f"""INSERT INTO core.events
            SELECT 'E{seed}_' || range, 1 + CAST(hash(range, {seed}) % {contacts} AS BIGINT),
                   {types}[1 + CAST(hash(range, {seed} + 1) % 10 AS INTEGER)],
                   TIMESTAMP '{day}' + INTERVAL (CAST(hash(range, {seed} + 2) % 86400 AS INTEGER)) SECOND,
                   '{{"channel": "' || CASE WHEN range % 3 = 0 THEN 'store' ELSE 'ecommerce' END
                   || '", "amount": ' || (range % 900) || ', "storeCode": "'
                   || CASE WHEN range % 4 = 0 THEN 'Roma' ELSE 'Milan' END
                   || '", "campaign": "milan_store_discount", "form": "preventivo"}}',
                   'web_events', 'email'
            FROM range({n})""")


def _deployment(tmp: Path):
    """The demo's configuration with 10 automations and 5 journeys (the Milan journey on
    five trigger types), sending off."""
    from tessera.deployment import load_deployment
    from tessera.settings.activation import Action, AutomationDef, EventFilter

    dep = load_deployment(ROOT / "examples" / "demo")
    autos = list(dep.automations)
    extra = [("purchase", {"tag": {"tag": "buyer"}}), ("review", {"tag": {"tag": "reviewer"}}),
             ("email_click", {"coupon": {"campaign": "clickers"}}),
             ("page_view", {"email": {"subject": "Ciao {{ first_name }}", "template": "download_thanks.html"}}),
             ("cart", {"webhook": {"destination": "crm_webhook", "fields": ["customer_id", "email"]}}),
             ("email_open", {"tag": {"tag": "opener", "property": "engagement", "value": "open"}})]
    for i, (t, action) in enumerate(extra):
        autos.append(AutomationDef(name=f"bench_{i}", trigger=EventFilter(event=t, where=[
            {"property": "amount", "op": ">=", "value": 100}]),
            conditions={"field": "country", "op": "=", "value": "IT"}, action=Action(**action)))
    milan = dep.journeys[0]
    journeys = [milan] + [milan.model_copy(update={"name": f"journey_{t}", "trigger": milan.trigger.model_copy(
        update={"event": EventFilter(event=t)})}) for t in ("page_view", "download", "form_fill", "review")]
    act = dep.activation.model_copy(update={"send": False, "start_date": None})
    return dep.model_copy(update={"automations": autos[:10], "journeys": journeys, "activation": act})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--contacts", type=int, default=100_000)
    ap.add_argument("--events", type=int, default=500_000)
    ap.add_argument("--memory-limit", default="4GB")
    ap.add_argument("--profile", action="store_true",
                    help="print the measured day's CPU and wall seconds per SQL step name")
    args = ap.parse_args()
    from tessera.activation.run import run_activation
    from tessera.activation.automations import conditions_sql, event_filter_sql
    from tessera.engine import SqlStep, as_engine
    from tessera.engine.warehouse import connect

    with tempfile.TemporaryDirectory() as tmp:
        con = connect(Path(tmp) / "w.duckdb")
        con.execute(f"SET memory_limit = '{args.memory_limit}'")
        t = time.perf_counter()
        _world(con, args.contacts, args.events)
        built = time.perf_counter() - t
        dep = _deployment(Path(tmp))
        now = dt.datetime.combine(DAY, dt.time(12))
        run_activation(con, dep, DAY - dt.timedelta(days=7), now)     # warm-up: journeys fill
        con.execute("DELETE FROM activation.evaluated_days")           # jump to DAY directly
        t, cpu = time.perf_counter(), _cpu()
        with _profiled(args.profile) as steps:
            out = run_activation(con, dep, DAY, now)
        seconds, cpu_s = time.perf_counter() - t, _cpu() - cpu
        eng = as_engine(con)
        t = time.perf_counter()
        floor_rows = 0
        for a in dep.automations:   # from core.events itself (what any implementation reads)
            params: list = [DAY]
            cond = event_filter_sql(dep, a.trigger, DAY, params)
            sql = ("SELECT count(*) FROM core.events WHERE customer_id IS NOT NULL "
                   f"AND CAST(occurred_at AS DATE) = CAST(? AS DATE) AND {cond} AND "
                   + conditions_sql(dep, a.conditions, DAY, params))
            floor_rows += eng.scalar(SqlStep("bench.floor", sql, params))
        floor = time.perf_counter() - t
        # the same day run again (a re-run of the partition): nothing evaluated again,
        # nothing decided twice; what it costs is the check of what is still to send
        before = con.execute("SELECT count(*), count(DISTINCT action_key) FROM activation.outbox").fetchone()
        t, cpu = time.perf_counter(), _cpu()
        again = run_activation(con, dep, DAY, now)
        rerun_s, rerun_cpu = time.perf_counter() - t, _cpu() - cpu
        after = con.execute("SELECT count(*), count(DISTINCT action_key) FROM activation.outbox").fetchone()
        assert not again["days"] and after == before and after[0] == after[1], "a re-run decided again"
        queued = sum(s["queued"] for s in out["evaluated"][DAY]["automations"].values())
        moved = sum(j["moved"] for j in out["evaluated"][DAY]["journeys"].values())
        entered = sum(j["entered"] for j in out["evaluated"][DAY]["journeys"].values())
        outbox = con.execute("SELECT count(*) FROM activation.outbox").fetchone()[0]
        con.close()
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    res = {"contacts": args.contacts, "events": args.events, "automations": len(dep.automations),
           "journeys": len(dep.journeys), "world_build_s": round(built, 1),
           "evaluate_day_s": round(seconds, 2), "evaluate_day_cpu_s": round(cpu_s, 2), "events_per_s": round(args.events / seconds),
           "automation_actions_queued": queued, "journey_entries": entered, "journey_moves": moved,
           "outbox_rows": outbox, "floor_trigger_scan_s": round(floor, 2), "floor_rows": floor_rows,
           "rerun_s": round(rerun_s, 2), "rerun_cpu_s": round(rerun_cpu, 2), "rerun_new_outbox_rows": after[0] - before[0],
           "peak_rss_mb": round(peak_mb)}
    print(f"activation: {args.contacts:,} contacts, {args.events:,} events, "
          f"{res['automations']} automations, {res['journeys']} journeys")
    print(f"  evaluate one day      {seconds:8.2f} s   {res['events_per_s']:>10,} events/s   "
          f"peak RSS {res['peak_rss_mb']:,} MB   (CPU {cpu_s:.2f} s)")
    print(f"  floor (trigger scans) {floor:8.2f} s   ({floor_rows:,} triggering rows)")
    print(f"  re-run of the same day {rerun_s:7.2f} s   (CPU {rerun_cpu:.2f} s; new outbox rows: "
          f"{after[0] - before[0]}, days evaluated again: {len(again['days'])})")
    print(f"  decided: {queued:,} automation actions, {entered:,} journey entries, {moved:,} moves; "
          f"outbox {outbox:,} rows")
    if args.profile:
        print("  per step (CPU s, wall s, calls), the heaviest first:")
        for name, (c, w, k) in sorted(steps.items(), key=lambda kv: -kv[1][0])[:25]:
            print(f"    {name:45s} {c:7.2f} {w:7.2f} {k:5d}")
        res["profile"] = {n: [round(c, 3), round(w, 3), k] for n, (c, w, k) in steps.items()}
    (ROOT / "bench" / "out").mkdir(exist_ok=True)
    (ROOT / "bench" / "out" / "activation.json").write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
