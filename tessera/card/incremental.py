"""The contact card on an incremental day: behaviour aggregated only where events moved.

Why this is exact. The card's behaviour columns (``event_count``, ``last_event_at``,
``page_views``, ``email_opens``) are an aggregate of one customer's rows of
``core.events``. An incremental build of the events' linkage rewrites only the rows a
change moved and records their customers, old and new ids (``ops.events_touched``), so
every other customer's rows of ``core.events`` are those of the previous build, whose
aggregate the stored card holds when the card was built after it. The card is then built
by its unchanged statement with the events' aggregate taken over the touched customers
and the customers without a stored card (new, restored), and carried over from the
stored card for the rest. That skips the scan of every event (50 M at the reference
scale); the other columns (profile, orders, notes, company) are recomputed for every
customer and the table is rewritten whole, as in a full build.

Full, with the reason in ``ops.card_state``: no state or card yet, another statement
(configuration: set properties, companies; a digest), the events relinked in full, a
stored card that does not follow the events' previous build (a run that failed between
the two), an erasure since.
"""

from __future__ import annotations

import datetime as dt
import hashlib

from tessera.engine import Engine, SqlStep

MECHANISM = "1"

STATE_DDL = """
CREATE TABLE IF NOT EXISTS ops.card_state (
    built_at          TIMESTAMP NOT NULL,
    events_built_at   TIMESTAMP,           -- the build of core.events the card follows
    digest            VARCHAR   NOT NULL,  -- the card's statement
    mode              VARCHAR   NOT NULL,  -- incremental | full
    reason            VARCHAR
)"""

# the events' aggregate of the card's statement (tessera/card/sql/contact_cards.sql)
EVENTS_FROM = "FROM core.events WHERE customer_id IS NOT NULL GROUP BY customer_id"


def _q(name: str, sql: str, **params) -> SqlStep:
    return SqlStep(f"card.incremental.{name}", sql, params)


def _digest(sql: str) -> str:
    return hashlib.sha256(f"{MECHANISM}\n{sql}".encode()).hexdigest()


def drop_state(engine: Engine) -> None:
    engine.run(_q("drop_state", "DROP TABLE IF EXISTS ops.card_state"))


def full_reason(engine: Engine, sql: str, run_at: dt.datetime) -> tuple[str | None, dict]:
    """Why the card's behaviour columns must be aggregated over every event (None: only
    over the touched customers), and what the build carries over."""
    engine.run(_q("state_ddl", STATE_DDL))
    for schema, table in (("marts", "contact_cards"), ("ops", "events_state"), ("ops", "events_touched")):
        if not engine.table_exists(schema, table):
            return f"no {schema}.{table} yet", {}
    if EVENTS_FROM not in sql:
        return "the card's statement has no events' aggregate to carry", {}
    rows = engine.rows(_q("state", "SELECT built_at, events_built_at, digest FROM ops.card_state "
                                   "ORDER BY built_at DESC LIMIT 1"))
    if not rows:
        return "no recorded state", {}
    built_at, followed, digest = rows[0]
    if digest != _digest(sql):
        return "the card's statement changed (configuration)", {}
    builds = engine.rows(_q("events_builds", "SELECT built_at, mode FROM ops.events_state "
                                             "ORDER BY built_at DESC LIMIT 2"))
    if not builds:
        return "core.events has no recorded build", {}
    if followed == builds[0][0]:
        state = {"use_touched": False}   # the card already follows the latest events' build
    elif builds[0][1] != "incremental":
        return "the events were linked in full", {}
    elif len(builds) < 2 or followed != builds[1][0]:
        return "the stored card does not follow the events' previous build", {}
    else:
        state = {"use_touched": True}
    if engine.table_exists("ops", "erasures") and engine.scalar(_q(
            "erasures", "SELECT count(*) FROM ops.erasures WHERE erased_at >= $b", b=built_at)):
        return "an erasure since the last build", {}
    return None, state


def carried_events(engine: Engine, state: dict) -> dict:
    """``_card_ev``: the customers whose behaviour is aggregated afresh; ``_card_ev_kept``:
    the stored behaviour of every other customer with events."""
    touched = "SELECT customer_id FROM ops.events_touched UNION " if state["use_touched"] else ""
    engine.run(
        _q("recount", f"""
            CREATE OR REPLACE TEMP TABLE _card_ev AS
            {touched}SELECT customer_id FROM core.customers
            WHERE customer_id NOT IN (SELECT customer_id FROM marts.contact_cards)"""),
        _q("kept", """
            CREATE OR REPLACE TEMP TABLE _card_ev_kept AS
            SELECT customer_id, event_count, last_event_at, page_views, email_opens FROM marts.contact_cards
            WHERE event_count > 0 AND customer_id NOT IN (SELECT customer_id FROM _card_ev)"""))
    recount, kept = engine.rows(_q("counts", "SELECT (SELECT count(*) FROM _card_ev), "
                                             "(SELECT count(*) FROM _card_ev_kept)"))[0]
    return {"behaviour_recounted": int(recount), "behaviour_carried": int(kept)}


def with_carried_events(sql: str) -> str:
    """The card's statement with the events' aggregate over ``_card_ev`` plus the carried rows."""
    return sql.replace(EVENTS_FROM, """FROM core.events WHERE customer_id IN (SELECT customer_id FROM _card_ev)
    GROUP BY customer_id
    UNION ALL
    SELECT customer_id, event_count, last_event_at, page_views, email_opens FROM _card_ev_kept""")


def record_state(engine: Engine, run_at: dt.datetime, sql: str, mode: str, reason: str | None) -> None:
    followed = "(SELECT max(built_at) FROM ops.events_state)" if engine.table_exists("ops", "events_state") \
        else "NULL::TIMESTAMP"
    engine.run(
        _q("state_prune", "DELETE FROM ops.card_state WHERE built_at < CAST($at AS TIMESTAMP) - INTERVAL 60 DAY",
           at=run_at),
        _q("state_write", f"""
            INSERT INTO ops.card_state SELECT CAST($at AS TIMESTAMP), {followed}, $digest, $mode, $reason""",
           at=run_at, digest=_digest(sql), mode=mode, reason=reason))


def drop_temps(engine: Engine) -> None:
    engine.run(_q("drop_recount", "DROP TABLE IF EXISTS _card_ev"),
               _q("drop_kept", "DROP TABLE IF EXISTS _card_ev_kept"))
