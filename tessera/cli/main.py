"""The ``tessera`` command line.

    tessera generate --contacts N [--seed S] [--as-of D] [--out DIR]   sample data + truth
    tessera run [--date YYYY-MM-DD]                         the daily job, in process
    tessera demo [--contacts N]                             generate + run + summary
    tessera summary [--run-id ID]                           what the last run did
    tessera forget --email E | --customer-id N | --requests F   erase + suppress people
    tessera bulk-edit ACTION (--customer-id N | --ids-file F | --segment S)   audited, next run
    tessera purge [--grace-hours H]                         soft deletes -> erasure
    tessera export-person (--customer-id N | --email E) --out F.json   subject access
    tessera stop-monitoring --customer-id N                 no new behavioural events
    tessera runs [--close-dead] [--close RUN_ID]            runs and their state; close dead ones
    tessera init-home                                       prepare DAGSTER_HOME
    tessera template REGISTRY --out FILE.xlsx               the pre-set import workbook
    tessera segment dry-run NAME [--date D]                 size, sample ids, entering/leaving
    tessera segment add|remove NAME (--ids 1 2 | --file F) [--date D]   explicit overrides
    tessera score rescore --from D1 --to D2                 recompute scores and actions
    tessera potential-unsubscribes list                     undecided requests (ids only)
    tessera potential-unsubscribes decide DECISION [--request ID ...] [--out F.csv]
                                                            unfreeze | block | download

Paths come from TESSERA_CONFIG (configuration folder), TESSERA_HOME (warehouse,
landing, feeds) and DAGSTER_HOME, with ``--config`` / ``--home`` overriding them.
Runs go through the Dagster instance in DAGSTER_HOME, so they appear in the UI.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import sys
from pathlib import Path
from tessera.ingest.scrub import scrub_landing_files

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DEMO_DATE = dt.date(2026, 11, 1)


def _setup_env(args) -> None:
    if getattr(args, "config", None):
        os.environ["TESSERA_CONFIG"] = str(Path(args.config).resolve())
    if getattr(args, "home", None):
        os.environ["TESSERA_HOME"] = str(Path(args.home).resolve())
    os.environ.setdefault("TESSERA_CONFIG", str(PROJECT_ROOT / "examples" / "demo"))
    os.environ.setdefault("TESSERA_HOME", str(PROJECT_ROOT / "var" / "demo"))
    os.environ.setdefault("DAGSTER_HOME", str(Path(os.environ["TESSERA_HOME"]) / "dagster_home"))
    # Nothing may phone home: Tessera runs on machines without internet access.
    os.environ.setdefault("DAGSTER_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
    if not os.environ.get("TESSERA_SUPPRESSION_KEY"):
        # The demo works out of the box; a real deployment sets its own secret.
        os.environ["TESSERA_SUPPRESSION_KEY"] = "demo-only-key-set-TESSERA_SUPPRESSION_KEY"
        print("warning: TESSERA_SUPPRESSION_KEY is not set; using the demo key", file=sys.stderr)
    init_home()


def init_home() -> Path:
    """Create DAGSTER_HOME with the project's dagster.yaml (telemetry off, pool of 1)."""
    home = Path(os.environ.get("DAGSTER_HOME") or (PROJECT_ROOT / "var" / "demo" / "dagster_home"))
    home.mkdir(parents=True, exist_ok=True)
    src = PROJECT_ROOT / "dagster.yaml"
    dst = home / "dagster.yaml"
    if not dst.exists() or dst.read_bytes() != src.read_bytes():
        shutil.copyfile(src, dst)
    return home


def cmd_generate(args) -> int:
    from tessera.sampledata.generator import generate

    if args.out:
        out = Path(args.out)
    else:
        _setup_env(args)
        from pipelines.definitions import tessera_paths

        out = tessera_paths()["landing"]
    summary = generate(out, contacts=args.contacts, seed=args.seed,
                       as_of=dt.date.fromisoformat(args.as_of))
    print(f"generated {summary['persons']} persons into {out}:")
    for source, n in sorted(summary["records"].items()):
        print(f"  {source:<28} {n:>9} records")
    return 0


def run_daily(day: dt.date):
    import dagster as dg

    from pipelines.definitions import defs_from_env

    defs = defs_from_env()
    job = defs.resolve_job_def("daily_job")
    instance = dg.DagsterInstance.get()
    # INFO on the console: one line per file loaded, warnings, failures; the full DEBUG
    # event stream is still stored and visible in the UI.
    run_config = {"loggers": {"console": {"config": {"log_level": "INFO"}}}}
    from pipelines.runs import execute_daily_in_turn  # closes dead runs, waits for live ones

    return execute_daily_in_turn(job, instance, day.isoformat(), run_config)


def summary(run_id: str | None = None) -> dict:
    from pipelines.definitions import tessera_paths
    from tessera.engine.warehouse import connect

    import gc

    # A failed in-process run can leave its DuckDB connection referenced by the error's
    # traceback; collect it so this connection opens with its own configuration.
    gc.collect()
    paths = tessera_paths()
    con = connect(paths["warehouse"])
    try:
        if run_id is None:
            row = con.execute("SELECT batch_id FROM ops.import_report ORDER BY loaded_at DESC LIMIT 1").fetchone()
            run_id = row[0] if row else ""
        files, loaded, rejected, failed = con.execute("""
            SELECT count(*) FILTER (WHERE status IN ('loaded', 'failed')),
                   coalesce(sum(new + updated + unchanged), 0), coalesce(sum(rejected), 0),
                   count(*) FILTER (WHERE status = 'failed')
            FROM ops.import_report WHERE batch_id = ?""", [run_id]).fetchone()
        customers = con.execute("SELECT count(*) FROM core.customers").fetchone()[0]
        records = con.execute("SELECT count(*) FROM core.customer_sources").fetchone()[0]
        feeds = con.execute("""SELECT feed, as_of_date, file, rows FROM exports.feed_deliveries
                               ORDER BY written_at DESC, feed""").fetchall()
    finally:
        con.close()
    return {"run_id": run_id, "files_read": int(files), "rows_loaded": int(loaded),
            "rows_rejected": int(rejected), "files_failed": int(failed),
            "contact_records": int(records), "golden_customers": int(customers), "feeds": feeds}


def print_summary(s: dict) -> None:
    print("\nTessera daily run summary")
    print(f"  files read         {s['files_read']:>8}   (failed: {s['files_failed']})")
    print(f"  rows loaded        {s['rows_loaded']:>8}")
    print(f"  rows rejected      {s['rows_rejected']:>8}   (see ops.rejects)")
    print(f"  contact records    {s['contact_records']:>8}")
    print(f"  golden customers   {s['golden_customers']:>8}")
    print(f"  feed files written {len(s['feeds']):>8}")
    for feed, day, path, rows in s["feeds"]:
        print(f"    {feed} {day}: {rows} rows -> {path}")


def cmd_run(args) -> int:
    _setup_env(args)
    day = dt.date.fromisoformat(args.date) if args.date else dt.date.today() - dt.timedelta(days=1)
    result = run_daily(day)
    print_summary(summary(result.run_id))
    if not result.success:
        print(f"\nrun {result.run_id} FAILED; see the Dagster UI (make ui) for the failing step",
              file=sys.stderr)
        return 1
    return 0


def cmd_rebuild(args) -> int:
    """Reload every landing file and re-derive the warehouse, keeping ids and decisions."""
    from tessera.ingest.rebuild import RebuildRefused, reset_loaded_data

    if not args.yes:
        print("rebuild drops raw and staging and re-reads every landing file; "
              "run again with --yes to go on", file=sys.stderr)
        return 2
    con, _deployment, _paths = _warehouse_and_deployment(args)
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
    return cmd_run(args)


def cmd_demo(args) -> int:
    _setup_env(args)
    from pipelines.definitions import tessera_paths
    from tessera.sampledata.generator import generate

    landing = tessera_paths()["landing"]
    if not any(landing.glob("*/*")):
        print(f"generating sample data ({args.contacts} persons) into {landing}")
        generate(landing, contacts=args.contacts, seed=42, as_of=DEMO_DATE)
    print(f"running daily_job as of {DEMO_DATE} (warehouse {tessera_paths()['warehouse']})")
    result = run_daily(DEMO_DATE)
    print_summary(summary(result.run_id))
    print("\nopen the Dagster UI with `make ui` (http://127.0.0.1:3000) to browse the run.")
    return 0 if result.success else 1


def cmd_forget(args) -> int:
    """Erase people by e-mail / customer id (or a requests CSV with those columns)."""
    import csv
    import uuid

    _setup_env(args)
    from pipelines.definitions import tessera_paths
    from tessera.privacy import suppression as privacy
    from tessera.deployment import load_deployment
    from tessera.engine.warehouse import connect, ensure_warehouse

    emails = list(args.email or [])
    ids = list(args.customer_id or [])
    if args.requests:
        with open(args.requests, encoding="utf-8-sig", newline="") as fh:
            for row in csv.DictReader(fh):
                if (row.get("email") or "").strip():
                    emails.append(row["email"])
                if (row.get("customer_id") or "").strip():
                    ids.append(int(row["customer_id"]))
    if not emails and not ids:
        print("nothing to forget: give --email, --customer-id or --requests", file=sys.stderr)
        return 2
    paths = tessera_paths()
    deployment = load_deployment(paths["config"])
    request_id = args.request_id or uuid.uuid4().hex
    from pipelines.runs import before_warehouse_command

    before_warehouse_command("tessera forget")
    con = connect(paths["warehouse"])
    try:
        ensure_warehouse(con)
        out = privacy.forget(con, deployment, os.environ["TESSERA_SUPPRESSION_KEY"], emails=emails,
                             customer_ids=ids, request_id=request_id)
        files = scrub_landing_files(con, deployment, paths["landing"],
                                            os.environ["TESSERA_SUPPRESSION_KEY"], request_id,
                                            out["records"], out["orders"])
    finally:
        con.close()
    # Counts only: the request's e-mails are personal data and are not echoed back.
    print(f"forget request {request_id}: {out['customers']} customers erased, "
          f"{out['identifiers']} identifiers suppressed, {out['rows_deleted']} rows deleted, "
          f"{files} landing files rewritten")
    return 0


def cmd_potential_unsubscribes(args) -> int:
    """Sendero's rule: unsubscribes from potential companies are decided before that
    registry is exported again. Lists print ids only; ``download`` writes the requests
    (with e-mails) to the file asked for, never to the screen."""
    from tessera.reports.potential_unsubscribes import build_potential_unsubscribes, decide, pending

    con, _deployment, _paths = _warehouse_and_deployment(args)
    try:
        build_potential_unsubscribes(con)
        if args.pu_command == "list":
            rows = pending(con)
            print(f"{len(rows)} undecided unsubscribe request(s) from potential companies")
            for req_source, req_id, p_source, p_id, channel, at in rows:
                print(f"  request {req_id} ({req_source}, {channel}, {at}) -> potential company "
                      f"{p_source}:{p_id}")
            return 0
        if args.decision == "download" and not args.out:
            print("download needs --out FILE.csv", file=sys.stderr)
            return 2
        n = decide(con, args.decision, args.request or None,
                   dt.datetime.now().replace(microsecond=0), origin="cli",
                   download_to=Path(args.out) if args.out else None)
        print(f"{args.decision}: {n} request(s) decided"
              + (f"; list written to {args.out}" if args.decision == "download" else ""))
        return 0
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        con.close()


def _warehouse_and_deployment(args):
    _setup_env(args)
    from pipelines.definitions import tessera_paths
    from tessera.deployment import load_deployment
    from tessera.engine.warehouse import connect, ensure_warehouse

    paths = tessera_paths()
    from pipelines.runs import before_warehouse_command

    before_warehouse_command(f"tessera {args.command}")
    con = connect(paths["warehouse"])
    ensure_warehouse(con)
    return con, load_deployment(paths["config"]), paths


def _resolve_ids(con, args) -> list[int]:
    ids = list(getattr(args, "customer_id", None) or [])
    if getattr(args, "ids_file", None):
        with open(args.ids_file, encoding="utf-8-sig") as fh:
            ids += [int(x) for x in (line.strip().split(",")[0] for line in fh) if x.isdigit()]
    if getattr(args, "segment", None):
        from tessera.privacy.bulk import segment_members

        ids += segment_members(con, args.segment)
    return sorted(set(ids))


def cmd_bulk_edit(args) -> int:
    import uuid

    from tessera.privacy.bulk import request_bulk_edit

    con, _deployment, _paths = _warehouse_and_deployment(args)
    try:
        ids = _resolve_ids(con, args)
        edit_id = args.edit_id or uuid.uuid4().hex
        n = request_bulk_edit(con, args.action, ids, edit_id=edit_id, requested_by=args.by)
    finally:
        con.close()
    print(f"bulk edit {edit_id}: {args.action} requested for {n} customers; applied by the next run")
    return 0


def cmd_purge(args) -> int:
    """The nightly purge: soft deletes older than the grace period become real erasures."""
    import datetime as _dt
    import uuid

    from tessera.privacy import suppression as privacy

    con, deployment, paths = _warehouse_and_deployment(args)
    try:
        cutoff = _dt.datetime.now() - _dt.timedelta(hours=args.grace_hours)
        from tessera.privacy.consent import BULK_EDITS_DDL, SOFT_DELETED_SQL

        con.execute(BULK_EDITS_DDL)
        ids = [r[0] for r in con.execute(
            f"SELECT customer_id FROM ({SOFT_DELETED_SQL}) WHERE requested_at <= ?", [cutoff]).fetchall()]
        if not ids:
            print("purge: nothing to purge")
            return 0
        request_id = "purge-" + uuid.uuid4().hex[:12]
        out = privacy.forget(con, deployment, os.environ["TESSERA_SUPPRESSION_KEY"], customer_ids=ids,
                             request_id=request_id)
        files = scrub_landing_files(con, deployment, paths["landing"],
                                            os.environ["TESSERA_SUPPRESSION_KEY"], request_id,
                                            out["records"], out["orders"])
        con.execute("UPDATE ops.bulk_edits SET applied_at = now()::TIMESTAMP WHERE action = 'delete' "
                    "AND customer_id IN (SELECT unnest(?::BIGINT[]))", [ids])
    finally:
        con.close()
    print(f"purge {request_id}: {out['customers']} customers erased, {files} landing files rewritten")
    return 0


def cmd_export_person(args) -> int:
    import json

    from tessera.privacy import suppression as privacy

    con, deployment, _paths = _warehouse_and_deployment(args)
    try:
        cid = args.customer_id
        if cid is None and args.email:
            row = con.execute("""SELECT cs.customer_id FROM staging.contacts s JOIN core.customer_sources cs
                                 USING (source, source_record_id) WHERE s.email_key = lower(trim(?)) LIMIT 1""",
                              [args.email]).fetchone()
            cid = row[0] if row else None
        if cid is None:
            print("no such customer", file=sys.stderr)
            return 1
        data = privacy.subject_access(con, deployment, cid)
    finally:
        con.close()
    Path(args.out).write_text(json.dumps(data, indent=2, default=str, ensure_ascii=False), encoding="utf-8")
    print(f"subject access export of customer {cid}: {sum(len(v) for v in data['tables'].values())} rows "
          f"from {len(data['tables'])} tables -> {args.out}")
    return 0


def cmd_stop_monitoring(args) -> int:
    from tessera.privacy import suppression as privacy

    con, deployment, _paths = _warehouse_and_deployment(args)
    try:
        n = privacy.stop_monitoring(con, deployment, os.environ["TESSERA_SUPPRESSION_KEY"], args.customer_id)
    finally:
        con.close()
    print(f"stop monitoring customer {args.customer_id}: {n} identifiers blocked for behavioural events")
    return 0


def cmd_summary(args) -> int:
    _setup_env(args)
    print_summary(summary(args.run_id))
    return 0


def cmd_template(args) -> int:
    from tessera.deployment import load_deployment
    from tessera.ingest.templates import source_yaml, template_source, write_template

    config = Path(args.config or os.environ.get("TESSERA_CONFIG")
                  or PROJECT_ROOT / "examples" / "demo")
    deployment = load_deployment(config)
    out = write_template(deployment, args.registry, Path(args.out))
    print(f"wrote the {args.registry} import workbook to {out}")
    node = args.node or deployment.tree.priority[0]
    src = template_source(deployment, args.registry, args.source_name, node,
                          f"{args.source_name}/*.xlsx")
    print("\nto load filled-in copies, add this source to sources.yaml "
          f"and drop the files into <landing>/{args.source_name}/:\n")
    print(source_yaml(src))
    return 0


def cmd_runs(args) -> int:
    _setup_env(args)
    from pipelines.runs import cmd_runs as runs

    return runs(args)


def cmd_init_home(args) -> int:
    _setup_env(args)
    print(os.environ["DAGSTER_HOME"])
    return 0


def _segment_def(deployment, name: str):
    from tessera.yamlfile import ConfigError

    for seg in deployment.segments:
        if seg.name == name:
            return seg
    raise ConfigError(f"unknown segment '{name}' (one of {[s.name for s in deployment.segments]})")


def _read_ids(args) -> list[int]:
    ids = list(args.ids or [])
    if args.file:
        # one customer id per line (a header line that is not a number is skipped)
        for line in Path(args.file).read_text(encoding="utf-8").splitlines():
            cell = line.split(",")[0].strip()
            if cell.isdigit():
                ids.append(int(cell))
    return ids


def cmd_segment(args) -> int:
    from tessera.marketing.segments import add_overrides, dry_run

    con, deployment, _paths = _warehouse_and_deployment(args)
    try:
        seg = _segment_def(deployment, args.name)
        if args.segment_command == "dry-run":
            day = (dt.date.fromisoformat(args.date) if args.date else
                   con.execute("SELECT max(as_of_date) FROM ops.segment_runs WHERE segment = ?",
                               [seg.name]).fetchone()[0] or dt.date.today() - dt.timedelta(days=1))
            r = dry_run(con, deployment, seg, day, sample=args.sample)
            print(f"segment {r['segment']} ({r['kind']}) as of {r['as_of']}: {r['size']} members with the rule as configured")
            print(f"  sample ids: {', '.join(map(str, r['sample_ids'])) or '(none)'}")
            if r["stored_day"] is None:
                print("  no stored membership to compare with (never built)")
            else:
                print(f"  stored membership of {r['stored_day']}: {r['stored_size']} members")
                print(f"  would enter: {r['entering']}   would leave: {r['leaving']}")
            return 0
        ids = _read_ids(args)
        if not ids:
            print("no customer ids given (--ids or --file)", file=sys.stderr)
            return 2
        day = dt.date.fromisoformat(args.date) if args.date else dt.date.today()
        action = "include" if args.segment_command == "add" else "exclude"
        n = add_overrides(con, seg.name, ids, action, day, origin="file" if args.file else "cli")
        print(f"{n} customer ids recorded as '{action}' for segment {seg.name} from {day}; "
              "they apply when the segment is next built for that day or later")
        return 0
    finally:
        con.close()


def cmd_serve_push(args) -> int:
    """Serve the push endpoint until interrupted; records land for the next run."""
    import logging

    from pipelines.definitions import tessera_paths
    from tessera.deployment import load_deployment
    from tessera.ingest.push import PushConfigError, make_server

    _setup_env(args)
    paths = tessera_paths()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    try:
        server = make_server(load_deployment(paths["config"]), paths["landing"], args.host, args.port)
    except PushConfigError as exc:
        print(f"serve-push: {exc}", file=sys.stderr)
        return 2
    host, port = server.server_address[:2]
    print(f"push endpoint on http://{host}:{port}/v1/sources/<source>/records "
          f"(landing {paths['landing']}/_push/)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("push endpoint stopped", flush=True)  # Ctrl-C is the normal way to stop it
    finally:
        server.server_close()
    return 0


def cmd_score(args) -> int:
    from tessera.marketing.scoring import rescore

    con, deployment, _paths = _warehouse_and_deployment(args)
    try:
        r = rescore(con, deployment, dt.date.fromisoformat(args.date_from), dt.date.fromisoformat(args.date_to))
        print(f"rescored {r['days']} days; {r['actions']} threshold actions recorded")
        return 0
    finally:
        con.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tessera", description="Tessera customer data platform")
    parser.add_argument("--config", help="configuration folder (default: $TESSERA_CONFIG or examples/demo)")
    parser.add_argument("--home", help="data folder (default: $TESSERA_HOME or var/demo)")
    sub = parser.add_subparsers(dest="command", required=True)

    g = sub.add_parser("generate", help="write the sample data set with its truth")
    g.add_argument("--contacts", type=int, default=300)
    g.add_argument("--seed", type=int, default=42)
    g.add_argument("--as-of", default=DEMO_DATE.isoformat())
    g.add_argument("--out", help="folder to write into (default: the landing folder of --home)")
    g.set_defaults(func=cmd_generate)

    r = sub.add_parser("run", help="run the daily job for one day")
    r.add_argument("--date", help="business day YYYY-MM-DD (default: yesterday)")
    r.set_defaults(func=cmd_run)

    rb = sub.add_parser("rebuild", help="re-read every landing file and re-derive the warehouse "
                                        "(ids, suppressions and decisions are kept)")
    rb.add_argument("--date", help="business day YYYY-MM-DD of the run (default: yesterday)")
    rb.add_argument("--yes", action="store_true", help="confirm: raw and staging are dropped")
    rb.set_defaults(func=cmd_rebuild)

    d = sub.add_parser("demo", help="generate the sample data (if absent) and run the daily job on it")
    d.add_argument("--contacts", type=int, default=300)
    d.set_defaults(func=cmd_demo)

    s = sub.add_parser("summary", help="summary of a run (default: the last)")
    s.add_argument("--run-id")
    s.set_defaults(func=cmd_summary)

    f = sub.add_parser("forget", help="erase people everywhere and suppress them from future imports")
    f.add_argument("--email", action="append", help="e-mail address (repeatable)")
    f.add_argument("--customer-id", action="append", type=int, help="customer id (repeatable)")
    f.add_argument("--requests", help="CSV file with an 'email' and/or 'customer_id' column")
    f.add_argument("--request-id", help="id recorded in ops.erasures (default: random)")
    f.set_defaults(func=cmd_forget)

    b = sub.add_parser("bulk-edit", help="request a bulk edit, applied by the next run")
    b.add_argument("action", choices=["enable_email", "disable_email", "enable_sms", "disable_sms",
                                      "delete", "restore"])
    b.add_argument("--customer-id", action="append", type=int)
    b.add_argument("--ids-file", help="file with one customer id per line")
    b.add_argument("--segment", help="the latest members of this segment")
    b.add_argument("--by", help="who asks (recorded for audit)")
    b.add_argument("--edit-id")
    b.set_defaults(func=cmd_bulk_edit)

    pu = sub.add_parser("purge", help="erase soft-deleted customers older than the grace period")
    pu.add_argument("--grace-hours", type=float, default=24.0)
    pu.set_defaults(func=cmd_purge)

    ex = sub.add_parser("export-person", help="subject access: everything held about one person, as JSON")
    ex.add_argument("--customer-id", type=int)
    ex.add_argument("--email")
    ex.add_argument("--out", required=True)
    ex.set_defaults(func=cmd_export_person)

    sm = sub.add_parser("stop-monitoring", help="keep no new behavioural events for a customer")
    sm.add_argument("--customer-id", type=int, required=True)
    sm.set_defaults(func=cmd_stop_monitoring)

    t = sub.add_parser("template", help="write the pre-set import workbook of a registry")
    t.add_argument("registry", choices=["b2c_users", "b2b_companies", "b2b_company_users",
                                        "potential_companies"])
    t.add_argument("--out", required=True, help="the .xlsx file to write")
    t.add_argument("--source-name", default="xlsx_import",
                   help="name of the xlsx source printed for sources.yaml (default xlsx_import)")
    t.add_argument("--node", help="node of that source (default: the first of tree.priority)")
    t.set_defaults(func=cmd_template)

    sp = sub.add_parser("serve-push", help="serve the authenticated push endpoint of the push sources")
    sp.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    sp.add_argument("--port", type=int, default=8787)
    sp.set_defaults(func=cmd_serve_push)

    ru = sub.add_parser("runs", help="list runs with their state; close the dead ones")
    ru.add_argument("--close-dead", action="store_true", help="mark failed the runs whose process is gone")
    ru.add_argument("--close", action="append", metavar="RUN_ID", help="close one run (not if alive)")
    ru.add_argument("--limit", type=int, default=20)
    ru.set_defaults(func=cmd_runs)

    i = sub.add_parser("init-home", help="create DAGSTER_HOME with the project's dagster.yaml")
    i.set_defaults(func=cmd_init_home)

    sg = sub.add_parser("segment", help="dry-run a segment rule, or add / remove members explicitly")
    sgs = sg.add_subparsers(dest="segment_command", required=True)
    dr = sgs.add_parser("dry-run", help="size, sample ids and entering/leaving vs the stored membership")
    dr.add_argument("name")
    dr.add_argument("--date", help="business day YYYY-MM-DD (default: the latest built day)")
    dr.add_argument("--sample", type=int, default=10)
    for verb, text in (("add", "include customer ids (static or dynamic segment)"),
                       ("remove", "exclude customer ids (static or dynamic segment)")):
        a = sgs.add_parser(verb, help=text)
        a.add_argument("name")
        a.add_argument("--ids", type=int, nargs="+")
        a.add_argument("--file", help="a file with one customer id per line")
        a.add_argument("--date", help="effective from this day (default: today)")
    sg.set_defaults(func=cmd_segment)

    sc = sub.add_parser("score", help="scoring maintenance")
    scs = sc.add_subparsers(dest="score_command", required=True)
    rs = scs.add_parser("rescore", help="recompute scores and threshold actions from history")
    rs.add_argument("--from", dest="date_from", required=True)
    rs.add_argument("--to", dest="date_to", required=True)
    sc.set_defaults(func=cmd_score)

    pq = sub.add_parser("potential-unsubscribes",
                        help="decide unsubscribe requests from potential companies")
    pqs = pq.add_subparsers(dest="pu_command", required=True)
    pqs.add_parser("list", help="undecided requests (ids only)")
    dc = pqs.add_parser("decide", help="record a decision (every undecided request by default)")
    dc.add_argument("decision", choices=["unfreeze", "block", "download"])
    dc.add_argument("--request", action="append", help="a request id (repeatable)")
    dc.add_argument("--out", help="download: the CSV file to write")
    pq.set_defaults(func=cmd_potential_unsubscribes)

    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except Exception as exc:  # a clear one-line error, no traceback with data in it
        from tessera.yamlfile import ConfigError

        if isinstance(exc, ConfigError):
            print(f"configuration error: {exc}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())
