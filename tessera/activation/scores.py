"""Score-threshold notifications, performed through the outbox like any e-mail action.

The scoring stage records ``notify`` actions (``marketing.score_actions``: a contact
crossed a threshold, an internal address to tell); here each becomes an e-mail to that
address, with the package's ``score_notification.html`` template, once (the action key's
trigger is the score type, threshold and day). Tags of score thresholds are already the
contacts' tags (``marketing.contact_tags``), and feed actions are the feeds' own.
"""

from __future__ import annotations

import datetime as dt

from tessera.engine import Engine, SqlStep
from tessera.settings.activation import Action, EmailAction
from tessera.activation.outbox import queue

TEMPLATE = "score_notification.html"


def notify_actions(deployment) -> list[tuple[str, float, str, Action]]:
    """(score type, threshold, step name, action) of every configured notification."""
    out = []
    for score in deployment.scores:
        for th in score.thresholds:
            for a in th.actions:
                if a.notify:
                    step = f"notify_{th.at:g}_{a.notify}"
                    out.append((score.name, th.at, step, Action(email=EmailAction(
                        subject=f"{score.name} >= {th.at:g}", template=TEMPLATE, to=a.notify))))
    return out


def run_score_notifications(engine: Engine, deployment, day: dt.date, now: dt.datetime,
                            columns: set[str]) -> dict:
    out = {}
    for score_type, at, step, action in notify_actions(deployment):
        cand = SqlStep("activation.score_notifications", """
            SELECT customer_id, score_type || '|' || CAST(threshold AS VARCHAR) || '|'
                   || CAST(as_of_date AS VARCHAR) AS ref,
                   to_json({'score_type': score_type, 'threshold': threshold, 'score': score,
                            'day': as_of_date}) AS trigger_event, CAST(NULL AS VARCHAR) AS coupon
            FROM marketing.score_actions
            WHERE as_of_date = CAST(? AS DATE) AND score_type = ? AND threshold = ?
              AND action = 'notify' AND target = ?""", [day, score_type, at, action.email.to])
        out[f"{score_type}:{step}"] = queue(engine, deployment, origin="score", name=score_type,
                                            step=step, action=action, day=day, now=now,
                                            candidates=cand, columns=columns, since=day)
    return out
