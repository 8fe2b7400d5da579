"""Bulk edits (Sendero): delete, enable/disable e-mail, enable/disable SMS on a selection.

A request is recorded in ``ops.bulk_edits`` (who, when, what, for which customers) and
applied by the next run: consent actions become explicit MANAGE events in the consent
ledger; ``delete`` is a soft delete, restorable until the purge. Requests are audited:
rows are never removed, only marked as applied.
"""

from __future__ import annotations

import datetime as dt

import duckdb

from tessera.privacy.consent import BULK_ACTIONS, BULK_EDITS_DDL

ACTIONS = (*BULK_ACTIONS, "delete", "restore")


def request_bulk_edit(con: duckdb.DuckDBPyConnection, action: str, customer_ids: list[int], *,
                      edit_id: str, requested_by: str | None = None, now: dt.datetime | None = None) -> int:
    if action not in ACTIONS:
        raise ValueError(f"unknown bulk action '{action}' (one of {', '.join(ACTIONS)})")
    now = now or dt.datetime.now().replace(microsecond=0)
    con.execute(BULK_EDITS_DDL)
    ids = sorted({int(c) for c in customer_ids})
    if not ids:
        return 0
    con.execute("BEGIN TRANSACTION")
    try:
        con.executemany("INSERT INTO ops.bulk_edits VALUES (?, ?, ?, ?, ?, NULL)",
                        [[edit_id, action, c, now, requested_by] for c in ids])
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    return len(ids)


def segment_members(con: duckdb.DuckDBPyConnection, segment: str) -> list[int]:
    """The latest members of a segment, as a bulk-edit selection."""
    return [r[0] for r in con.execute(
        "SELECT customer_id FROM marketing.segment_members WHERE segment = ? AND as_of_date = "
        "(SELECT max(as_of_date) FROM marketing.segment_members WHERE segment = ?)",
        [segment, segment]).fetchall()]
