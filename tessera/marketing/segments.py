"""Segments: each day's members of every segment, their history and overrides.

Rules are written in the rule language of :mod:`tessera.marketing.rules`; here a rule
becomes one set-based query over the rule base (the contact card with the day's RFM,
scores, stage and tags), and the members are stored per day.
"""

from __future__ import annotations

import datetime as dt

from tessera.engine import Engine, SqlStep, as_engine
from tessera.engine.steps import ddl_statements
from tessera.marketing.rules import compile_rule, referenced_fields
from tessera.vocabulary import RFM_FIELDS, STAGE_FIELDS, field_catalogue


def marketing_table_steps() -> list[SqlStep]:
    """DDL of every marketing table (``sql/tables.sql``), idempotent."""
    return [SqlStep("marketing.schema", "CREATE SCHEMA IF NOT EXISTS marketing"),
            *ddl_statements(__package__, "tables.sql")]


def ensure_marketing_tables(engine: Engine) -> None:
    as_engine(engine).run(*marketing_table_steps())


def segment_base_sql() -> str:
    """The contact card plus the day's RFM scores (binds the day once): what feeds export."""
    return ("SELECT c.*, r.* EXCLUDE (customer_id, as_of_date) FROM marts.contact_cards c "
            "LEFT JOIN marketing.rfm_scores r ON r.customer_id = c.customer_id AND r.as_of_date = ?")


def rule_base_sql(deployment, as_of: dt.date, with_stage: bool = True,
                  fields: set[str] | None = None) -> tuple[str, list]:
    """The relation rules run over, and its parameters: card, RFM, scores, stage and tags
    of the day. Score columns are named after the configured score types (identifiers).

    With ``fields`` (the fields a rule reads), only the joins those fields need are made:
    a rule on the card alone reads the card alone."""
    scores = [s.name for s in (getattr(deployment, "scores", []) or [])]
    want = (lambda names: True) if fields is None else (lambda names: bool(fields & set(names)))
    score_cols = [f"score_{n}" for n in scores] + (["score"] if scores else [])
    j_rfm = want(RFM_FIELDS)
    j_scores = bool(scores) and want(score_cols)
    j_stage = with_stage and want(STAGE_FIELDS)
    j_tags = want(["tags"])
    params: list = []
    sql = "SELECT c.*"
    if j_rfm:
        sql += ", r.* EXCLUDE (customer_id, as_of_date)"
    if j_scores:
        sql += "".join(f', coalesce(s."score_{n}", 0) AS "score_{n}"' for n in scores)
        sql += f', coalesce(s."score_{scores[0]}", 0) AS score'
    if j_stage:
        sql += ", st.stage, st.stage_rank"
    if j_tags:
        sql += ", coalesce(t.tags, []::VARCHAR[]) AS tags"
    sql += " FROM marts.contact_cards c"
    if j_rfm:
        sql += (" LEFT JOIN marketing.rfm_scores r ON r.customer_id = c.customer_id "
                "AND r.as_of_date = ?")
        params.append(as_of)
    if j_scores:
        cols = ", ".join(f"max(score) FILTER (WHERE score_type = '{n}') AS \"score_{n}\"" for n in scores)
        sql += (f" LEFT JOIN (SELECT customer_id, {cols} FROM marketing.scores WHERE as_of_date = ? "
                "GROUP BY customer_id) s ON s.customer_id = c.customer_id")
        params.append(as_of)
    if j_stage:
        sql += (" LEFT JOIN (SELECT customer_id, stage, stage_rank FROM marketing.stages "
                "WHERE as_of_date = ?) st ON st.customer_id = c.customer_id")
        params.append(as_of)
    if j_tags:
        sql += (" LEFT JOIN (SELECT customer_id, list(DISTINCT tag ORDER BY tag) AS tags "
                "FROM marketing.contact_tags WHERE added_on <= ? GROUP BY customer_id) t "
                "ON t.customer_id = c.customer_id")
        params.append(as_of)
    return sql, params


def rule_members_sql(deployment, rule: dict, as_of: dt.date, with_stage: bool = True) -> tuple[str, list]:
    """``SELECT customer_id`` of the contacts a rule selects on a day: one set-based query."""
    catalogue = field_catalogue(deployment)
    where, params = compile_rule(rule, catalogue, as_of, getattr(deployment, "sales_channels", {}))
    base, bparams = rule_base_sql(deployment, as_of, with_stage, set(referenced_fields(rule)))
    return f"SELECT customer_id FROM ({base}) b WHERE {where}", [*bparams, *params]


def _membership_sql(segment, deployment, as_of: dt.date) -> tuple[str, list]:
    """The segment's members on a day: the rule (dynamic) or the frozen set (static), then the
    manual overrides in force on that day (the latest override of a contact wins)."""
    if segment.kind == "static":
        base_sql, base_params = ("SELECT customer_id FROM marketing.static_segment_base WHERE segment = ?",
                                 [segment.name])
    else:
        base_sql, base_params = rule_members_sql(deployment, segment.rule, as_of)
    sql = f"""
        WITH ov AS (
            SELECT customer_id, arg_max(action, (effective_on, recorded_at)) AS action
            FROM marketing.segment_overrides WHERE segment = ? AND effective_on <= ?
            GROUP BY customer_id
        )
        SELECT customer_id FROM ({base_sql})
        WHERE customer_id NOT IN (SELECT customer_id FROM ov WHERE action = 'exclude')
        UNION
        SELECT customer_id FROM ov WHERE action = 'include'
          AND customer_id IN (SELECT customer_id FROM marts.contact_cards)"""
    return sql, [segment.name, as_of, *base_params]


def build_segment(con, deployment, segment, as_of: dt.date) -> dict:
    """Replace one segment's members for one day, then rebuild its entered/left history.

    History is recomputed from the stored days (gaps-and-islands over the days the
    segment was built), so a backfill of an earlier day gives the same history as if
    the days had run in order. A static segment is frozen the first time it is built:
    later days keep that set, changed only by overrides (``add_override``).
    """
    from tessera.engine.warehouse import transaction

    ensure_marketing_tables(con)
    con.execute("CREATE SCHEMA IF NOT EXISTS segments")
    with transaction(con):
        if segment.kind == "static":
            frozen = con.execute("SELECT count(*) FROM marketing.static_segment_base WHERE segment = ?",
                                 [segment.name]).fetchone()[0]
            runs = con.execute("SELECT count(*) FROM ops.segment_runs WHERE segment = ?",
                               [segment.name]).fetchone()[0]
            if not frozen and not runs:
                rsql, rparams = rule_members_sql(deployment, segment.rule, as_of)
                con.execute(f"INSERT INTO marketing.static_segment_base SELECT ?, customer_id, "
                            f"CAST(? AS DATE) FROM ({rsql}) ORDER BY customer_id",
                            [segment.name, as_of, *rparams])
        msql, mparams = _membership_sql(segment, deployment, as_of)
        con.execute("DELETE FROM marketing.segment_members WHERE segment = ? AND as_of_date = ?",
                    [segment.name, as_of])
        con.execute(
            f"INSERT INTO marketing.segment_members SELECT CAST(? AS DATE), ?, customer_id "
            f"FROM ({msql}) ORDER BY customer_id", [as_of, segment.name, *mparams])
        members = con.execute(
            "SELECT count(*) FROM marketing.segment_members WHERE segment = ? AND as_of_date = ?",
            [segment.name, as_of]).fetchone()[0]
        con.execute("DELETE FROM ops.segment_runs WHERE segment = ? AND as_of_date = ?",
                    [segment.name, as_of])
        con.execute("INSERT INTO ops.segment_runs VALUES (?, ?, ?, now()::TIMESTAMP)",
                    [segment.name, as_of, members])
        later = con.execute("SELECT count(*) FROM ops.segment_runs WHERE segment = ? AND as_of_date > ?",
                            [segment.name, as_of]).fetchone()[0]
        if later:
            _rebuild_history(con, segment.name)
        else:
            _advance_history(con, segment.name, as_of)
        # The view segments.<name> is the segment as of its latest day: asset key = table.
        con.execute(
            f"CREATE OR REPLACE VIEW segments.{segment.name} AS "
            f"SELECT customer_id FROM marketing.segment_members WHERE segment = '{segment.name}' "
            f"AND as_of_date = (SELECT max(as_of_date) FROM marketing.segment_members "
            f"WHERE segment = '{segment.name}')")
    entered = con.execute(
        "SELECT count(*) FROM marketing.segment_history WHERE segment = ? AND entered_on = ?",
        [segment.name, as_of]).fetchone()[0]
    left = con.execute(
        "SELECT count(*) FROM marketing.segment_history WHERE segment = ? AND left_on = ?",
        [segment.name, as_of]).fetchone()[0]
    return {"members": int(members), "entered": int(entered), "left": int(left)}


def _rebuild_history(con, name: str) -> None:
    """Entered/left from every stored day (gaps and islands): used when an earlier day is
    (re)built, so a backfill gives the same history as if the days had run in order."""
    con.execute("DELETE FROM marketing.segment_history WHERE segment = ?", [name])
    con.execute("""
        INSERT INTO marketing.segment_history
        WITH runs AS (
            SELECT as_of_date, row_number() OVER (ORDER BY as_of_date) AS k,
                   lead(as_of_date) OVER (ORDER BY as_of_date) AS next_day
            FROM ops.segment_runs WHERE segment = ?
        ),
        m AS (
            SELECT sm.customer_id, r.k, r.as_of_date, r.next_day,
                   r.k - row_number() OVER (PARTITION BY sm.customer_id ORDER BY r.k) AS island
            FROM marketing.segment_members sm JOIN runs r USING (as_of_date)
            WHERE sm.segment = ?
        )
        -- arg_max skips NULLs: the open end (no next run) is carried as 9999-12-31
        SELECT ?, customer_id, min(as_of_date) AS entered_on,
               nullif(arg_max(coalesce(next_day, DATE '9999-12-31'), k), DATE '9999-12-31') AS left_on
        FROM m GROUP BY customer_id, island ORDER BY customer_id, entered_on""", [name, name, name])


def _advance_history(con, name: str, as_of: dt.date) -> None:
    """The usual daily case, the newest day: touch only what changed (cost ~ members, not
    days x members). A re-run of the same day first undoes that day's changes."""
    con.execute("DELETE FROM marketing.segment_history WHERE segment = ? AND entered_on = ?", [name, as_of])
    con.execute("UPDATE marketing.segment_history SET left_on = NULL WHERE segment = ? AND left_on = ?",
                [name, as_of])
    con.execute("""
        UPDATE marketing.segment_history SET left_on = ?
        WHERE segment = ? AND left_on IS NULL AND customer_id NOT IN (
            SELECT customer_id FROM marketing.segment_members WHERE segment = ? AND as_of_date = ?)""",
                [as_of, name, name, as_of])
    con.execute("""
        INSERT INTO marketing.segment_history
        SELECT ?, customer_id, ?, NULL FROM marketing.segment_members
        WHERE segment = ? AND as_of_date = ? AND customer_id NOT IN (
            SELECT customer_id FROM marketing.segment_history WHERE segment = ? AND left_on IS NULL)
        ORDER BY customer_id""", [name, as_of, name, as_of, name])


def size_history(con, segment: str, days: int = 30) -> list[tuple[dt.date, int]]:
    """(day, members) of the segment's last ``days`` builds: counts only."""
    return [(d, int(n)) for d, n in con.execute(
        "SELECT as_of_date, members FROM ops.segment_runs WHERE segment = ? "
        "ORDER BY as_of_date DESC LIMIT ?", [segment, days]).fetchall()][::-1]


def dry_run(con, deployment, segment, as_of: dt.date, sample: int = 10) -> dict:
    """What the segment's rule *as now configured* selects on a day, compared with the stored
    membership of that day (or the latest stored day before it). Writes nothing.

    For a static segment the rule is what a fresh freeze would select; overrides are applied
    in both cases, so ``entering`` / ``leaving`` show the effect of a rule change."""
    ensure_marketing_tables(con)
    msql, mparams = _membership_sql(segment, deployment, as_of)
    if segment.kind == "static":
        rsql, rparams = rule_members_sql(deployment, segment.rule, as_of)
        msql = msql.replace("SELECT customer_id FROM marketing.static_segment_base WHERE segment = ?",
                            rsql, 1)
        mparams = [mparams[0], mparams[1], *rparams]
    # a build with no members is a stored membership too: look at the runs, not the members
    stored_day = con.execute(
        "SELECT max(as_of_date) FROM ops.segment_runs WHERE segment = ? AND as_of_date <= ?",
        [segment.name, as_of]).fetchone()[0]
    con.execute(f"CREATE OR REPLACE TEMP TABLE _dry AS {msql}", mparams)
    size = con.execute("SELECT count(*) FROM _dry").fetchone()[0]
    ids = [r[0] for r in con.execute("SELECT customer_id FROM _dry ORDER BY customer_id LIMIT ?",
                                     [sample]).fetchall()]
    entering = leaving = stored = None
    if stored_day is not None:
        stored, entering, leaving = con.execute("""
            WITH s AS (SELECT customer_id FROM marketing.segment_members
                       WHERE segment = ? AND as_of_date = ?)
            SELECT (SELECT count(*) FROM s),
                   (SELECT count(*) FROM _dry WHERE customer_id NOT IN (SELECT customer_id FROM s)),
                   (SELECT count(*) FROM s WHERE customer_id NOT IN (SELECT customer_id FROM _dry))""",
            [segment.name, stored_day]).fetchone()
    con.execute("DROP TABLE IF EXISTS _dry")
    return {"segment": segment.name, "kind": segment.kind, "as_of": as_of, "size": int(size),
            "sample_ids": ids, "stored_day": stored_day,
            "stored_size": None if stored is None else int(stored),
            "entering": None if entering is None else int(entering),
            "leaving": None if leaving is None else int(leaving)}


def add_overrides(con, segment: str, customer_ids: list[int], action: str, effective_on: dt.date,
                  origin: str = "cli") -> int:
    """Record explicit additions (``include``) or removals (``exclude``) for a segment, effective
    from a day (they apply when the segment is next built for that day or later)."""
    from tessera.engine.warehouse import transaction

    if action not in ("include", "exclude"):
        raise ValueError(f"action must be include or exclude, not {action!r}")
    ensure_marketing_tables(con)
    ids = sorted({int(i) for i in customer_ids})
    with transaction(con):
        con.execute("""INSERT INTO marketing.segment_overrides
                       SELECT ?, unnest(CAST(? AS BIGINT[])), ?, ?, now()::TIMESTAMP, ?""",
                    [segment, ids, action, effective_on, origin])
    return len(ids)
