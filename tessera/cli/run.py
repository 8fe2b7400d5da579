"""Running the daily job and reporting on it: generate, run, rebuild, demo, summary, init-home.

Only ``run``, ``rebuild`` and ``demo`` import Dagster (they execute the job); ``summary``
reads the warehouse alone, so it starts fast and works while the UI holds Dagster's storage.
"""

from __future__ import annotations

import datetime as dt
import os
import sys
from pathlib import Path

import click

from tessera.cli.common import (DATE, DEMO_DATE, setup_env, wait_seconds, warehouse_and_deployment,
                                yes_option)


def run_daily(day: dt.date, wait_s: float | None = None):
    import dagster as dg

    from pipelines.definitions import defs_from_env

    defs = defs_from_env()
    job = defs.resolve_job_def("daily_job")
    instance = dg.DagsterInstance.get()
    # Each step as it starts and ends (duration, rows), the assets' own lines (each file
    # loaded), warnings, failures, and a heartbeat while a step is quiet
    # (pipelines/progress.py); the full DEBUG event stream is still stored for the UI.
    run_config = {"loggers": {"progress": {"config": {}}}}
    from pipelines.runs import execute_daily_in_turn  # closes dead runs, waits for live ones

    return execute_daily_in_turn(job, instance, day.isoformat(), run_config, wait_s=wait_s)


def summary(run_id: str | None = None, day: dt.date | None = None) -> dict:
    """The run's (default: the last) import counts, and the run history of its day (or of
    ``day``): customers new / updated / merged / split / erased, segment changes and the
    feeds delivered for that day only."""
    import gc

    from tessera.engine import DuckDBEngine
    from tessera.engine.warehouse import connect, table_exists
    from tessera.history.summary import day_summary
    from tessera.settings.paths import tessera_paths

    # A failed in-process run can leave its DuckDB connection referenced by the error's
    # traceback; collect it so this connection opens with its own configuration.
    gc.collect()
    con = connect(tessera_paths()["warehouse"])
    try:
        engine = DuckDBEngine(con)
        if day is None and run_id and table_exists(con, "history", "runs"):
            row = con.execute("SELECT as_of_date FROM history.runs WHERE run_id = ?", [run_id]).fetchone()
            day = row[0] if row else None
        the_day = day_summary(engine, day)
        if run_id is None and day is not None:  # the day's last forward run
            run_id = the_day["runs"][-1] if the_day and the_day["runs"] else ""
        if run_id is None:
            row = con.execute("SELECT batch_id FROM ops.import_report "
                              "ORDER BY loaded_at DESC LIMIT 1").fetchone()
            run_id = row[0] if row else ""
        files, loaded, rejected, failed = con.execute("""
            SELECT count(*) FILTER (WHERE status IN ('loaded', 'empty', 'failed')),
                   coalesce(sum(new + updated + unchanged), 0), coalesce(sum(rejected), 0),
                   count(*) FILTER (WHERE status = 'failed')
            FROM ops.import_report WHERE batch_id = ?""", [run_id]).fetchone()
        customers = con.execute("SELECT count(*) FROM core.customers").fetchone()[0]
        records = con.execute("SELECT count(*) FROM core.customer_sources").fetchone()[0]
        # only the feeds of the summarised day (every earlier day's stay in the table)
        # (a first run that failed before the feeds has no delivery table yet)
        feeds = []
        if table_exists(con, "exports", "feed_deliveries"):
            feed_day = the_day["as_of_date"] if the_day else con.execute(
                "SELECT max(as_of_date) FROM exports.feed_deliveries").fetchone()[0]
            feeds = con.execute("""SELECT feed, as_of_date, file, rows FROM exports.feed_deliveries
                                   WHERE as_of_date = ? ORDER BY feed""", [feed_day]).fetchall()
        predictions = None
        if table_exists(con, "predictions", "accuracy"):
            # the latest day's scored contacts and its back-test AUCs of "buys in the window"
            predictions = con.execute("""
                WITH d AS (SELECT max(as_of_date) AS day FROM predictions.customer_predictions)
                SELECT d.day,
                  (SELECT count(*) FROM predictions.customer_predictions p
                    WHERE p.as_of_date = d.day AND p.status = 'scored'),
                  (SELECT count(*) FROM predictions.customer_predictions p WHERE p.as_of_date = d.day),
                  (SELECT max(a.value) FROM predictions.accuracy a
                    JOIN predictions.accuracy s ON s.as_of_date = a.as_of_date
                     AND s.target = a.target AND s.model = a.model AND s.metric = 'served'
                    WHERE a.as_of_date = d.day AND a.target = 'purchase' AND a.metric = 'auc'),
                  (SELECT max(model) FROM predictions.accuracy a WHERE a.as_of_date = d.day
                    AND target = 'purchase' AND metric = 'served'),
                  (SELECT max(value) FROM predictions.accuracy a WHERE a.as_of_date = d.day
                    AND target = 'purchase' AND model = 'recency_only' AND metric = 'auc')
                FROM d""").fetchone()
        recs = _recommendations_summary(con)
        activation = None
        if table_exists(con, "activation", "outbox"):
            # decided actions by status, and the journeys' contacts by status
            activation = (con.execute("SELECT status, count(*) FROM activation.outbox GROUP BY 1 "
                                      "ORDER BY 1").fetchall(),
                          con.execute("SELECT status, count(*) FROM activation.journey_state "
                                      "GROUP BY 1 ORDER BY 1").fetchall())
        web = _web_summary(con, tessera_paths()["warehouse"])
    finally:
        con.close()
    return {"run_id": run_id, "files_read": int(files), "rows_loaded": int(loaded),
            "rows_rejected": int(rejected), "files_failed": int(failed),
            "contact_records": int(records), "golden_customers": int(customers), "feeds": feeds,
            "predictions": predictions,
            "recommendations": recs, "activation": activation, "day": the_day, "web": web}


def _web_summary(con, warehouse) -> dict | None:
    """The web page's published snapshot, the latest static report and the day's new /
    updated / deleted contacts (None before the first publication)."""
    import json

    from tessera.web.report import report_folder
    from tessera.web.snapshot import current

    folder = current(warehouse)
    if folder is None:
        return None
    rows = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))["rows"]
    reports = sorted(report_folder(warehouse).glob("analytics-*.html"))
    changes = con.execute("SELECT new, updated, deleted FROM marts.contact_changes "
                          "ORDER BY as_of_date DESC LIMIT 1").fetchone() if con.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'marts' "
        "AND table_name = 'contact_changes'").fetchone()[0] else None
    return {"tables": len(rows), "rows": sum(rows.values()), "folder": str(folder),
            "report": str(reports[-1]) if reports else None, "changes": changes}


def _recommendations_summary(con) -> dict | None:
    """The latest day's lists and the back-test's NDCG of the combination and the best
    sellers on new items (None without the recommendations stage)."""
    if not con.execute("SELECT count(*) FROM information_schema.tables WHERE table_schema = "
                       "'recommendations' AND table_name = 'evaluation'").fetchone()[0]:
        return None
    day, rows, contacts = con.execute("""SELECT max(as_of_date), count(*), count(DISTINCT customer_id)
        FROM recommendations.contact_products
        WHERE as_of_date = (SELECT max(as_of_date) FROM recommendations.contact_products)""").fetchone()
    ndcg = dict(con.execute("""SELECT kind, ndcg_at_k FROM recommendations.evaluation
        WHERE mode = 'new_items' AND kind IN ('combined', 'popular')
          AND as_of_date = (SELECT max(as_of_date) FROM recommendations.evaluation)""").fetchall())
    return {"day": day, "rows": int(rows), "contacts": int(contacts), "ndcg": ndcg}


def print_summary(s: dict) -> None:
    print("\nTessera daily run summary")
    print(f"  files read         {s['files_read']:>8}   (failed: {s['files_failed']})")
    print(f"  rows loaded        {s['rows_loaded']:>8}")
    print(f"  rows rejected      {s['rows_rejected']:>8}   (see ops.rejects)")
    print(f"  contact records    {s['contact_records']:>8}")
    print(f"  golden customers   {s['golden_customers']:>8}")
    d = s.get("day")
    if d:
        print(f"\n  day {d['as_of_date']} (all its runs):")
        print(f"    files read         {d['files_read']:>8}   (failed: {d['files_failed']})")
        print(f"    rows loaded        {d['rows_loaded']:>8}   rejected: {d['rows_rejected']}")
        print(f"    customers          {d['customers']:>8}   new {d['customers_new']}, updated "
              f"{d['customers_updated']}, merged {d['customers_merged']}, split "
              f"{d['customers_split']}, erased {d['customers_erased']}")
        print(f"    segment changes    {d['segment_entries'] + d['segment_exits']:>8}   "
              f"({d['segment_entries']} entered, {d['segment_exits']} left)")
        for segment, entered, exited in d["segments"]:
            print(f"      {segment}: +{entered} -{exited}")
        print(f"    feed rows          {d['feed_rows']:>8}   in {d['feeds']} feed(s)")
    if s.get("predictions") and s["predictions"][0]:
        day, scored, total, auc, served, base = s["predictions"]
        back = (f"; back-test AUC of buying {auc:.3f} ({served}, served) vs {base:.3f} by recency"
                if auc is not None and base is not None else "")
        print(f"  predictions        {total:>8}   ({scored} scored, {day}{back})")
    print(f"  feed files written {len(s['feeds']):>8}")
    for feed, day, path, rows in s["feeds"]:
        print(f"    {feed} {day}: {rows} rows -> {path}")
    recs = s.get("recommendations")
    if recs and recs["day"] is not None:
        back = ", ".join(f"{k} {v:.3f}" for k, v in sorted(recs["ndcg"].items()))
        print(f"  recommendations    {recs['rows']:>8}   rows for {recs['contacts']} contacts on "
              f"{recs['day']} (back-test NDCG@k on new items: {back or 'no held-out purchases'})")
    if s.get("activation"):
        actions, journeys = s["activation"]
        print(f"  actions decided    {sum(n for _, n in actions):>8}   (activation.outbox: "
              + ", ".join(f"{k} {n}" for k, n in actions) + ")")
        print(f"  journey entries    {sum(n for _, n in journeys):>8}   ("
              + ", ".join(f"{k} {n}" for k, n in journeys) + ")")
    _print_web(s.get("web"))


def _print_web(web: dict | None) -> None:
    if not web:
        return
    if web["changes"]:
        new, updated, deleted = web["changes"]
        print(f"  contacts changed   {new + updated + deleted:>8}   ({new} new, {updated} updated, "
              f"{deleted} deleted)")
    print(f"  web snapshot       {web['tables']:>8}   tables, {web['rows']} rows -> {web['folder']}")
    if web["report"]:
        print(f"  analytics report   {'':>8}   {web['report']}")


def _run_day(ctx: click.Context, day: dt.date | None) -> int:
    setup_env(ctx)
    day = day or dt.date.today() - dt.timedelta(days=1)
    result = run_daily(day, wait_seconds(ctx))
    print_summary(summary(result.run_id))
    if not result.success:
        print(f"\nrun {result.run_id} FAILED; see the Dagster UI (make ui) for the failing step",
              file=sys.stderr)
        return 1
    return 0


@click.command("generate")
@click.option("--contacts", type=int, default=300, show_default=True,
              help="number of persons to generate")
@click.option("--seed", type=int, default=42, show_default=True,
              help="random seed (same seed, same data)")
@click.option("--as-of", "as_of", type=DATE, default=DEMO_DATE.isoformat(), show_default=True,
              help="the business day the sample data ends on")
@click.option("--out", type=click.Path(file_okay=False),
              help="folder to write into (default: the landing folder of --home)")
@click.pass_context
def generate_cmd(ctx: click.Context, contacts: int, seed: int, as_of: dt.date,
                 out: str | None) -> int:
    """Write the sample data set with its truth."""
    from tessera.sampledata.generator import generate

    if out:
        folder = Path(out)
    else:
        setup_env(ctx)
        from tessera.settings.paths import tessera_paths

        folder = tessera_paths()["landing"]
    result = generate(folder, contacts=contacts, seed=seed, as_of=as_of)
    print(f"generated {result['persons']} persons into {folder}:")
    for source, n in sorted(result["records"].items()):
        print(f"  {source:<28} {n:>9} records")
    return 0


@click.command("run", short_help="Run the daily job for one day.")
@click.option("--date", "day", type=DATE, help="business day to run (default: yesterday)")
@click.option("--full", is_flag=True,
              help="with incremental: true, rebuild staging in full this run (later runs are incremental again)")
@click.pass_context
def run_cmd(ctx: click.Context, day: dt.date | None, full: bool) -> int:
    """Run the daily job for one day, in process, and print the summary.

    Exits 1 if the run failed.
    """
    if full:
        # without its recorded state every staging table is built in full (and records
        # its changed keys against the previous table), identity, golden records and the
        # events' linkage too, then incremental again
        con, _deployment, _paths = warehouse_and_deployment(ctx)
        try:
            for table in ("staging_state", "identity_state", "touched_customers", "golden_state",
                          "events_state", "event_link_owners", "events_touched", "card_state"):
                con.execute(f"DROP TABLE IF EXISTS ops.{table}")
        finally:
            con.close()
    return _run_day(ctx, day)


@click.command("rebuild", short_help="Re-read every landing file, re-derive.")
@click.option("--date", "day", type=DATE, help="business day of the run (default: yesterday)")
@yes_option("confirm without asking: raw and staging are dropped")
@click.pass_context
def rebuild_cmd(ctx: click.Context, day: dt.date | None, yes: bool) -> int:
    """Re-read every landing file and re-derive the warehouse (ids, suppressions and
    decisions are kept)."""
    from tessera.cli.common import confirmed

    refused = confirmed("rebuild drops raw and staging and re-reads every landing file", yes)
    if refused is not None:
        return refused
    from tessera.ingest.rebuild import RebuildRefused, reset_loaded_data

    con, _deployment, _paths = warehouse_and_deployment(ctx)
    try:
        out = reset_loaded_data(con)
    except RebuildRefused as exc:
        print(f"rebuild refused: {exc}", file=sys.stderr)
        return 2
    finally:
        con.close()
    print(f"rebuild: {out['raw_tables']} raw and {out['staging_tables']} staging tables dropped, "
          f"{out['files_forgotten']} ledger entries cleared; identity map kept "
          f"({out.get('identity_map_rows', 0)} records)")
    return _run_day(ctx, day)


@click.command("demo", short_help="Generate the sample data if absent, run the job.")
@click.option("--contacts", type=int, default=300, show_default=True,
              help="number of persons to generate when the landing folder is empty")
@click.pass_context
def demo_cmd(ctx: click.Context, contacts: int) -> int:
    """Generate the sample data (if absent) and run the daily job on it."""
    setup_env(ctx)
    from tessera.sampledata.generator import generate
    from tessera.settings.paths import tessera_paths

    landing = tessera_paths()["landing"]
    if not any(landing.glob("*/*")):
        print(f"generating sample data ({contacts} persons) into {landing}")
        generate(landing, contacts=contacts, seed=42, as_of=DEMO_DATE, journey_events=True)
    print(f"running daily_job as of {DEMO_DATE} (warehouse {tessera_paths()['warehouse']})")
    result = run_daily(DEMO_DATE, wait_seconds(ctx))
    print_summary(summary(result.run_id))
    print("\nopen the Dagster UI with `make ui` (http://127.0.0.1:3000) to browse the run.")
    print("open the contact cards and analytics with `make web` (http://127.0.0.1:8080).")
    return 0 if result.success else 1


@click.command("summary")
@click.option("--run-id", help="the run to report on (default: the latest in ops.import_report)")
@click.option("--date", "day", type=DATE,
              help="the business day to report on (default: the run's day, else the newest)")
@click.pass_context
def summary_cmd(ctx: click.Context, run_id: str | None, day: dt.date | None) -> int:
    """Summary of a run (default: the last) and the run history of its day."""
    setup_env(ctx)
    from tessera.settings.paths import tessera_paths

    warehouse = tessera_paths()["warehouse"]
    if not warehouse.exists():  # connecting would create an empty one and fail on its tables
        print(f"no warehouse at {warehouse}: run `tessera run` or `tessera demo` first",
              file=sys.stderr)
        return 1
    print_summary(summary(run_id, day))
    return 0


@click.command("runs", short_help="List runs; close the dead ones.")
@click.option("--close-dead", is_flag=True,
              help="mark failed the runs whose process is gone (killed or crashed)")
@click.option("--close", "close", multiple=True, metavar="RUN_ID",
              help="close one run whose process is gone or unknown (repeatable; never a live one)")
@click.option("--limit", type=int, default=20, show_default=True, help="how many runs to list")
@click.pass_context
def runs_cmd(ctx: click.Context, close_dead: bool, close: tuple[str, ...], limit: int) -> int:
    """Runs of the Dagster instance with their state and who executes them.

    A run whose process ended without reporting (kill -9, a crash) stays STARTED in
    Dagster's storage and holds the warehouse's pool slot: --close-dead marks such runs
    failed and frees their slots (every run and warehouse command also does it first)."""
    setup_env(ctx)
    import argparse

    from pipelines.runs import cmd_runs

    return cmd_runs(argparse.Namespace(close_dead=close_dead, close=list(close), limit=limit))


@click.command("init-home", short_help="Create DAGSTER_HOME, print its path.")
@click.pass_context
def init_home_cmd(ctx: click.Context) -> int:
    """Create DAGSTER_HOME with the project's dagster.yaml and print its path."""
    setup_env(ctx)
    print(os.environ["DAGSTER_HOME"])
    return 0


COMMANDS = [generate_cmd, run_cmd, rebuild_cmd, demo_cmd, summary_cmd, runs_cmd, init_home_cmd]
