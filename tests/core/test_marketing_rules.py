"""Behaviour, sales, segment-of-segment, tag and score leaves; static vs dynamic segments
and overrides across two days; scoring thresholds firing once; stages and the funnel.

Real DuckDB (a temporary warehouse file) with small hand-made tables whose answers are
known; no Dagster (the core is Dagster-free)."""
from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from tessera.settings import ScoreDef, SegmentDef, StageDef
from tessera.deployment import load_deployment
from tessera.marketing.scoring import build_scores, rescore
from tessera.marketing.segments import (
    add_overrides,
    build_segment,
    dry_run,
    ensure_marketing_tables,
    rule_members_sql,
)
from tessera.marketing.rules import compile_rule, segment_order, validate_rule
from tessera.marketing.stages import build_stages
from tessera.engine.warehouse import connect, ensure_warehouse
from tessera.yamlfile import ConfigError

DEMO = Path(__file__).resolve().parents[2] / "examples" / "demo"
D1 = dt.date(2026, 11, 1)
D2 = dt.date(2026, 11, 2)

SCORE = {
    "name": "engagement",
    "cap": {"min": 0},
    "rules": [
        {"event": "page_view", "points": 5},
        {"event": "download", "points": 20},
        {"no_event": "email_open", "within_days": 30, "points": -10},
    ],
    "thresholds": [{"at": 20, "actions": [{"tag": "hot"}, {"notify": "sales@tessera.example"}]}],
}
STAGES = [
    {"name": "curious", "rule": {"event": ["page_view", "download", "email_open", "form_fill", "cart"],
                                 "within_days": 90}},
    {"name": "mql", "rule": {"field": "score", "op": ">=", "value": 20}},
    {"name": "customer", "rule": {"purchase": {}}},
]


@pytest.fixture()
def dep():
    base = load_deployment(DEMO)
    return base.model_copy(update={
        "scores": [ScoreDef.model_validate(SCORE)],
        "stages": [StageDef.model_validate(s) for s in STAGES],
        "segments": [], "feeds": [],
    })


@pytest.fixture()
def con(tmp_path):
    c = connect(tmp_path / "wh.duckdb")
    make_tables(c)
    yield c
    c.close()


def make_tables(c) -> None:
    """Six contacts with known behaviour and orders (see the expected answers below)."""
    ensure_warehouse(c)
    ensure_marketing_tables(c)
    c.execute("""
        CREATE TABLE marts.contact_cards AS SELECT * FROM (VALUES
          (1, 'IT', 'F', 'Roma',   'granted',  2),
          (2, 'IT', 'M', 'Milano', 'withdrawn', 1),
          (3, 'IT', 'F', 'Torino', 'granted',  1),
          (4, 'PL', 'F', 'Gdańsk', 'unknown',  0),
          (5, 'IT', 'M', 'Roma',   'granted',  0),
          (6, 'IT', 'F', 'Milano', 'granted',  0)
        ) t(customer_id, country, gender, city, email_consent, order_number)""")
    c.execute("""
        CREATE TABLE core.events AS SELECT * FROM (VALUES
          (1, 'page_view',  TIMESTAMP '2026-10-30 10:00:00', '{"url": "/it/prodotti/1"}'),
          (1, 'page_view',  TIMESTAMP '2026-10-30 10:01:00', '{"url": "/it/prodotti/2"}'),
          (1, 'page_view',  TIMESTAMP '2026-10-30 10:02:00', '{"url": "/it/prodotti/3"}'),
          (1, 'download',   TIMESTAMP '2026-10-01 09:00:00', '{"url": "/it/download/x.pdf"}'),
          (1, 'email_open', TIMESTAMP '2026-10-25 08:00:00', '{"campaign_id": "C10"}'),
          (2, 'page_view',  TIMESTAMP '2026-08-01 12:00:00', '{"url": "/it/prodotti/9"}'),
          (2, 'email_open', TIMESTAMP '2026-06-01 12:00:00', '{"campaign_id": "C5"}'),
          (3, 'page_view',  TIMESTAMP '2026-10-31 08:00:00', '{"url": "/it/prodotti/1"}'),
          (3, 'page_view',  TIMESTAMP '2026-10-31 08:01:00', '{"url": "/it/prodotti/1"}'),
          (3, 'page_view',  TIMESTAMP '2026-10-31 08:02:00', '{"url": "/it/prodotti/1"}'),
          (3, 'page_view',  TIMESTAMP '2026-10-31 08:03:00', '{"url": "/it/prodotti/1"}'),
          (3, 'page_view',  TIMESTAMP '2026-11-02 09:00:00', '{"url": "/it/prodotti/1"}'),
          (3, 'download',   TIMESTAMP '2026-11-02 09:05:00', '{"url": "/it/download/y.pdf"}'),
          (5, 'form_fill',  TIMESTAMP '2026-10-20 18:00:00', '{"form": "preventivo"}'),
          (5, 'cart',       TIMESTAMP '2026-10-28 18:00:00', '{"product_id": 345, "quantity": 2}'),
          (6, 'page_view',  TIMESTAMP '2026-11-01 07:00:00', '{"url": "/pl/produkty/2"}'),
          (NULL, 'page_view', TIMESTAMP '2026-10-31 07:00:00', '{"url": "/it/"}')
        ) t(customer_id, event_type, occurred_at, properties)""")
    c.execute("""
        CREATE TABLE core.orders AS SELECT * FROM (VALUES
          ('O1', 1, DATE '2026-09-01', 100.00::DECIMAL(18,2), 1, 1, NULL),
          ('O2', 1, DATE '2025-01-01',  50.00::DECIMAL(18,2), 2, 1, '7'),
          ('O3', 2, DATE '2026-10-15', 700.00::DECIMAL(18,2), 2, 1, NULL),
          ('O4', 3, DATE '2026-06-01',  20.00::DECIMAL(18,2), 2, 2, ''),
          ('O5', 5, DATE '2026-11-02', 999.00::DECIMAL(18,2), 1, 1, NULL)
        ) t(order_id, customer_id, order_date, amount, channel_macro, channel_micro, offer_id)""")
    c.execute("""CREATE TABLE staging.order_lines AS SELECT * FROM (VALUES
          ('O1', 'P1'), ('O2', 'P2'), ('O3', 'P1'), ('O3', 'P2'), ('O4', 'P3'), ('O5', 'P2')
        ) t(order_id, product_id)""")
    c.execute("""CREATE TABLE staging.products AS SELECT * FROM (VALUES
          ('P1', '10', '101'), ('P2', '20', '201'), ('P3', '10', '102')
        ) t(source_record_id, line_macro_id, line_micro_id)""")
    c.execute("CREATE TABLE core.customers AS SELECT customer_id FROM marts.contact_cards")


def members(con, dep, rule, day=D1):
    from tessera.vocabulary import field_catalogue

    validate_rule(rule, field_catalogue(dep), segments={"base_seg"}, entities={"event", "order", "order_line", "product"})
    sql, params = rule_members_sql(dep, rule, day)
    return sorted(r[0] for r in con.execute(sql, params).fetchall())


EVENT_CASES = [
    ({"event": "page_view"}, [1, 2, 3, 6]),
    ({"event": "page_view", "within_days": 30}, [1, 3, 6]),
    ({"event": "page_view", "within_days": 30, "count": {"op": ">=", "value": 3}}, [1, 3]),
    ({"event": "page_view", "within_days": 30, "count": {"op": "=", "value": 0}}, [2, 4, 5]),
    ({"event": "page_view", "count": {"op": "<", "value": 2}}, [2, 4, 5, 6]),
    ({"event": "page_view", "count": {"op": "between", "value": [0, 1]}}, [2, 4, 5, 6]),
    ({"event": "page_view", "where": [{"property": "url", "op": "starts with", "value": "/pl/"}]}, [6]),
    ({"event": "page_view", "where": [{"property": "url", "op": "contains", "value": "prodotti/1"}]}, [1, 3]),
    ({"event": "page_view", "last": {"op": "within last days", "value": 7}}, [1, 3, 6]),
    ({"event": "page_view", "days_since_last": {"op": ">", "value": 30}}, [2]),
    ({"event": "page_view", "first": {"op": "before", "value": "2026-09-01"}}, [2]),
    ({"event": ["download", "form_fill"]}, [1, 5]),
    ({"event": "form_fill", "where": [{"property": "form", "op": "=", "value": "preventivo"}]}, [5]),
    ({"event": "cart", "where": [{"property": "quantity", "op": ">=", "value": 2}]}, [5]),
    ({"event": "cart", "where": [{"property": "product_id", "op": "in", "value": [344, 345]}]}, [5]),
    ({"event": "email_open", "within_days": 30}, [1]),  # e-mails opened
]


@pytest.mark.parametrize("rule,expected", EVENT_CASES, ids=[str(c[0]) for c in EVENT_CASES])
def test_behaviour_leaf(con, dep, rule, expected):
    assert members(con, dep, rule) == expected


def test_events_after_the_day_do_not_count(con, dep):
    rule = {"event": "download", "within_days": 5}
    assert members(con, dep, rule, D1) == []
    assert members(con, dep, rule, D2) == [3]


PURCHASE_CASES = [
    ({"purchase": {}}, [1, 2, 3]),  # O5 (customer 5) is after the day
    ({"purchase": {}, "within_days": 183}, [1, 2, 3]),
    ({"purchase": {}, "within_days": 60}, [2]),
    ({"purchase": {"channel_macro": 2, "channel_micro": 1}}, [1, 2]),
    ({"purchase": {"channel_macro": [1]}}, [1]),
    ({"purchase": {"channel": "milan_store"}}, [1, 2]),  # tessera.yaml: macro 2, micro 1
    ({"purchase": {"channel": ["stores"]}}, [1, 2, 3]),
    ({"purchase": {"channel": ["ecommerce", "milan_store"]}, "within_days": 90}, [1, 2]),
    ({"purchase": {"product_line": 20}}, [1, 2]),
    ({"purchase": {"product_line_micro": ["102"]}}, [3]),
    ({"purchase": {"product": ["P1"]}}, [1, 2]),
    ({"purchase": {"product_line": 10, "channel_macro": 2}}, [2, 3]),
    ({"purchase": {"offer": "7"}}, [1]),
    ({"purchase": {"with_offer": True}}, [1]),
    ({"purchase": {"with_offer": False}}, [1, 2, 3]),
    ({"purchase": {}, "total": {"op": ">=", "value": 100}}, [1, 2]),
    ({"purchase": {}, "total": {"op": "<", "value": 100}}, [3, 4, 5, 6]),
    ({"purchase": {}, "count": {"op": ">=", "value": 2}}, [1]),
    ({"purchase": {}, "last": {"op": "within last days", "value": 30}}, [2]),
    ({"purchase": {}, "days_since_last": {"op": "<=", "value": 60}}, [2]),
    ({"purchase": {}, "first": {"op": "before", "value": "2025-06-01"}}, [1]),
]


@pytest.mark.parametrize("rule,expected", PURCHASE_CASES, ids=[str(c[0]) for c in PURCHASE_CASES])
def test_sales_leaf(con, dep, rule, expected):
    assert members(con, dep, rule) == expected


def test_none_group_and_nesting(con, dep):
    rule = {"all": [
        {"field": "country", "op": "=", "value": "IT"},
        {"none": [{"purchase": {}}, {"event": "page_view", "within_days": 1}]},
        {"any": [{"field": "gender", "op": "=", "value": "M"}, {"event": "cart"}]},
    ]}
    assert members(con, dep, rule) == [5]


def test_score_tags_and_stage_fields(con, dep):
    build_scores(con, dep, D1)
    build_stages(con, dep, D1)
    assert members(con, dep, {"field": "score", "op": ">=", "value": 20}) == [1]
    assert members(con, dep, {"field": "score_engagement", "op": "between", "value": [5, 15]}) == [3]
    assert members(con, dep, {"field": "tags", "op": "contains", "value": "hot"}) == [1]
    assert members(con, dep, {"field": "tags", "op": "in", "value": ["x", "hot"]}) == [1]
    assert members(con, dep, {"field": "tags", "op": "not in", "value": ["hot"]}) == [2, 3, 4, 5, 6]
    assert members(con, dep, {"field": "tags", "op": "is empty"}) == [2, 3, 4, 5, 6]
    assert members(con, dep, {"field": "stage", "op": "=", "value": "customer"}) == [1, 2, 3]
    assert members(con, dep, {"field": "stage_rank", "op": "<", "value": 3}) == [5, 6]


def test_segment_of_segment(con, dep):
    base = SegmentDef(name="base_seg", rule={"event": "page_view"})
    build_segment(con, dep, base, D1)
    assert members(con, dep, {"all": [{"segment": "base_seg"}, {"field": "gender", "op": "=", "value": "F"}]}) \
        == [1, 3, 6]


@pytest.mark.parametrize("rule,where,text", [
    ({"event": "page_view", "count": {"op": ">=", "value": "3"}}, "rule.count.value", "needs a number"),
    ({"event": "page_view", "last": {"op": "within last days", "value": 3}, "count": {"op": ">", "value": 1}},
     "rule.last", "one aggregate"),
    ({"event": "page_view", "where": [{"property": "url'); --", "op": "=", "value": "x"}]},
     "rule.where.0.property", "not a property name"),
    ({"event": "page_view", "where": [{"property": "url", "op": "before", "value": "2026-01-01"}]},
     "rule.where.0.op", "does not apply"),
    ({"event": "page_view", "within_days": -1}, "rule.within_days", "whole number"),
    ({"event": "page_view", "sum": {"op": ">", "value": 1}}, "rule.sum", "unknown key"),
    ({"purchase": {"store": "MI"}}, "rule.purchase.store", "unknown key"),
    ({"purchase": {"with_offer": "yes"}}, "rule.purchase.with_offer", "true or false"),
    ({"purchase": {}, "total": {"op": "before", "value": "2026-01-01"}}, "rule.total.op", "needs a date field"),
    ({"segment": "nope"}, "rule.segment", "unknown segment 'nope'"),
    ({"field": "tags", "op": ">", "value": "a"}, "rule.op", "does not apply to the list"),
    ({"none": []}, "rule.none", "non-empty list"),
])
def test_new_leaves_are_validated(dep, rule, where, text):
    from tessera.vocabulary import field_catalogue

    with pytest.raises(ConfigError) as exc:
        validate_rule(rule, field_catalogue(dep), segments={"base_seg"})
    assert str(exc.value).startswith(where + ":"), str(exc.value)
    assert text in str(exc.value)


def test_unknown_sales_channel_is_refused(dep):
    from tessera.vocabulary import field_catalogue

    with pytest.raises(ConfigError, match="rule.purchase.channel: unknown sales channel 'rome_store'"):
        validate_rule({"purchase": {"channel": "rome_store"}}, field_catalogue(dep),
                      channels=set(dep.sales_channels))


def test_purchase_needs_an_order_source(dep):
    from tessera.vocabulary import field_catalogue

    with pytest.raises(ConfigError, match="needs an order source"):
        validate_rule({"purchase": {}}, field_catalogue(dep), entities={"contact"})


def test_values_in_leaves_are_bound(dep):
    from tessera.vocabulary import field_catalogue

    evil = "x') OR 1=1 --"
    rule = {"any": [{"event": "page_view", "where": [{"property": "url", "op": "=", "value": evil}]},
                    {"purchase": {"offer": evil}}, {"field": "tags", "op": "contains", "value": evil}]}
    validate_rule(rule, field_catalogue(dep))
    where, params = compile_rule(rule, field_catalogue(dep), D1)
    assert evil not in where and params.count(evil) == 3


def test_segment_order_and_cycle():
    a = SegmentDef(name="a", rule={"segment": "b"})
    b = SegmentDef(name="b", rule={"field": "country", "op": "=", "value": "IT"})
    c = SegmentDef(name="c", rule={"all": [{"segment": "a"}, {"segment": "b"}]})
    assert [s.name for s in segment_order([c, a, b])] == ["b", "a", "c"]
    x = SegmentDef(name="x", rule={"segment": "y"})
    y = SegmentDef(name="y", rule={"none": [{"segment": "x"}]})
    with pytest.raises(ValueError, match="x -> y -> x"):
        segment_order([x, y])


def _history(con, name):
    return con.execute("SELECT customer_id, entered_on, left_on FROM marketing.segment_history "
                       "WHERE segment = ? ORDER BY customer_id, entered_on", [name]).fetchall()


def _members_of(con, name, day):
    return [r[0] for r in con.execute("SELECT customer_id FROM marketing.segment_members WHERE segment = ? "
                                      "AND as_of_date = ? ORDER BY 1", [name, day]).fetchall()]


def test_static_vs_dynamic_across_two_runs(con, dep):
    rule = {"event": "page_view", "within_days": 1}
    dyn = SegmentDef(name="dyn", kind="dynamic", rule=rule)
    sta = SegmentDef(name="sta", kind="static", rule=rule)
    for day in (D1, D2):
        build_segment(con, dep, dyn, day)
        build_segment(con, dep, sta, day)
    assert _members_of(con, "dyn", D1) == [6] and _members_of(con, "dyn", D2) == [3]
    assert _members_of(con, "sta", D1) == [6] and _members_of(con, "sta", D2) == [6]
    assert _history(con, "dyn") == [(3, D2, None), (6, D1, D2)]
    assert _history(con, "sta") == [(6, D1, None)]
    # re-running a day changes nothing (one transaction per day, replaced)
    assert build_segment(con, dep, dyn, D2) == {"members": 1, "entered": 1, "left": 1}
    assert _history(con, "dyn") == [(3, D2, None), (6, D1, D2)]


def test_explicit_additions_and_removals(con, dep):
    rule = {"event": "page_view", "within_days": 1}
    sta = SegmentDef(name="sta", kind="static", rule=rule)
    dyn = SegmentDef(name="dyn", kind="dynamic", rule=rule)
    build_segment(con, dep, sta, D1)
    add_overrides(con, "sta", [4, 999], "include", D2)   # 999 is no customer: ignored
    add_overrides(con, "sta", [6], "exclude", D2)
    add_overrides(con, "dyn", [3], "exclude", D2)
    add_overrides(con, "dyn", [1], "include", D1)
    build_segment(con, dep, sta, D2)
    build_segment(con, dep, dyn, D1)
    build_segment(con, dep, dyn, D2)
    assert _members_of(con, "sta", D1) == [6]
    assert _members_of(con, "sta", D2) == [4]
    assert _members_of(con, "dyn", D1) == [1, 6]
    assert _members_of(con, "dyn", D2) == [1]
    # the latest override of a contact wins
    add_overrides(con, "dyn", [3], "include", D2)
    build_segment(con, dep, dyn, D2)
    assert _members_of(con, "dyn", D2) == [1, 3]


def test_dry_run_reports_entering_and_leaving(con, dep):
    seg = SegmentDef(name="dyn", rule={"event": "page_view", "within_days": 1})
    build_segment(con, dep, seg, D1)
    changed = seg.model_copy(update={"rule": {"event": "page_view", "within_days": 3}})
    r = dry_run(con, dep, changed, D1)
    assert r["size"] == 3 and r["sample_ids"] == [1, 3, 6]
    assert (r["stored_size"], r["entering"], r["leaving"]) == (1, 2, 0)
    assert (r["entering_ids"], r["leaving_ids"]) == ([1, 3], [])
    assert _members_of(con, "dyn", D1) == [6]  # nothing written


def test_dry_run_lists_who_enters_and_leaves_bounded(con, dep):
    seg = SegmentDef(name="dyn", rule={"event": "page_view", "within_days": 3})
    build_segment(con, dep, seg, D1)  # 1, 3, 6
    changed = seg.model_copy(update={"rule": {"field": "country", "op": "=", "value": "IT"}})
    r = dry_run(con, dep, changed, D1)  # 1, 2, 3, 5, 6
    assert (r["entering"], r["entering_ids"], r["leaving"], r["leaving_ids"]) == (2, [2, 5], 0, [])
    # bounded: the counts stay complete, the ids are the smallest `sample` ones
    flipped = seg.model_copy(update={"rule": {"field": "country", "op": "=", "value": "PL"}})
    r = dry_run(con, dep, flipped, D1, sample=2)
    assert (r["entering"], r["entering_ids"]) == (1, [4])
    assert (r["leaving"], r["leaving_ids"]) == (3, [1, 3])


def _scores(con, day, score_type=None):
    return dict(con.execute("SELECT customer_id, score FROM marketing.scores WHERE as_of_date = ? "
                            "AND score_type = coalesce(?, score_type) ORDER BY 1", [day, score_type]).fetchall())


def _actions(con):
    return con.execute("SELECT as_of_date, customer_id, action, target FROM marketing.score_actions "
                       "ORDER BY 1, 2, 3").fetchall()


def test_scoring_points_absence_and_cap(con, dep):
    build_scores(con, dep, D1)
    # 1: 3 views + 1 download, opened an e-mail 7 days ago; 2: 1 view, no open in 30 days
    assert {k: float(v) for k, v in _scores(con, D1).items()} == {1: 35.0, 2: 0.0, 3: 10.0, 4: 0.0, 5: 0.0, 6: 0.0}


def test_threshold_actions_fire_once_across_two_runs(con, dep):
    build_scores(con, dep, D1)
    assert _actions(con) == [(D1, 1, "notify", "sales@tessera.example"), (D1, 1, "tag", "hot")]
    build_scores(con, dep, D2)
    build_scores(con, dep, D2)  # a re-run of the day fires nothing twice
    assert float(_scores(con, D2)[3]) == 35.0
    assert _actions(con) == [(D1, 1, "notify", "sales@tessera.example"), (D1, 1, "tag", "hot"),
                             (D2, 3, "notify", "sales@tessera.example"), (D2, 3, "tag", "hot")]
    tags = con.execute("SELECT customer_id, tag, added_on FROM marketing.contact_tags ORDER BY 1").fetchall()
    assert tags == [(1, "hot", D1), (3, "hot", D2)]


def test_rescoring_from_history_after_a_rule_change(con, dep):
    rescore(con, dep, D1, D2)
    assert len(_actions(con)) == 4
    harsher = dep.model_copy(update={"scores": [ScoreDef.model_validate(
        {**SCORE, "rules": SCORE["rules"][:2] + [{"event": "page_view", "points": -1, "max_points": 0}],
         "thresholds": [{"at": 41, "actions": [{"tag": "hot"}]}]})]})
    r = rescore(con, harsher, D1, D2)
    assert r == {"days": 2, "actions": 0}
    assert float(_scores(con, D1)[1]) == 32.0  # 15 + 20 - 3
    assert _actions(con) == []


def test_decay_and_window(con, dep):
    s = ScoreDef.model_validate({"name": "fresh", "decay": {"half_life_days": 1}, "window_days": 5,
                                 "rules": [{"event": "page_view", "points": 8}]})
    d = dep.model_copy(update={"scores": [s]})
    build_scores(con, d, D1)
    got = {k: float(v) for k, v in _scores(con, D1).items()}
    # customer 1: 3 views 2 days old (8 * 0.25 each); 3: 4 views 1 day old; 6: 1 view today;
    # 2: the view is outside the 5-day window
    assert got == {1: 6.0, 2: 0.0, 3: 16.0, 4: 0.0, 5: 0.0, 6: 8.0}


def test_stages_history_and_funnel(con, dep):
    for day in (D1, D2):
        build_scores(con, dep, day)
        build_stages(con, dep, day)
    st = dict(con.execute("SELECT customer_id, stage FROM marketing.stages WHERE as_of_date = ?",
                          [D1]).fetchall())
    assert st == {1: "customer", 2: "customer", 3: "customer", 5: "curious", 6: "curious"}
    funnel = con.execute("SELECT stage, contacts, at_or_beyond FROM marketing.funnel_daily "
                         "WHERE as_of_date = ? ORDER BY stage_rank", [D1]).fetchall()
    assert funnel == [("curious", 2, 5), ("mql", 0, 3), ("customer", 3, 3)]
    hist = con.execute("SELECT stage, entered_on, left_on FROM marketing.stage_history "
                       "WHERE customer_id = 5 ORDER BY entered_on").fetchall()
    assert hist == [("curious", D1, D2), ("customer", D2, None)]


def test_stage_rules_cannot_use_stages_or_segments(tmp_path):
    import shutil

    cfg = tmp_path / "cfg"
    shutil.copytree(DEMO, cfg)
    text = (cfg / "stages.yaml").read_text()
    (cfg / "stages.yaml").write_text(text.replace(
        'rule: {field: score_engagement, op: ">=", value: 50}',
        'rule: {field: stage, op: "=", value: curious}'))
    with pytest.raises(ConfigError, match=r"stages.yaml:\d+: stages\[1\].rule.field: unknown field 'stage'"):
        load_deployment(cfg)
    (cfg / "stages.yaml").write_text(text.replace(
        'rule: {field: score_engagement, op: ">=", value: 50}', "rule: {segment: top_spenders}"))
    with pytest.raises(ConfigError, match="segment references are not allowed"):
        load_deployment(cfg)


def test_segment_cycle_is_refused_at_load(tmp_path):
    import shutil

    cfg = tmp_path / "cfg"
    shutil.copytree(DEMO, cfg)
    text = (cfg / "segments.yaml").read_text()
    text = text.replace("rule: {field: m_score, op: \"=\", value: 5}",
                        "rule: {any: [{field: m_score, op: \"=\", value: 5}, {segment: milan_store_women_top_spenders}]}")
    (cfg / "segments.yaml").write_text(text)
    line = next(i + 1 for i, l in enumerate(text.splitlines()) if "segment: milan_store_women_top_spenders}" in l) 
    with pytest.raises(ConfigError) as exc:
        load_deployment(cfg)
    msg = str(exc.value)
    assert f"segments.yaml:{line}: segments[3].rule: segments reference each other in a cycle: " \
           "top_spenders -> milan_store_women_top_spenders -> top_spenders" in msg, msg


def test_backfill_gives_the_same_history_as_days_in_order(tmp_path, con, dep):
    seg = SegmentDef(name="dyn", rule={"event": "page_view", "within_days": 2})
    d3 = dt.date(2026, 11, 3)
    for day in (D1, D2, d3):  # in order: the incremental path each day
        build_segment(con, dep, seg, day)
    in_order = _history(con, "dyn")
    con.execute("DELETE FROM marketing.segment_members; DELETE FROM marketing.segment_history; "
                "DELETE FROM ops.segment_runs")
    for day in (D1, d3, D2, d3):  # a backfill of D2 after D3, then D3 re-run
        build_segment(con, dep, seg, day)
    assert _history(con, "dyn") == in_order
    assert in_order == [(3, D1, None), (6, D1, d3)]


def test_dry_run_of_a_static_segment_shows_a_fresh_freeze(con, dep):
    seg = SegmentDef(name="sta", kind="static", rule={"event": "page_view", "within_days": 1})
    build_segment(con, dep, seg, D1)
    add_overrides(con, "sta", [4], "include", D1)
    changed = seg.model_copy(update={"rule": {"event": "page_view", "within_days": 3}})
    r = dry_run(con, dep, changed, D1)
    assert (r["size"], r["stored_size"], r["entering"], r["leaving"]) == (4, 1, 3, 0)
    assert (r["entering_ids"], r["leaving_ids"]) == ([1, 3, 4], [])
    assert r["sample_ids"] == [1, 3, 4, 6]


def test_feed_takes_segment_or_score_actions(tmp_path):
    import shutil

    cfg = tmp_path / "cfg"
    shutil.copytree(DEMO, cfg)
    text = (cfg / "feeds.yaml").read_text()
    (cfg / "feeds.yaml").write_text(text.replace("    score_actions: true\n",
                                                 "    score_actions: true\n    segment: top_spenders\n"))
    with pytest.raises(ConfigError, match=r"feeds.yaml:\d+: feeds\[1\].score_actions: a feed takes either"):
        load_deployment(cfg)


def test_stage_history_backfill_matches_days_in_order(con, dep):
    d3 = dt.date(2026, 11, 3)
    for day in (D1, D2, d3):
        build_scores(con, dep, day)
    for day in (D1, D2, d3):
        build_stages(con, dep, day)
    q = "SELECT customer_id, stage, entered_on, left_on FROM marketing.stage_history ORDER BY ALL"
    in_order = con.execute(q).fetchall()
    con.execute("DELETE FROM marketing.stages; DELETE FROM marketing.stage_history; "
                "DELETE FROM marketing.stage_runs")
    for day in (D1, d3, D2, d3):
        build_stages(con, dep, day)
    assert con.execute(q).fetchall() == in_order
    assert (5, "curious", D1, D2) in in_order and (5, "customer", D2, None) in in_order


def test_score_window_does_not_hide_events_from_absence_rules(con, dep):
    s = ScoreDef.model_validate({"name": "w", "window_days": 2, "rules": [
        {"event": "page_view", "points": 1},
        {"no_event": "email_open", "within_days": 10, "points": -10}]})
    build_scores(con, dep.model_copy(update={"scores": [s]}), D1)
    got = {k: float(v) for k, v in _scores(con, D1).items()}
    # customer 1 opened an e-mail 7 days ago (outside the 2-day window, inside the 10 days)
    assert got == {1: 0.0, 2: -10.0, 3: -6.0, 4: -10.0, 5: -10.0, 6: -9.0}


def test_score_types_in_one_pass_equal_each_type_alone(con, dep):
    """Several types read the events in one grouped pass (each type's own window inside
    its columns when another type reads further back): the scores of each type alone."""
    types = [ScoreDef.model_validate(SCORE),
             ScoreDef.model_validate({"name": "fresh", "decay": {"half_life_days": 1}, "window_days": 5,
                                      "rules": [{"event": "page_view", "points": 8}]}),
             ScoreDef.model_validate({"name": "w", "window_days": 2, "rules": [
                 {"event": "page_view", "points": 1},
                 {"no_event": "email_open", "within_days": 10, "points": -10}]}),
             ScoreDef.model_validate({"name": "recent", "window_days": 1,
                                      "rules": [{"event": "page_view", "points": 1}]})]
    alone = {}
    for s in types:
        build_scores(con, dep.model_copy(update={"scores": [s]}), D1)
        alone[s.name] = _scores(con, D1, s.name)
    assert {k: float(v) for k, v in alone["w"].items()} == {1: 0.0, 2: -10.0, 3: -6.0, 4: -10.0, 5: -10.0, 6: -9.0}
    # the views of the day only (customer 1's are 2 days old, 3's 1 day)
    assert {k: float(v) for k, v in alone["recent"].items()} == {1: 0.0, 2: 0.0, 3: 0.0, 4: 0.0, 5: 0.0, 6: 1.0}
    con.execute("DELETE FROM marketing.scores")
    # with and without a type that reads all the history (no window)
    for group in (types, types[1:]):
        build_scores(con, dep.model_copy(update={"scores": group}), D1)
        for s in group:
            assert _scores(con, D1, s.name) == alone[s.name], s.name
