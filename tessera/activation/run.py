"""One activation run: evaluate the days not evaluated yet, in order, then send.

Why days in order: journey state advances one day at a time, so the days between the
last evaluated one and the run's day are evaluated first (a skipped day never skips
anyone). A day already evaluated (a re-run, a backfill of a past partition) changes
no state and decides no action again; it only sends what is still pending.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Callable, Mapping

from tessera.engine import Engine, SqlStep, as_engine
from tessera.activation.automations import build_day_events, run_automations
from tessera.activation.journeys import hold_failed, run_journey
from tessera.activation.outbox import activation_table_steps, build_gate, card_columns
from tessera.activation.rules import shared_rules
from tessera.activation.scores import run_score_notifications
from tessera.activation.send import SendReport, dispatch, withdraw_unconsented


def ensure_tables(engine: Engine) -> None:
    as_engine(engine).run(*activation_table_steps())


def days_to_evaluate(engine: Engine, deployment, day: dt.date) -> list[dt.date]:
    last = as_engine(engine).scalar(SqlStep("activation.last_day",
                                            "SELECT max(as_of_date) FROM activation.evaluated_days"))
    if last is not None and day <= last:
        return []
    first = deployment.activation.start_date or day if last is None else last + dt.timedelta(days=1)
    first = min(first, day)
    return [first + dt.timedelta(days=i) for i in range((day - first).days + 1)]


def evaluate_day(engine: Engine, deployment, day: dt.date, now: dt.datetime) -> dict:
    """Decide a day's actions and move the journeys, in one transaction."""
    engine = as_engine(engine)
    columns = card_columns(engine)
    with engine.together(), shared_rules(engine):
        build_gate(engine, deployment, columns)
        build_day_events(engine, deployment, day)
        autos = run_automations(engine, deployment, day, now, columns)
        journeys = {j.name: run_journey(engine, deployment, j, day, now, columns)
                    for j in deployment.journeys}
        scores = run_score_notifications(engine, deployment, day, now, columns)
        engine.run(SqlStep("activation.evaluated", "INSERT INTO activation.evaluated_days "
                           "VALUES (CAST(? AS DATE), CAST(? AS TIMESTAMP))", [day, now]))
    return {"automations": autos, "journeys": journeys, "score_notifications": scores}


def run_activation(engine: Engine, deployment, day: dt.date, now: dt.datetime | None = None, *,
                   environ: Mapping[str, str] | None = None, send: bool = True,
                   sleep: Callable[[float], Any] | None = None) -> dict:
    engine = as_engine(engine)
    now = now or dt.datetime.now().replace(microsecond=0, tzinfo=None)
    ensure_tables(engine)
    days = days_to_evaluate(engine, deployment, day)
    evaluated = {d: evaluate_day(engine, deployment, d, now) for d in days}
    report = SendReport()
    if send and deployment.activation.send:
        kw = {"sleep": sleep} if sleep is not None else {}
        report = dispatch(engine, deployment, now, environ=environ, **kw)
    else:   # nothing is sent, but a consent lost since the decision still withdraws it
        report.withdrawn = withdraw_unconsented(engine)
    # journey contacts whose action failed for good are held at the step (retried next run)
    last = engine.scalar(SqlStep("activation.last_day",
                                 "SELECT max(as_of_date) FROM activation.evaluated_days")) or day
    held = hold_failed(engine, deployment, last)
    return {"days": days, "evaluated": evaluated, "send": report, "held": held}


def step_counts(engine: Engine, days: list[dt.date]) -> list[tuple]:
    """Per journey step, over ``days``: entered, moved, waited (still there), branched,
    acted, blocked, failed (actions failed or being retried), held (contacts held at
    the step after a failed action, now), gave_up (contacts that exited after the
    retries): what the asset's metadata shows (counts only)."""
    engine = as_engine(engine)
    if not days:
        days = [engine.scalar(SqlStep("activation.last_day",
                                      "SELECT max(as_of_date) FROM activation.evaluated_days"))]
    return engine.rows(SqlStep("activation.step_counts", """
        WITH h AS (SELECT * FROM activation.journey_history
                   WHERE as_of_date IN (SELECT unnest(CAST(? AS DATE[])))),
        moves AS (
            SELECT journey, coalesce(next_step, step) AS step,
                   count(*) FILTER (WHERE outcome = 'entered') AS entered,
                   0 AS moved, 0 AS branched, 0 AS acted, 0 AS blocked
            FROM h WHERE outcome = 'entered' GROUP BY ALL
            UNION ALL
            SELECT journey, step, 0, count(*), count(*) FILTER (WHERE outcome = 'branched'),
                   count(*) FILTER (WHERE outcome = 'acted'),
                   count(*) FILTER (WHERE outcome IN ('blocked', 'capped'))
            FROM h WHERE outcome <> 'entered' GROUP BY ALL),
        waiting AS (
            SELECT journey, step, count(*) FILTER (WHERE status = 'active') AS waited,
                   count(*) FILTER (WHERE status = 'failed') AS held
            FROM activation.journey_state WHERE status IN ('active', 'failed') GROUP BY ALL),
        gave AS (
            SELECT journey, step, count(*) AS gave_up FROM activation.journey_history
            WHERE outcome = 'gave_up' GROUP BY ALL),
        failed AS (
            SELECT name AS journey, step, count(*) AS failed FROM activation.outbox
            WHERE origin = 'journey' AND (status = 'failed' OR (status IN ('pending', 'sending')
                  AND attempts > 0)) GROUP BY ALL),
        m AS (SELECT journey, step, sum(entered) AS entered, sum(moved) AS moved,
                     sum(branched) AS branched, sum(acted) AS acted, sum(blocked) AS blocked
              FROM moves GROUP BY ALL)
        SELECT coalesce(m.journey, w.journey, f.journey, g.journey) AS journey,
               coalesce(m.step, w.step, f.step, g.step) AS step,
               coalesce(m.entered, 0), coalesce(m.moved, 0), coalesce(w.waited, 0),
               coalesce(m.branched, 0), coalesce(m.acted, 0), coalesce(m.blocked, 0),
               coalesce(f.failed, 0), coalesce(w.held, 0), coalesce(g.gave_up, 0)
        FROM m FULL JOIN waiting w ON w.journey = m.journey AND w.step = m.step
        FULL JOIN failed f ON f.journey = coalesce(m.journey, w.journey)
                          AND f.step = coalesce(m.step, w.step)
        FULL JOIN gave g ON g.journey = coalesce(m.journey, w.journey, f.journey)
                        AND g.step = coalesce(m.step, w.step, f.step)
        ORDER BY 1, 2""", [days]))
