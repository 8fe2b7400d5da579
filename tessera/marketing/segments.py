"""Segments: each day's members of every segment, their history and overrides.

Rules are written in the rule language of :mod:`tessera.marketing.rules`; here a rule
becomes one set-based query over the rule base (the contact card with the day's RFM,
scores, stage and tags), and the members are stored per day.
"""

from __future__ import annotations

import datetime as dt

from tessera.engine import Engine, SqlStep, as_engine
from tessera.engine.steps import ddl_statements, step_from_file
from tessera.marketing.rules import compile_rule, referenced_fields
from tessera.vocabulary import (PREDICTION_FIELDS, RFM_FIELDS, STAGE_FIELDS, field_catalogue,
                                prediction_select)


def marketing_table_steps() -> list[SqlStep]:
    """DDL of every marketing table (``sql/tables.sql``), idempotent."""
    return [SqlStep("marketing.schema", "CREATE SCHEMA IF NOT EXISTS marketing"),
            *ddl_statements(__package__, "tables.sql")]


def ensure_marketing_tables(engine: Engine) -> None:
    as_engine(engine).run(*marketing_table_steps())


def segment_base_sql(with_predictions: bool = False, cards: str = "marts.contact_cards") -> str:
    """The contact card plus the day's RFM scores (binds the day once): what feeds export.
    ``with_predictions`` adds the day's predictions (and binds the day a second time);
    ``cards`` is the card table (a view node's: ``views.<view>_contact_cards``)."""
    sql = "SELECT c.*, r.* EXCLUDE (customer_id, as_of_date)"
    if with_predictions:
        sql += ", " + prediction_select("pr")
    sql += (f" FROM {cards} c LEFT JOIN marketing.rfm_scores r "
            "ON r.customer_id = c.customer_id AND r.as_of_date = ?")
    if with_predictions:
        sql += (" LEFT JOIN predictions.customer_predictions pr "
                "ON pr.customer_id = c.customer_id AND pr.as_of_date = ?")
    return sql


def cards_of(segment) -> str:
    """The card table a segment reads: the main view's, or its view node's."""
    view = getattr(segment, "view", None)
    return f"views.{view}_contact_cards" if view else "marts.contact_cards"


def rule_base_sql(deployment, as_of: dt.date, with_stage: bool = True,
                  fields: set[str] | None = None,
                  cards: str = "marts.contact_cards") -> tuple[str, list]:
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
    j_pred = fields is not None and want(PREDICTION_FIELDS)  # only for a rule that reads them
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
    if j_pred:
        sql += ", " + prediction_select("pr")
    sql += f" FROM {cards} c"
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
    if j_pred:
        sql += (" LEFT JOIN predictions.customer_predictions pr "
                "ON pr.customer_id = c.customer_id AND pr.as_of_date = ?")
        params.append(as_of)
    return sql, params


def rule_members_sql(deployment, rule: dict, as_of: dt.date, with_stage: bool = True,
                     cards: str = "marts.contact_cards") -> tuple[str, list]:
    """``SELECT customer_id`` of the contacts a rule selects on a day: one set-based query."""
    catalogue = field_catalogue(deployment)
    where, params = compile_rule(rule, catalogue, as_of, getattr(deployment, "sales_channels", {}))
    base, bparams = rule_base_sql(deployment, as_of, with_stage, set(referenced_fields(rule)), cards)
    return f"SELECT customer_id FROM ({base}) b WHERE {where}", [*bparams, *params]


def _membership_sql(segment, deployment, as_of: dt.date) -> tuple[str, list]:
    """The segment's members on a day: the rule (dynamic) or the frozen set (static), then the
    manual overrides in force on that day (the latest override of a contact wins)."""
    if segment.kind == "static":
        base_sql, base_params = ("SELECT customer_id FROM marketing.static_segment_base WHERE segment = ?",
                                 [segment.name])
    else:
        base_sql, base_params = rule_members_sql(deployment, segment.rule, as_of,
                                                 cards=cards_of(segment))
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
          AND customer_id IN (SELECT customer_id FROM {cards_of(segment)})"""
    return sql, [segment.name, as_of, *base_params]


def build_segment(engine: Engine, deployment, segment, as_of: dt.date) -> dict:
    """Replace one segment's members for one day, then rebuild its entered/left history.

    History is recomputed from the stored days (gaps-and-islands over the days the
    segment was built), so a backfill of an earlier day gives the same history as if
    the days had run in order. A static segment is frozen the first time it is built:
    later days keep that set, changed only by overrides (``add_override``).
    """
    engine = as_engine(engine)
    name = segment.name
    seg_day = {"segment": name, "as_of": as_of}
    engine.run(*marketing_table_steps(),
               SqlStep("segments.schema", "CREATE SCHEMA IF NOT EXISTS segments"))
    with engine.together():
        if segment.kind == "static":
            frozen, runs = engine.rows(SqlStep("segments.static_state", """
                SELECT (SELECT count(*) FROM marketing.static_segment_base WHERE segment = $segment),
                       (SELECT count(*) FROM ops.segment_runs WHERE segment = $segment)""",
                {"segment": name}))[0]
            if not frozen and not runs:
                rsql, rparams = rule_members_sql(deployment, segment.rule, as_of,
                                                 cards=cards_of(segment))
                engine.append("marketing.static_segment_base", SqlStep(
                    "segments.freeze_static", f"SELECT ?, customer_id, CAST(? AS DATE) "
                    f"FROM ({rsql}) ORDER BY customer_id", [name, as_of, *rparams]))
        msql, mparams = _membership_sql(segment, deployment, as_of)
        members = engine.replace_partition(
            "marketing.segment_members", {"segment": name, "as_of_date": as_of},
            SqlStep("segments.members_of_day", f"SELECT CAST(? AS DATE), ?, customer_id "
                    f"FROM ({msql}) ORDER BY customer_id", [as_of, name, *mparams]))
        engine.replace_partition("ops.segment_runs", {"segment": name, "as_of_date": as_of}, SqlStep(
            "segments.run", "SELECT $segment, CAST($as_of AS DATE), CAST($members AS BIGINT), "
            "CAST(now() AS TIMESTAMP)", {**seg_day, "members": members}))
        later = engine.scalar(SqlStep(
            "segments.later_runs",
            "SELECT count(*) FROM ops.segment_runs WHERE segment = $segment AND as_of_date > $as_of",
            seg_day))
        if later:
            engine.replace_partition("marketing.segment_history", {"segment": name}, step_from_file(
                __package__, "segment_history_rebuild.sql", segment=name))
        else:
            _advance_history(engine, name, as_of)
        # The view segments.<name> is the segment as of its latest day: asset key = table.
        engine.run(SqlStep("segments.latest_view",
            f"CREATE OR REPLACE VIEW segments.{name} AS "
            f"SELECT customer_id FROM marketing.segment_members WHERE segment = '{name}' "
            f"AND as_of_date = (SELECT max(as_of_date) FROM marketing.segment_members "
            f"WHERE segment = '{name}')"))
    entered, left = engine.rows(SqlStep("segments.moves_of_day", """
        SELECT count(*) FILTER (WHERE entered_on = $as_of), count(*) FILTER (WHERE left_on = $as_of)
        FROM marketing.segment_history WHERE segment = $segment""", seg_day))[0]
    return {"members": int(members), "entered": int(entered), "left": int(left)}


def _advance_history(engine: Engine, name: str, as_of: dt.date) -> None:
    """The usual daily case, the newest day: touch only what changed (cost ~ members, not
    days x members). A re-run of the same day first undoes that day's changes."""
    seg_day = {"segment": name, "as_of": as_of}
    engine.run(
        SqlStep("segments.history_undo_entered", "DELETE FROM marketing.segment_history "
                "WHERE segment = $segment AND entered_on = $as_of", seg_day),
        SqlStep("segments.history_undo_left", "UPDATE marketing.segment_history SET left_on = NULL "
                "WHERE segment = $segment AND left_on = $as_of", seg_day),
        SqlStep("segments.history_close", """
            UPDATE marketing.segment_history SET left_on = $as_of
            WHERE segment = $segment AND left_on IS NULL AND customer_id NOT IN (
                SELECT customer_id FROM marketing.segment_members
                WHERE segment = $segment AND as_of_date = $as_of)""", seg_day))
    engine.append("marketing.segment_history", SqlStep("segments.history_open", """
        SELECT $segment, customer_id, CAST($as_of AS DATE), NULL FROM marketing.segment_members
        WHERE segment = $segment AND as_of_date = $as_of AND customer_id NOT IN (
            SELECT customer_id FROM marketing.segment_history
            WHERE segment = $segment AND left_on IS NULL)
        ORDER BY customer_id""", seg_day))


def size_history(engine: Engine, segment: str, days: int = 30) -> list[tuple[dt.date, int]]:
    """(day, members) of the segment's last ``days`` builds: counts only."""
    return [(d, int(n)) for d, n in as_engine(engine).rows(SqlStep(
        "segments.size_history", "SELECT as_of_date, members FROM ops.segment_runs "
        "WHERE segment = $segment ORDER BY as_of_date DESC LIMIT $days",
        {"segment": segment, "days": days}))][::-1]


def member_sample(engine: Engine, segment: str, as_of: dt.date, n: int = 10) -> list[int]:
    """Up to ``n`` member ids of the day (the lowest, so a rebuilt day shows the same ones):
    ids only, for an analyst to open their cards, never names or e-mails."""
    return [int(r[0]) for r in as_engine(engine).rows(SqlStep(
        "segments.member_sample", "SELECT customer_id FROM marketing.segment_members "
        "WHERE segment = $segment AND as_of_date = $day ORDER BY customer_id LIMIT $n",
        {"segment": segment, "day": as_of, "n": n}))]


def dry_run(engine: Engine, deployment, segment, as_of: dt.date, sample: int = 10) -> dict:
    """What the segment's rule *as now configured* selects on a day, compared with the stored
    membership of that day (or the latest stored day before it). Writes nothing.

    For a static segment the rule is what a fresh freeze would select; overrides are applied
    in both cases, so ``entering`` / ``leaving`` show the effect of a rule change, and
    ``entering_ids`` / ``leaving_ids`` who (at most ``sample`` ids each, smallest first;
    the counts are always complete)."""
    engine = as_engine(engine)
    engine.run(*marketing_table_steps())
    msql, mparams = _membership_sql(segment, deployment, as_of)
    if segment.kind == "static":
        rsql, rparams = rule_members_sql(deployment, segment.rule, as_of, cards=cards_of(segment))
        msql = msql.replace("SELECT customer_id FROM marketing.static_segment_base WHERE segment = ?",
                            rsql, 1)
        mparams = [mparams[0], mparams[1], *rparams]
    seg_day = {"segment": segment.name, "as_of": as_of}
    # a build with no members is a stored membership too: look at the runs, not the members
    stored_day = engine.scalar(SqlStep(
        "segments.stored_day", "SELECT max(as_of_date) FROM ops.segment_runs "
        "WHERE segment = $segment AND as_of_date <= $as_of", seg_day))
    engine.run(SqlStep("segments.dry_members", f"CREATE OR REPLACE TEMP TABLE _dry AS {msql}",
                       mparams))
    size = engine.scalar(SqlStep("segments.dry_size", "SELECT count(*) FROM _dry"))
    ids = [r[0] for r in engine.rows(SqlStep(
        "segments.dry_sample", "SELECT customer_id FROM _dry ORDER BY customer_id LIMIT $n",
        {"n": sample}))]
    entering = leaving = stored = None
    entering_ids: list[int] = []
    leaving_ids: list[int] = []
    if stored_day is not None:
        # who would enter / leave: the counts in full, the ids bounded by ``sample`` (smallest
        # ids first, so two dry-runs of the same change list the same people)
        stored, entering, leaving, entering_ids, leaving_ids = engine.rows(SqlStep(
            "segments.dry_compare", """
            WITH s AS (SELECT customer_id FROM marketing.segment_members
                       WHERE segment = $segment AND as_of_date = $day),
                 ent AS (SELECT customer_id FROM _dry
                         WHERE customer_id NOT IN (SELECT customer_id FROM s)),
                 lea AS (SELECT customer_id FROM s
                         WHERE customer_id NOT IN (SELECT customer_id FROM _dry))
            SELECT (SELECT count(*) FROM s), (SELECT count(*) FROM ent), (SELECT count(*) FROM lea),
                   coalesce((SELECT list(customer_id ORDER BY customer_id) FROM
                             (SELECT customer_id FROM ent ORDER BY customer_id LIMIT $n)), []),
                   coalesce((SELECT list(customer_id ORDER BY customer_id) FROM
                             (SELECT customer_id FROM lea ORDER BY customer_id LIMIT $n)), [])""",
            {"segment": segment.name, "day": stored_day, "n": sample}))[0]
    engine.run(SqlStep("segments.dry_drop", "DROP TABLE IF EXISTS _dry"))
    return {"segment": segment.name, "kind": segment.kind, "as_of": as_of, "size": int(size),
            "sample_ids": ids, "stored_day": stored_day,
            "stored_size": None if stored is None else int(stored),
            "entering": None if entering is None else int(entering),
            "leaving": None if leaving is None else int(leaving),
            "entering_ids": [int(i) for i in entering_ids or []],
            "leaving_ids": [int(i) for i in leaving_ids or []]}


def add_overrides(engine: Engine, segment: str, customer_ids: list[int], action: str,
                  effective_on: dt.date, origin: str = "cli") -> int:
    """Record explicit additions (``include``) or removals (``exclude``) for a segment, effective
    from a day (they apply when the segment is next built for that day or later)."""
    if action not in ("include", "exclude"):
        raise ValueError(f"action must be include or exclude, not {action!r}")
    engine = as_engine(engine)
    engine.run(*marketing_table_steps())
    ids = sorted({int(i) for i in customer_ids})
    with engine.together():
        engine.append("marketing.segment_overrides", SqlStep(
            "segments.overrides",
            "SELECT $segment, unnest(CAST($ids AS BIGINT[])), $action, CAST($day AS DATE), "
            "CAST(now() AS TIMESTAMP), $origin",
            {"segment": segment, "ids": ids, "action": action, "day": effective_on,
             "origin": origin}))
    return len(ids)
