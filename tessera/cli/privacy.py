"""People's rights and their data: forget, purge, unsuppress, bulk-edit, export-person,
stop-monitoring, potential-unsubscribes.

Messages carry counts and ids only: an e-mail given on the command line is personal data
and is never echoed back, neither in output nor in errors.
"""

from __future__ import annotations

import datetime as dt
import os
import sys
from pathlib import Path

import click

from tessera.cli.common import confirmed, warehouse_and_deployment, yes_option

BULK_ACTIONS = ["enable_email", "disable_email", "enable_sms", "disable_sms", "delete", "restore"]


@click.command("forget", short_help="Erase people and suppress them.")
@click.option("--email", "emails", multiple=True, help="e-mail address (repeatable)")
@click.option("--customer-id", "customer_ids", type=int, multiple=True,
              help="customer id (repeatable)")
@click.option("--requests", type=click.Path(dir_okay=False),
              help="CSV file with an 'email' and/or 'customer_id' column")
@click.option("--request-id", help="id recorded in ops.erasures (default: random)")
@yes_option("erase without asking (needed when not run from a terminal)")
@click.pass_context
def forget_cmd(ctx: click.Context, emails: tuple[str, ...], customer_ids: tuple[int, ...],
               requests: str | None, request_id: str | None, yes: bool) -> int:
    """Erase people everywhere and suppress them from future imports."""
    import csv

    emails_, ids = list(emails), list(customer_ids)
    if requests:
        with open(requests, encoding="utf-8-sig", newline="") as fh:
            for row in csv.DictReader(fh):
                if (row.get("email") or "").strip():
                    emails_.append(row["email"])
                if (row.get("customer_id") or "").strip():
                    ids.append(int(row["customer_id"]))
    if not emails_ and not ids:
        print("nothing to forget: give --email, --customer-id or --requests", file=sys.stderr)
        return 2
    refused = confirmed(f"forget erases {len(emails_)} e-mail address(es) and {len(ids)} "
                        "customer id(s) from every table and landing file, for good", yes)
    if refused is not None:
        return refused
    import uuid

    from tessera.ingest.scrub import finish_erasures
    from tessera.privacy import suppression as privacy

    con, deployment, paths = warehouse_and_deployment(ctx)
    request_id = request_id or uuid.uuid4().hex
    key = os.environ["TESSERA_SUPPRESSION_KEY"]
    try:
        out = privacy.forget(con, deployment, key, emails=emails_, customer_ids=ids,
                             request_id=request_id)
        privacy._test_point("forget-after-commit")
        files = finish_erasures(con, deployment, paths["landing"], key).get(request_id, 0)
        feeds = _scrub_feeds(con, deployment, paths)
        _republish(con, paths)
    finally:
        con.close()
    # Counts only: the request's e-mails are personal data and are not echoed back.
    print(f"forget request {request_id}: {out['customers']} customers erased, "
          f"{out['identifiers']} identifiers suppressed, {out['rows_deleted']} rows deleted, "
          f"{files} landing files rewritten, {feeds['files_rewritten']} feed files rewritten, "
          f"{feeds['records_dropped']} records dropped from unsent batches")
    if feeds.get("unconfigured_without_definition"):
        print(f"warning: {feeds['unconfigured_without_definition']} feeds no longer in feeds.yaml "
              "were delivered before their definitions were kept; scrub their files by hand")
    return 0


def _scrub_feeds(con, deployment, paths) -> dict:
    """The erased people out of the kept feed files and the unacknowledged batch bodies
    (the next feed run does it too, should this be interrupted)."""
    from tessera.feeds.erasure import scrub_feeds

    return scrub_feeds(con, deployment.feeds, paths["feeds"],
                       dt.datetime.now().replace(microsecond=0))


def _republish(con, paths) -> None:
    """The web page reads a published snapshot: publish it again at once, or it would
    show an erased or soft-deleted person until the next run."""
    from tessera.engine import as_engine
    from tessera.web.snapshot import republish_if_published

    republish_if_published(as_engine(con), paths["warehouse"])


def _resolve_ids(con, customer_ids, ids_file, segment) -> list[int]:
    ids = list(customer_ids or [])
    if ids_file:
        with open(ids_file, encoding="utf-8-sig") as fh:
            ids += [int(x) for x in (line.strip().split(",")[0] for line in fh) if x.isdigit()]
    if segment:
        from tessera.privacy.bulk import segment_members

        ids += segment_members(con, segment)
    return sorted(set(ids))


@click.command("bulk-edit")
@click.argument("action", type=click.Choice(BULK_ACTIONS), metavar="ACTION")
@click.option("--customer-id", "customer_ids", type=int, multiple=True,
              help="customer id (repeatable)")
@click.option("--ids-file", type=click.Path(dir_okay=False),
              help="file with one customer id per line")
@click.option("--segment", help="the latest members of this segment")
@click.option("--by", help="who asks (recorded for audit)")
@click.option("--edit-id", help="id recorded in ops.bulk_edits (default: random)")
@yes_option("for delete: soft-delete without asking (needed when not run from a terminal)")
@click.pass_context
def bulk_edit_cmd(ctx: click.Context, action: str, customer_ids: tuple[int, ...],
                  ids_file: str | None, segment: str | None, by: str | None,
                  edit_id: str | None, yes: bool) -> int:
    """Request a bulk edit, applied by the next run.

    ACTION is one of enable_email, disable_email, enable_sms, disable_sms, delete (a soft
    delete: the purge erases the person after the grace period) and restore.
    """
    if action == "delete":
        refused = confirmed("bulk-edit delete soft-deletes the selected customers; "
                            "the purge then erases them", yes)
        if refused is not None:
            return refused
    import uuid

    from tessera.privacy.bulk import request_bulk_edit

    con, _deployment, _paths = warehouse_and_deployment(ctx)
    try:
        ids = _resolve_ids(con, customer_ids, ids_file, segment)
        edit_id = edit_id or uuid.uuid4().hex
        n = request_bulk_edit(con, action, ids, edit_id=edit_id, requested_by=by)
        _republish(con, _paths)
    finally:
        con.close()
    print(f"bulk edit {edit_id}: {action} requested for {n} customers; applied by the next run")
    return 0


@click.command("purge", short_help="Erase soft deletes past the grace period.")
@click.option("--grace-hours", type=float, default=24.0, show_default=True,
              help="only soft deletes older than this many hours are erased")
@yes_option("erase without asking (needed when run by a scheduler)")
@click.pass_context
def purge_cmd(ctx: click.Context, grace_hours: float, yes: bool) -> int:
    """Erase soft-deleted customers older than the grace period (the nightly purge)."""
    refused = confirmed("purge erases every soft-deleted customer past the grace period, "
                        "for good", yes)
    if refused is not None:
        return refused
    import uuid

    from tessera.ingest.scrub import finish_erasures
    from tessera.privacy import suppression as privacy
    from tessera.privacy.consent import BULK_EDITS_DDL, SOFT_DELETED_SQL

    con, deployment, paths = warehouse_and_deployment(ctx)
    key = os.environ["TESSERA_SUPPRESSION_KEY"]
    try:
        cutoff = dt.datetime.now() - dt.timedelta(hours=grace_hours)
        con.execute(BULK_EDITS_DDL)
        ids = [r[0] for r in con.execute(
            f"SELECT customer_id FROM ({SOFT_DELETED_SQL}) WHERE requested_at <= ?",
            [cutoff]).fetchall()]
        if not ids:
            print("purge: nothing to purge")
            return 0
        request_id = "purge-" + uuid.uuid4().hex[:12]
        # the soft deletes are marked applied in the erasure's own transaction
        applied = ("UPDATE ops.bulk_edits SET applied_at = now()::TIMESTAMP WHERE action = "
                   "'delete' AND customer_id IN (SELECT unnest(?::BIGINT[]))", [ids])
        out = privacy.forget(con, deployment, key, customer_ids=ids, request_id=request_id,
                             also=(applied,))
        privacy._test_point("forget-after-commit")
        files = finish_erasures(con, deployment, paths["landing"], key).get(request_id, 0)
        feeds = _scrub_feeds(con, deployment, paths)
        _republish(con, paths)
    finally:
        con.close()
    print(f"purge {request_id}: {out['customers']} customers erased, "
          f"{files} landing files rewritten, {feeds['files_rewritten']} feed files rewritten")
    return 0


_KINDS = {"email": "email", "phone": "phone", "tax_code": "tax_code", "erp_id": "erp_id"}


@click.command("unsuppress", short_help="Re-admit one erased identifier (audited).")
@click.option("--email", help="the e-mail address to re-admit")
@click.option("--phone", help="the phone number to re-admit")
@click.option("--tax-code", help="the tax code to re-admit")
@click.option("--erp-id", help="the ERP customer id to re-admit")
@click.option("--reason", "why", required=True,
              help="why (mandatory, kept in ops.unsuppressions; no personal data in it)")
@click.option("--by", help="who asks (default: the login running the command)")
@click.option("--lift", multiple=True, type=click.Choice(["erasure", "stop_monitoring",
                                                          "hard_bounce"]),
              help="which suppressions to lift (repeatable; default: erasure)")
@click.option("--request-id", help="id recorded in ops.unsuppressions (default: random)")
@yes_option("lift without asking (needed when not run from a terminal)")
@click.pass_context
def unsuppress_cmd(ctx: click.Context, email: str | None, phone: str | None,
                   tax_code: str | None, erp_id: str | None, why: str, by: str | None,
                   lift: tuple[str, ...], request_id: str | None, yes: bool) -> int:
    """Lift the suppression of ONE identifier of a person who came back and consented anew.

    Nothing erased is restored: only records delivered after this command are loaded, by
    the next run. Each lifted ledger entry leaves an audit row in ops.unsuppressions
    (request id, keyed hash, what was lifted, why, who, when).
    """
    given = {k: v for k, v in (("email", email), ("phone", phone), ("tax_code", tax_code),
                               ("erp_id", erp_id)) if v is not None}
    if len(given) != 1:
        print("give exactly one of --email, --phone, --tax-code, --erp-id", file=sys.stderr)
        return 2
    if not why.strip():
        print("--reason must say why", file=sys.stderr)
        return 2
    (kind, value), = given.items()
    lift = lift or ("erasure",)
    refused = confirmed(f"unsuppress lets the next run load new records of one {kind} "
                        f"again (lifting: {', '.join(lift)})", yes)
    if refused is not None:
        return refused
    import getpass
    import uuid

    from tessera.privacy import suppression as privacy

    con, _deployment, _paths = warehouse_and_deployment(ctx)
    request_id = request_id or uuid.uuid4().hex
    login = getpass.getuser()
    try:
        n = privacy.unsuppress(con, os.environ["TESSERA_SUPPRESSION_KEY"], _KINDS[kind], value,
                               why=why, requested_by=by or login, os_user=login,
                               request_id=request_id, lift=tuple(lift))
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)  # never the identifier itself
        return 2
    finally:
        con.close()
    if n == 0:
        print(f"unsuppress: that {kind} is under no {'/'.join(lift)} suppression; nothing done",
              file=sys.stderr)
        return 1
    print(f"unsuppress request {request_id}: {n} suppression(s) of one {kind} lifted; "
          "new records are loaded by the next run")
    return 0


@click.command("export-person", short_help="Subject access: one person, as JSON.")
@click.option("--customer-id", type=int, help="the customer's id")
@click.option("--email", help="an e-mail address of the person (if no --customer-id)")
@click.option("--out", required=True, type=click.Path(dir_okay=False),
              help="the JSON file to write")
@click.pass_context
def export_person_cmd(ctx: click.Context, customer_id: int | None, email: str | None,
                      out: str) -> int:
    """Subject access: everything held about one person, as JSON."""
    import json

    from tessera.privacy import suppression as privacy

    con, deployment, _paths = warehouse_and_deployment(ctx)
    try:
        cid = customer_id
        if cid is None and email:
            row = con.execute("""SELECT cs.customer_id FROM staging.contacts s
                                 JOIN core.customer_sources cs USING (source, source_record_id)
                                 WHERE s.email_key = lower(trim(?)) LIMIT 1""",
                              [email]).fetchone()
            cid = row[0] if row else None
        if cid is None:
            print("no such customer", file=sys.stderr)
            return 1
        data = privacy.subject_access(con, deployment, cid)
    finally:
        con.close()
    Path(out).write_text(json.dumps(data, indent=2, default=str, ensure_ascii=False),
                         encoding="utf-8")
    print(f"subject access export of customer {cid}: "
          f"{sum(len(v) for v in data['tables'].values())} rows "
          f"from {len(data['tables'])} tables -> {out}")
    return 0


@click.command("stop-monitoring")
@click.option("--customer-id", type=int, required=True, help="the customer's id")
@click.pass_context
def stop_monitoring_cmd(ctx: click.Context, customer_id: int) -> int:
    """Keep no new behavioural events for a customer."""
    from tessera.privacy import suppression as privacy

    con, deployment, _paths = warehouse_and_deployment(ctx)
    try:
        n = privacy.stop_monitoring(con, deployment, os.environ["TESSERA_SUPPRESSION_KEY"],
                                    customer_id)
    finally:
        con.close()
    print(f"stop monitoring customer {customer_id}: {n} identifiers blocked for behavioural "
          "events")
    return 0


@click.group("potential-unsubscribes", short_help="Decide unsubscribes from potential companies.")
def potential_unsubscribes() -> None:
    """Decide unsubscribe requests from potential companies.

    Sendero's rule: they are decided before that registry is exported again. Lists print
    ids only; ``download`` writes the requests (with e-mails) to the file asked for, never
    to the screen.
    """


@potential_unsubscribes.command("list")
@click.pass_context
def pu_list_cmd(ctx: click.Context) -> int:
    """Undecided requests (ids only)."""
    from tessera.reports.potential_unsubscribes import build_potential_unsubscribes, pending

    con, _deployment, _paths = warehouse_and_deployment(ctx)
    try:
        build_potential_unsubscribes(con)
        rows = pending(con)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        con.close()
    print(f"{len(rows)} undecided unsubscribe request(s) from potential companies")
    for req_source, req_id, p_source, p_id, channel, at in rows:
        print(f"  request {req_id} ({req_source}, {channel}, {at}) -> potential company "
              f"{p_source}:{p_id}")
    return 0


@potential_unsubscribes.command("decide")
@click.argument("decision", type=click.Choice(["unfreeze", "block", "download"]),
                metavar="DECISION")
@click.option("--request", "requests", multiple=True,
              help="a request id (repeatable; default: every undecided request)")
@click.option("--out", type=click.Path(dir_okay=False), help="download: the CSV file to write")
@click.pass_context
def pu_decide_cmd(ctx: click.Context, decision: str, requests: tuple[str, ...],
                  out: str | None) -> int:
    """Record a decision (every undecided request by default).

    DECISION is unfreeze (the request was a mistake), block, or download (write the list
    to --out, then block).
    """
    from tessera.reports.potential_unsubscribes import build_potential_unsubscribes, decide

    con, _deployment, _paths = warehouse_and_deployment(ctx)
    try:
        build_potential_unsubscribes(con)
        if decision == "download" and not out:
            print("download needs --out FILE.csv", file=sys.stderr)
            return 2
        n = decide(con, decision, list(requests) or None,
                   dt.datetime.now().replace(microsecond=0), origin="cli",
                   download_to=Path(out) if out else None)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        con.close()
    print(f"{decision}: {n} request(s) decided"
          + (f"; list written to {out}" if decision == "download" else ""))
    return 0


COMMANDS = [forget_cmd, purge_cmd, unsuppress_cmd, bulk_edit_cmd, export_person_cmd,
            stop_monitoring_cmd, potential_unsubscribes]
