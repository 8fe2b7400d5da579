"""Unsubscribe requests from potential companies, and the decision each one needs.

Why apart from the consent ledger: B2C and B2B people have consent per channel, and an
unsubscribe is a dated consent event that only an explicit, newer grant can lift
(``tessera.privacy.consent``). A purchased list has no consent at all, and the Sendero seed is
strict about it: when someone in the potential-companies registry asks to be removed,
the administrator must decide before that registry is used again:

- ``unfreeze``: the request was a mistake; the company stays in the registry's exports;
- ``block``: keep the data (so a re-import does not bring it back unseen) but never
  export it;
- ``download``: the requests are written to a CSV (to clean the ERP); the company is
  blocked too, since only ``unfreeze`` ignores a request.

Until every request has a decision, the potential registry feeds no export: the blocking
check ``potential_unsubscribes_are_decided`` on ``core/potential_companies`` stops
``exports/potential_companies``, and the export, if run alone, publishes no rows and says
why in its manifest and metadata.

Tables: ``core.potential_unsubscribes`` (one row per request matched to a potential
company by e-mail, with its decision, rebuilt each run) and
``ops.potential_unsubscribe_decisions`` (the decisions, append-only, never rebuilt).
"""

from __future__ import annotations

import csv
import datetime as dt
import os
import time
from pathlib import Path

from tessera.engine import Engine, SqlStep, as_engine
from tessera.engine.steps import ddl_statements
from tessera.feeds.publish import feed_table_steps, publish_csv, sweep_stale_temps, write_manifest

DECISIONS = ("unfreeze", "block", "download")


WITHHELD_MESSAGE = ("NOT EXPORTED: {n} unsubscribe request(s) from potential companies await a "
                    "decision (unfreeze, block or download): run `tessera potential-unsubscribes "
                    "list`, then `tessera potential-unsubscribes decide`")


def build_potential_unsubscribes(engine: Engine) -> dict:
    """``core.potential_unsubscribes``: each unsubscribe request whose e-mail is a potential
    company's, with the latest decision on it (NULL: undecided)."""
    engine = as_engine(engine)
    engine.run(*ddl_statements(__package__, "tables.sql"))
    have = (engine.table_exists("staging", "unsubscribes")
            and engine.table_exists("staging", "potential_companies")
            # without an unsubscribe source, staging.unsubscribes is an empty two-column table
            and engine.scalar(SqlStep(
                "reports.unsubscribe_columns",
                "SELECT count(*) FROM information_schema.columns WHERE "
                "table_schema = 'staging' AND table_name = 'unsubscribes' "
                "AND column_name IN ('email_key', 'source', 'source_record_id', "
                "'channel', 'requested_at')")) == 5)
    requests = ("""
        SELECT p.source AS potential_source, p.source_record_id AS potential_record_id,
               u.source AS request_source, u.source_record_id AS request_id, u.channel,
               u.requested_at
        FROM staging.unsubscribes u JOIN staging.potential_companies p ON p.email_key = u.email_key
        WHERE u.email_key IS NOT NULL""" if have else
                """SELECT NULL::VARCHAR potential_source, NULL::VARCHAR potential_record_id,
                   NULL::VARCHAR request_source, NULL::VARCHAR request_id, NULL::VARCHAR channel,
                   NULL::TIMESTAMP requested_at WHERE false""")
    with engine.together():
        engine.replace_table("core.potential_unsubscribes", SqlStep("reports.potential_unsubscribes", f"""
            WITH d AS (
                SELECT request_source, request_id, decision, decided_at
                FROM ops.potential_unsubscribe_decisions
                QUALIFY row_number() OVER (PARTITION BY request_source, request_id
                                           ORDER BY decided_at DESC) = 1
            )
            SELECT r.*, d.decision, d.decided_at
            FROM ({requests}) r LEFT JOIN d USING (request_source, request_id)
            ORDER BY r.requested_at, r.request_id, r.potential_record_id"""))
    return pending_counts(engine)


def pending_counts(engine: Engine) -> dict:
    row = as_engine(engine).rows(SqlStep("reports.pending_counts", """
        SELECT count(*), count(*) FILTER (WHERE decision IS NULL),
               count(*) FILTER (WHERE decision IN ('block', 'download')),
               count(*) FILTER (WHERE decision = 'unfreeze')
        FROM core.potential_unsubscribes"""))[0]
    return {"requests": int(row[0]), "undecided": int(row[1]), "blocked": int(row[2]),
            "unfrozen": int(row[3])}


def pending(engine: Engine) -> list[tuple]:
    """(request_source, request_id, potential_source, potential_record_id, channel,
    requested_at) of the undecided requests: ids, never e-mails."""
    return as_engine(engine).rows(SqlStep("reports.pending", """
        SELECT request_source, request_id, potential_source, potential_record_id, channel, requested_at
        FROM core.potential_unsubscribes WHERE decision IS NULL
        ORDER BY requested_at, request_id"""))


def decide(engine: Engine, decision: str, request_ids: list[str] | None,
           now: dt.datetime, origin: str = "cli", download_to: Path | None = None) -> int:
    """Record ``decision`` for the given requests (None: every undecided one); with
    ``download``, first write the requests (company, e-mail, channel, date) to a CSV."""
    if decision not in DECISIONS:
        raise ValueError(f"decision must be one of {', '.join(DECISIONS)}")
    engine = as_engine(engine)
    engine.run(*ddl_statements(__package__, "tables.sql"))
    if not engine.table_exists("core", "potential_unsubscribes"):
        build_potential_unsubscribes(engine)
    rows = engine.rows(SqlStep("reports.requests_to_decide", """
        SELECT DISTINCT request_source, request_id FROM core.potential_unsubscribes
        WHERE (CAST($ids AS VARCHAR[]) IS NULL AND decision IS NULL)
           OR list_contains(CAST($ids AS VARCHAR[]), request_id)
        ORDER BY 1, 2""", {"ids": request_ids}))
    if request_ids is not None:
        unknown = sorted(set(request_ids) - {r[1] for r in rows})
        if unknown:
            raise ValueError(f"unknown request id(s): {', '.join(unknown)}")
    if decision == "download":
        if download_to is None:
            raise ValueError("download needs a file to write (--out)")
        _write_download(engine, [r[1] for r in rows], Path(download_to))
    decided = {"sources": [s for s, _ in rows], "ids": [i for _, i in rows], "decision": decision,
               "now": now, "origin": origin}
    with engine.together():
        engine.append("ops.potential_unsubscribe_decisions", SqlStep("reports.decisions", """
            SELECT s, i, $decision, CAST($now AS TIMESTAMP), $origin
            FROM (SELECT unnest(CAST($sources AS VARCHAR[])) AS s,
                         unnest(CAST($ids AS VARCHAR[])) AS i)""", decided))
        # the current table follows at once, so an export run right after sees the decision
        engine.run(SqlStep("reports.apply_decisions", """
            UPDATE core.potential_unsubscribes p SET decision = $decision, decided_at = $now
            WHERE list_contains(CAST($ids AS VARCHAR[]), p.request_id)""",
            {"decision": decision, "now": now, "ids": decided["ids"]}))
    return len(rows)


def _write_download(engine: Engine, request_ids: list[str], out: Path) -> None:
    rows = engine.rows(SqlStep("reports.download", """
        SELECT pu.request_id, pu.potential_record_id, p.legal_name, p.email, pu.channel, pu.requested_at
        FROM core.potential_unsubscribes pu
        JOIN staging.potential_companies p
          ON p.source = pu.potential_source AND p.source_record_id = pu.potential_record_id
        WHERE list_contains(CAST($ids AS VARCHAR[]), pu.request_id)
        ORDER BY pu.requested_at, pu.request_id""", {"ids": request_ids}))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    with open(tmp, "w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(["request_id", "potential_record_id", "legal_name", "email", "channel", "requested_at"])
        w.writerows(rows)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, out)


def export_potential_companies(engine: Engine, as_of: dt.date, feeds_dir: Path,
                               now: dt.datetime) -> dict:
    """Publish the potential registry for the day: companies still potential, not blocked.

    With undecided requests nothing is exported: no data file, and the manifest says so
    (``withheld``, ``message``). Otherwise the CSV and its manifest, atomically.
    """
    engine = as_engine(engine)
    started = time.time()
    counts = build_potential_unsubscribes(engine)
    out_dir = feeds_dir / "potential_companies"
    swept = sweep_stale_temps(out_dir, started)
    counts = {**counts, "stale_temp_files": swept["files"], "stale_temp_bytes": swept["bytes"]}
    manifest_path = out_dir / f"potential_companies_{as_of.isoformat()}.manifest.json"
    base = {"feed": "potential_companies", "as_of_date": as_of.isoformat(), "format": "csv",
            "written_at": now.isoformat(), "undecided_unsubscribes": counts["undecided"]}
    if counts["undecided"]:
        message = WITHHELD_MESSAGE.format(n=counts["undecided"])
        out_dir.mkdir(parents=True, exist_ok=True)
        stale = out_dir / f"potential_companies_{as_of.isoformat()}.csv"
        if stale.exists():
            stale.unlink()  # an earlier delivery of the day must not look current
        write_manifest(manifest_path, {**base, "withheld": True, "rows": 0, "file": None,
                                       "message": message})
        return {"rows": 0, "withheld": True, "message": message, **counts}
    sql = """
        SELECT p.source_record_id, p.legal_name, p.vat_number, p.email, p.city, p.province,
               p.country, p.sector_macro, p.sector_micro
        FROM core.potential_companies p
        WHERE p.status = 'potential' AND NOT EXISTS (
            SELECT 1 FROM core.potential_unsubscribes u
            WHERE u.potential_source = p.source AND u.potential_record_id = p.source_record_id
              AND u.decision IN ('block', 'download'))
        ORDER BY p.source, p.source_record_id"""
    table = engine.arrow(SqlStep("reports.potential_companies_feed", sql))
    columns = table.column_names
    rows = list(zip(*table.to_pydict().values()))
    data_path = out_dir / f"potential_companies_{as_of.isoformat()}.csv"
    sha = publish_csv(data_path, columns, rows, for_spreadsheet=True)
    write_manifest(manifest_path, {**base, "withheld": False, "rows": len(rows),
                                   "file": data_path.name, "sha256": sha, "columns": columns,
                                   "message": f"{counts['blocked']} blocked by unsubscribe decisions"})
    engine.run(*feed_table_steps())
    with engine.together():
        engine.replace_partition(
            "exports.feed_deliveries", {"feed": "potential_companies", "as_of_date": as_of},
            SqlStep("reports.potential_companies_delivery",
                    "SELECT 'potential_companies', CAST($as_of AS DATE), $file, CAST($rows AS BIGINT), "
                    "$sha, CAST($now AS TIMESTAMP)", {"as_of": as_of, "file": str(data_path),
                                                       "rows": len(rows), "sha": sha, "now": now}))
        engine.run(SqlStep("reports.potential_companies_table",
                           "CREATE TABLE IF NOT EXISTS exports.potential_companies AS SELECT "
                           f"CAST(NULL AS DATE) AS as_of_date, * FROM ({sql}) WHERE false"))
        engine.replace_partition("exports.potential_companies", {"as_of_date": as_of}, SqlStep(
            "reports.potential_companies_rows", f"SELECT CAST($as_of AS DATE), * FROM ({sql})",
            {"as_of": as_of}))
    return {"rows": len(rows), "withheld": False, "file": str(data_path), "sha256": sha, **counts}
