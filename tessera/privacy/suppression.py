"""Suppression and erasure: "no" outlives deletion (RELIABILITY.md rule 1).

The suppression ledger (``ops.suppressions``) holds keyed hashes, never identifiers:
HMAC-SHA256 with a deployment secret over a normalised identifier, with the reason,
the channel and the time. It is kept apart from erasure: erasing a person deletes their
data everywhere, and the ledger keeps only what is needed to refuse them when a later
file brings them back.

HMAC is computed inside the engine (``Engine.define_keyed_hash``: on DuckDB a temporary
macro built from the key's inner and outer pads, on Spark a registered function), so
ingestion checks every incoming identifier set-based, without a Python loop and without
the key ever appearing in a step, a query log or an error message.

Identifier normalisation for suppression is deliberately coarse so that any formatting
of the same value hashes the same: e-mails trimmed and lower-cased; phones reduced to
their last 9 digits (``+39 347 123 4567``, ``3471234567`` and ``0039 347-1234567`` are
one key; over-suppressing a different number with the same 9 final digits is the safe
side); tax codes and ERP ids upper-cased without blanks.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import signal

import pyarrow as pa

from tessera.engine import Engine, SqlStep, as_engine
from tessera.vocabulary import CARD_ENTITIES, ENTITY_TABLES, IDENTIFIER_FIELDS

DDL = """
CREATE TABLE IF NOT EXISTS ops.suppressions (
    kind VARCHAR NOT NULL,        -- email | phone | tax_code | erp_id
    id_hash VARCHAR NOT NULL,     -- HMAC-SHA256(deployment key, normalised identifier)
    reason VARCHAR NOT NULL,      -- erasure | unsubscribe | hard_bounce | bulk_edit
    channel VARCHAR NOT NULL,     -- all | email | sms | post | web_push
    created_at TIMESTAMP NOT NULL
);
CREATE TABLE IF NOT EXISTS ops.erasures (
    customer_id BIGINT,
    request_id VARCHAR NOT NULL,
    identifiers BIGINT NOT NULL,
    rows_deleted BIGINT NOT NULL,
    files_rewritten BIGINT NOT NULL,
    erased_at TIMESTAMP NOT NULL
);
-- Work an erasure still owes the landing files: written in the erasure's transaction,
-- deleted once every file is rewritten, so a killed forget/purge is finished by the next
-- command. Holds source record and order ids (pseudonymous), never identifiers.
CREATE TABLE IF NOT EXISTS ops.pending_scrubs (
    request_id VARCHAR NOT NULL,
    kind VARCHAR NOT NULL,            -- request | record | order
    source VARCHAR,
    record_id VARCHAR
);
-- One landing file being rewritten: its new content's fingerprint and the lines removed,
-- written before the rename, deleted with the ledger and line updates that follow it.
CREATE TABLE IF NOT EXISTS ops.scrub_files (
    source VARCHAR NOT NULL,
    file VARCHAR NOT NULL,
    sha256 VARCHAR NOT NULL,
    bytes BIGINT NOT NULL,
    spans VARCHAR NOT NULL,           -- JSON [[first, last, shift], ...]
    starts VARCHAR NOT NULL           -- JSON [line, ...]
);
CREATE TABLE IF NOT EXISTS ops.unsuppressions (
    request_id VARCHAR NOT NULL,
    kind VARCHAR NOT NULL,            -- the identifier's kind, as in ops.suppressions
    id_hash VARCHAR NOT NULL,         -- the same keyed hash: the identifier itself is not kept
    lifted_reason VARCHAR NOT NULL,   -- the suppression lifted (erasure, stop_monitoring ...)
    lifted_channel VARCHAR NOT NULL,
    suppressed_at TIMESTAMP NOT NULL,
    why VARCHAR NOT NULL,             -- the operator's reason (mandatory)
    requested_by VARCHAR NOT NULL,    -- who asked (--by, else the login)
    os_user VARCHAR NOT NULL,         -- the login that ran the command
    lifted_at TIMESTAMP NOT NULL
);
"""

# What ``unsuppress`` may lift. Unsubscribes and withdrawals are not suppressions but
# consent events: a new grant, newer than the withdrawal, is what lifts those.
LIFTABLE = ("erasure", "stop_monitoring", "hard_bounce")


def normalise_sql(kind: str, expr: str) -> str:
    """SQL that normalises an identifier of ``kind`` (NULL when there is nothing to key on)."""
    if kind == "email":
        return f"nullif(lower(trim({expr})), '')"
    if kind == "phone":
        digits = f"regexp_replace({expr}, '[^0-9]', '', 'g')"
        return f"CASE WHEN length({digits}) >= 6 THEN right({digits}, 9) END"
    if kind in ("tax_code", "erp_id"):
        return f"nullif(upper(regexp_replace({expr}, '\\s', '', 'g')), '')"
    raise ValueError(kind)


def normalise_value(kind: str, value: str | None) -> str | None:
    """The Python twin of :func:`normalise_sql`, for identifiers given on the CLI."""
    if value is None:
        return None
    if kind == "email":
        return value.strip().lower() or None
    if kind == "phone":
        digits = re.sub(r"[^0-9]", "", value)
        return digits[-9:] if len(digits) >= 6 else None
    return re.sub(r"\s", "", value).upper() or None


def install_hmac(engine: Engine, key: str) -> None:
    """Make ``tessera_hmac(text)`` (HMAC-SHA256, hex) callable on this engine."""
    if not key:
        raise ValueError("the suppression key is empty; set TESSERA_SUPPRESSION_KEY")
    as_engine(engine).define_keyed_hash(key)


def ensure_tables(engine: Engine) -> None:
    engine = as_engine(engine)
    engine.run(*(SqlStep(f"privacy.ddl[{i}]", part.strip())
                 for i, part in enumerate("\n".join(
                     line for line in DDL.splitlines() if not line.lstrip().startswith("--")).split(";"))
                 if part.strip()))


def suppressed_lines_sql(entity: str, mapped: set[str], table: str = "_checked2") -> str | None:
    """Rows (``_rowid``) of ``table`` carrying an identifier under an ingestion-blocking suppression.

    Channel ``all`` (erasure) blocks every entity; channel ``events`` (stop monitoring)
    blocks behavioural events only.
    """
    fields = {f: k for f, k in IDENTIFIER_FIELDS.get(entity, {}).items() if f in mapped}
    if not fields:
        return None
    channels = "('all', 'events')" if entity == "event" else "('all')"
    parts = []
    for field, kind in fields.items():
        parts.append(
            f"SELECT _rowid FROM {table} WHERE tessera_hmac({normalise_sql(kind, chr(34) + field + chr(34))}) "
            f"IN (SELECT id_hash FROM ops.suppressions WHERE kind = '{kind}' AND channel IN {channels})")
    return " UNION ".join(parts)


def add_suppressions(engine: Engine, kind_values: list[tuple[str, str]], reason: str, channel: str,
                     now: dt.datetime) -> int:
    """Insert keyed hashes for (kind, normalised value) pairs not already suppressed."""
    if not kind_values:
        return 0
    engine = as_engine(engine)
    engine.register_arrow("_ids", pa.table({"kind": [k for k, _ in kind_values],
                                            "v": [v for _, v in kind_values]},
                                           schema=pa.schema([("kind", pa.string()), ("v", pa.string())])))
    try:
        return engine.append("ops.suppressions", SqlStep("privacy.add_suppressions", """
            SELECT DISTINCT kind, tessera_hmac(v), $reason, $channel, $now
            FROM _ids i
            WHERE v IS NOT NULL AND NOT EXISTS (
                SELECT 1 FROM ops.suppressions s WHERE s.kind = i.kind AND s.id_hash = tessera_hmac(i.v)
                  AND s.reason = $reason AND s.channel = $channel)""",
            {"reason": reason, "channel": channel, "now": now}))
    finally:
        engine.unregister("_ids")


def export_suppression_filter(channel: str) -> str:
    """Predicate over a contact-card row: no suppression on its e-mail/mobile for ``channel``.

    Written as uncorrelated IN lists so that DuckDB hashes the ledger once (a correlated
    EXISTS with an OR was a nested loop: minutes at 1M contacts).
    """
    chans = "('all')" if channel == "none" else f"('all', '{channel}')"
    checks = []
    for kind, col in (("email", "email"), ("phone", "mobile")):
        checks.append(
            f"coalesce(tessera_hmac({normalise_sql(kind, col)}), '') NOT IN "
            f"(SELECT id_hash FROM ops.suppressions WHERE kind = '{kind}' AND channel IN {chans})")
    return "(" + " AND ".join(checks) + ")"


def unsuppress(engine: Engine, key: str, kind: str, value: str, *,
               why: str, requested_by: str, os_user: str, request_id: str,
               lift: tuple[str, ...] = ("erasure",), now: dt.datetime | None = None) -> int:
    """Lift the suppressions of one identifier, with an audit row per lifted entry.

    Why it exists: a person erased (or who asked to stop being monitored) may come back
    and consent anew; the ledger would refuse them for ever. Only the ledger entries go:
    nothing erased is restored (the data, the landing lines and ``ops.erasures`` stay as
    they are), so only what arrives after this call is loaded, by the next run. The audit
    row keeps the same keyed hash as the ledger did, never the identifier. Returns the
    number of entries lifted (0: nothing was suppressed under those reasons).
    """
    if kind not in IDENTIFIER_FIELDS["contact"].values():
        raise ValueError(f"unknown identifier kind {kind!r}")
    bad = sorted(set(lift) - set(LIFTABLE))
    if bad:
        raise ValueError(f"cannot lift {', '.join(bad)}: one of {', '.join(LIFTABLE)}")
    if not why.strip():
        raise ValueError("a reason is required")
    norm = normalise_value(kind, value)
    if norm is None:
        raise ValueError(f"the {kind} given is empty once normalised")
    now = now or dt.datetime.now().replace(microsecond=0)
    engine = as_engine(engine)
    ensure_tables(engine)
    install_hmac(engine, key)
    h = engine.scalar(SqlStep("privacy.unsuppress.hash", "SELECT tessera_hmac($v)", {"v": norm}))
    reasons = ", ".join(f"'{r}'" for r in lift)  # checked against LIFTABLE above
    match = {"kind": kind, "h": h}
    with engine.together():
        n = engine.append("ops.unsuppressions", SqlStep("privacy.unsuppress.audit", f"""
            SELECT $request_id, kind, id_hash, reason, channel, created_at, $why, $by, $os_user, $now
            FROM ops.suppressions WHERE kind = $kind AND id_hash = $h AND reason IN ({reasons})""",
            {**match, "request_id": request_id, "why": why.strip(), "by": requested_by,
             "os_user": os_user, "now": now}))
        engine.run(SqlStep("privacy.unsuppress.lift", f"""
            DELETE FROM ops.suppressions WHERE kind = $kind AND id_hash = $h AND reason IN ({reasons})""",
            match))
    return int(n)


# --------------------------------------------------------------------------- forget me

_CONTACT_KINDS = IDENTIFIER_FIELDS["contact"]

# The layers whose tables key rows by customer (customer_id) or by source record: forget
# deletes a person's rows from every table in them, subject access reads them all.
PERSON_SCHEMAS = ("core", "views", "marts", "marketing", "predictions", "recommendations", "exports", "activation")


def _base_tables(engine: Engine, schema: str) -> list[str]:
    return [r[0] for r in engine.rows(SqlStep(
        "privacy.base_tables", "SELECT table_name FROM information_schema.tables WHERE table_schema = $schema "
        "AND table_type = 'BASE TABLE' ORDER BY 1", {"schema": schema}))]


def _columns(engine: Engine, schema: str, table: str) -> set[str]:
    return {r[0] for r in engine.rows(SqlStep(
        "privacy.columns", "SELECT column_name FROM information_schema.columns "
        "WHERE table_schema = $schema AND table_name = $table", {"schema": schema, "table": table}))}


def _count(engine: Engine, name: str, sql: str, params=None) -> int:
    """Rows a DELETE removed (DuckDB answers a DML statement with its row count)."""
    return int(engine.scalar(SqlStep(name, sql, params or {})) or 0)


def _ident_match(kind: str, expr: str) -> str:
    return (f"{normalise_sql(kind, expr)} IN (SELECT v FROM _f_idents WHERE kind = '{kind}')")


def _test_point(name: str) -> None:
    """Tests only: ``TESSERA_TEST_KILL_AT=<name>`` kills this process with SIGKILL here, so a
    fault test interrupts a forget or purge at an exact point (tests/e2e/test_kills.py)."""
    if os.environ.get("TESSERA_TEST_KILL_AT") == name:
        os.kill(os.getpid(), signal.SIGKILL)


def forget(engine: Engine, deployment, key: str, *, emails=(), customer_ids=(),
           request_id: str, now: dt.datetime | None = None,
           also: tuple[tuple[str, list], ...] = ()) -> dict:
    """Erase people from every table of the warehouse, in ONE transaction, and suppress them.

    Returns the counts, the erased source records and orders, and the (source, file,
    line) where their records were; the caller then rewrites the landing files
    (:func:`scrub_landing_files`). If it is killed between the two, the suppression
    ledger already refuses the person's records, and running the scrub again (it finds
    records by their suppressed identifiers) finishes the files: it is idempotent.
    """
    now = now or dt.datetime.now().replace(microsecond=0)
    engine = as_engine(engine)
    ensure_tables(engine)
    install_hmac(engine, key)
    emails = sorted({e for e in (normalise_value("email", x) for x in emails) if e})
    ids = sorted({int(c) for c in customer_ids})
    has = engine.table_exists
    run = lambda name, sql, params=None: engine.run(SqlStep(f"privacy.forget.{name}", sql, params or {}))  # noqa: E731

    run("work_tables", "CREATE OR REPLACE TEMP TABLE _f_ids (customer_id BIGINT)")
    run("work_tables", "CREATE OR REPLACE TEMP TABLE _f_recs (source VARCHAR, source_record_id VARCHAR)")
    run("work_tables", "CREATE OR REPLACE TEMP TABLE _f_idents (kind VARCHAR, v VARCHAR)")
    engine.register_arrow("_f_request", pa.table({"customer_id": pa.array(ids, pa.int64())}))
    run("request_ids", "INSERT INTO _f_ids SELECT customer_id FROM _f_request")
    engine.unregister("_f_request")
    engine.register_arrow("_f_request", pa.table({"v": pa.array(emails, pa.string())}))
    run("request_emails", "INSERT INTO _f_idents SELECT 'email', v FROM _f_request")
    engine.unregister("_f_request")
    contact_sources = [s for s in deployment.sources
                       if s.entity in ("contact", "company_user") and has("raw", s.name)]
    # Everybody reachable from the request: customers holding the e-mails, their records,
    # and every identifier any version of those records ever carried (old e-mails too).
    for _ in range(3):
        if has("core", "customer_sources") and has("staging", "contacts"):
            run("reach_customers", """
                INSERT INTO _f_ids SELECT DISTINCT cs.customer_id FROM staging.contacts s
                JOIN core.customer_sources cs USING (source, source_record_id)
                WHERE s.email_key IN (SELECT v FROM _f_idents WHERE kind = 'email')
                  AND cs.customer_id NOT IN (SELECT customer_id FROM _f_ids)""")
            run("reach_records", """
                INSERT INTO _f_recs SELECT source, source_record_id FROM core.customer_sources
                WHERE customer_id IN (SELECT customer_id FROM _f_ids)
                EXCEPT SELECT * FROM _f_recs""")
        for s in contact_sources:
            cols = _columns(engine, "raw", s.name)
            match = " OR ".join(_ident_match(k, f'"{f}"') for f, k in _CONTACT_KINDS.items() if f in cols)
            run("reach_raw_records", f"""
                INSERT INTO _f_recs SELECT DISTINCT '{s.name}', source_record_id FROM raw.{s.name}
                WHERE {match} EXCEPT SELECT * FROM _f_recs""")
            for f, k in _CONTACT_KINDS.items():
                if f in cols:
                    run("reach_identifiers", f"""
                        INSERT INTO _f_idents SELECT DISTINCT '{k}', {normalise_sql(k, f'"{f}"')}
                        FROM raw.{s.name} WHERE source_record_id IN
                            (SELECT source_record_id FROM _f_recs WHERE source = '{s.name}')
                          AND {normalise_sql(k, f'"{f}"')} IS NOT NULL
                        EXCEPT SELECT * FROM _f_idents""")

    # Landing lines to scrub, found before the raw rows that point at them are deleted.
    run("work_tables", "CREATE OR REPLACE TEMP TABLE _f_lines (source VARCHAR, file VARCHAR, line BIGINT)")
    run("work_tables", "CREATE OR REPLACE TEMP TABLE _f_orders (order_id VARCHAR)")
    raw_where: dict[str, str] = {}
    for s in deployment.sources:
        if not has("raw", s.name):
            continue
        if s.entity in ("contact", "company_user"):
            raw_where[s.name] = f"source_record_id IN (SELECT source_record_id FROM _f_recs WHERE source = '{s.name}')"
        elif s.entity in ("event", "bounce", "unsubscribe", "consent"):
            raw_where[s.name] = _ident_match("email", "email")
        elif s.entity == "order":
            raw_where[s.name] = _ident_match("erp_id", "customer_ref")
            run("orders", f"INSERT INTO _f_orders SELECT source_record_id FROM raw.{s.name} WHERE {raw_where[s.name]}")
    for s in deployment.sources_of("order_line"):
        if has("raw", s.name):
            raw_where[s.name] = "order_id IN (SELECT order_id FROM _f_orders)"
    # CRM notes and tasks name the contact record they are about.
    annotation_where: dict[str, list[str]] = {}
    for s in [*deployment.sources_of("note"), *deployment.sources_of("task")]:
        about = f"SELECT source_record_id FROM _f_recs WHERE source = '{s.customer_source}'"
        if has("raw", s.name):
            raw_where[s.name] = f"contact_ref IN ({about})"
        annotation_where.setdefault("notes" if s.entity == "note" else "tasks", []).append(
            f"(source = '{s.name}' AND contact_ref IN ({about}))")
    # The contact card's entities (messages, app events, details) name the person by
    # e-mail, phone or the contact record of their customer_source.
    for s in [src for e in CARD_ENTITIES for src in deployment.sources_of(e)]:
        about = f"SELECT source_record_id FROM _f_recs WHERE source = '{s.customer_source}'"
        if has("raw", s.name):
            cols = _columns(engine, "raw", s.name)
            parts = [_ident_match("email", "email")] if "email" in cols else []
            parts += [_ident_match("phone", "mobile")] if "mobile" in cols else []
            parts += [f"customer_ref IN ({about})"] if "customer_ref" in cols and s.customer_source else []
            raw_where[s.name] = " OR ".join(parts) or "false"
        annotation_where.setdefault(ENTITY_TABLES[s.entity], []).append(
            f"(source = '{s.name}' AND ({_ident_match('email', 'email')} OR {_ident_match('phone', 'mobile')}"
            + (f" OR customer_ref IN ({about})" if s.customer_source else "") + "))")
    for name, where in raw_where.items():
        run("landing_lines", f"INSERT INTO _f_lines SELECT DISTINCT '{name}', _file, _line FROM raw.{name} WHERE {where}")

    idents = engine.rows(SqlStep("privacy.forget.identifiers", "SELECT kind, v FROM _f_idents WHERE v IS NOT NULL"))
    deleted = 0
    with engine.together():
        add_suppressions(engine, [(k, v) for k, v in idents], "erasure", "all", now)
        for name, where in raw_where.items():
            deleted += _count(engine, "privacy.forget.raw", f"DELETE FROM raw.{name} WHERE {where}")
        staging_where = {
            "contacts": "(source, source_record_id) IN (SELECT source, source_record_id FROM _f_recs)",
            "company_users": "(source, source_record_id) IN (SELECT source, source_record_id FROM _f_recs)",
            "events": _ident_match("email", "email"),
            "bounces": _ident_match("email", "email"),
            "unsubscribes": _ident_match("email", "email"),
            "consents": _ident_match("email", "email"),
            "orders": _ident_match("erp_id", "customer_ref"),
            "order_lines": "order_id IN (SELECT order_id FROM _f_orders)",
        }
        for table, parts in annotation_where.items():
            staging_where[table] = " OR ".join(parts)
        for table in ("events", "bounces", "unsubscribes", "consents"):
            # a table built empty for a deployment without such a source may hold only
            # the normalised key (staging.bounces from the bounce stage)
            if has("staging", table) and "email" not in _columns(engine, "staging", table):
                staging_where[table] = (_ident_match("email", "email_key")
                                        if "email_key" in _columns(engine, "staging", table) else "false")
        for table, where in staging_where.items():
            if has("staging", table):
                deleted += _count(engine, "privacy.forget.staging", f"DELETE FROM staging.{table} WHERE {where}")
        for schema in PERSON_SCHEMAS:
            for table in _base_tables(engine, schema):
                cols = _columns(engine, schema, table)
                if "customer_id" in cols:
                    extra = " OR other_customer_id IN (SELECT customer_id FROM _f_ids)" if "other_customer_id" in cols else ""
                    deleted += _count(
                        engine, "privacy.forget.by_customer",
                        f"DELETE FROM {schema}.{table} WHERE customer_id IN (SELECT customer_id FROM _f_ids){extra}")
                elif {"source", "source_record_id"} <= cols:
                    deleted += _count(
                        engine, "privacy.forget.by_record",
                        f"DELETE FROM {schema}.{table} WHERE (source, source_record_id) IN "
                        "(SELECT source, source_record_id FROM _f_recs)")
        # The recorded versions of past days (tessera.history): an erasure holds in every
        # day a backfill rebuilds, so the person goes from every version too.
        for table in _base_tables(engine, "history"):
            cols = _columns(engine, "history", table)
            where = []
            if "customer_id" in cols:
                where.append("customer_id IN (SELECT customer_id FROM _f_ids)")
            if {"source", "source_record_id"} <= cols:
                where.append("(source, source_record_id) IN (SELECT source, source_record_id FROM _f_recs)")
            if "order_id" in cols and "customer_id" not in cols:
                where.append("order_id IN (SELECT order_id FROM _f_orders)")
            for col in ("email", "email_key"):
                if col in cols:
                    where.append(_ident_match("email", col))
            if where:
                deleted += _count(engine, "privacy.forget.history",
                                  f"DELETE FROM history.{table} WHERE {' OR '.join(where)}")
        deleted += _count(engine, "privacy.forget.rejects", """DELETE FROM ops.rejects WHERE (source, source_record_id) IN
                                  (SELECT source, source_record_id FROM _f_recs)""")
        erased_ids = [r[0] for r in engine.rows(SqlStep(
            "privacy.forget.erased", "SELECT DISTINCT customer_id FROM _f_ids ORDER BY 1"))]
        engine.register_arrow("_f_erased", pa.table({"customer_id": pa.array(erased_ids or [None], pa.int64())}))
        engine.append("ops.erasures", SqlStep(
            "privacy.forget.audit", "SELECT customer_id, $request_id, $identifiers, $deleted, 0, $now FROM _f_erased",
            {"request_id": request_id, "identifiers": len(idents), "deleted": deleted, "now": now}))
        engine.unregister("_f_erased")
        req = {"request_id": request_id}
        run("pending_scrubs", "INSERT INTO ops.pending_scrubs VALUES ($request_id, 'request', NULL, NULL)", req)
        run("pending_scrubs", "INSERT INTO ops.pending_scrubs SELECT DISTINCT $request_id, 'record', source, "
            "source_record_id FROM _f_recs", req)
        run("pending_scrubs", "INSERT INTO ops.pending_scrubs SELECT DISTINCT $request_id, 'order', NULL, order_id "
            "FROM _f_orders", req)
        for sql, params in also:
            run("also", sql, params)
        _test_point("forget-before-commit")
    lines = engine.rows(SqlStep("privacy.forget.lines", "SELECT source, file, line FROM _f_lines ORDER BY 1, 2, 3"))
    records: dict[str, list[str]] = {}
    for src, rid in engine.rows(SqlStep("privacy.forget.records", "SELECT source, source_record_id FROM _f_recs")):
        records.setdefault(src, []).append(rid)
    orders = [r[0] for r in engine.rows(SqlStep("privacy.forget.orders", "SELECT order_id FROM _f_orders"))]
    for t in ("_f_ids", "_f_recs", "_f_idents", "_f_lines", "_f_orders"):
        run("drop_work_tables", f"DROP TABLE IF EXISTS {t}")
    return {"customers": len(erased_ids), "identifiers": len(idents), "rows_deleted": deleted,
            "landing_lines": lines, "records": records, "orders": orders}


# ------------------------------------------------------------- subject access, monitoring

def customer_identifiers(engine: Engine, deployment, customer_id: int) -> list[tuple[str, str]]:
    """Every normalised identifier any version of the customer's records carried."""
    engine = as_engine(engine)
    out: set[tuple[str, str]] = set()
    for s in [*deployment.sources_of("contact"), *deployment.sources_of("company_user")]:
        if not engine.table_exists("raw", s.name):
            continue
        cols = _columns(engine, "raw", s.name)
        for f, k in _CONTACT_KINDS.items():
            if f in cols:
                for (v,) in engine.rows(SqlStep("privacy.customer_identifiers", f"""
                        SELECT DISTINCT {normalise_sql(k, f'r."{f}"')} FROM raw.{s.name} r
                        JOIN core.customer_sources cs ON cs.source = '{s.name}'
                         AND cs.source_record_id = r.source_record_id
                        WHERE cs.customer_id = $customer_id""", {"customer_id": customer_id})):
                    if v:
                        out.add((k, v))
    return sorted(out)


def stop_monitoring(engine: Engine, deployment, key: str, customer_id: int,
                    now: dt.datetime | None = None) -> int:
    """No new behavioural events are kept for this person (their e-mails, keyed hashes)."""
    engine = as_engine(engine)
    install_hmac(engine, key)
    ensure_tables(engine)
    emails = [(k, v) for k, v in customer_identifiers(engine, deployment, customer_id) if k == "email"]
    return add_suppressions(engine, emails, "stop_monitoring", "events",
                            now or dt.datetime.now().replace(microsecond=0))


def subject_access(engine: Engine, deployment, customer_id: int) -> dict:
    """Everything held about one person, table by table (GDPR subject access request)."""
    engine = as_engine(engine)
    out: dict = {"customer_id": customer_id, "tables": {}}
    recs = engine.rows(SqlStep("privacy.access.records", "SELECT source, source_record_id "
                               "FROM core.customer_sources WHERE customer_id = $customer_id",
                               {"customer_id": customer_id}))
    emails = [v for k, v in customer_identifiers(engine, deployment, customer_id) if k == "email"]

    def grab(schema: str, table: str, where: str, params: dict) -> None:
        rows = engine.arrow(SqlStep("privacy.access.rows", f"SELECT * FROM {schema}.{table} WHERE {where}",
                                    params)).to_pylist()
        if rows:
            out["tables"][f"{schema}.{table}"] = rows

    for schema in (*PERSON_SCHEMAS, "history"):
        for table in _base_tables(engine, schema):
            cols = _columns(engine, schema, table)
            if "customer_id" in cols:
                grab(schema, table, "customer_id = $customer_id", {"customer_id": customer_id})
    by_source: dict[str, list[str]] = {}
    for source, rid in recs:
        by_source.setdefault(source, []).append(rid)
    for source, rids in by_source.items():
        if engine.table_exists("raw", source):
            grab("raw", source, "list_contains($ids, source_record_id)", {"ids": rids})
    for s in deployment.sources:
        if s.entity in ("event", "bounce", "unsubscribe", "consent") and engine.table_exists("raw", s.name) and emails:
            grab("raw", s.name, "list_contains($emails, lower(trim(email)))", {"emails": emails})
    return out
