"""Linkage of behaviour to people by the identity graph.

An event links through every identifier it carries (a contact record id of its
source's ``customer_source``, an e-mail, a phone in E.164, a device or cookie id) to
the customer that owns that identifier after this run's merges and splits. An
identifier links when it belongs to exactly one customer, however many of that
customer's records carry it: two records of one person under one address are the most
common duplicate, and counting records instead of customers left their behaviour
anonymous (issue #20). Devices link through the events they were seen on.

The build and the check (``events_are_linked``) share the identifier tables and the
per-kind lookups, not the query that decides.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from tessera.engine import Engine, SqlStep, as_engine, step_from_file
from tessera.engine.dialect import sha256_hex
from tessera.history import changes
from tessera.identity import events_incremental as inc
from tessera.privacy.owners import KEY_COLUMNS, identifier_owners

EMPTY_EVENTS = SqlStep("identity.events_empty", """
    CREATE OR REPLACE TABLE core.events (event_id VARCHAR, customer_id BIGINT, event_type VARCHAR,
        occurred_at TIMESTAMP, properties VARCHAR, source VARCHAR, linked_by VARCHAR,
        product_id VARCHAR)""")


def product_pattern(deployment) -> str | None:
    """The URL pattern that finds the product an event is about (the recommendations'
    ``product_url_pattern``), or None for a deployment without recommendations."""
    return deployment.recommendations.product_url_pattern if deployment.recommendations else None


def product_id_sql(properties: str, pattern: str) -> str:
    """The product an event is about: its ``product_id`` property, else the id its ``url``
    property names by ``pattern`` (a literal here, or a bound parameter)."""
    return (f"coalesce(json_extract_string({properties}, '$.product_id'), "
            f"nullif(regexp_extract(json_extract_string({properties}, '$.url'), {pattern}, 1), ''))")


def _event_refs(deployment) -> dict[str, str]:
    return {s.name: s.customer_source for s in deployment.sources_of("event") if s.customer_source}


def _staged_event_columns(engine: Engine) -> set[str]:
    """The columns of ``staging.events`` (an identifier kind whose column is absent is skipped)."""
    return {r[0] for r in engine.rows(SqlStep(
        "identity.events_columns",
        "SELECT column_name FROM information_schema.columns "
        "WHERE table_schema = 'staging' AND table_name = 'events'"))}


def _unique_owners(engine: Engine, name: str) -> None:
    """``name (kind, key, customer_id)``: the identifiers that belong to exactly one customer
    now (from ``_identifier_owners``), the only ones that link."""
    engine.run(SqlStep(f"identity.{name.strip('_')}", f"""
        CREATE OR REPLACE TEMP TABLE {name} AS
        SELECT kind, key, min(customer_id) AS customer_id
        FROM _identifier_owners GROUP BY kind, key HAVING count(*) = 1"""))


def _owner_lookups(deployment, cols: set[str], owners: str, alias: str,
                   prefix: str) -> tuple[list[str], list[tuple[str, str]], dict]:
    """One LEFT JOIN of ``owners`` per identifier kind the staged events carry (a column
    ``staging.events`` lacks, or a record id of a source without ``customer_source``, is
    skipped): the joins, ``(kind, owner column)`` strongest first, and the parameters.

    A hash lookup per kind on the event's own row, not an unpivot of every identifier
    grouped back per event: at 50 M events the 50 M-group aggregate and its join back
    were 60 of the build's 73 s."""
    joins, owned, params = [], [], {}
    for n, (kind, col) in enumerate(KEY_COLUMNS):
        if col not in cols:
            continue
        if kind == "customer_ref":
            refs = sorted(_event_refs(deployment).items())
            if not refs:
                continue
            whens = []
            for i, (src, contact_src) in enumerate(refs):
                params[f"{prefix}_src{i}"], params[f"{prefix}_ref{i}"] = src, "record:" + contact_src
                whens.append(f"WHEN ${prefix}_src{i} THEN ${prefix}_ref{i}")
            kind_sql = f"CASE {alias}.source {' '.join(whens)} END"
        else:
            kind_sql = f"'{kind}'"
        joins.append(f"LEFT JOIN {owners} o{n} ON o{n}.kind = {kind_sql} AND o{n}.key = {alias}.{col}")
        owned.append((kind, f"o{n}.customer_id"))
    return joins, owned, params


def _linked_step(engine: Engine, deployment, table: str = "staging.events") -> SqlStep:
    """``events_linked.sql`` over ``table`` (the staged events, or the ones to relink): each
    event's owner by its strongest identifier that belongs to one customer."""
    joins, owned, params = _owner_lookups(deployment, _staged_event_columns(engine),
                                          "_link_owners", "e", "ev")
    if owned:
        customer = f"coalesce({', '.join(c for _, c in owned)})"
        linked_by = "CASE " + " ".join(f"WHEN {c} IS NOT NULL THEN '{k}'" for k, c in owned) + " END"
    else:
        customer, linked_by = "CAST(NULL AS BIGINT)", "CAST(NULL AS VARCHAR)"
    # read once here, as each event is linked (the new ones only, on an incremental day),
    # not from 30 M views' JSON by every ranking of the recommendations (8 s a day)
    pattern = product_pattern(deployment)
    product = "CAST(NULL AS VARCHAR)"
    if pattern is not None:
        params["ev_pattern"] = pattern
        product = product_id_sql("e.properties", "$ev_pattern")
    step = step_from_file(__package__, "events_linked.sql")
    sql = (step.sql.replace("{customer_id}", customer).replace("{linked_by}", linked_by)
           .replace("{product_id}", product)
           .replace("{lookups}", " ".join(joins)).replace("staging.events", table))
    return SqlStep(step.name if table == "staging.events" else "identity.events_incremental.linked",
                   sql, params)


def _drop_temps(engine: Engine) -> None:
    engine.run(SqlStep("identity.drop_link_owners", "DROP TABLE IF EXISTS _link_owners"),
               SqlStep("identity.drop_identifier_owners", "DROP TABLE IF EXISTS _identifier_owners"))


def build_events(target, deployment, incremental: bool = False, run_at: dt.datetime | None = None) -> dict[str, Any]:
    """``core.events``: behavioural events linked to customers through the identity graph.

    With ``incremental``, only the events a change can move are relinked and rewritten,
    in one transaction, where :mod:`tessera.identity.events_incremental` allows it."""
    engine = as_engine(target)
    if not engine.table_exists("staging", "events"):
        with engine.together():
            engine.run(EMPTY_EVENTS)
            changes.log_everything(engine, "core.events")
        if incremental:
            inc.drop_state(engine)
        return {"events": 0, "anonymous_events": 0}
    run_at = run_at or dt.datetime.now().replace(microsecond=0)
    refs = _event_refs(deployment)
    pattern = product_pattern(deployment)
    identifier_owners(engine)
    _unique_owners(engine, "_link_owners")
    mode, reason, extra = "full", "incremental is off", {}
    if incremental:
        reason, state = inc.full_reason(engine, refs, run_at, pattern)
        inc.new_owners(engine, "_link_owners")
        if reason is None:
            mode = "incremental"
            cols = _staged_event_columns(engine)
            extra = inc.affected_events(engine, state, [kc for kc in KEY_COLUMNS if kc[1] in cols], refs)
    else:
        inc.drop_state(engine)
    with engine.together():
        if mode == "incremental":
            inc.touched_before(engine)
            engine.run(SqlStep("identity.events_incremental.delete", """
                DELETE FROM core.events WHERE EXISTS (
                    SELECT 1 FROM _ev_r r WHERE r.source = core.events.source
                    AND r.source_record_id = core.events.event_id)"""))
            engine.append("core.events", _linked_step(engine, deployment, "_ev_r"))
            inc.touched_after(engine)
            # the keys rewritten: the day's version of the table is found from them
            changes.log_keys(engine, "core.events", "SELECT source, source_record_id FROM _ev_r")
        else:
            engine.replace_table("core.events", _linked_step(engine, deployment))
            changes.log_everything(engine, "core.events")
        if incremental:
            if mode == "full":
                inc.touched_clear(engine)
            inc.write_owners(engine, mode)
            inc.record_state(engine, run_at, refs, mode, reason, extra.get("events_relinked"), pattern)
    if incremental:
        inc.drop_temps(engine)
    _drop_temps(engine)
    by = engine.rows(SqlStep("identity.events_counts", """
        SELECT coalesce(linked_by, 'anonymous'), count(*) FROM core.events GROUP BY 1 ORDER BY 1"""))
    counts = {k: int(n) for k, n in by}
    out = {"events": sum(counts.values()), "anonymous_events": counts.pop("anonymous", 0),
           "linked_by": counts}
    if incremental:
        out.update(events_mode=mode, events_full_reason=reason or "", **extra)
    return out


# A check on an incremental day re-verifies what changed since the last passing check;
# every this many days it verifies every event again.
FULL_CHECK_EVERY_DAYS = 7
CHECK_STATE_DDL = """
CREATE TABLE IF NOT EXISTS ops.events_check_state (
    checked_at  TIMESTAMP,
    mode        VARCHAR,    -- full | incremental
    log_upto    BIGINT,     -- the newest build of core.events' change log checked
    keys_upto   TIMESTAMP,  -- the newest changed event key (recorded_at) checked
    passed      BOOLEAN,
    full_at     TIMESTAMP   -- the last full check
)"""
# The check's own snapshot of each identifier's one owner (no value stored: the SHA-256
# of its kind and key), apart from the build's (ops.event_link_owners).
CHECK_OWNERS = "ops.events_check_owners"


def _check_scope(engine: Engine, deployment, cols: set[str], now: dt.datetime) -> tuple[str | None, dict]:
    """``_ck_keys (source, event_id)``: the events whose verdict may have changed since the
    last passing check, or the reason to check every event (None: incremental).

    An event's verdict reads its staged row, its stored row, the one owner of each of its
    identifiers and whether its customer exists (counted over every event, always). So an
    event none of these moved for keeps the verdict of the last passing check, which was
    that it is sound. Moved since: a staged row (``ops.changed_keys``), a stored row (the
    change log of ``core.events``, :mod:`tessera.history.changes`), an identifier with
    another or a new owner (its events are found by key), an identifier that lost its
    owner (its events that were linked to that owner: an event linked to anyone else
    keeps its verdict when one of its owners goes)."""
    log = changes.LOGS["core.events"].table
    for schema_table in (log, "ops.changed_keys", CHECK_OWNERS):
        if not engine.table_exists(*schema_table.split(".")):
            return f"no {schema_table} yet", {}
    rows = engine.rows(SqlStep("identity.check_state", """
        SELECT checked_at, log_upto, keys_upto, passed, full_at FROM ops.events_check_state
        ORDER BY checked_at DESC LIMIT 1"""))
    if not rows:
        return "no earlier check", {}
    _checked_at, log_upto, keys_upto, passed, full_at = rows[0]
    if not passed:
        return "the last check failed", {}
    if log_upto is None or full_at is None or now - full_at >= dt.timedelta(days=FULL_CHECK_EVERY_DAYS):
        return f"a full check is due every {FULL_CHECK_EVERY_DAYS} days", {}
    if engine.scalar(SqlStep("identity.check_log_full", f"""
            SELECT count(*) FROM {log}
            WHERE build > $upto AND (everything OR source IS NULL OR event_id IS NULL)""",
                             {"upto": log_upto})):
        return "core.events was rebuilt in full", {}
    since = "TRUE" if keys_upto is None else "recorded_at > $upto"
    up = {} if keys_upto is None else {"upto": keys_upto}
    engine.run(
        SqlStep("identity.check_moved", f"""
            CREATE OR REPLACE TEMP TABLE _ck_moved AS
            SELECT n.kind, n.key FROM _ck_own n LEFT JOIN {CHECK_OWNERS} o ON o.h = n.h
            WHERE o.customer_id IS DISTINCT FROM n.customer_id"""),
        SqlStep("identity.check_keys", f"""
            CREATE OR REPLACE TEMP TABLE _ck_keys AS
            SELECT source, event_id FROM {log} WHERE build > $log_upto
            UNION SELECT source, source_record_id FROM ops.changed_keys WHERE entity = 'event' AND {since}
            UNION SELECT source, event_id FROM core.events WHERE customer_id IN (
                SELECT o.customer_id FROM {CHECK_OWNERS} o
                WHERE NOT EXISTS (SELECT 1 FROM _ck_own n WHERE n.h = o.h))""",
                {"log_upto": log_upto, **up}))
    scans, params = inc.moved_key_scans([kc for kc in KEY_COLUMNS if kc[1] in cols], _event_refs(deployment),
                                        "_ck_moved")
    if scans:
        engine.run(SqlStep("identity.check_by_key", f"""
            INSERT INTO _ck_keys SELECT source, source_record_id FROM staging.events
            WHERE {" OR ".join(scans)}""",
                           params))
    return None, {"full_at": full_at}


def events_linkage(target, deployment, incremental: bool = False,
                   now: dt.datetime | None = None) -> dict[str, int]:
    """The check's counts: ``owned_but_unlinked``, ``linked_elsewhere`` and
    ``not_a_customer`` must be 0; ``anonymous`` of ``events`` are anonymous.

    Computed apart from the build, on what it stored: the build decides each event's
    owner by its strongest identifier (and the day's relinks append to what earlier days
    stored); the check looks each identifier column of a staged event up in the owners,
    one hash lookup per kind (no 50 M-group aggregate: 29 s against 15 s at the
    reference scale), takes the least and greatest owner in the row, whatever their
    strength, and pairs each stored event with its staged row: an event left unlinked,
    linked to a customer none of its identifiers names, or to an id that is no customer
    any more, is counted however it came to be stored.

    With ``incremental``, the pairing (11.5 s of an incremental day at the reference
    scale: 50 M stored events with 50 M staged ones) covers only the events whose verdict
    may have changed since the last passing check (``_check_scope``), when that is
    known; every event is paired again after a failed check, a full build of the events,
    and every ``FULL_CHECK_EVERY_DAYS``. ``events``, ``anonymous`` and ``not_a_customer``
    always count every stored event. The result says ``check_mode``."""
    engine = as_engine(target)
    identifier_owners(engine)
    cols = _staged_event_columns(engine)
    names = ("events", "anonymous", "owned_but_unlinked", "linked_elsewhere", "not_a_customer")
    if not engine.table_exists("core", "events"):
        return dict.fromkeys(names, 0)
    now = now or dt.datetime.now().replace(microsecond=0)
    joins, owned, params = _owner_lookups(deployment, cols, "_check_owners", "s", "ck")
    owners = [c for _, c in owned]
    if owners:
        # least and greatest skip NULLs: one owner named when they are the same
        staged = (f"SELECT s.source, s.source_record_id, least({', '.join(owners)}) AS customer_id, "
                  f"greatest({', '.join(owners)}) AS last_customer_id FROM staging.events s "
                  + " ".join(joins))
    else:
        staged = ("SELECT CAST(NULL AS VARCHAR) AS source, CAST(NULL AS VARCHAR) AS source_record_id, "
                  "CAST(NULL AS BIGINT) AS customer_id, CAST(NULL AS BIGINT) AS last_customer_id WHERE 1 = 0")
    step = step_from_file(__package__, "events_linkage_check.sql")
    _unique_owners(engine, "_check_owners")
    reason, scope = "incremental is off", {}
    try:
        if incremental:
            engine.run(SqlStep("identity.check_state_ddl", CHECK_STATE_DDL),
                       SqlStep("identity.check_own", f"""
                CREATE OR REPLACE TEMP TABLE _ck_own AS
                SELECT {sha256_hex("kind || '|' || key")} AS h, kind, key, customer_id FROM _check_owners"""))
            # what the next check starts from, read before this one looks
            log_upto = changes.newest_build(engine, "core.events")
            keys_upto = engine.scalar(SqlStep("identity.check_keys_upto", """
                SELECT max(recorded_at) FROM ops.changed_keys WHERE entity = 'event'""")) \
                if engine.table_exists("ops", "changed_keys") else None
            reason, scope = _check_scope(engine, deployment, cols, now)
        sql = step.sql.replace("{staged}", staged)
        if incremental and reason is None:
            stored = ("FROM (SELECT * FROM core.events x WHERE EXISTS (SELECT 1 FROM _ck_keys k "
                      "WHERE k.source = x.source AND k.event_id = x.event_id)) e")
            paired = ("FROM (SELECT * FROM staging.events x WHERE EXISTS (SELECT 1 FROM _ck_keys k "
                      "WHERE k.source = x.source AND k.event_id = x.source_record_id)) s")
            sql = sql.replace("FROM core.events e", stored).replace("FROM staging.events s", paired)
        row = list(engine.rows(SqlStep(step.name if reason else f"{step.name}.incremental", sql, params))[0])
        if incremental and reason is None:
            # every stored event is counted, whichever were paired
            row[0], row[1], row[4] = engine.rows(SqlStep("identity.check_counts", """
                SELECT count(*), count(*) FILTER (WHERE customer_id IS NULL),
                       count(*) FILTER (WHERE customer_id IS NOT NULL
                                        AND customer_id NOT IN (SELECT customer_id FROM core.customer_sources))
                FROM core.events"""))[0]
        out = {n: int(v or 0) for n, v in zip(names, row)}
        if incremental:
            passed = out["owned_but_unlinked"] + out["linked_elsewhere"] + out["not_a_customer"] == 0
            with engine.together():
                engine.replace_table(CHECK_OWNERS, SqlStep("identity.check_owners_write",
                                                           "SELECT h, customer_id FROM _ck_own"))
                engine.run(SqlStep("identity.check_state_prune", """
                    DELETE FROM ops.events_check_state
                WHERE checked_at < CAST($now AS TIMESTAMP) - INTERVAL 60 DAY""",
                                   {"now": now}),
                           SqlStep("identity.check_state_write", """
                    INSERT INTO ops.events_check_state VALUES (CAST($now AS TIMESTAMP), $mode, $log_upto,
                        CAST($keys_upto AS TIMESTAMP), $passed, CAST($full_at AS TIMESTAMP))""",
                                   {"now": now, "mode": "full" if reason else "incremental", "log_upto": log_upto,
                                    "keys_upto": keys_upto, "passed": passed,
                                    "full_at": now if reason else scope["full_at"]}))
            out["check_mode"] = "full" if reason else "incremental"
            out["check_full_reason"] = reason or ""
    finally:
        engine.run(SqlStep("identity.drop_check_owners", "DROP TABLE IF EXISTS _check_owners"),
                   *(SqlStep("identity.drop_check_temps", f"DROP TABLE IF EXISTS {t}")
                     for t in ("_ck_own", "_ck_moved", "_ck_keys")))
        _drop_temps(engine)
    return out


def orders_linkage(target, deployment) -> dict[str, int]:
    """The check's counts for ``core.orders``: orders whose ``customer_ref`` is a record of
    their source's ``customer_source`` but that are not linked to its customer now
    (``owned_but_unlinked``, ``linked_elsewhere``), orders naming an id that is no
    customer now (``not_a_customer``), and how many are anonymous."""
    engine = as_engine(target)
    names = ("orders", "anonymous", "owned_but_unlinked", "linked_elsewhere", "not_a_customer")
    parts, params = [], {}
    for i, s in enumerate(deployment.sources_of("order")):
        params[f"src{i}"], params[f"cs{i}"] = s.name, s.customer_source
        parts.append(f"SELECT o.order_id, o.customer_id, cs.customer_id AS owner FROM core.orders o "
                     f"LEFT JOIN core.customer_sources cs ON cs.source = $cs{i} "
                     f"AND cs.source_record_id = o.customer_ref WHERE o.source = $src{i}")
    if not parts:
        return dict.fromkeys(names, 0)
    row = engine.rows(SqlStep("identity.orders_linkage_check", f"""
        SELECT count(*), count(*) FILTER (WHERE customer_id IS NULL),
               count(*) FILTER (WHERE owner IS NOT NULL AND customer_id IS NULL),
               count(*) FILTER (WHERE owner IS NOT NULL AND customer_id <> owner),
               count(*) FILTER (WHERE customer_id IS NOT NULL
                                AND customer_id NOT IN (SELECT customer_id FROM core.customer_sources))
        FROM ({' UNION ALL '.join(parts)}) AS o""", params))[0]
    return {n: int(v or 0) for n, v in zip(names, row)}
