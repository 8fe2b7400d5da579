"""Stages: ordered funnel phases with entry rules, stage history and funnel counts per day.

``stages.yaml`` lists the phases in funnel order (curious, MQL, SQL, negotiation,
customer, or the deployment's own), each with an entry rule in the segment language.
On a day, a contact is in the furthest phase whose rule it satisfies (one CASE over the
rules, so the whole funnel is one set-based query); a contact matching none has no stage.
Stage rules may use scores, tags, RFM and behaviour, but not stages or segments (stages
are built before segments, which may use the stage).

Per day, in one transaction: ``marketing.stages`` (the contact's stage), then
``marketing.stage_history`` (entered / left per stage: updated incrementally for the
newest day, rebuilt from the stored days for a backfill, like segment history, so both
agree) and ``marketing.funnel_daily`` (contacts in
each stage and at-or-beyond it).
"""

from __future__ import annotations

import datetime as dt

from tessera.engine import Engine, SqlStep, as_engine, step_from_file
from tessera.marketing.rules import compile_rule, referenced_fields
from tessera.marketing.segments import marketing_table_steps, rule_base_sql
from tessera.vocabulary import field_catalogue



def stages_sql(deployment, as_of: dt.date) -> tuple[str, list]:
    """(customer_id, stage, stage_rank) of every staged contact on the day."""
    catalogue = field_catalogue(deployment)
    used = {f for st in deployment.stages for f in referenced_fields(st.rule)}
    base, params = rule_base_sql(deployment, as_of, with_stage=False, fields=used)
    whens, wparams = [], []
    stages = list(deployment.stages)
    # furthest stage first: the first matching WHEN wins
    for rank in range(len(stages), 0, -1):
        where, p = compile_rule(stages[rank - 1].rule, catalogue, as_of,
                                getattr(deployment, "sales_channels", {}))
        whens.append(f"WHEN coalesce({where}, FALSE) THEN {rank}")
        wparams.extend(p)
    names = ", ".join(f"({i + 1}, '{s.name}')" for i, s in enumerate(stages))  # validated identifiers
    sql = (f"WITH names(stage_rank, stage) AS (VALUES {names}), "
           f"ranked AS (SELECT customer_id, CASE {' '.join(whens)} END AS stage_rank FROM ({base}) b) "
           f"SELECT r.customer_id, n.stage, r.stage_rank FROM ranked r JOIN names n USING (stage_rank)")
    return sql, [*wparams, *params]


def _rebuild_history(engine: Engine) -> None:
    """Entered/left per stage from every stored day (gaps and islands): for backfills."""
    engine.overwrite("marketing.stage_history",
                     step_from_file(__package__, "stage_history_rebuild.sql"))


def _advance_history(engine: Engine, as_of: dt.date) -> None:
    """The newest day: close the stages contacts left, open the ones they entered (after
    undoing a previous build of the same day). Cost ~ contacts, not days x contacts."""
    day = {"as_of": as_of}
    engine.run(
        SqlStep("stages.history_undo_entered",
                "DELETE FROM marketing.stage_history WHERE entered_on = $as_of", day),
        SqlStep("stages.history_undo_left",
                "UPDATE marketing.stage_history SET left_on = NULL WHERE left_on = $as_of", day),
        SqlStep("stages.history_close", """
            UPDATE marketing.stage_history h SET left_on = $as_of
            WHERE left_on IS NULL AND NOT EXISTS (
                SELECT 1 FROM marketing.stages s
                WHERE s.as_of_date = $as_of AND s.customer_id = h.customer_id
                  AND s.stage = h.stage)""", day))
    engine.append("marketing.stage_history", SqlStep("stages.history_open", """
        SELECT s.customer_id, s.stage, s.stage_rank, s.as_of_date, NULL FROM marketing.stages s
        WHERE s.as_of_date = $as_of AND NOT EXISTS (
            SELECT 1 FROM marketing.stage_history h
            WHERE h.left_on IS NULL AND h.customer_id = s.customer_id AND h.stage = s.stage)
        ORDER BY s.customer_id""", day))


def _count(engine: Engine, name: str, sql: str, as_of: dt.date) -> int:
    return int(engine.scalar(SqlStep(name, sql, {"as_of": as_of})))


def build_stages(engine: Engine, deployment, as_of: dt.date) -> dict:
    engine = as_engine(engine)
    engine.run(*marketing_table_steps())
    sql, params = stages_sql(deployment, as_of)
    names = ", ".join(f"({i + 1}, '{s.name}')" for i, s in enumerate(deployment.stages))
    with engine.together():
        engine.replace_partition("marketing.stages", {"as_of_date": as_of}, SqlStep(
            "stages.of_day", f"SELECT CAST(? AS DATE), customer_id, stage, stage_rank "
                             f"FROM ({sql}) ORDER BY customer_id", [as_of, *params]))
        staged = _count(engine, "stages.staged",
                        "SELECT count(*) FROM marketing.stages WHERE as_of_date = $as_of", as_of)
        engine.replace_partition("marketing.stage_runs", {"as_of_date": as_of}, SqlStep(
            "stages.run", "SELECT CAST($as_of AS DATE), CAST($staged AS BIGINT)",
            {"as_of": as_of, "staged": staged}))
        later = _count(engine, "stages.later_runs",
                       "SELECT count(*) FROM marketing.stage_runs WHERE as_of_date > $as_of", as_of)
        if later:
            _rebuild_history(engine)
        else:
            _advance_history(engine, as_of)
        engine.replace_partition("marketing.funnel_daily", {"as_of_date": as_of}, SqlStep(
            "stages.funnel", f"""
            WITH names(stage_rank, stage) AS (VALUES {names}),
            c AS (SELECT stage_rank, count(*) AS n FROM marketing.stages
                  WHERE as_of_date = $as_of GROUP BY stage_rank)
            SELECT CAST($as_of AS DATE), n.stage, n.stage_rank, coalesce(c.n, 0),
                   coalesce(sum(c.n) OVER (ORDER BY n.stage_rank DESC), 0)
            FROM names n LEFT JOIN c USING (stage_rank) ORDER BY n.stage_rank""",
            {"as_of": as_of}))
    funnel = engine.rows(SqlStep(
        "stages.funnel_of_day", "SELECT stage, contacts FROM marketing.funnel_daily "
        "WHERE as_of_date = $as_of ORDER BY stage_rank", {"as_of": as_of}))
    moved = _count(engine, "stages.entered_today",
                   "SELECT count(*) FROM marketing.stage_history WHERE entered_on = $as_of", as_of)
    return {"staged": int(staged), "entered_today": int(moved),
            "funnel": {s: int(n) for s, n in funnel}}
