"""The ``tessera`` command line.

    tessera generate --contacts N [--seed S] [--as-of D] [--out DIR]   sample data + truth
    tessera run [--date YYYY-MM-DD]                         the daily job, in process
    tessera demo [--contacts N]                             generate + run + summary
    tessera summary [--run-id ID]                           what the last run did
    tessera init-home                                       prepare DAGSTER_HOME
    tessera segment dry-run NAME [--date D]                 size, sample ids, entering/leaving
    tessera segment add|remove NAME (--ids 1 2 | --file F) [--date D]   explicit overrides
    tessera score rescore --from D1 --to D2                 recompute scores and actions

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

PROJECT_ROOT = Path(__file__).resolve().parents[1]
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
    from tessera.sample_data import generate

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
    return job.execute_in_process(partition_key=day.isoformat(), instance=instance,
                                  raise_on_error=False)


def summary(run_id: str | None = None) -> dict:
    from pipelines.definitions import tessera_paths
    from tessera.warehouse import connect

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


def cmd_demo(args) -> int:
    _setup_env(args)
    from pipelines.definitions import tessera_paths
    from tessera.sample_data import generate

    landing = tessera_paths()["landing"]
    if not any(landing.glob("*/*")):
        print(f"generating sample data ({args.contacts} persons) into {landing}")
        generate(landing, contacts=args.contacts, seed=42, as_of=DEMO_DATE)
    print(f"running daily_job as of {DEMO_DATE} (warehouse {tessera_paths()['warehouse']})")
    result = run_daily(DEMO_DATE)
    print_summary(summary(result.run_id))
    print("\nopen the Dagster UI with `make ui` (http://127.0.0.1:3000) to browse the run.")
    return 0 if result.success else 1


def cmd_summary(args) -> int:
    _setup_env(args)
    print_summary(summary(args.run_id))
    return 0


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


def _warehouse_and_deployment(args):
    _setup_env(args)
    from pipelines.definitions import tessera_paths
    from tessera.config import load_deployment
    from tessera.warehouse import connect, ensure_warehouse

    paths = tessera_paths()
    deployment = load_deployment(paths["config"])
    con = connect(paths["warehouse"])
    ensure_warehouse(con)
    return deployment, con


def cmd_segment(args) -> int:
    from tessera.segments import add_overrides, dry_run

    deployment, con = _warehouse_and_deployment(args)
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


def cmd_score(args) -> int:
    from tessera.scoring import rescore

    deployment, con = _warehouse_and_deployment(args)
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

    d = sub.add_parser("demo", help="generate the sample data (if absent) and run the daily job on it")
    d.add_argument("--contacts", type=int, default=300)
    d.set_defaults(func=cmd_demo)

    s = sub.add_parser("summary", help="summary of a run (default: the last)")
    s.add_argument("--run-id")
    s.set_defaults(func=cmd_summary)

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
