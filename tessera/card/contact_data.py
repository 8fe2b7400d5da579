"""The contact card's own entities: messages, the mobile app profile and details.

SALESmanago's contact card (seed 003) lists the messages sent to a contact (e-mail, SMS,
web push) with a delivery status code, the mobile profile built from the app's events
(app, language, system and version, last location, first and last launch, time in app),
and the contact's standard and dictionary details (key/value). They come in as sources
of the entities ``message``, ``app_event`` and ``detail`` and name their person the way
a behavioural event does: by a contact record id of the source's ``customer_source``, an
e-mail or a phone. So they are linked here exactly as ``core.events`` is (the identifier
must belong to exactly one customer after this run's merges; the strongest decides;
an app event with only a device id follows the other app events of that device), and a
record that links to nobody is kept with an empty ``customer_id`` (counted, shown nowhere).

The core tables hold no address or phone: erasure removes their rows by ``customer_id``
(raw and staging rows by the erased identifiers and contact records, see
``tessera.privacy.suppression.forget``).
"""

from __future__ import annotations

from tessera.engine import Engine, SqlStep, as_engine
from tessera.privacy.owners import identifier_owners, identifiers_sql
from tessera.settings import Deployment

MESSAGES_DDL = """(message_id VARCHAR, customer_id BIGINT, source VARCHAR, channel VARCHAR,
    campaign_id VARCHAR, name VARCHAR, sender VARCHAR, sent_via VARCHAR, status VARCHAR,
    created_at TIMESTAMP, sent_at TIMESTAMP, opened_at TIMESTAMP, clicked_at TIMESTAMP,
    linked_by VARCHAR)"""
APP_EVENTS_DDL = """(event_id VARCHAR, customer_id BIGINT, source VARCHAR, event_type VARCHAR,
    occurred_at TIMESTAMP, app VARCHAR, app_version VARCHAR, language VARCHAR, os VARCHAR,
    os_version VARCHAR, location VARCHAR, session_seconds BIGINT, linked_by VARCHAR)"""
PROFILES_DDL = """(customer_id BIGINT, app VARCHAR, app_version VARCHAR, language VARCHAR,
    os VARCHAR, os_version VARCHAR, last_location VARCHAR, first_launch_at TIMESTAMP,
    last_launch_at TIMESTAMP, launches BIGINT, time_in_app_seconds BIGINT, last_event_at TIMESTAMP)"""
DETAILS_DDL = """(detail_id VARCHAR, customer_id BIGINT, source VARCHAR, kind VARCHAR, name VARCHAR,
    value VARCHAR, updated_at TIMESTAMP, linked_by VARCHAR)"""

# entity -> (staging table, core table, its DDL, the core columns from staging's ``x``)
_ENTITIES = {
    "message": ("messages", "messages", MESSAGES_DDL,
                "x.source_record_id AS message_id, l.customer_id, x.source, x.channel, x.campaign_id, "
                "x.name, x.sender, x.sent_via, x.status, x.created_at, x.sent_at, x.opened_at, "
                "x.clicked_at, l.linked_by", "customer_id, created_at DESC, message_id"),
    "app_event": ("app_events", "app_events", APP_EVENTS_DDL,
                  "x.source_record_id AS event_id, l.customer_id, x.source, x.event_type, x.occurred_at, "
                  "x.app, x.app_version, x.language, x.os, x.os_version, x.location, "
                  "CAST(x.session_seconds AS BIGINT) AS session_seconds, l.linked_by",
                  "customer_id, occurred_at, event_id"),
    "detail": ("contact_details", "contact_details", DETAILS_DDL,
               "x.source_record_id AS detail_id, l.customer_id, x.source, x.kind, x.name, x.value, "
               "x.updated_at, l.linked_by", "customer_id, kind, name"),
}

# The mobile profile per customer and app: the latest reported value of each setting,
# the last location, launches (an install counts as the first launch) and time in app.
PROFILES_SQL = """
    SELECT customer_id, app,
           arg_max(app_version, occurred_at) FILTER (WHERE app_version IS NOT NULL) AS app_version,
           arg_max(language, occurred_at) FILTER (WHERE language IS NOT NULL) AS language,
           arg_max(os, occurred_at) FILTER (WHERE os IS NOT NULL) AS os,
           arg_max(os_version, occurred_at) FILTER (WHERE os_version IS NOT NULL) AS os_version,
           arg_max(location, occurred_at) FILTER (WHERE location IS NOT NULL) AS last_location,
           min(occurred_at) FILTER (WHERE event_type IN ('install', 'launch')) AS first_launch_at,
           max(occurred_at) FILTER (WHERE event_type IN ('install', 'launch')) AS last_launch_at,
           count(*) FILTER (WHERE event_type = 'launch') AS launches,
           CAST(coalesce(sum(session_seconds) FILTER (WHERE event_type = 'session_end'), 0) AS BIGINT)
               AS time_in_app_seconds,
           max(occurred_at) AS last_event_at
    FROM core.app_events WHERE customer_id IS NOT NULL
    GROUP BY customer_id, app ORDER BY customer_id, app"""


def table_steps() -> list[SqlStep]:
    """Empty tables for deployments without such sources (the page reads them either way)."""
    return [SqlStep("card.contact_data_ddl", f"CREATE TABLE IF NOT EXISTS core.{core} {ddl}")
            for _, core, ddl, _, _ in _ENTITIES.values()] + [
        SqlStep("card.mobile_profiles_ddl", f"CREATE TABLE IF NOT EXISTS core.mobile_profiles {PROFILES_DDL}")]


def _columns(engine: Engine, table: str) -> set[str]:
    return {r[0] for r in engine.rows(SqlStep(
        "card.contact_data_columns", "SELECT column_name FROM information_schema.columns "
        "WHERE table_schema = 'staging' AND table_name = $t", {"t": table}))}


def _link_step(engine: Engine, deployment: Deployment, entity: str) -> SqlStep:
    """``core.<table>``: the staged rows with the customer their strongest identifier names."""
    staging, core, _ddl, select, order = _ENTITIES[entity]
    cols = _columns(engine, staging)
    refs = {s.name: s.customer_source for s in deployment.sources_of(entity) if s.customer_source}
    ids, params = identifiers_sql(f"staging.{staging}", cols, refs, entity)
    device = ""
    if "device_id" in cols:
        # a device links the rows that carry nothing else when every linked row of that
        # device names one and the same customer (as core.events does)
        device = f""",
        devices AS (
            SELECT x.device_id, min(d.customer_id) AS customer_id
            FROM staging.{staging} x JOIN direct d ON d.source = x.source AND d.source_record_id = x.source_record_id
            WHERE x.device_id IS NOT NULL GROUP BY x.device_id HAVING count(DISTINCT d.customer_id) = 1)"""
    link = ("SELECT x.source, x.source_record_id, coalesce(d.customer_id, v.customer_id) AS customer_id, "
            "CASE WHEN d.customer_id IS NOT NULL THEN d.linked_by WHEN v.customer_id IS NOT NULL "
            "THEN 'device' END AS linked_by FROM staging.{s} x LEFT JOIN direct d "
            "ON d.source = x.source AND d.source_record_id = x.source_record_id "
            "LEFT JOIN devices v ON v.device_id = x.device_id" if device else
            "SELECT source, source_record_id, customer_id, linked_by FROM direct").format(s=staging)
    return SqlStep(f"card.{core}", f"""
        WITH owners AS (
            SELECT kind, key, min(customer_id) AS customer_id
            FROM _identifier_owners GROUP BY kind, key HAVING count(*) = 1),
        ids AS ({ids}),
        direct AS (
            SELECT i.source, i.source_record_id, min_by(o.customer_id, i.strength) AS customer_id,
                   min_by(i.linked_by, i.strength) AS linked_by
            FROM ids i JOIN owners o ON o.kind = i.kind AND o.key = i.key
            GROUP BY i.source, i.source_record_id){device},
        l AS ({link})
        SELECT {select}
        FROM staging.{staging} x
        LEFT JOIN l ON l.source = x.source AND l.source_record_id = x.source_record_id
        ORDER BY {order}""", params)


def build_contact_data(target, deployment: Deployment) -> dict:
    """``core.messages``, ``core.app_events``, ``core.mobile_profiles`` and
    ``core.contact_details``, linked to this run's customers. Returns counts only."""
    engine = as_engine(target)
    present = {e: engine.table_exists("staging", _ENTITIES[e][0]) and bool(deployment.sources_of(e))
               for e in _ENTITIES}
    if any(present.values()):
        identifier_owners(engine)
    with engine.together():
        for entity, (_staging, core, ddl, _select, _order) in _ENTITIES.items():
            if present[entity]:
                engine.replace_table(f"core.{core}", _link_step(engine, deployment, entity))
            else:
                engine.run(SqlStep(f"card.{core}_empty", f"CREATE OR REPLACE TABLE core.{core} {ddl}"))
        engine.replace_table("core.mobile_profiles", SqlStep("card.mobile_profiles", PROFILES_SQL))
        if present["detail"]:
            # one value per person, kind and key: the latest set (by time, then source record)
            engine.run(SqlStep("card.contact_details_latest", """
                DELETE FROM core.contact_details WHERE customer_id IS NOT NULL AND (source, detail_id) IN (
                    SELECT source, detail_id FROM (
                        SELECT source, detail_id, row_number() OVER (
                            PARTITION BY customer_id, kind, name
                            ORDER BY updated_at DESC NULLS LAST, source, detail_id DESC) AS n
                        FROM core.contact_details WHERE customer_id IS NOT NULL) WHERE n > 1)"""))
    engine.run(SqlStep("card.drop_identifier_owners", "DROP TABLE IF EXISTS _identifier_owners"))
    row = engine.rows(SqlStep("card.contact_data_counts", """
        SELECT (SELECT count(*) FROM core.messages), (SELECT count(*) FROM core.messages WHERE customer_id IS NULL),
               (SELECT count(*) FROM core.messages WHERE status IS NOT NULL),
               (SELECT count(*) FROM core.app_events), (SELECT count(*) FROM core.app_events WHERE customer_id IS NULL),
               (SELECT count(*) FROM core.mobile_profiles),
               (SELECT count(*) FROM core.contact_details),
               (SELECT count(*) FROM core.contact_details WHERE customer_id IS NULL)"""))[0]
    names = ("messages", "messages_without_customer", "messages_with_status_code", "app_events",
             "app_events_without_customer", "mobile_profiles", "details", "details_without_customer")
    return {n: int(v or 0) for n, v in zip(names, row)}
