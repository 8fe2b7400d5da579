"""RFM: recency, frequency and monetary quintiles and named groups, kept per day.

Scores are 1-5 quintiles over the customers who bought on or before the day
(5 = most recent / most frequent / highest spend). Groups follow the usual RFM map
on recency and frequency: champions, loyal, potential, at risk, hibernating, lost.
A day's scores are replaced in one transaction, so a re-run or backfill of that day
gives the same table.
"""

from __future__ import annotations

import datetime as dt

from tessera.engine import Engine, SqlStep, as_engine, step_from_file
from tessera.marketing.segments import marketing_table_steps

GROUPS = ("champions", "loyal", "potential", "at_risk", "hibernating", "lost")


def rfm_scores_step(as_of: dt.date) -> SqlStep:
    """The day's scores: a select in ``marketing.rfm_scores``' column order."""
    return step_from_file(__package__, "rfm_scores_of_day.sql", as_of=as_of)


def build_rfm(engine: Engine, as_of: dt.date) -> dict:
    engine = as_engine(engine)
    engine.run(*marketing_table_steps())
    engine.replace_partition("marketing.rfm_scores", {"as_of_date": as_of}, rfm_scores_step(as_of))
    groups = dict(engine.rows(SqlStep(
        "rfm.group_sizes",
        "SELECT rfm_group, count(*) FROM marketing.rfm_scores WHERE as_of_date = $as_of "
        "GROUP BY rfm_group", {"as_of": as_of})))
    return {"scored": int(sum(groups.values())), "groups": {g: int(groups.get(g, 0)) for g in GROUPS}}
