"""Tests for tessera.marketing.segments: rule validation and compilation, executed by DuckDB over a
small in-memory table whose columns are named like the field catalogue."""
from __future__ import annotations

import datetime as dt
from pathlib import Path

import duckdb
import pytest

from tessera.deployment import load_deployment
from tessera.vocabulary import (
    CARD_EXTRA_FIELDS,
    GOLDEN_FIELDS,
    MARKETING_FIELDS,
    RFM_FIELDS,
    field_catalogue,
)
from tessera.marketing.rules import OPERATORS, compile_rule, validate_rule
from tessera.yamlfile import ConfigError, load_yaml

DEMO = Path(__file__).resolve().parents[2] / "examples" / "demo"
AS_OF = dt.date(2026, 11, 1)


@pytest.fixture(scope="module")
def catalogue():
    return field_catalogue(load_deployment(DEMO))


@pytest.fixture(scope="module")
def con():
    c = duckdb.connect()
    c.execute("""
        CREATE TABLE cards (
            customer_id BIGINT, country VARCHAR, city VARCHAR, email VARCHAR,
            order_summary DECIMAL(18,2), order_number BIGINT, rfm_group VARCHAR,
            birth_date DATE, last_event_at TIMESTAMP, email_hard_bounced BOOLEAN,
            loyalty_tier VARCHAR)""")
    c.execute("""
        INSERT INTO cards VALUES
        (1, 'IT', 'Roma',      'a@x.it', 350.00,  5, 'champions', DATE '1980-02-14', TIMESTAMP '2026-10-30 08:00:00', FALSE, 'gold'),
        (2, 'IT', 'Milano',    '',       120.50,  2, 'loyal',     DATE '1995-06-01', TIMESTAMP '2026-09-01 12:00:00', FALSE, 'silver'),
        (3, 'FR', 'Paris',     NULL,     300.00,  4, 'at_risk',   NULL,              TIMESTAMP '2026-11-05 09:00:00', TRUE,  NULL),
        (4, 'IT', 'Roccaraso', 'd@x.it', NULL,    0, NULL,        DATE '2000-01-01', TIMESTAMP '2026-11-01 23:59:00', NULL,  'bronze'),
        (5, '',   NULL,        'e@x.it', 1000.00, 10, 'champions', DATE '1970-12-31', TIMESTAMP '2026-10-02 00:00:00', FALSE, 'gold')
    """)
    yield c
    c.close()


def members(con, catalogue, rule) -> list[int]:
    validate_rule(rule, catalogue)
    where, params = compile_rule(rule, catalogue, AS_OF)
    assert "?" in where or not params
    return [r[0] for r in con.execute(
        f"SELECT customer_id FROM cards WHERE {where} ORDER BY customer_id", params).fetchall()]


def test_field_catalogue(catalogue):
    assert catalogue["loyalty_tier"] == "string"
    assert catalogue["order_summary"] == "decimal"
    assert catalogue["last_event_at"] == "timestamp"
    assert catalogue["rfm_group"] == "string"
    props = {p.name for p in load_deployment(DEMO).properties_of("contact")}
    from tessera.vocabulary import CARD_COMPANY_FIELDS, PREDICTION_FIELDS

    assert catalogue["company_revenue"] == "decimal" and catalogue["coworker_count"] == "integer"
    assert set(catalogue) == (set(GOLDEN_FIELDS) | set(CARD_EXTRA_FIELDS) | set(RFM_FIELDS) | props
                              | set(MARKETING_FIELDS) | set(CARD_COMPANY_FIELDS)
                              | set(PREDICTION_FIELDS)  # the demo has order sources
                              | {"score", "score_engagement", "score_purchase_intent"})


def test_every_operator_is_covered_below():
    covered = {case[1] for case in CASES}
    assert covered == OPERATORS


CASES = [
    ("country", "=", "IT", [1, 2, 4]),
    ("country", "!=", "IT", [3, 5]),
    ("order_number", "=", 4, [3]),
    ("order_summary", "!=", 300, [1, 2, 5]),
    ("rfm_group", "in", ["champions", "loyal"], [1, 2, 5]),
    ("rfm_group", "not in", ["champions", "loyal"], [3]),
    ("customer_id", "in", [1, 3, 99], [1, 3]),
    ("order_summary", "<", 300, [2]),
    ("order_summary", "<=", 300, [2, 3]),
    ("order_summary", ">", 300, [1, 5]),
    ("order_summary", ">=", 300, [1, 3, 5]),
    ("order_summary", ">=", 120.5, [1, 2, 3, 5]),
    ("order_number", "<", 2, [4]),
    ("order_number", "between", [2, 5], [1, 2, 3]),
    ("order_summary", "between", [120.5, 300], [2, 3]),
    ("birth_date", "between", ["1980-01-01", "1995-12-31"], [1, 2]),
    ("city", "contains", "RO", [1, 4]),
    ("city", "contains", "lan", [2]),
    ("city", "starts with", "ro", [1, 4]),
    ("city", "starts with", "PAR", [3]),
    ("email", "is empty", None, [2, 3]),
    ("email", "is not empty", None, [1, 4, 5]),
    ("order_summary", "is empty", None, [4]),
    ("last_event_at", "within last days", 30, [1, 4]),   # (2026-10-02, 2026-11-01]
    ("last_event_at", "within last days", 0, []),
    ("last_event_at", "within last days", 31, [1, 4, 5]),
    ("birth_date", "within last days", 20000, [1, 2, 4]),
    ("birth_date", "before", "1980-02-14", [5]),
    ("birth_date", "before", dt.date(1980, 2, 15), [1, 5]),
    ("birth_date", "after", "1995-06-01", [4]),
    ("last_event_at", "after", "2026-11-01", [3]),
    ("last_event_at", "before", "2026-10-02", [2]),
    ("last_event_at", ">=", "2026-10-30", [1, 3, 4]),
    ("birth_date", "=", dt.date(2000, 1, 1), [4]),
    ("email_hard_bounced", "=", True, [3]),
    ("email_hard_bounced", "!=", True, [1, 2, 5]),
    ("loyalty_tier", "in", ["gold"], [1, 5]),
]


@pytest.mark.parametrize("field,op,value,expected", CASES,
                         ids=[f"{c[0]} {c[1]} {c[2]!r}" for c in CASES])
def test_operator(con, catalogue, field, op, value, expected):
    rule = {"field": field, "op": op}
    if op not in ("is empty", "is not empty"):
        rule["value"] = value
    assert members(con, catalogue, rule) == expected


def test_nested_all_any(con, catalogue):
    rule = {"all": [
        {"field": "country", "op": "=", "value": "IT"},
        {"any": [
            {"field": "rfm_group", "op": "in", "value": ["champions"]},
            {"field": "order_number", "op": ">=", "value": 2},
        ]},
    ]}
    assert members(con, catalogue, rule) == [1, 2]


def test_nested_any_of_all(con, catalogue):
    rule = {"any": [
        {"all": [
            {"field": "country", "op": "=", "value": "FR"},
            {"field": "email_hard_bounced", "op": "=", "value": True},
        ]},
        {"all": [
            {"field": "country", "op": "!=", "value": "FR"},
            {"any": [
                {"field": "city", "op": "is empty"},
                {"field": "birth_date", "op": "after", "value": "1999-12-31"},
            ]},
        ]},
    ]}
    assert members(con, catalogue, rule) == [3, 4, 5]


def test_demo_segment_rules_compile_and_run(con, catalogue):
    dep = load_deployment(DEMO)
    hv = next(s for s in dep.segments if s.name == "high_value_customers")
    # The demo rule needs order_number/rfm_group/order_summary/country: all present.
    assert members(con, catalogue, hv.rule) == [1]
    web = next(s for s in dep.segments if s.name == "recent_web_visitors")
    assert members(con, catalogue, web.rule) == [1, 4]


@pytest.mark.parametrize("rule", [
    {"field": "city", "op": "=", "value": "x' OR 1=1 --"},
    {"field": "city", "op": "!=", "value": "x' OR 1=1 --"},
    {"field": "city", "op": "contains", "value": "x') OR TRUE --"},
    {"field": "city", "op": "starts with", "value": "'; DROP TABLE cards; --"},
    {"field": "rfm_group", "op": "in", "value": ["x') OR (1=1", "x' OR 'a'='a"]},
])
def test_values_are_bound_as_parameters(con, catalogue, rule):
    where, params = compile_rule(rule, catalogue, AS_OF)
    for p in params:
        assert str(p) not in where
    got = members(con, catalogue, rule)
    if rule["op"] == "!=":
        assert got == [1, 2, 3, 4]  # every non-NULL city differs from the odd string
    else:
        assert got == []
    assert con.execute("SELECT count(*) FROM cards").fetchone()[0] == 5


def test_compile_returns_params_in_order(catalogue):
    rule = {"all": [
        {"field": "country", "op": "=", "value": "IT"},
        {"field": "order_number", "op": "between", "value": [2, 5]},
        {"field": "last_event_at", "op": "within last days", "value": 7},
    ]}
    where, params = compile_rule(rule, catalogue, AS_OF)
    assert params == ["IT", 2, 5, AS_OF, 7, AS_OF]
    assert where.count("?") == 6
    assert '"country"' in where and " AND " in where


# --------------------------------------------------------------------------- #
# validate_rule
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("rule,where,text", [
    ("country = IT", "rule", "a rule is a mapping"),
    ({"all": [{"field": "city", "op": "is empty"}], "any": []}, "rule", "exactly one key"),
    ({"all": []}, "rule.all", "non-empty list"),
    ({"any": {"field": "city", "op": "is empty"}}, "rule.any", "non-empty list"),
    ({"all": [{"field": "city", "op": "is empty", "valu": 1}]}, "rule.all.0.valu", "unknown key"),
    ({"field": "shoe_size", "op": "=", "value": 42}, "rule.field", "unknown field 'shoe_size'"),
    ({"field": "city", "op": "like", "value": "R%"}, "rule.op", "unknown operator 'like'"),
    ({"field": "city", "op": "=", "value": None}, "rule.value", "'=' needs a value"),
    ({"field": "city", "op": "="}, "rule.value", "'=' needs a value"),
    ({"field": "city", "op": "is empty", "value": ""}, "rule.value", "takes no value"),
    ({"field": "city", "op": "in", "value": "Roma"}, "rule.value", "'in' needs a non-empty list"),
    ({"field": "city", "op": "not in", "value": []}, "rule.value", "'not in' needs a non-empty list"),
    ({"field": "order_number", "op": "in", "value": [1, "due"]}, "rule.value", "needs a number"),
    ({"field": "order_number", "op": "between", "value": [1, 2, 3]}, "rule.value", "two values"),
    ({"field": "order_number", "op": "between", "value": 1}, "rule.value", "two values"),
    ({"field": "birth_date", "op": "between", "value": ["1980-01-01", "ieri"]}, "rule.value", "not a date"),
    ({"field": "order_summary", "op": ">=", "value": "300"}, "rule.value", "needs a number, got '300'"),
    ({"field": "order_summary", "op": ">=", "value": True}, "rule.value", "needs a number"),
    ({"field": "birth_date", "op": "<", "value": 1980}, "rule.value", "needs a date"),
    ({"field": "birth_date", "op": "before", "value": "14/02/1980"}, "rule.value", "not a date"),
    ({"field": "order_number", "op": "before", "value": "2026-01-01"}, "rule.op", "needs a date field"),
    ({"field": "city", "op": "within last days", "value": 30}, "rule.op", "needs a date field, 'city' is string"),
    ({"field": "last_event_at", "op": "within last days", "value": -1}, "rule.value", "whole number of days"),
    ({"field": "last_event_at", "op": "within last days", "value": "30"}, "rule.value", "whole number of days"),
    ({"field": "last_event_at", "op": "within last days", "value": True}, "rule.value", "whole number of days"),
    ({"field": "last_event_at", "op": "within last days", "value": 1.5}, "rule.value", "whole number of days"),
    ({"field": "order_number", "op": "contains", "value": "1"}, "rule.value", "needs a text field"),
    ({"field": "city", "op": "starts with", "value": 1}, "rule.value", "needs a text field"),
])
def test_validate_rule_errors(catalogue, rule, where, text):
    with pytest.raises(ConfigError) as exc:
        validate_rule(rule, catalogue)
    msg = str(exc.value)
    assert msg.startswith(where + ":"), msg
    assert text in msg


def test_validate_rule_error_points_at_file_and_line(tmp_path, catalogue):
    p = tmp_path / "segments.yaml"
    p.write_text(
        "segments:\n"
        "  - name: s\n"
        "    rule:\n"
        "      all:\n"
        "        - {field: country, op: \"=\", value: IT}\n"
        "        - any:\n"
        "            - {field: city, op: contains, value: Ro}\n"
        "            - {field: order_number, op: between,\n"
        "               value: [1, due]}\n", encoding="utf-8")
    y = load_yaml(p)
    with pytest.raises(ConfigError) as exc:
        validate_rule(y.data["segments"][0]["rule"], catalogue, y, ("segments", 0, "rule"))
    assert str(exc.value).startswith(f"{p}:9: segments[0].rule.all[1].any[1].value: ")


@pytest.mark.parametrize("rule", [
    {"field": "email_hard_bounced", "op": "=", "value": "maybe"},
    {"field": "city", "op": "=", "value": ["Roma", "Milano"]},
])
def test_wrong_value_type_for_boolean_and_string_fields_is_refused(catalogue, rule):
    with pytest.raises(ConfigError):
        validate_rule(rule, catalogue)


def test_fractional_value_on_integer_field_is_not_rounded(con, catalogue):
    assert members(con, catalogue, {"field": "order_number", "op": "=", "value": 4.4}) == []
    assert members(con, catalogue, {"field": "order_number", "op": "<", "value": 4.4}) == [2, 3, 4]
