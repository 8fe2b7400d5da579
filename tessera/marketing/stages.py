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

import duckdb

from tessera.marketing.rules import compile_rule, referenced_fields
from tessera.marketing.segments import ensure_marketing_tables, rule_base_sql
from tessera.vocabulary import field_catalogue
from tessera.engine.warehouse import transaction

DDL = """
CREATE TABLE IF NOT EXISTS marketing.stage_history (
    customer_id BIGINT NOT NULL, stage VARCHAR NOT NULL, stage_rank INTEGER NOT NULL,
    entered_on DATE NOT NULL, left_on DATE);
CREATE TABLE IF NOT EXISTS marketing.funnel_daily (
    as_of_date DATE NOT NULL, stage VARCHAR NOT NULL, stage_rank INTEGER NOT NULL,
    contacts BIGINT NOT NULL, at_or_beyond BIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS marketing.stage_runs (as_of_date DATE NOT NULL, staged BIGINT NOT NULL);
"""


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


def _rebuild_history(con) -> None:
    """Entered/left per stage from every stored day (gaps and islands): for backfills."""
    con.execute("DELETE FROM marketing.stage_history")
    con.execute("""
        INSERT INTO marketing.stage_history
        WITH runs AS (
            SELECT as_of_date, row_number() OVER (ORDER BY as_of_date) AS k,
                   lead(as_of_date) OVER (ORDER BY as_of_date) AS next_day
            FROM marketing.stage_runs
        ),
        m AS (
            SELECT s.customer_id, s.stage, s.stage_rank, r.k, r.as_of_date, r.next_day,
                   r.k - row_number() OVER (PARTITION BY s.customer_id, s.stage ORDER BY r.k) AS island
            FROM marketing.stages s JOIN runs r USING (as_of_date)
        )
        -- arg_max skips NULLs: the open end (no next run) is carried as 9999-12-31
        SELECT customer_id, stage, any_value(stage_rank), min(as_of_date),
               nullif(arg_max(coalesce(next_day, DATE '9999-12-31'), k), DATE '9999-12-31')
        FROM m GROUP BY customer_id, stage, island ORDER BY customer_id, 4""")


def _advance_history(con, as_of: dt.date) -> None:
    """The newest day: close the stages contacts left, open the ones they entered (after
    undoing a previous build of the same day). Cost ~ contacts, not days x contacts."""
    con.execute("DELETE FROM marketing.stage_history WHERE entered_on = ?", [as_of])
    con.execute("UPDATE marketing.stage_history SET left_on = NULL WHERE left_on = ?", [as_of])
    con.execute("""
        UPDATE marketing.stage_history h SET left_on = ?
        WHERE left_on IS NULL AND NOT EXISTS (
            SELECT 1 FROM marketing.stages s
            WHERE s.as_of_date = ? AND s.customer_id = h.customer_id AND s.stage = h.stage)""",
                [as_of, as_of])
    con.execute("""
        INSERT INTO marketing.stage_history
        SELECT s.customer_id, s.stage, s.stage_rank, s.as_of_date, NULL FROM marketing.stages s
        WHERE s.as_of_date = ? AND NOT EXISTS (
            SELECT 1 FROM marketing.stage_history h
            WHERE h.left_on IS NULL AND h.customer_id = s.customer_id AND h.stage = s.stage)
        ORDER BY s.customer_id""", [as_of])


def build_stages(con: duckdb.DuckDBPyConnection, deployment, as_of: dt.date) -> dict:
    ensure_marketing_tables(con)
    con.execute(DDL)
    sql, params = stages_sql(deployment, as_of)
    with transaction(con):
        con.execute("DELETE FROM marketing.stages WHERE as_of_date = ?", [as_of])
        con.execute(f"INSERT INTO marketing.stages SELECT CAST(? AS DATE), customer_id, stage, stage_rank "
                    f"FROM ({sql}) ORDER BY customer_id", [as_of, *params])
        staged = con.execute("SELECT count(*) FROM marketing.stages WHERE as_of_date = ?",
                             [as_of]).fetchone()[0]
        con.execute("DELETE FROM marketing.stage_runs WHERE as_of_date = ?", [as_of])
        con.execute("INSERT INTO marketing.stage_runs VALUES (?, ?)", [as_of, staged])
        later = con.execute("SELECT count(*) FROM marketing.stage_runs WHERE as_of_date > ?",
                            [as_of]).fetchone()[0]
        if later:
            _rebuild_history(con)
        else:
            _advance_history(con, as_of)
        con.execute("DELETE FROM marketing.funnel_daily WHERE as_of_date = ?", [as_of])
        names = ", ".join(f"({i + 1}, '{s.name}')" for i, s in enumerate(deployment.stages))
        con.execute(f"""
            INSERT INTO marketing.funnel_daily
            WITH names(stage_rank, stage) AS (VALUES {names}),
            c AS (SELECT stage_rank, count(*) AS n FROM marketing.stages WHERE as_of_date = ? GROUP BY 1)
            SELECT CAST(? AS DATE), n.stage, n.stage_rank, coalesce(c.n, 0),
                   coalesce(sum(c.n) OVER (ORDER BY n.stage_rank DESC), 0)
            FROM names n LEFT JOIN c USING (stage_rank) ORDER BY n.stage_rank""", [as_of, as_of])
    funnel = con.execute("SELECT stage, contacts FROM marketing.funnel_daily WHERE as_of_date = ? "
                         "ORDER BY stage_rank", [as_of]).fetchall()
    moved = con.execute("SELECT count(*) FROM marketing.stage_history WHERE entered_on = ?",
                        [as_of]).fetchone()[0]
    return {"staged": int(staged), "entered_today": int(moved),
            "funnel": {s: int(n) for s, n in funnel}}
