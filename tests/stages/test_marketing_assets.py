"""The marketing stage through Dagster: scores, stages and segments materialised for two
daily partitions with ``dagster.materialize`` over a small warehouse with known answers
(the tables of tests/core/test_marketing_rules.py)."""
from __future__ import annotations

import dagster as dg

from pipelines.definitions import build_assets, build_resources
from tessera.settings import ScoreDef, SegmentDef, StageDef
from tessera.deployment import load_deployment
from tessera.engine.warehouse import connect
from tests.core.test_marketing_rules import D1, D2, DEMO, SCORE, STAGES, make_tables


def _deployment():
    return load_deployment(DEMO).model_copy(update={
        "scores": [ScoreDef.model_validate(SCORE)],
        "stages": [StageDef.model_validate(s) for s in STAGES],
        "segments": [
            SegmentDef(name="viewed_today", rule={"event": "page_view", "within_days": 1}),
            SegmentDef(name="first_viewers", kind="static", rule={"event": "page_view", "within_days": 1}),
            SegmentDef(name="hot_women", rule={"all": [{"segment": "viewed_today"},
                                                       {"field": "gender", "op": "=", "value": "F"},
                                                       {"field": "score", "op": ">=", "value": 20}]}),
        ],
        "feeds": [],
    })


def test_two_daily_partitions_through_dagster(tmp_path):
    wh = tmp_path / "wh.duckdb"
    con = connect(wh)
    make_tables(con)
    con.close()
    dep = _deployment()
    assets, checks = build_assets(dep)
    wanted = [a for a in assets if any(k.path[0] in ("marketing", "segments") for k in a.keys)]
    resources = build_resources(wh, tmp_path / "landing", tmp_path / "feeds")
    keys_by_order = []
    for day in (D1, D2):
        result = dg.materialize(wanted, resources=resources, partition_key=day.isoformat(),
                                selection=None)
        assert result.success
        keys_by_order.append([e.event_specific_data.materialization.asset_key.to_user_string()
                              for e in result.get_asset_materialization_events()])
    order = keys_by_order[0]
    # segments come after scores and stages, and a segment after the segment it reads
    assert order.index("marketing/scores") < order.index("marketing/stages") < order.index("segments/viewed_today")
    assert order.index("segments/viewed_today") < order.index("segments/hot_women")
    con = connect(wh)
    try:
        members = {(s, d): [r[0] for r in con.execute(
            "SELECT customer_id FROM marketing.segment_members WHERE segment = ? AND as_of_date = ? ORDER BY 1",
            [s, d]).fetchall()] for s in ("viewed_today", "first_viewers", "hot_women") for d in (D1, D2)}
        actions = con.execute("SELECT as_of_date, customer_id, action FROM marketing.score_actions "
                              "ORDER BY ALL").fetchall()
        funnel = con.execute("SELECT as_of_date, stage, contacts FROM marketing.funnel_daily "
                             "ORDER BY as_of_date, stage_rank").fetchall()
        history = con.execute("SELECT customer_id, entered_on, left_on FROM marketing.segment_history "
                              "WHERE segment = 'viewed_today' ORDER BY 1").fetchall()
    finally:
        con.close()
    assert members[("viewed_today", D1)] == [6] and members[("viewed_today", D2)] == [3]
    assert members[("first_viewers", D1)] == [6] and members[("first_viewers", D2)] == [6]
    assert members[("hot_women", D1)] == [] and members[("hot_women", D2)] == [3]  # 3 crossed 20 on D2
    assert history == [(3, D2, None), (6, D1, D2)]
    assert actions == [(D1, 1, "notify"), (D1, 1, "tag"), (D2, 3, "notify"), (D2, 3, "tag")]
    assert funnel == [(D1, "curious", 2), (D1, "mql", 0), (D1, "customer", 3),
                      (D2, "curious", 1), (D2, "mql", 0), (D2, "customer", 4)]
