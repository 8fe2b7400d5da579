"""The card's coupons and journeys tabs: what the activation stage did to one person.

Why a module of its own: the activation stage (``tessera.activation``) owns these tables
and changes in parallel; the page only reads them from the published snapshot, through
the few columns named here, so a new column there changes nothing here. The outbox is
published without its payload and with the target only where it is not an address (a
tag, a webhook destination), see :data:`tessera.web.snapshot.READ_SELECTS`.

A coupon counts as used when the person has a ``coupon_redeemed`` event naming its code,
or, where the event names no code, its campaign, on a day from issue to expiry: that is
how the journeys' own check reads a redemption (an event, there is no redemption table).
"""

from __future__ import annotations

from typing import Any

from tessera.engine import Engine, SqlStep
from tessera.web.queries import LIST_LIMIT, Table, _has, _table

REDEEMED = "coupon_redeemed"


def _today(engine: Engine) -> str:
    """The day coupons expire against: the activation's last evaluated day (the data's
    day, not the server's clock), else the current date."""
    if _has(engine, "activation.evaluated_days"):
        return ("coalesce((SELECT max(as_of_date) FROM activation.evaluated_days), "
                "current_date)")
    return "current_date"


def coupons_step(engine: Engine, customer_id: int) -> SqlStep:
    # the person's redemptions are read with the person's id, so that the events' Parquet
    # row groups of other people are skipped (a correlated subquery would scan them all)
    redeemed = ("SELECT occurred_at, properties FROM core.events "
                f"WHERE customer_id = $id AND event_type = '{REDEEMED}'"
                if _has(engine, "core.events") else
                "SELECT CAST(NULL AS TIMESTAMP) AS occurred_at, CAST(NULL AS VARCHAR) AS properties "
                "WHERE FALSE")
    return SqlStep("web.coupons", f"""
        WITH k AS (
            SELECT code, campaign, discount, issued_on, valid_until, origin, name
            FROM activation.coupons WHERE customer_id = $id),
        r AS ({redeemed}),
        u AS (
            SELECT k.code, min(r.occurred_at) AS used_at
            FROM k JOIN r ON CAST(r.occurred_at AS DATE) BETWEEN k.issued_on AND k.valid_until
             AND coalesce(json_extract_string(r.properties, '$.code') = k.code,
                          json_extract_string(r.properties, '$.campaign') = k.campaign, FALSE)
            GROUP BY k.code)
        SELECT k.code, k.campaign, k.discount AS value, k.issued_on AS issued,
               k.valid_until AS expires, u.used_at IS NOT NULL AS used, u.used_at,
               CASE WHEN u.used_at IS NOT NULL THEN 'used'
                    WHEN k.valid_until < {_today(engine)} THEN 'expired'
                    ELSE 'valid' END AS status,
               k.origin || ' ' || k.name AS issued_by
        FROM k LEFT JOIN u ON u.code = k.code
        ORDER BY k.issued_on DESC, k.code LIMIT $limit""",
        {"id": customer_id, "limit": LIST_LIMIT})


def coupons_tab(engine: Engine, row: dict[str, Any]) -> list[Table]:
    if not _has(engine, "activation.coupons"):
        return [Table("Coupons", [], empty="No coupon issued yet: coupons come from journeys "
                                            "and automations (journeys.yaml, automations.yaml).")]
    return [_table(engine, "Coupons, newest first", coupons_step(engine, row["customer_id"]),
                   empty="No coupon issued to this person.",
                   note=f"Used: a {REDEEMED} event naming the code (else the campaign) "
                        "between issue and expiry.")]


def journeys_tab(engine: Engine, row: dict[str, Any]) -> list[Table]:
    cid = row["customer_id"]
    tables = []
    if _has(engine, "activation.journey_state"):
        tables.append(_table(engine, "Journeys", SqlStep("web.journey_state", """
            SELECT journey, step, status, step_since AS since, entered_on, branch, version
            FROM activation.journey_state WHERE customer_id = $id
            ORDER BY status = 'active' DESC, entered_on DESC, journey LIMIT $limit""",
            {"id": cid, "limit": LIST_LIMIT}), empty="In no journey."))
    if _has(engine, "activation.journey_history"):
        tables.append(_table(engine, "Journey moves, newest first", SqlStep("web.journey_history", """
            SELECT as_of_date AS day, journey, step, outcome, next_step, branch
            FROM activation.journey_history WHERE customer_id = $id
            ORDER BY as_of_date DESC, journey, entered_on DESC, step LIMIT $limit""",
            {"id": cid, "limit": LIST_LIMIT}), empty="No journey move."))
    if _has(engine, "activation.outbox"):
        tables.append(_table(engine, "Actions sent by automations and journeys", SqlStep(
            "web.outbox", """
            SELECT coalesce(o.sent_at, o.queued_at) AS at, o.origin, o.name, o.step, o.kind,
                   o.channel, o.target, {subject} AS subject, o.status, o.attempts, o.last_error
            FROM activation.outbox o{subjects}
            WHERE o.customer_id = $id
            ORDER BY coalesce(o.sent_at, o.queued_at) DESC, o.name, o.step LIMIT $limit""".format(
                subject="s.subject" if _has(engine, "activation.outbox_subjects") else "CAST(NULL AS VARCHAR)",
                subjects=" LEFT JOIN activation.outbox_subjects s ON s.action_key = o.action_key "
                         "AND s.customer_id = o.customer_id" if _has(engine, "activation.outbox_subjects") else ""),
            {"id": cid, "limit": LIST_LIMIT}), empty="No action decided for this person.",
            note="Blocked actions (no consent, suppressed) never reach the outbox; capped and "
                 "withdrawn ones are listed with that status. Addresses are not shown."))
    if not tables:
        tables.append(Table("Journeys", [], empty="No journey or automation has run yet "
                                                  "(journeys.yaml, automations.yaml)."))
    return tables
