"""Journeys: multi-step paths a contact walks one day at a time, with state in the warehouse.

``activation.journey_state`` holds one row per contact per entry (the step, since
when, the branch taken, active / done / exited); ``journey_history`` one row per move.
A day is evaluated set-based: contacts enter (an event of the day, a segment entered
that day, or a date), then every step moves the contacts that are ready, in a few
passes until nobody moves (a contact can cross several zero-day steps in a day):

* ``wait`` / ``until``: ready N days after the step was entered (or on the date);
* ``check`` (wait, then check): after ``within_days``, ``then`` if an event of the type
  with the property filters happened in the wait, else ``otherwise``;
* ``action``: queued through the outbox (consent gate, cap, exactly once), then ``next``;
  a contact without consent is recorded ``blocked`` and goes on;
* ``branches``: the first whose event condition (since the entry) AND profile
  conditions hold, else ``otherwise``;
* ``end``: done.

Versions: a journey's version is a digest of its definition; each is stored in
``journey_versions``. Contacts finish the version they entered (``on_edit: finish``)
or move to the same-named step of the new one (``migrate``). Re-entry after the end is
allowed unless ``reentry: never``. People leaving the card (soft-deleted, erased) exit.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json

from tessera.engine import Engine, SqlStep, as_engine
from tessera.settings.activation import JourneyDef
from tessera.activation.automations import DAY_EVENTS, conditions_sql, event_filter_sql
from tessera.activation.outbox import KEY_SQL, queue, scratch

STATE = "activation.journey_state"


def version_of(journey: JourneyDef) -> str:
    text = json.dumps(journey.model_dump(mode="json"), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def stored_versions(engine: Engine) -> list[tuple[str, str, JourneyDef]]:
    engine = as_engine(engine)
    if not engine.table_exists("activation", "journey_versions"):
        return []
    return [(j, v, JourneyDef.model_validate_json(d)) for j, v, d in engine.rows(SqlStep(
        "activation.journey_versions", "SELECT journey, version, definition FROM activation.journey_versions"))]


def _register(engine: Engine, journey: JourneyDef, version: str, day: dt.date) -> None:
    engine.run(SqlStep("activation.register_version", """
        INSERT INTO activation.journey_versions
        SELECT ?, ?, ?, CAST(? AS DATE) WHERE NOT EXISTS (
            SELECT 1 FROM activation.journey_versions WHERE journey = ? AND version = ?)""",
        [journey.name, version, journey.model_dump_json(), day, journey.name, version]))


def _entries_step(deployment, journey: JourneyDef, version: str, day: dt.date) -> SqlStep:
    t, params = journey.trigger, []
    if t.event is not None:
        cond = event_filter_sql(deployment, t.event, day, params)
        src = f"SELECT DISTINCT customer_id FROM {DAY_EVENTS} WHERE {cond}"
    elif t.segment is not None:
        src = ("SELECT DISTINCT customer_id FROM marketing.segment_history "
               "WHERE segment = ? AND entered_on = CAST(? AS DATE)")
        params = [t.segment, day]
    else:
        src = "SELECT customer_id FROM marts.contact_cards WHERE CAST(? AS DATE) = CAST(? AS DATE)"
        params = [t.date, day]
    cond = conditions_sql(deployment, t.conditions, day, params)
    never = journey.reentry == "never"
    sql = f"""
        SELECT ? AS journey, ? AS version, customer_id, CAST(? AS DATE) AS entered_on,
               ? AS step, CAST(? AS DATE) AS step_since, CAST(NULL AS VARCHAR) AS branch,
               'active' AS status, CAST(? AS DATE) AS updated_on
        FROM ({src}) t
        WHERE {cond}
          AND customer_id IN (SELECT customer_id FROM marts.contact_cards)
          AND customer_id NOT IN (SELECT customer_id FROM {STATE}
                                  WHERE journey = ? AND (status IN ('active', 'failed')
                                                         OR CAST(? AS BOOLEAN)))"""
    return SqlStep("activation.journey_entries", sql,
                   [journey.name, version, day, journey.steps[0].name, day, day, *params,
                    journey.name, never])


def _at(step_name: str) -> str:
    return f"FROM {STATE} s WHERE s.journey = ? AND s.version = ? AND s.status = 'active' AND s.step = '{step_name}'"


def _events_between() -> str:
    """``core.events`` between two instants (parameters): a range on ``occurred_at`` the
    scan prunes by its zone maps, so a check or a branch reads the days since the
    earliest contact at the step entered it, not the whole history."""
    return ("SELECT customer_id, event_type, occurred_at, properties, source FROM core.events "
            "WHERE occurred_at >= CAST(? AS TIMESTAMP) AND occurred_at < CAST(? AS TIMESTAMP)")


def _bounds(since: dt.date | None, day: dt.date) -> list[dt.datetime]:
    start = dt.datetime.combine(since or dt.date(1900, 1, 1), dt.time())
    return [start, dt.datetime.combine(day + dt.timedelta(days=1), dt.time())]


def _moves_step(deployment, journey: JourneyDef, version: str, step, day: dt.date,
                since: dt.date | None = None) -> SqlStep:
    """The contacts at ``step`` that move today: (customer_id, entered_on, next_step,
    outcome, branch). ``since``: the earliest day a contact at the step entered the
    journey (a branch's events) or the step (a check's)."""
    base = [journey.name, version]
    kind = step.kind
    if kind == "wait":
        if step.until is not None:
            ready, rp = "CAST(? AS DATE) >= CAST(? AS DATE)", [day, step.until]
        else:
            ready, rp = "s.step_since + CAST(? AS INTEGER) <= CAST(? AS DATE)", [step.wait, day]
        sql = (f"SELECT s.customer_id, s.entered_on, '{step.next}' AS next_step, 'waited' AS outcome, "
               f"CAST(NULL AS VARCHAR) AS branch {_at(step.name)} AND {ready}")
        return SqlStep("activation.journey_wait", sql, base + rp)
    if kind == "check":
        params: list = []
        cond = event_filter_sql(deployment, step.check, day, params, alias="e")
        sql = f"""
            SELECT s.customer_id, s.entered_on,
                   CASE WHEN m.customer_id IS NOT NULL THEN '{step.then}' ELSE '{step.otherwise}' END
                       AS next_step,
                   CASE WHEN m.customer_id IS NOT NULL THEN 'checked_yes' ELSE 'checked_no' END AS outcome,
                   CAST(NULL AS VARCHAR) AS branch
            FROM {STATE} s LEFT JOIN (
                SELECT DISTINCT s2.customer_id FROM {STATE} s2
                JOIN ({_events_between()}) e ON e.customer_id = s2.customer_id
                 AND CAST(e.occurred_at AS DATE) >= s2.step_since
                 AND CAST(e.occurred_at AS DATE) <= s2.step_since + CAST(? AS INTEGER)
                WHERE s2.journey = ? AND s2.version = ? AND s2.status = 'active'
                  AND s2.step = '{step.name}' AND {cond}) m ON m.customer_id = s.customer_id
            WHERE s.journey = ? AND s.version = ? AND s.status = 'active' AND s.step = '{step.name}'
              AND s.step_since + CAST(? AS INTEGER) <= CAST(? AS DATE)"""
        return SqlStep("activation.journey_check", sql,
                       [*_bounds(since, day), step.within_days, *base, *params, *base, step.within_days, day])
    if kind == "branch":
        # each branch's condition is evaluated once, as a semi-join over the contacts at
        # the step (a CASE over IN sub-queries re-ran them per branch and per column)
        params: list = [*base]
        # branches asking the same event condition (the Milan journey's women and men both
        # ask for a coupon used in Milan) share one scan of the events: one CTE per
        # distinct condition; their profile conditions are the day's shared rule tables
        ctes = [f"at_step AS (SELECT s.customer_id, s.entered_on {_at(step.name)})"]
        seen: dict[tuple, str] = {}
        for i, b in enumerate(step.branches):
            conds = []
            if b.event is not None:
                ep: list = []
                ec = event_filter_sql(deployment, b.event, day, ep, alias="e")
                ev = seen.get((ec, repr(ep)))
                if ev is None:
                    ev = seen[(ec, repr(ep))] = f"ev{len(seen)}"
                    ctes.append(f"""{ev} AS (
                        SELECT DISTINCT e.customer_id FROM ({_events_between()}) e
                        JOIN at_step a2 ON a2.customer_id = e.customer_id
                        WHERE CAST(e.occurred_at AS DATE) >= a2.entered_on AND {ec})""")
                    params += [*_bounds(since, day), *ep]
                conds.append(f"a.customer_id IN (SELECT customer_id FROM {ev})")
            if b.conditions:
                conds.append(conditions_sql(deployment, b.conditions, day, params, "a.customer_id"))
            ctes.append(f"b{i} AS (SELECT a.customer_id FROM at_step a WHERE {' AND '.join(conds) or 'TRUE'})")
        joins = " ".join(f"LEFT JOIN b{i} ON b{i}.customer_id = a.customer_id" for i in range(len(step.branches)))
        nxt = " ".join(f"WHEN b{i}.customer_id IS NOT NULL THEN '{b.next}'" for i, b in enumerate(step.branches))
        names = " ".join(f"WHEN b{i}.customer_id IS NOT NULL THEN '{b.name}'" for i, b in enumerate(step.branches))
        sql = (f"WITH {', '.join(ctes)} SELECT a.customer_id, a.entered_on, "
               f"CASE {nxt} ELSE '{step.otherwise}' END AS next_step, 'branched' AS outcome, "
               f"CASE {names} ELSE 'otherwise' END AS branch FROM at_step a {joins}")
        return SqlStep("activation.journey_branch", sql, params)
    if kind == "action":
        # the action's trigger is the entry; a retry after a failure (see hold_failed) is
        # a new action: the entry plus the number of failures so far
        sql = f"""
            SELECT s.customer_id, s.entered_on, '{step.next}' AS next_step, 'acted' AS outcome,
                   CAST(NULL AS VARCHAR) AS branch,
                   CAST(s.entered_on AS VARCHAR) || coalesce('/retry-' || CAST(f.n AS VARCHAR), '') AS ref
            FROM {STATE} s LEFT JOIN (
                SELECT customer_id, entered_on, count(*) AS n FROM activation.journey_history
                WHERE journey = ? AND step = ? AND outcome = 'failed' GROUP BY customer_id, entered_on) f
              ON f.customer_id = s.customer_id AND f.entered_on = s.entered_on
            WHERE s.journey = ? AND s.version = ? AND s.status = 'active' AND s.step = '{step.name}'"""
        return SqlStep("activation.journey_action", sql, [journey.name, step.name, *base])
    # end moves everybody at the step
    nxt = "CAST(NULL AS VARCHAR)"
    outcome = "acted" if kind == "action" else "ended"
    sql = (f"SELECT s.customer_id, s.entered_on, {nxt} AS next_step, '{outcome}' AS outcome, "
           f"CAST(NULL AS VARCHAR) AS branch {_at(step.name)}")
    return SqlStep("activation.journey_" + kind, sql, base)


def _apply_moves(engine: Engine, deployment, journey: JourneyDef, version: str, step, day: dt.date,
                 now: dt.datetime, columns: set[str], stats: dict, since: dt.date | None = None) -> int:
    n = scratch(engine, "_act_moves", _moves_step(deployment, journey, version, step, day, since))
    if not n:
        return 0
    if step.kind == "action":
        cand = SqlStep("activation.journey_action_candidates", """
            SELECT m.customer_id, m.ref,
                   CAST(NULL AS VARCHAR) AS trigger_event, cp.code AS coupon
            FROM _act_moves m LEFT JOIN (
                SELECT customer_id, ref, max(code) AS code FROM activation.coupons
                WHERE origin = 'journey' AND name = ? GROUP BY ALL) cp
              ON cp.customer_id = m.customer_id AND cp.ref = CAST(m.entered_on AS VARCHAR)""",
                       [journey.name])
        first = engine.scalar(SqlStep("activation.journey_earliest_entry",
                                      "SELECT min(entered_on) FROM _act_moves"))
        res = queue(engine, deployment, origin="journey", name=journey.name, step=step.name,
                    action=step.action, day=day, now=now, candidates=cand, columns=columns,
                    version=version, since=first)
        stats.setdefault("capped", 0)
        stats["capped"] += res["capped"]
        key = KEY_SQL.replace("customer_id", "m.customer_id").replace("ref)", "m.ref)")
        # the step's own outbox rows only (a correlated look-up decorrelated into a join
        # over the whole outbox cost more than the action itself at scale)
        engine.run(SqlStep("activation.journey_action_outcome", f"""
            UPDATE _act_moves AS m SET outcome = coalesce((
                SELECT CASE o.status WHEN 'capped' THEN 'capped' ELSE 'acted' END
                FROM (SELECT action_key, status FROM activation.outbox
                      WHERE origin = 'journey' AND name = ? AND step = ?) o
                WHERE o.action_key = {key}), 'blocked')""",
            [journey.name, step.name, "journey", journey.name, step.name]))
    engine.run(SqlStep("activation.journey_history_add", f"""
        INSERT INTO activation.journey_history
        SELECT ?, ?, customer_id, entered_on, CAST(? AS DATE), ?, outcome, next_step, branch
        FROM _act_moves""", [journey.name, version, day, step.name]))
    engine.run(SqlStep("activation.journey_move", f"""
        UPDATE {STATE} AS s SET step = m.next_step, step_since = CAST(? AS DATE),
               branch = coalesce(m.branch, s.branch), updated_on = CAST(? AS DATE),
               status = CASE WHEN m.next_step IS NULL THEN 'done' ELSE 'active' END
        FROM _act_moves m
        WHERE s.journey = ? AND s.version = ? AND s.status = 'active'
          AND s.customer_id = m.customer_id AND s.entered_on = m.entered_on""",
        [day, day, journey.name, version]))
    return int(n)


def run_journey(engine: Engine, deployment, journey: JourneyDef, day: dt.date, now: dt.datetime,
                columns: set[str]) -> dict:
    engine = as_engine(engine)
    version = version_of(journey)
    _register(engine, journey, version, day)
    stats: dict = {"version": version}
    # contacts held at a step whose action failed: retried today (a new action key)
    engine.run(SqlStep("activation.journey_retry_history", f"""
        INSERT INTO activation.journey_history
        SELECT journey, version, customer_id, entered_on, CAST(? AS DATE), step, 'retried', step, branch
        FROM {STATE} WHERE journey = ? AND status = 'failed'""", [day, journey.name]))
    stats["retried"] = int(engine.scalar(SqlStep("activation.journey_retry", f"""
        UPDATE {STATE} SET status = 'active', updated_on = CAST(? AS DATE)
        WHERE journey = ? AND status = 'failed'""", [day, journey.name])) or 0)
    if journey.on_edit == "migrate":
        names = [s.name for s in journey.steps]
        stats["migrated"] = int(engine.scalar(SqlStep("activation.journey_migrate_count", f"""
            SELECT count(*) FROM {STATE} WHERE journey = ? AND status = 'active' AND version <> ?
              AND step IN (SELECT unnest(CAST(? AS VARCHAR[])))""", [journey.name, version, names])) or 0)
        engine.run(SqlStep("activation.journey_migrate", f"""
            UPDATE {STATE} SET version = ? WHERE journey = ? AND status = 'active' AND version <> ?
              AND step IN (SELECT unnest(CAST(? AS VARCHAR[])))""", [version, journey.name, version, names]))
    # people no longer on the card (soft-deleted; erased ones are deleted by forget) exit
    engine.run(SqlStep("activation.journey_exit_history", f"""
        INSERT INTO activation.journey_history
        SELECT journey, version, customer_id, entered_on, CAST(? AS DATE), step, 'exited', NULL, branch
        FROM {STATE} WHERE journey = ? AND status = 'active'
          AND customer_id NOT IN (SELECT customer_id FROM marts.contact_cards)""", [day, journey.name]))
    engine.run(SqlStep("activation.journey_exit", f"""
        UPDATE {STATE} SET status = 'exited', updated_on = CAST(? AS DATE)
        WHERE journey = ? AND status = 'active'
          AND customer_id NOT IN (SELECT customer_id FROM marts.contact_cards)""", [day, journey.name]))
    entered = engine.append(STATE, _entries_step(deployment, journey, version, day))
    engine.run(SqlStep("activation.journey_entered", f"""
        INSERT INTO activation.journey_history
        SELECT journey, version, customer_id, entered_on, entered_on, '(trigger)', 'entered', step, NULL
        FROM {STATE} WHERE journey = ? AND entered_on = CAST(? AS DATE) AND updated_on = entered_on
          AND step_since = entered_on AND step = ? AND version = ?
          AND customer_id NOT IN (SELECT customer_id FROM activation.journey_history
                                  WHERE journey = ? AND entered_on = CAST(? AS DATE))""",
        [journey.name, day, journey.steps[0].name, version, journey.name, day]))
    stats["entered"] = int(entered)
    versions = {v: j for name, v, j in stored_versions(engine) if name == journey.name}
    versions[version] = journey
    moved = 0
    for _ in range(max(len(j.steps) for j in versions.values()) + 1):
        active = [r[0] for r in engine.rows(SqlStep("activation.journey_active_versions", f"""
            SELECT DISTINCT version FROM {STATE} WHERE journey = ? AND status = 'active' ORDER BY 1""",
            [journey.name]))]
        n = 0
        for v in active:
            for step in versions[v].steps:
                # a step nobody is at costs one cheap count, not its (joins and rules) query
                (here, first_entry, first_since), = engine.rows(SqlStep("activation.journey_occupied", f"""
                        SELECT count(*), min(entered_on), min(step_since) FROM {STATE}
                        WHERE journey = ? AND version = ? AND status = 'active' AND step = ?""",
                        [journey.name, v, step.name]))
                if here:
                    since = first_since if step.kind == "check" else first_entry
                    n += _apply_moves(engine, deployment, versions[v], v, step, day, now, columns, stats,
                                      since)
        moved += n
        if not n:
            break
    stats["moved"] = moved
    return stats


def hold_failed(engine: Engine, deployment, day: dt.date) -> dict:
    """Contacts whose journey action failed for good (outbox ``failed``: rejected, or out
    of attempts) do not silently go on: they are put back at the action's step with
    status ``failed`` (history ``failed``), wherever they had moved since, and the next
    evaluated day retries the action (history ``retried``, a new action key). After
    ``activation.journey_retries`` retries they exit (status ``exited``, history
    ``gave_up``). A failure is handled once: the outbox's failed rows of an entry and
    step are matched against the failures the history already holds."""
    engine = as_engine(engine)
    n = scratch(engine, "_act_failed", SqlStep("activation.journey_failed", f"""
        WITH f AS (
            SELECT name AS journey, customer_id, CAST(substr(ref, 1, 10) AS DATE) AS entered_on,
                   step, count(*) AS n
            FROM activation.outbox WHERE origin = 'journey' AND status = 'failed'
            GROUP BY name, customer_id, CAST(substr(ref, 1, 10) AS DATE), step),
        h AS (
            SELECT journey, customer_id, entered_on, step, count(*) AS n
            FROM activation.journey_history WHERE outcome IN ('failed', 'gave_up')
            GROUP BY journey, customer_id, entered_on, step)
        SELECT f.journey, f.customer_id, f.entered_on, f.step, f.n,
               f.n > CAST(? AS INTEGER) AS gave_up
        FROM f LEFT JOIN h ON h.journey = f.journey AND h.customer_id = f.customer_id
                          AND h.entered_on = f.entered_on AND h.step = f.step
        WHERE f.n > coalesce(h.n, 0)
          AND EXISTS (SELECT 1 FROM {STATE} s WHERE s.journey = f.journey
                      AND s.customer_id = f.customer_id AND s.entered_on = f.entered_on
                      AND s.status <> 'exited')""", [deployment.activation.journey_retries]))
    if not n:
        return {"held": 0, "gave_up": 0}
    with engine.together():     # the history marks the failure handled: both or neither
        _hold(engine, day)
    gave_up = int(engine.scalar(SqlStep("activation.journey_gave_up",
                                        "SELECT count(*) FROM _act_failed WHERE gave_up")) or 0)
    return {"held": int(n) - gave_up, "gave_up": gave_up}


def _hold(engine: Engine, day: dt.date) -> None:
    engine.run(SqlStep("activation.journey_failed_history", f"""
        INSERT INTO activation.journey_history
        SELECT s.journey, s.version, s.customer_id, s.entered_on, CAST(? AS DATE), f.step,
               CASE WHEN f.gave_up THEN 'gave_up' ELSE 'failed' END,
               CASE WHEN f.gave_up THEN CAST(NULL AS VARCHAR) ELSE f.step END, s.branch
        FROM {STATE} s JOIN _act_failed f ON f.journey = s.journey
         AND f.customer_id = s.customer_id AND f.entered_on = s.entered_on""", [day]))
    engine.run(SqlStep("activation.journey_hold", f"""
        UPDATE {STATE} AS s SET step = f.step, step_since = CAST(? AS DATE), updated_on = CAST(? AS DATE),
               status = CASE WHEN f.gave_up THEN 'exited' ELSE 'failed' END
        FROM _act_failed f
        WHERE f.journey = s.journey AND f.customer_id = s.customer_id AND f.entered_on = s.entered_on""",
        [day, day]))
