"""Automations: when an event of a type lands on chosen nodes, perform one action.

Evaluated per day, one set-based query per automation: the day's matching events
(type, property filters in the segment language, nodes), the contacts that meet the
profile conditions (a segment rule, same day), one action per triggering event (the
event id is the action key's trigger), through the outbox's gate.

Why ``_act_day_events``: ``core.events`` holds every day ever loaded; the day's
rows of the triggering types are copied once per evaluated day (a range on
``occurred_at`` the scan can prune by its zone maps, unlike a cast to a date), and the
ten automations and the journeys' entries read that small table, not the history.
"""

from __future__ import annotations

import datetime as dt

from tessera.engine import Engine, SqlStep
from tessera.marketing.scoring import _event_condition
from tessera.marketing.segments import rule_members_sql
from tessera.activation.outbox import MESSAGE_KINDS, queue, scratch
from tessera.activation.rules import current as current_rules


def event_filter_sql(deployment, ev, as_of: dt.date, params: list, alias: str = "") -> str:
    """Predicate over ``core.events`` rows: type, property filters, nodes."""
    a = f"{alias}." if alias else ""
    cond = _event_condition(ev.event, ev.where, params, as_of)
    if alias:
        for col in ("event_type", "properties"):
            cond = cond.replace(f"{col}", f"{a}{col}").replace(f"{a}{a}", a)
    if ev.nodes:
        sources = [s.name for s in deployment.sources if s.node in ev.nodes] or ["<none>"]
        cond += f" AND {a}source IN ({', '.join('?' for _ in sources)})"
        params.extend(sources)
    return cond


DAY_EVENTS = "_act_day_events"


def trigger_types(deployment) -> list[str]:
    """The event types that trigger an automation or a journey entry (the day's events
    of other types are never read by a trigger)."""
    filters = [a.trigger for a in deployment.automations or []]
    filters += [j.trigger.event for j in deployment.journeys or [] if j.trigger.event is not None]
    out: set[str] = set()
    for f in filters:
        out |= set(f.event if isinstance(f.event, list) else [f.event])
    return sorted(out)


def build_day_events(engine: Engine, deployment, day: dt.date) -> int:
    start = dt.datetime.combine(day, dt.time())
    types = trigger_types(deployment) or ["<none>"]
    return scratch(engine, DAY_EVENTS, SqlStep("activation.day_events", f"""
        SELECT event_id, customer_id, event_type, occurred_at, properties, source FROM core.events
        WHERE occurred_at >= CAST(? AS TIMESTAMP) AND occurred_at < CAST(? AS TIMESTAMP)
          AND customer_id IS NOT NULL AND event_type IN ({', '.join('?' for _ in types)})""",
        [start, start + dt.timedelta(days=1), *types]))


def conditions_sql(deployment, rule, as_of: dt.date, params: list, col: str = "customer_id") -> str:
    if not rule:
        return "TRUE"
    sql, p = rule_members_sql(deployment, rule, as_of)
    shared = current_rules()
    if shared is not None:      # inside a day's evaluation: computed once, read by every step
        return f"{col} IN (SELECT customer_id FROM {shared.table(sql, p)})"
    params.extend(p)
    return f"{col} IN ({sql})"


def candidates_step(deployment, automation, day: dt.date) -> SqlStep:
    """The automation's triggering events of ``day`` (from :data:`DAY_EVENTS`, built by
    :func:`build_day_events` for that day)."""
    params: list = []
    cond = event_filter_sql(deployment, automation.trigger, day, params)
    # only a message's payload carries the event (a tag or a coupon never reads it)
    event = ("to_json({'event_type': event_type, 'occurred_at': occurred_at, 'properties': properties})"
             if automation.action.kind in MESSAGE_KINDS else "CAST(NULL AS VARCHAR)")
    sql = (f"SELECT customer_id, source || ':' || event_id AS ref, {event} AS trigger_event, "
           f"CAST(NULL AS VARCHAR) AS coupon FROM {DAY_EVENTS} WHERE {cond}")
    sql += " AND " + conditions_sql(deployment, automation.conditions, day, params)
    return SqlStep("activation.automation_candidates", sql, params)


def run_automations(engine: Engine, deployment, day: dt.date, now: dt.datetime, columns: set[str]) -> dict:
    out = {}
    for a in deployment.automations:
        out[a.name] = queue(engine, deployment, origin="automation", name=a.name, step="action",
                            action=a.action, day=day, now=now, columns=columns,
                            candidates=candidates_step(deployment, a, day))
    # no ``since`` here: an event id reloaded with a corrected occurred_at (another day)
    # must still find the action decided for it, so the anti-join reads the whole history
    return out
