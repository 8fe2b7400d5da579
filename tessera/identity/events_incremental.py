"""Incremental event linkage: relink only the events a day's changes can move.

Why this is exact. An event's row of ``core.events`` is its staged row plus the customer
it links to (``events_linked.sql``): its *direct* link is decided by its own identifiers
and, for each, the identifier's owner (the one customer holding it now, or none when no
customer or several hold it); its *device* link by the direct links of every event of
its device. So an event's row can only change when

- the event itself is new (or changed: then the whole table is rebuilt, below);
- an identifier it carries changed owner: either the identifier has an owner now that
  differs from the stored one (found by scanning the staged events for those keys), or
  it had an owner and has none now (then the events it decided were linked to that old
  owner, found by ``customer_id``: an event not decided by it was decided by a stronger
  identifier, whose owner did not change);
- an event of its device is one of these (so every event of their devices is relinked).

The owners of the last build are stored as ``ops.event_link_owners (h, customer_id)``,
``h`` the SHA-256 of the identifier's kind and key (no identifier value is stored), and
updated by difference. Everything else makes the build full, with the reason recorded in
``ops.events_state``: no state or table yet, an event key that changed or left staging
(its old device cannot be named any more), a first staging build of the events since (no
changed keys), an erasure since, different linking settings (the events' customer
sources), a last build older than the changed keys' retention.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json

from tessera.engine import Engine, SqlStep
from tessera.engine.dialect import sha256_hex
from tessera.identity.incremental import erased_or_stale, staging_reason

# Bump when the mechanism changes: every stored state becomes stale (a full build).
MECHANISM = "1"

STATE_DDL = """
CREATE TABLE IF NOT EXISTS ops.events_state (
    built_at    TIMESTAMP NOT NULL,
    digest      VARCHAR   NOT NULL,   -- the linking settings (events' customer sources)
    keys_upto   TIMESTAMP,            -- the newest changed event key (recorded_at) read
    mode        VARCHAR   NOT NULL,   -- incremental | full
    reason      VARCHAR,              -- why the build was full
    relinked    BIGINT                -- events rewritten (incremental)
)"""
# The customers whose events an incremental build moved (their old and new ids), for the
# contact card of this run; the latest build's only (empty after a full one).
TOUCHED_DDL = "CREATE TABLE IF NOT EXISTS ops.events_touched (customer_id BIGINT NOT NULL)"
OWNERS_DDL = "CREATE TABLE IF NOT EXISTS ops.event_link_owners (h VARCHAR NOT NULL, customer_id BIGINT NOT NULL)"


def _q(name: str, sql: str, **params) -> SqlStep:
    return SqlStep(f"identity.events_incremental.{name}", sql, params)


def digest(refs: dict[str, str], pattern: str | None = None) -> str:
    """What the stored links and product ids were built under: another, a full build."""
    return hashlib.sha256(json.dumps([MECHANISM, sorted(refs.items()), pattern]).encode()).hexdigest()


def drop_state(engine: Engine) -> None:
    """Forget the state: the next incremental build is full."""
    engine.run(_q("drop_state", "DROP TABLE IF EXISTS ops.events_state"),
               _q("drop_owners", "DROP TABLE IF EXISTS ops.event_link_owners"),
               _q("drop_touched", "DROP TABLE IF EXISTS ops.events_touched"))


def full_reason(engine: Engine, refs: dict[str, str], run_at: dt.datetime,
                pattern: str | None = None) -> tuple[str | None, dict]:
    """Why this build of ``core.events`` must be full (None: it may be incremental)."""
    engine.run(_q("state_ddl", STATE_DDL), _q("owners_ddl", OWNERS_DDL), _q("touched_ddl", TOUCHED_DDL))
    for schema, table in (("core", "events"), ("ops", "changed_keys"), ("ops", "staging_state")):
        if not engine.table_exists(schema, table):
            return f"no {schema}.{table} yet", {}
    rows = engine.rows(_q("state", "SELECT built_at, digest, keys_upto FROM ops.events_state "
                                   "ORDER BY built_at DESC LIMIT 1"))
    if not rows:
        return "no recorded state", {}
    built_at, dig, keys_upto = rows[0]
    state = {"built_at": built_at, "keys_upto": keys_upto}
    if dig != digest(refs, pattern):
        return "the linking settings changed", state
    reason = staging_reason(engine, "staging.events", built_at)
    if reason:
        return reason, state
    since = "TRUE" if keys_upto is None else "recorded_at > $upto"
    up = {} if keys_upto is None else {"upto": keys_upto}
    if engine.scalar(_q("not_new", f"""
            SELECT count(*) FROM ops.changed_keys WHERE entity = 'event' AND change <> 'new' AND {since}""", **up)):
        return "an event changed or left staging", state
    return erased_or_stale(engine, built_at, run_at), state


def new_owners(engine: Engine, owners: str) -> None:
    """``_ev_own (h, kind, key, customer_id)``: each identifier held by exactly one customer
    now (what ``events_linked.sql`` links by: ``owners``, linkage's ``_link_owners``), with
    the hash the stored owners are kept by."""
    engine.run(_q("owners", f"""
        CREATE OR REPLACE TEMP TABLE _ev_own AS
        SELECT {sha256_hex("kind || '|' || key")} AS h, kind, key, customer_id FROM {owners}"""))


def moved_key_scans(key_columns: list[tuple[str, str]], refs: dict[str, str],
                    moved: str) -> tuple[list[str], dict]:
    """Predicates over ``staging.events`` (OR them) that find the events carrying an
    identifier of ``moved (kind, key)``, and their parameters: one per identifier kind
    the events carry, a contact record id per event source with a ``customer_source``."""
    scans: list[str] = []
    params: dict = {}
    for kind, col in key_columns:
        if kind == "customer_ref":
            for i, (src, contact_src) in enumerate(sorted(refs.items())):
                params[f"src{i}"], params[f"ref{i}"] = src, "record:" + contact_src
                scans.append(f"(source = $src{i} AND {col} IN (SELECT key FROM {moved} WHERE kind = $ref{i}))")
        else:
            scans.append(f"{col} IN (SELECT key FROM {moved} WHERE kind = '{kind}')")
    return scans, params


def affected_events(engine: Engine, state: dict, key_columns: list[tuple[str, str]],
                    refs: dict[str, str]) -> dict:
    """``_ev_r``: the staged rows of the events to relink (the set above). Returns counts.

    ``key_columns`` are the identifier kinds the events carry, as (kind, staging column)."""
    keys_upto = state["keys_upto"]
    since = "TRUE" if keys_upto is None else "recorded_at > $upto"
    up = {} if keys_upto is None else {"upto": keys_upto}
    engine.run(
        # identifiers with a (different) owner now: their events are found by key
        _q("moved", """
            CREATE OR REPLACE TEMP TABLE _ev_moved AS
            SELECT n.kind, n.key FROM _ev_own n LEFT JOIN ops.event_link_owners o ON o.h = n.h
            WHERE o.customer_id IS DISTINCT FROM n.customer_id"""),
        # identifiers that had an owner and have none now: the events they decided
        # were linked to that owner
        _q("lost", """
            CREATE OR REPLACE TEMP TABLE _ev_lost AS
            SELECT DISTINCT o.customer_id FROM ops.event_link_owners o
            WHERE NOT EXISTS (SELECT 1 FROM _ev_own n WHERE n.h = o.h)"""),
        _q("new", f"""
            CREATE OR REPLACE TEMP TABLE _ev_a AS
            SELECT DISTINCT source, source_record_id FROM ops.changed_keys
            WHERE entity = 'event' AND change = 'new' AND {since}""", **up))
    scans, params = moved_key_scans(key_columns, refs, "_ev_moved")
    if scans:
        engine.run(_q("by_key", f"""
            INSERT INTO _ev_a SELECT source, source_record_id FROM staging.events
            WHERE {" OR ".join(scans)}""", **params))
    engine.run(
        _q("by_lost_owner", """
            INSERT INTO _ev_a SELECT source, event_id FROM core.events
            WHERE customer_id IN (SELECT customer_id FROM _ev_lost) AND linked_by <> 'device'"""),
        _q("devices", """
            CREATE OR REPLACE TEMP TABLE _ev_dev AS
            SELECT DISTINCT e.device_id FROM staging.events e
            JOIN (SELECT DISTINCT source, source_record_id FROM _ev_a) a USING (source, source_record_id)
            WHERE e.device_id IS NOT NULL"""),
        _q("rows", """
            CREATE OR REPLACE TEMP TABLE _ev_r AS
            SELECT * FROM staging.events e
            WHERE EXISTS (SELECT 1 FROM _ev_a a WHERE a.source = e.source AND a.source_record_id = e.source_record_id)
               OR e.device_id IN (SELECT device_id FROM _ev_dev)"""))
    moved, lost, relinked = engine.rows(_q("counts", """
        SELECT (SELECT count(*) FROM _ev_moved), (SELECT count(*) FROM _ev_lost), (SELECT count(*) FROM _ev_r)"""))[0]
    return {"owners_moved": int(moved), "owners_lost": int(lost), "events_relinked": int(relinked)}


def touched_before(engine: Engine) -> None:
    """The customers of the rows about to be rewritten (their old ids)."""
    engine.run(_q("touched_clear", "DELETE FROM ops.events_touched"),
               _q("touched_old", """
        INSERT INTO ops.events_touched SELECT DISTINCT customer_id FROM core.events
        WHERE customer_id IS NOT NULL AND EXISTS (
            SELECT 1 FROM _ev_r r WHERE r.source = core.events.source AND r.source_record_id = core.events.event_id)"""))


def touched_after(engine: Engine) -> None:
    """... and those of the rows written (their new ids)."""
    engine.run(_q("touched_new", """
        INSERT INTO ops.events_touched SELECT DISTINCT customer_id FROM core.events
        WHERE customer_id IS NOT NULL AND customer_id NOT IN (SELECT customer_id FROM ops.events_touched)
          AND EXISTS (SELECT 1 FROM _ev_r r WHERE r.source = core.events.source
                      AND r.source_record_id = core.events.event_id)"""))


def touched_clear(engine: Engine) -> None:
    engine.run(_q("touched_clear", "DELETE FROM ops.events_touched"))


def write_owners(engine: Engine, mode: str) -> None:
    """Store this build's owners: in full, or by difference (the moved and the lost)."""
    if mode == "full":
        engine.replace_table("ops.event_link_owners", _q("owners_full", "SELECT h, customer_id FROM _ev_own"))
        return
    engine.run(_q("owners_delete", """
        DELETE FROM ops.event_link_owners WHERE NOT EXISTS (
            SELECT 1 FROM _ev_own n WHERE n.h = ops.event_link_owners.h
            AND n.customer_id = ops.event_link_owners.customer_id)"""),
               _q("owners_insert", """
        INSERT INTO ops.event_link_owners SELECT n.h, n.customer_id FROM _ev_own n
        WHERE NOT EXISTS (SELECT 1 FROM ops.event_link_owners o WHERE o.h = n.h)"""))


def record_state(engine: Engine, run_at: dt.datetime, refs: dict[str, str], mode: str,
                 reason: str | None, relinked: int | None, pattern: str | None = None) -> None:
    upto = "(SELECT max(recorded_at) FROM ops.changed_keys WHERE entity = 'event')" \
        if engine.table_exists("ops", "changed_keys") else "NULL::TIMESTAMP"
    engine.run(
        _q("state_prune", "DELETE FROM ops.events_state WHERE built_at < CAST($at AS TIMESTAMP) - INTERVAL 60 DAY",
           at=run_at),
        _q("state_write", f"""
            INSERT INTO ops.events_state
            SELECT CAST($at AS TIMESTAMP), $digest, {upto}, $mode, $reason, $relinked""",
           at=run_at, digest=digest(refs, pattern), mode=mode, reason=reason, relinked=relinked))


def drop_temps(engine: Engine) -> None:
    engine.run(*(_q(f"drop{t}", f"DROP TABLE IF EXISTS {t}")
                 for t in ("_ev_own", "_ev_moved", "_ev_lost", "_ev_a", "_ev_dev", "_ev_r")))
