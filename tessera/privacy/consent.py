"""The consent ledger: per person and channel, only explicit, newer events change "no".

Loaders never write consent (RELIABILITY.md rule 2). Instead every consent signal
becomes a dated event in ``core.consent_events``:

* the consent flags of *every version* of every contact record in ``raw`` (so a later
  bulk import that says "yes" cannot erase the "no" an earlier version carried) —
  kind ``IMPORT``, not explicit;
* unsubscribe requests — ``MANAGE``, explicit withdrawals;
* explicit consent sources (entity ``consent``: double opt-in, preference centre) —
  explicit, with their own kind (ONE_MESSAGE, FROM_INIT, MESSAGE, MANAGE, FEEDBACK_COMPL);
* bulk edits (enable / disable e-mail or SMS) — ``MANAGE``, explicit.

The state per (customer, channel) in ``core.consents``: a withdrawal, from any record
of the person, wins unless an *explicit* grant is newer; with no withdrawal, any grant
gives "granted"; otherwise "unknown". Pooling the events of all the person's records
makes the most restrictive state win on a merge, and an older file arriving late can
add only an older event, which never outranks a newer withdrawal.
"""

from __future__ import annotations

import datetime as dt

from tessera.engine import Engine, SqlStep, as_engine
from tessera.privacy.owners import identifier_owners, identifiers_sql
from tessera.settings import Deployment

CHANNELS = ("email", "sms", "post", "web_push")

BULK_EDITS_DDL = """
CREATE TABLE IF NOT EXISTS ops.bulk_edits (
    edit_id VARCHAR NOT NULL, action VARCHAR NOT NULL, customer_id BIGINT NOT NULL,
    requested_at TIMESTAMP NOT NULL, requested_by VARCHAR, applied_at TIMESTAMP)
"""

# Customers soft-deleted now: their latest delete/restore request is a delete (and when).
# Requests are stamped to the microsecond (request_bulk_edit), so the latest one is the
# later stamp. On an exact tie (only a caller passing the same ``now`` twice) the delete
# wins: hiding a card is restorable, showing one a person asked to remove is not. The
# order is on values only (no DuckDB ``rowid``), so the card builds on Spark too.
SOFT_DELETED_SQL = """
    SELECT customer_id, requested_at FROM ops.bulk_edits WHERE action IN ('delete', 'restore')
    QUALIFY row_number() OVER (PARTITION BY customer_id
                               ORDER BY requested_at DESC, CASE action WHEN 'delete' THEN 0 ELSE 1 END) = 1
        AND action = 'delete'"""

def bulk_edits_ddl() -> SqlStep:
    return SqlStep("privacy.bulk_edits_ddl", BULK_EDITS_DDL)


BULK_ACTIONS = {
    "enable_email": ("email", "granted"), "disable_email": ("email", "withdrawn"),
    "enable_sms": ("sms", "granted"), "disable_sms": ("sms", "withdrawn"),
}


def request_owners_sql(engine: Engine, deployment: Deployment, entity: str, table: str,
                       prefix: str) -> tuple[str, dict]:
    """SQL ``(source, source_record_id, customer_id, sole)``: the customers holding any
    identifier of each row of ``staging.<table>`` now (``_identifier_owners`` must exist);
    ``sole`` when the identifier belongs to that customer alone."""
    cols = {r[0] for r in engine.rows(SqlStep(
        "privacy.staging_columns", "SELECT column_name FROM information_schema.columns "
        "WHERE table_schema = 'staging' AND table_name = $table", {"table": table}))}
    refs = {s.name: s.customer_source for s in deployment.sources_of(entity) if s.customer_source}
    ids, params = identifiers_sql(f"staging.{table}", cols, refs, prefix)
    return f"""
        SELECT i.source, i.source_record_id, o.customer_id, bool_or(o.holders = 1) AS sole
        FROM ({ids}) AS i
        JOIN (SELECT kind, key, customer_id, count(*) OVER (PARTITION BY kind, key) AS holders
              FROM _identifier_owners) AS o ON o.kind = i.kind AND o.key = i.key
        GROUP BY i.source, i.source_record_id, o.customer_id""", params


def build_consents(engine: Engine, deployment: Deployment, run_at: dt.datetime) -> dict:
    engine = as_engine(engine)
    engine.run(bulk_edits_ddl())
    parts = []
    # company users are people too: their consent flags are import events like contacts'
    for s in [*deployment.sources_of("contact"), *deployment.sources_of("company_user")]:
        if not engine.table_exists("raw", s.name):
            continue
        for flag, channel in (("consent_email", "email"), ("consent_sms", "sms")):
            if flag in s.columns:
                parts.append(f"""
                    SELECT cs.customer_id, '{channel}' AS channel,
                           CASE WHEN r.{flag} THEN 'granted' ELSE 'withdrawn' END AS state,
                           'IMPORT' AS kind, FALSE AS explicit, '{s.name}' AS source,
                           r.source_record_id, coalesce(r.updated_at, r._loaded_at) AS occurred_at
                    FROM raw.{s.name} r
                    JOIN core.customer_sources cs ON cs.source = '{s.name}' AND cs.source_record_id = r.source_record_id
                    WHERE r.{flag} IS NOT NULL""")
    # Withdrawals and explicit consent events name the person by whichever identifier
    # their channel carries (an SMS STOP: the phone it came from). A withdrawal reaches
    # every customer holding any of its identifiers now (the safe side); a grant only
    # the one customer holding an identifier alone.
    identifier_owners(engine)
    params: dict = {}
    for entity, table, prefix in (("unsubscribe", "unsubscribes", "un"), ("consent", "consents", "ce")):
        if not (deployment.sources_of(entity) and engine.table_exists("staging", table)):
            continue
        owners, p = request_owners_sql(engine, deployment, entity, table, prefix)
        params.update(p)
        if entity == "unsubscribe":
            parts.append(f"""
                SELECT o.customer_id, u.channel, 'withdrawn' AS state, 'MANAGE' AS kind, TRUE AS explicit,
                       u.source, u.source_record_id, u.requested_at AS occurred_at
                FROM staging.unsubscribes u JOIN ({owners}) o USING (source, source_record_id)""")
        else:
            parts.append(f"""
                SELECT o.customer_id, c.channel, c.state, coalesce(c.kind, 'MANAGE') AS kind, TRUE AS explicit,
                       c.source, c.source_record_id, c.occurred_at
                FROM staging.consents c JOIN ({owners}) o USING (source, source_record_id)
                WHERE c.state = 'withdrawn' OR o.sole""")
    cases = " ".join(f"WHEN '{a}' THEN '{ch}'" for a, (ch, _st) in BULK_ACTIONS.items())
    states = " ".join(f"WHEN '{a}' THEN '{st}'" for a, (_ch, st) in BULK_ACTIONS.items())
    parts.append(f"""
        SELECT b.customer_id, CASE b.action {cases} END AS channel, CASE b.action {states} END AS state,
               'MANAGE' AS kind, TRUE AS explicit, 'bulk_edit' AS source, b.edit_id AS source_record_id,
               b.requested_at AS occurred_at
        FROM ops.bulk_edits b WHERE b.action IN ({', '.join(repr(a) for a in BULK_ACTIONS)})
          AND b.customer_id IN (SELECT customer_id FROM core.customer_sources)""")
    union = "\nUNION ALL\n".join(parts)
    with engine.together():
        engine.replace_table("core.consent_events", SqlStep("privacy.consent_events", f"""
            SELECT customer_id, channel, state, kind, explicit, source, source_record_id,
                   CAST(occurred_at AS TIMESTAMP) AS occurred_at
            FROM ({union}) ORDER BY customer_id, channel, occurred_at""", params))
        engine.replace_table("core.consents", SqlStep("privacy.consents", """
            WITH agg AS (
                SELECT customer_id, channel,
                       max(occurred_at) FILTER (WHERE state = 'withdrawn') AS last_withdrawn,
                       max(occurred_at) FILTER (WHERE state = 'granted' AND explicit) AS last_explicit_grant,
                       max(occurred_at) FILTER (WHERE state = 'granted') AS last_grant,
                       count(*) AS events
                FROM core.consent_events GROUP BY customer_id, channel
            )
            SELECT customer_id, channel,
                   CASE WHEN last_withdrawn IS NULL THEN 'granted'
                        WHEN last_explicit_grant > last_withdrawn THEN 'granted'
                        ELSE 'withdrawn' END AS state,
                   CASE WHEN last_withdrawn IS NULL THEN last_grant
                        WHEN last_explicit_grant > last_withdrawn THEN last_explicit_grant
                        ELSE last_withdrawn END AS since,
                   events
            FROM agg WHERE last_withdrawn IS NOT NULL OR last_grant IS NOT NULL
            ORDER BY customer_id, channel"""))
        engine.run(SqlStep("privacy.bulk_edits_applied",
                           "UPDATE ops.bulk_edits SET applied_at = $run_at WHERE applied_at IS NULL "
                           "AND action IN (SELECT unnest(CAST($actions AS VARCHAR[])))",
                           {"run_at": run_at, "actions": list(BULK_ACTIONS)}))
    engine.run(SqlStep("privacy.drop_owners", "DROP TABLE IF EXISTS _identifier_owners"))
    rows = engine.rows(SqlStep("privacy.consent_states",
                               "SELECT channel, state, count(*) FROM core.consents "
                               "GROUP BY channel, state ORDER BY 1, 2"))
    events = engine.scalar(SqlStep("privacy.consent_event_count",
                                   "SELECT count(*) FROM core.consent_events"))
    return {"events": int(events), "states": {f"{c}:{s}": int(n) for c, s, n in rows}}


def withdrawal_violations(engine: Engine, deployment: Deployment) -> dict[str, int]:
    """Re-verify every explicit withdrawal against the golden records, after identity.

    Computed apart from the ledger: each unsubscribe, withdrawn consent event and
    disabling bulk edit reaches every customer that holds one of its identifiers now
    (e-mail, phone, ERP id, contact record id); unless an explicit grant of that customer
    on that channel is newer, the customer must be ``withdrawn`` on the channel
    (``core.customers`` for e-mail and SMS, ``core.consents`` for the others).
    Returns counts only: ``violations`` must be 0.
    """
    engine = as_engine(engine)
    engine.run(bulk_edits_ddl())
    identifier_owners(engine)
    wparts = ["""SELECT customer_id, CASE action WHEN 'disable_email' THEN 'email' ELSE 'sms' END AS channel,
                        requested_at AS ts FROM ops.bulk_edits WHERE action IN ('disable_email', 'disable_sms')"""]
    gparts = ["""SELECT customer_id, CASE action WHEN 'enable_email' THEN 'email' ELSE 'sms' END AS channel,
                        requested_at AS ts FROM ops.bulk_edits WHERE action IN ('enable_email', 'enable_sms')"""]
    params: dict = {}
    for entity, table, prefix, at in (("unsubscribe", "unsubscribes", "uv", "requested_at"),
                                      ("consent", "consents", "cv", "occurred_at")):
        if not (deployment.sources_of(entity) and engine.table_exists("staging", table)):
            continue
        owners, p = request_owners_sql(engine, deployment, entity, table, prefix)
        params.update(p)
        state = "'withdrawn'" if entity == "unsubscribe" else "r.state"
        wparts.append(f"SELECT o.customer_id, r.channel, r.{at} AS ts FROM staging.{table} r "
                      f"JOIN ({owners}) o USING (source, source_record_id) WHERE {state} = 'withdrawn'")
        if entity == "consent":
            gparts.append(f"SELECT o.customer_id, r.channel, r.{at} AS ts FROM staging.{table} r "
                          f"JOIN ({owners}) o USING (source, source_record_id) "
                          "WHERE r.state = 'granted' AND o.sole")
    row = engine.rows(SqlStep("privacy.withdrawal_violations", f"""
        WITH w AS (SELECT customer_id, channel, max(ts) AS last_w FROM ({' UNION ALL '.join(wparts)}) AS x
                   GROUP BY customer_id, channel),
             g AS (SELECT customer_id, channel, max(ts) AS last_g FROM ({' UNION ALL '.join(gparts)}) AS x
                   GROUP BY customer_id, channel),
             standing AS (SELECT w.customer_id, w.channel FROM w LEFT JOIN g USING (customer_id, channel)
                          WHERE g.last_g IS NULL OR g.last_g <= w.last_w)
        SELECT count(*),
               count(*) FILTER (WHERE CASE s.channel WHEN 'email' THEN coalesce(c.email_consent, '')
                                                     WHEN 'sms' THEN coalesce(c.sms_consent, '')
                                                     ELSE coalesce(k.state, '') END <> 'withdrawn')
        FROM standing s
        LEFT JOIN core.customers c ON c.customer_id = s.customer_id
        LEFT JOIN core.consents k ON k.customer_id = s.customer_id AND k.channel = s.channel""",
        params))[0]
    engine.run(SqlStep("privacy.drop_owners", "DROP TABLE IF EXISTS _identifier_owners"))
    return {"standing_withdrawals": int(row[0]), "violations": int(row[1])}
