"""Bulk edits (Sendero): delete, enable/disable e-mail, enable/disable SMS on a selection.

A request is recorded in ``ops.bulk_edits`` (who, when, what, for which customers) and
applied by the next run: consent actions become explicit MANAGE events in the consent
ledger; ``delete`` is a soft delete, restorable until the purge. Requests are audited:
rows are never removed, only marked as applied.
"""

from __future__ import annotations

import datetime as dt

from tessera.engine import Engine, SqlStep, as_engine
from tessera.privacy.consent import BULK_ACTIONS, bulk_edits_ddl

ACTIONS = (*BULK_ACTIONS, "delete", "restore")


def request_bulk_edit(engine: Engine, action: str, customer_ids: list[int], *,
                      edit_id: str, requested_by: str | None = None, now: dt.datetime | None = None) -> int:
    if action not in ACTIONS:
        raise ValueError(f"unknown bulk action '{action}' (one of {', '.join(ACTIONS)})")
    engine = as_engine(engine)
    # to the microsecond: the latest of a delete and a restore is told by its stamp alone
    now = now or dt.datetime.now()
    engine.run(bulk_edits_ddl())
    ids = sorted({int(c) for c in customer_ids})
    if not ids:
        return 0
    with engine.together():
        engine.append("ops.bulk_edits", SqlStep(
            "privacy.bulk_edit_request",
            "SELECT $edit_id, $action, unnest(CAST($ids AS BIGINT[])), CAST($now AS TIMESTAMP), "
            "$by, NULL", {"edit_id": edit_id, "action": action, "ids": ids, "now": now,
                          "by": requested_by}))
    return len(ids)


def segment_members(engine: Engine, segment: str) -> list[int]:
    """The latest members of a segment, as a bulk-edit selection."""
    return [r[0] for r in as_engine(engine).rows(SqlStep(
        "privacy.bulk_edit_segment",
        "SELECT customer_id FROM marketing.segment_members WHERE segment = $segment AND "
        "as_of_date = (SELECT max(as_of_date) FROM marketing.segment_members WHERE segment = $segment)",
        {"segment": segment}))]
