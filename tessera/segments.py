"""Segment rules: a small, reviewable YAML language compiled to one set-based SQL query.

A rule is a tree of ``all`` / ``any`` groups whose leaves are
``{field, op, value}`` conditions over the field catalogue (the contact card, its
extended properties and the day's RFM scores). Field names are checked against the
catalogue when the configuration loads (so they can be quoted into SQL safely); values
are always bound as parameters, never formatted into the SQL.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from tessera.yamlfile import ConfigError, LoadedYaml

# Golden profile fields: the contact contract minus per-source bookkeeping.
GOLDEN_FIELDS: dict[str, str] = {
    "erp_id": "string", "email": "string", "first_name": "string", "last_name": "string",
    "mobile": "string", "phone": "string", "address": "string", "postcode": "string",
    "city": "string", "province": "string", "country": "string", "birth_date": "date",
    "gender": "string", "tax_code": "string",
}

CARD_EXTRA_FIELDS: dict[str, str] = {
    "customer_id": "integer",
    "email_consent": "string",
    "sms_consent": "string",
    "email_hard_bounced": "boolean",
    "source_count": "integer",
    "order_number": "integer",
    "order_summary": "decimal",
    "order_avg": "decimal",
    "first_order_date": "date",
    "last_order_date": "date",
    "event_count": "integer",
    "last_event_at": "timestamp",
    "page_views": "integer",
    "email_opens": "integer",
    "updated_at": "timestamp",
}

RFM_FIELDS: dict[str, str] = {
    "recency_days": "integer", "frequency": "integer", "monetary": "decimal",
    "r_score": "integer", "f_score": "integer", "m_score": "integer", "rfm_group": "string",
}

COMPARISON = {"=": "=", "!=": "<>", "<": "<", "<=": "<=", ">": ">", ">=": ">="}
OPERATORS = set(COMPARISON) | {
    "in", "not in", "between", "contains", "starts with", "is empty", "is not empty",
    "within last days", "before", "after",
}
_NUMERIC = {"integer", "decimal"}
_TEMPORAL = {"date", "timestamp"}


def field_catalogue(deployment) -> dict[str, str]:
    cat = dict(GOLDEN_FIELDS)
    for prop in deployment.properties_of("contact"):
        cat[prop.name] = prop.type
    cat.update(CARD_EXTRA_FIELDS)
    cat.update(RFM_FIELDS)
    return cat


def _fail(src: LoadedYaml | None, loc: tuple, msg: str) -> None:
    where = src.where(loc) if src is not None else ".".join(map(str, loc))
    raise ConfigError(f"{where}: {msg}")


def _check_value(ftype: str, value: Any, src, loc, op: str) -> None:
    if ftype == "boolean" and not isinstance(value, bool):
        _fail(src, loc, f"operator '{op}' on a yes/no field needs true or false, got {value!r}")
    if ftype == "string" and not isinstance(value, str):
        _fail(src, loc, f"operator '{op}' on a text field needs a text value, got {value!r}")
    if ftype in _NUMERIC and (isinstance(value, bool) or not isinstance(value, (int, float))):
        _fail(src, loc, f"operator '{op}' on a number needs a number, got {value!r}")
    if ftype in _TEMPORAL and not isinstance(value, (dt.date, str)):
        _fail(src, loc, f"operator '{op}' on a date needs a date (YYYY-MM-DD), got {value!r}")
    if ftype in _TEMPORAL and isinstance(value, str):
        try:
            dt.date.fromisoformat(value)
        except ValueError:
            _fail(src, loc, f"'{value}' is not a date (YYYY-MM-DD)")


def validate_rule(rule: Any, catalogue: dict[str, str], src: LoadedYaml | None = None,
                  loc: tuple = ("rule",)) -> None:
    if not isinstance(rule, dict):
        _fail(src, loc, "a rule is a mapping with 'all', 'any' or 'field'")
    groups = [k for k in ("all", "any") if k in rule]
    if groups:
        if len(rule) != 1:
            _fail(src, loc, "a group has exactly one key: 'all' or 'any'")
        items = rule[groups[0]]
        if not isinstance(items, list) or not items:
            _fail(src, loc + (groups[0],), "a group needs a non-empty list of conditions")
        for i, item in enumerate(items):
            validate_rule(item, catalogue, src, loc + (groups[0], i))
        return
    unknown = set(rule) - {"field", "op", "value"}
    if unknown:
        _fail(src, loc + (sorted(unknown)[0],), "unknown key")
    field = rule.get("field")
    if field not in catalogue:
        _fail(src, loc + ("field",), f"unknown field '{field}'")
    op = rule.get("op")
    if op not in OPERATORS:
        _fail(src, loc + ("op",), f"unknown operator '{op}' (one of {sorted(OPERATORS)})")
    ftype = catalogue[field]
    value = rule.get("value")
    vloc = loc + ("value",)
    if op in ("is empty", "is not empty"):
        if "value" in rule:
            _fail(src, vloc, f"'{op}' takes no value")
    elif op in ("in", "not in"):
        if not isinstance(value, list) or not value:
            _fail(src, vloc, f"'{op}' needs a non-empty list")
        for v in value:
            _check_value(ftype, v, src, vloc, op)
    elif op == "between":
        if not isinstance(value, list) or len(value) != 2:
            _fail(src, vloc, "'between' needs a list of two values")
        for v in value:
            _check_value(ftype, v, src, vloc, op)
    elif op == "within last days":
        if ftype not in _TEMPORAL:
            _fail(src, loc + ("op",), f"'{op}' needs a date field, '{field}' is {ftype}")
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            _fail(src, vloc, "'within last days' needs a whole number of days")
    elif op in ("before", "after"):
        if ftype not in _TEMPORAL:
            _fail(src, loc + ("op",), f"'{op}' needs a date field, '{field}' is {ftype}")
        _check_value(ftype, value, src, vloc, op)
    elif op in ("contains", "starts with"):
        if ftype != "string" or not isinstance(value, str):
            _fail(src, vloc, f"'{op}' needs a text field and a text value")
    else:
        if value is None:
            _fail(src, vloc, f"'{op}' needs a value")
        _check_value(ftype, value, src, vloc, op)


def _cast(ftype: str) -> str:
    # Numbers compare as DOUBLE: `order_number < 4.5` must not round 4.5 to an integer.
    return {"integer": "DOUBLE", "decimal": "DOUBLE", "date": "DATE", "timestamp": "TIMESTAMP",
            "boolean": "BOOLEAN"}.get(ftype, "VARCHAR")


def compile_rule(rule: dict, catalogue: dict[str, str], as_of: dt.date) -> tuple[str, list]:
    """Return a boolean SQL expression over the catalogue's columns, and its parameters."""
    params: list = []

    def walk(node: dict) -> str:
        for group, joiner in (("all", " AND "), ("any", " OR ")):
            if group in node:
                return "(" + joiner.join(walk(item) for item in node[group]) + ")"
        field, op, value = node["field"], node["op"], node.get("value")
        ftype = catalogue[field]
        col = f'"{field}"'  # checked against the catalogue: a safe identifier
        cast = _cast(ftype)
        if op in COMPARISON:
            params.append(value)
            return f"({col} {COMPARISON[op]} CAST(? AS {cast}))"
        if op in ("in", "not in"):
            params.extend(value)
            marks = ", ".join(f"CAST(? AS {cast})" for _ in value)
            neg = "NOT " if op == "not in" else ""
            return f"({col} {neg}IN ({marks}))"
        if op == "between":
            params.extend(value)
            return f"({col} BETWEEN CAST(? AS {cast}) AND CAST(? AS {cast}))"
        if op == "contains":
            params.append(value)
            return f"contains(lower({col}), lower(?))"
        if op == "starts with":
            params.append(value)
            return f"starts_with(lower({col}), lower(?))"
        if op == "is empty":
            return f"({col} IS NULL OR CAST({col} AS VARCHAR) = '')"
        if op == "is not empty":
            return f"({col} IS NOT NULL AND CAST({col} AS VARCHAR) <> '')"
        if op == "within last days":
            params.extend([as_of, value, as_of])
            return (f"(CAST({col} AS DATE) > CAST(? AS DATE) - CAST(? AS INTEGER) "
                    f"AND CAST({col} AS DATE) <= CAST(? AS DATE))")
        if op in ("before", "after"):
            params.append(value)
            return f"(CAST({col} AS DATE) {'<' if op == 'before' else '>'} CAST(? AS DATE))"
        raise ValueError(op)  # pragma: no cover - validated at load

    return walk(rule), params


MEMBERS_DDL = """
CREATE TABLE IF NOT EXISTS marketing.segment_members (
    as_of_date DATE NOT NULL, segment VARCHAR NOT NULL, customer_id BIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS marketing.segment_history (
    segment VARCHAR NOT NULL, customer_id BIGINT NOT NULL, entered_on DATE NOT NULL, left_on DATE);
"""


def segment_base_sql() -> str:
    """The relation rules run over: the contact card plus the day's RFM scores."""
    return ("SELECT c.*, r.* EXCLUDE (customer_id, as_of_date) FROM marts.contact_cards c "
            "LEFT JOIN marketing.rfm_scores r ON r.customer_id = c.customer_id AND r.as_of_date = ?")


def build_segment(con, deployment, segment, as_of: dt.date) -> dict:
    """Replace one segment's members for one day, then rebuild its entered/left history.

    History is recomputed from the stored days (gaps-and-islands over the days the
    segment was built), so a backfill of an earlier day gives the same history as if
    the days had run in order.
    """
    from tessera.warehouse import transaction

    catalogue = field_catalogue(deployment)
    where, params = compile_rule(segment.rule, catalogue, as_of)
    con.execute(MEMBERS_DDL)
    with transaction(con):
        con.execute("DELETE FROM marketing.segment_members WHERE segment = ? AND as_of_date = ?",
                    [segment.name, as_of])
        con.execute(
            f"INSERT INTO marketing.segment_members SELECT CAST(? AS DATE), ?, customer_id "
            f"FROM ({segment_base_sql()}) WHERE {where} ORDER BY customer_id",
            [as_of, segment.name, as_of, *params])
        members = con.execute(
            "SELECT count(*) FROM marketing.segment_members WHERE segment = ? AND as_of_date = ?",
            [segment.name, as_of]).fetchone()[0]
        con.execute("DELETE FROM ops.segment_runs WHERE segment = ? AND as_of_date = ?",
                    [segment.name, as_of])
        con.execute("INSERT INTO ops.segment_runs VALUES (?, ?, ?, now()::TIMESTAMP)",
                    [segment.name, as_of, members])
        con.execute("DELETE FROM marketing.segment_history WHERE segment = ?", [segment.name])
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
            SELECT ?, customer_id, min(as_of_date) AS entered_on, arg_max(next_day, k) AS left_on
            FROM m GROUP BY customer_id, island ORDER BY customer_id, entered_on""",
                    [segment.name, segment.name, segment.name])
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
