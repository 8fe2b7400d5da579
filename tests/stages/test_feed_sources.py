"""Feeds of the other daily outputs: score-threshold actions, predictions, recommendation
lists and marts, each a declared source with its own fields; consent still decides."""

from __future__ import annotations

import datetime as dt
import json

import pyarrow.parquet as pq
import pytest

from tessera.engine import DuckDBEngine
from tessera.feeds.publish import build_feed
from tessera.marketing.segments import marketing_table_steps
from tessera.settings.feeds import FeedDef
from tests.stages.feeds_world import D1, feed, make_world

NOW = dt.datetime(2026, 11, 2, 6, 0)


@pytest.fixture()
def world(tmp_path):
    con = make_world(tmp_path / "w.duckdb")
    DuckDBEngine(con).run(*marketing_table_steps())
    con.execute("CREATE SCHEMA IF NOT EXISTS predictions")
    con.execute("CREATE SCHEMA IF NOT EXISTS recommendations")
    con.execute("""CREATE TABLE predictions.customer_predictions AS SELECT * FROM (VALUES
        (CAST(? AS DATE), 1::BIGINT, 'active', 0.9::DOUBLE, 120.5::DOUBLE, 0.1::DOUBLE, 'low'),
        (CAST(? AS DATE), 2::BIGINT, 'active', 0.2::DOUBLE, 10.0::DOUBLE, 0.8::DOUBLE, 'high'),
        (CAST(? AS DATE), 5::BIGINT, 'active', 0.5::DOUBLE, 50.0::DOUBLE, 0.5::DOUBLE, 'mid'),
        (CAST(? AS DATE) - 1, 3::BIGINT, 'active', 0.5::DOUBLE, 1.0::DOUBLE, 0.5::DOUBLE, 'mid'))
        t(as_of_date, customer_id, status, p_alive, clv, churn_risk, churn_band)""", [D1] * 4)
    for col in ("purchases", "days_since_last_purchase", "expected_purchases_30d",
                "expected_purchases_90d", "expected_purchases_365d", "expected_purchases",
                "expected_order_value", "purchase_propensity", "model_version"):
        con.execute(f"ALTER TABLE predictions.customer_predictions ADD COLUMN {col} DOUBLE")
    con.execute("""CREATE TABLE recommendations.contact_products (as_of_date DATE, kind VARCHAR,
        customer_id BIGINT, rank INTEGER, product_id VARCHAR, score DOUBLE)""")
    con.executemany("INSERT INTO recommendations.contact_products VALUES (?, ?, ?, ?, ?, ?)", [
        (D1, "combined", 1, 2, "P-B", 0.5), (D1, "combined", 1, 1, "P-A", 0.9),
        (D1, "combined", 1, 3, "P-C", 0.1), (D1, "buy_again", 1, 1, "P-Z", 1.0),
        (D1, "combined", 4, 1, "P-D", 0.7), (D1, "combined", 5, 1, "P-E", 0.7),
        (D1 - dt.timedelta(days=1), "combined", 2, 1, "P-OLD", 0.7)])
    con.executemany("INSERT INTO marketing.score_actions VALUES (?, ?, ?, ?, ?, ?, ?, ?)", [
        (D1, "engagement", 50, 1, "feed", "hot", 72.5, 40), (D1, "loyalty", 30, 1, "feed", "hot", 90, None),
        (D1, "engagement", 50, 3, "feed", "hot", 55, 49), (D1, "engagement", 50, 4, "tag", "hot", 80, 10),
        (D1, "engagement", 50, 2, "feed", "other", 99, 1)])
    con.executemany("INSERT INTO marketing.stages VALUES (?, ?, ?, ?)",
                    [(D1, 1, "customer", 3), (D1, 3, "lead", 1)])
    yield con, tmp_path / "feeds"
    con.close()


def _jsonl(out, name):
    return [json.loads(line) for line in (out / name / f"{name}_{D1}.jsonl").read_text().splitlines()]


def test_score_actions_feed_carries_the_action_that_pushed_each_contact(world):
    con, out = world
    f = feed(name="hot", format="jsonl", source="score_actions",
             fields=["customer_id", "email", "action_score_type", "action_score",
                     "action_previous_score", "action_threshold", "stage"])
    build_feed(con, f, D1, out, NOW)
    rows = _jsonl(out, "hot")
    # 1 twice (the higher score's action), 3 once; the tag action and another feed's are not here
    assert rows == [
        {"customer_id": 1, "email": "John_Smith@gmail.com", "action_score_type": "loyalty",
         "action_score": 90.0, "action_previous_score": None, "action_threshold": 30.0,
         "stage": "customer"},
        {"customer_id": 3, "email": "c@x.it", "action_score_type": "engagement", "action_score": 55.0,
         "action_previous_score": 49.0, "action_threshold": 50.0, "stage": "lead"}]


def test_predictions_feed_is_the_contacts_with_a_prediction_today_with_consent(world):
    con, out = world
    f = feed(name="churn", format="parquet", source="predictions",
             fields=["customer_id", "email", "churn_risk", "churn_band", "clv"])
    build_feed(con, f, D1, out, NOW)
    t = pq.read_table(out / "churn" / f"churn_{D1}.parquet").to_pylist()
    # 5 has a prediction but no e-mail consent; 3's is yesterday's
    assert t == [{"customer_id": 1, "email": "John_Smith@gmail.com", "churn_risk": 0.1,
                  "churn_band": "low", "clv": 120.5},
                 {"customer_id": 2, "email": "b@x.it", "churn_risk": 0.8, "churn_band": "high",
                  "clv": 10.0}]


def test_recommendations_feed_lists_the_kind_top_k_best_first(world):
    con, out = world
    f = feed(name="recs", format="jsonl", source="recommendations",
             recommendations={"kind": "combined", "k": 2},
             fields=["customer_id", "email", "recommended_products", "clv"])
    build_feed(con, f, D1, out, NOW)
    assert _jsonl(out, "recs") == [
        {"customer_id": 1, "email": "John_Smith@gmail.com", "recommended_products": ["P-A", "P-B"],
         "clv": 120.5},
        {"customer_id": 4, "email": "d@x.it", "recommended_products": ["P-D"], "clv": None}]
    # any contact feed may carry the list (empty for a contact without one), as a diff too
    g = feed(name="all_recs", format="csv", mode="diff", recommendations={"kind": "buy_again"},
             fields=["customer_id", "email", "recommended_products"])
    stats = build_feed(con, g, D1, out, NOW)
    assert stats["rows"] == 4
    text = (out / "all_recs" / f"all_recs_{D1}.added.csv").read_text()
    assert text.splitlines()[1] == "1,John_Smith@gmail.com,[P-Z]"
    # the same list the next day is no change; another product the day after is one
    con.execute("INSERT INTO recommendations.contact_products SELECT as_of_date + 1, kind, "
                "customer_id, rank, product_id, score FROM recommendations.contact_products "
                "WHERE kind = 'buy_again'")
    again = build_feed(con, g, D1 + dt.timedelta(days=1), out, NOW)
    assert {x["kind"]: x["rows"] for x in again["files"]} == {"added": 0, "changed": 0, "removed": 0}
    con.execute("INSERT INTO recommendations.contact_products VALUES (?, 'buy_again', 1, 1, 'P-Y', 1)",
                [D1 + dt.timedelta(days=2)])
    d3 = build_feed(con, g, D1 + dt.timedelta(days=2), out, NOW)
    assert {x["kind"]: x["rows"] for x in d3["files"]}["changed"] == 1


def test_mart_feed_reads_the_mart_columns_and_the_card_for_consent(world):
    con, out = world
    con.execute("""CREATE TABLE marts.loyalty AS SELECT * FROM (VALUES
        (1::BIGINT, 'gold', 1200, 'spoofed@evil'), (2::BIGINT, 'silver', 300, NULL),
        (5::BIGINT, 'gold', 999, NULL)) t(customer_id, tier, points, email)""")
    f = feed(name="tiers", format="jsonl", source="mart", mart="loyalty",
             fields=["customer_id", "email", "tier", "points", "first_name"])
    build_feed(con, f, D1, out, NOW)
    # 5 has no consent; the e-mail is the card's (consent reads it), not the mart's
    assert _jsonl(out, "tiers") == [
        {"customer_id": 1, "email": "John_Smith@gmail.com", "tier": "gold", "points": 1200,
         "first_name": "John"},
        {"customer_id": 2, "email": "b@x.it", "tier": "silver", "points": 300, "first_name": "Łucja"}]
    con.execute("INSERT INTO marts.loyalty VALUES (1, 'bronze', 1, NULL)")
    with pytest.raises(RuntimeError, match="more than one row"):
        build_feed(con, f, D1 + dt.timedelta(days=1), out, NOW)


def test_sources_are_declared_consistently():
    with pytest.raises(ValueError, match="mart"):
        FeedDef(name="x", source="mart", fields=["customer_id"])
    with pytest.raises(ValueError, match="mart"):
        FeedDef(name="x", mart="loyalty", fields=["customer_id"])
    with pytest.raises(ValueError, match="score_actions"):
        FeedDef(name="x", score_actions=True, source="predictions", fields=["customer_id"])
    assert FeedDef(name="x", score_actions=True, fields=["customer_id"]).row_source == "score_actions"
