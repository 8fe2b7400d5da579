"""The card's messages, mobile and details: the contact card's own entities on the page.

Why a module of its own: ``core.messages``, ``core.mobile_profiles`` and
``core.contact_details`` (``tessera.card.contact_data``) are read here through the few
columns named, and :mod:`tessera.web.queries` only calls in, so that the queries module
(changed by other work in parallel) gains a few lines.

The messages list puts the sources' messages beside the ones Tessera's own automations
and journeys sent (``activation.outbox``, e-mail and SMS), each with SALESmanago's status
code and its meaning: the outbox's states map to the codes a marketer knows from the card
(queued: WFS; withdrawn because consent went between queueing and sending: OO; over the
daily cap: C; failed: FP; sent: no code).
"""

from __future__ import annotations

from typing import Any

from tessera.engine import Engine, SqlStep
from tessera.vocabulary import MESSAGE_STATUSES
from tessera.web.queries import LIST_LIMIT, Table, _has, _table

# activation.outbox status -> the card's status code (None: sent without error)
OUTBOX_CODES = {"pending": "WFS", "sending": "WFS", "withdrawn": "OO", "capped": "C", "failed": "FP"}


def _meanings() -> str:
    quote = lambda text: "'" + text.replace("'", "''") + "'"  # noqa: E731
    rows = ", ".join(f"({quote(code)}, {quote(text)})" for code, text in MESSAGE_STATUSES.items())
    return f"(VALUES {rows}) AS m(code, meaning)"


def messages_step(engine: Engine, customer_id: int) -> SqlStep | None:
    """Every message to the person, newest first: the sources' and the outbox's."""
    parts = []
    if _has(engine, "core.messages"):
        parts.append("""
            SELECT coalesce(sent_at, created_at) AS at, channel, name, campaign_id AS campaign,
                   coalesce(sent_via, 'mailing') || ' (' || source || ')' AS sent_by, status,
                   opened_at, clicked_at
            FROM core.messages WHERE customer_id = $id""")
    if _has(engine, "activation.outbox"):
        codes = " ".join(f"WHEN '{k}' THEN '{v}'" for k, v in OUTBOX_CODES.items())
        subject = "s.subject" if _has(engine, "activation.outbox_subjects") else "CAST(NULL AS VARCHAR)"
        join = (" LEFT JOIN activation.outbox_subjects s ON s.action_key = o.action_key "
                "AND s.customer_id = o.customer_id" if _has(engine, "activation.outbox_subjects") else "")
        parts.append(f"""
            SELECT coalesce(o.sent_at, o.queued_at), o.kind, coalesce({subject}, o.name || ' / ' || o.step),
                   CAST(NULL AS VARCHAR), 'tessera ' || o.origin || ' ' || o.name,
                   CASE o.status {codes} END, CAST(NULL AS TIMESTAMP), CAST(NULL AS TIMESTAMP)
            FROM activation.outbox o{join}
            WHERE o.customer_id = $id AND o.kind IN ('email', 'sms')""")
    if not parts:
        return None
    return SqlStep("web.contact_messages", f"""
        SELECT u.at, u.channel, u.name, u.campaign, u.sent_by, coalesce(u.status, '') AS status,
               CASE WHEN u.status IS NULL THEN 'sent' ELSE m.meaning END AS meaning,
               u.opened_at AS opened, u.clicked_at AS clicked
        FROM ({' UNION ALL '.join(parts)}) u LEFT JOIN {_meanings()} ON m.code = u.status
        ORDER BY u.at DESC, u.channel, u.name LIMIT $limit""", {"id": customer_id, "limit": LIST_LIMIT})


def messages_tables(engine: Engine, row: dict[str, Any]) -> list[Table]:
    step = messages_step(engine, row["customer_id"])
    if step is None:
        return []
    return [_table(engine, "Messages sent (e-mail, SMS, web push), newest first", step,
                   empty="No message sent to this person.",
                   note="Status: SALESmanago's delivery code (empty: sent); opened is the first "
                        "open (web push: display), clicked the first click. Messages of Tessera's "
                        "automations and journeys are sent by 'tessera'.")]


def details_tables(engine: Engine, row: dict[str, Any]) -> list[Table]:
    if not _has(engine, "core.contact_details"):
        return []
    return [_table(engine, "Standard and dictionary details", SqlStep("web.contact_details", """
        SELECT kind, name AS detail, value, updated_at, source
        FROM core.contact_details WHERE customer_id = $id
        ORDER BY kind DESC, name LIMIT $limit""", {"id": row["customer_id"], "limit": LIST_LIMIT}),
        empty="No detail recorded.")]


def mobile_tab(engine: Engine, row: dict[str, Any]) -> list[Table]:
    if not _has(engine, "core.mobile_profiles"):
        return [Table("Mobile profile", [], empty="No app event source in this deployment.")]
    cid = row["customer_id"]
    tables = [_table(engine, "Mobile profile (per app)", SqlStep("web.mobile_profile", """
        SELECT app, language, os AS system, os_version AS system_version, app_version,
               last_location, first_launch_at AS first_launch, last_launch_at AS last_launch,
               launches, time_in_app_seconds AS seconds_in_app
        FROM core.mobile_profiles WHERE customer_id = $id ORDER BY app""", {"id": cid}),
        empty="This person has no app event.",
        note="From the app's events: the latest language, system and version reported; time in "
             "app is the sum of the sessions that ended.")]
    if _has(engine, "core.app_events"):
        tables.append(_table(engine, "App events, newest first", SqlStep("web.app_events", """
            SELECT occurred_at, app, event_type, location, session_seconds, os, os_version
            FROM core.app_events WHERE customer_id = $id
            ORDER BY occurred_at DESC, event_id LIMIT $limit""", {"id": cid, "limit": LIST_LIMIT}),
            empty="No app event."))
    return tables
