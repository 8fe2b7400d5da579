"""The predictions stage over a temporary DuckDB warehouse with histories drawn from known
parameters, plus hand-made contacts: one order, no order, a long gap, a brand-new buyer."""

from __future__ import annotations

import datetime as dt

import duckdb
import pytest

from tessera.engine import DuckDBEngine, SqlStep
from tessera.predictions import synthetic
from tessera.predictions.build import build_predictions
from tessera.predictions.checks import baseline_shortfalls, prediction_problems
from tessera.settings.predictions import PredictionSettings

DAY = dt.date(2026, 11, 1)
N = 3000
ONE, NONE, GAP, NEW, REGULAR = N + 1, N + 2, N + 3, N + 4, N + 5
SETTINGS = PredictionSettings(min_buyers=50)


def _days_ago(n: int) -> str:
    return (DAY - dt.timedelta(days=n)).isoformat()


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    con = duckdb.connect(str(tmp_path_factory.mktemp("pred") / "wh.duckdb"))
    con.register("sim", synthetic.orders(N, seed=3, as_of=DAY))
    con.execute("CREATE SCHEMA core; CREATE SCHEMA marts")
    con.execute("""CREATE TABLE core.orders AS SELECT 'O' || row_number() OVER () AS order_id,
        customer_id, order_date::DATE AS order_date, amount::DECIMAL(18,2) AS amount
        FROM sim WHERE order_date <= DATE '2026-11-01'""")
    hand = [(ONE, 200, 80.0), (GAP, 700, 50.0), (GAP, 650, 50.0), (GAP, 600, 50.0),
            (GAP, 550, 50.0), (GAP, 500, 50.0), (NEW, 5, 70.0)]
    hand += [(REGULAR, d, 60.0) for d in range(3, 700, 30)]
    for i, (cid, ago, amount) in enumerate(hand):
        con.execute("INSERT INTO core.orders VALUES (?, ?, ?, ?)", [f"H{i}", cid, _days_ago(ago), amount])
    con.execute(f"CREATE TABLE marts.contact_cards AS SELECT range::BIGINT AS customer_id "
                f"FROM range(1, {REGULAR + 1})")
    con.execute("""CREATE TABLE core.events AS SELECT customer_id, 'page_view' AS event_type,
        order_date::TIMESTAMP - INTERVAL 1 DAY AS occurred_at FROM core.orders""")
    eng = DuckDBEngine(con)
    stats = build_predictions(eng, SETTINGS, DAY)
    yield eng, stats
    con.close()


def _row(eng, cid):
    cols = ["status", "purchases", "p_alive", "expected_purchases_365d", "clv",
            "purchase_propensity", "churn_risk", "churn_band", "expected_order_value"]
    r = eng.rows(SqlStep("t", f"SELECT {', '.join(cols)} FROM predictions.customer_predictions "
                              "WHERE as_of_date = $d AND customer_id = $c", {"d": DAY, "c": cid}))
    assert len(r) == 1
    return dict(zip(cols, r[0]))


def test_every_contact_has_one_sound_prediction(engine):
    eng, stats = engine
    assert stats["contacts"] == REGULAR
    assert prediction_problems(eng, DAY) == {k: 0 for k in prediction_problems(eng, DAY)}
    assert stats["skipped"] == {}
    assert sum(stats["by_status"].values()) == REGULAR
    assert sum(stats["by_churn_band"].values()) == stats["by_status"]["scored"]


def test_hand_made_contacts_get_sensible_outputs(engine):
    eng, _ = engine
    one, none, gap, new, regular = (_row(eng, c) for c in (ONE, NONE, GAP, NEW, REGULAR))
    assert none["status"] == "no_purchases" and none["p_alive"] is None and none["clv"] is None
    assert none["churn_risk"] is None and 0 <= none["purchase_propensity"] <= 1
    assert new["status"] == "not_enough_history" and new["p_alive"] is None
    assert new["churn_band"] is None
    assert one["status"] == "scored" and one["p_alive"] == 1.0     # BG/NBD's one-timer
    assert gap["p_alive"] < 0.5 < regular["p_alive"]
    assert regular["expected_purchases_365d"] > one["expected_purchases_365d"]
    assert regular["expected_purchases_365d"] > gap["expected_purchases_365d"]
    assert regular["clv"] > gap["clv"] and regular["clv"] > 0
    assert regular["churn_risk"] < gap["churn_risk"]
    assert gap["churn_band"] in ("medium", "high") and regular["churn_band"] == "low"
    assert regular["purchase_propensity"] > gap["purchase_propensity"]


def test_backtest_is_stored_with_baselines_and_the_model_ranks_buyers(engine):
    eng, stats = engine
    acc = stats["accuracy"]
    assert set(acc) == {"purchase", "churn", "purchases", "spend"}
    assert set(acc["purchase"]) == {"gradient_boosting", "blend", "recency_only", "rfm_logistic",
                                    "bgnbd"}
    assert {"bgnbd", "predicts_zero", "last_window"} < set(acc["purchases"])
    for target in ("purchase", "churn"):
        assert acc[target]["gradient_boosting"]["auc"] > 0.6
        assert 0 <= acc[target]["gradient_boosting"]["brier"] <= 0.25
    assert acc["purchases"]["predicts_zero"]["abs_total_error_pct"] == 100.0
    stored = eng.scalar(SqlStep("t", "SELECT count(DISTINCT target || model) FROM predictions.accuracy "
                                     "WHERE as_of_date = $d", {"d": DAY}))
    assert stored == sum(len(v) for v in acc.values())
    assert isinstance(baseline_shortfalls(eng, DAY), list)


def test_a_rerun_gives_the_same_rows_and_a_removed_contact_loses_its_prediction(engine):
    eng, _ = engine
    snap = SqlStep("t", "SELECT * FROM predictions.customer_predictions WHERE as_of_date = $d "
                        "ORDER BY customer_id", {"d": DAY})
    acc = SqlStep("t", "SELECT * FROM predictions.accuracy WHERE as_of_date = $d "
                       "ORDER BY target, model, metric", {"d": DAY})
    before, acc_before = eng.rows(snap), eng.rows(acc)
    build_predictions(eng, SETTINGS, DAY)
    assert eng.rows(snap) == before and eng.rows(acc) == acc_before
    # an erased (or merged-away) person leaves the cards: the next build has no row for them
    eng.run(SqlStep("t", "DELETE FROM marts.contact_cards WHERE customer_id = $c", {"c": GAP}))
    build_predictions(eng, SETTINGS, DAY)
    assert eng.scalar(SqlStep("t", "SELECT count(*) FROM predictions.customer_predictions "
                                   "WHERE customer_id = $c AND as_of_date = $d", {"c": GAP, "d": DAY})) == 0
    assert not any(prediction_problems(eng, DAY).values())
    # and the check sees a row for somebody who is not a contact
    eng.run(SqlStep("t", "INSERT INTO predictions.customer_predictions (as_of_date, customer_id, "
                         "status, purchases, model_version) VALUES ($d, 999999, 'no_purchases', 0, 'x')",
                    {"d": DAY}))
    assert prediction_problems(eng, DAY)["not_a_contact"] == 1


def test_short_history_fits_nothing_and_says_why(tmp_path):
    con = duckdb.connect()
    con.execute("CREATE SCHEMA core; CREATE SCHEMA marts")
    con.execute("CREATE TABLE core.orders (order_id VARCHAR, customer_id BIGINT, order_date DATE, "
                "amount DECIMAL(18,2))")
    con.execute("INSERT INTO core.orders VALUES ('a', 1, DATE '2026-10-20', 10), ('b', 2, DATE '2026-10-25', 20)")
    con.execute("CREATE TABLE marts.contact_cards AS SELECT range::BIGINT AS customer_id FROM range(1, 4)")
    stats = build_predictions(DuckDBEngine(con), PredictionSettings(), DAY)
    assert set(stats["skipped"]) == {"purchase", "churn", "purchases"}
    assert stats["by_status"] == {"scored": 0, "not_enough_history": 2, "no_purchases": 1}
    assert con.execute("SELECT count(*) FROM predictions.customer_predictions WHERE "
                       "purchase_propensity IS NOT NULL OR p_alive IS NOT NULL").fetchone()[0] == 0


def test_predict_command_on_an_orders_csv(tmp_path):
    from tessera.cli import main

    orders = synthetic.orders(1500, seed=4, as_of=DAY)
    lines = ["client;day;total"] + [
        f"C{c:05d};{d.strftime('%d/%m/%Y')};{a:.2f}"
        for c, d, a in zip(*(orders.column(i).to_pylist() for i in range(3)))
        if d <= DAY + dt.timedelta(days=120)]
    (tmp_path / "orders.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    earlier = DAY - dt.timedelta(days=91)
    code = main(["predict", "--orders", str(tmp_path / "orders.csv"), "--cutoff", DAY.isoformat(),
                 "--cutoff", earlier.isoformat(),
                 "--out", str(tmp_path / "out"), "--customer-column", "client",
                 "--date-column", "day", "--amount-column", "total", "--date-format", "%d/%m/%Y"])
    assert code == 0
    con = duckdb.connect()
    pred = con.execute(f"SELECT count(*), count(DISTINCT customer), min(customer) FROM "
                       f"read_csv('{tmp_path / 'out' / ('predictions_' + DAY.isoformat() + '.csv')}')").fetchone()
    first_buyers = len({line.split(";")[0] for line in lines[1:]
                        if dt.datetime.strptime(line.split(";")[1], "%d/%m/%Y").date() <= DAY})
    assert pred[0] == pred[1] == first_buyers and pred[2].startswith("C")
    back = con.execute(f"SELECT DISTINCT as_of_date, target FROM read_csv('{tmp_path / 'out' / 'backtest.csv'}')").fetchall()
    assert {t for (_, t) in back} == {"purchase", "churn", "purchases", "spend"}
    assert {d for (d, _) in back} == {DAY, earlier}
    future = con.execute(f"SELECT cutoff, value FROM read_csv('{tmp_path / 'out' / 'future.csv'}') "
                         "WHERE target = 'purchase' AND model = 'served' AND metric = 'auc' "
                         "ORDER BY cutoff").fetchall()
    assert [d for d, _ in future] == [earlier, DAY] and all(0.6 < v <= 1 for _, v in future)
    beside = con.execute(f"SELECT DISTINCT target, model FROM read_csv('{tmp_path / 'out' / 'future.csv'}')").fetchall()
    assert {("purchase", "rfm_logistic"), ("purchase", "bgnbd"), ("purchases", "bgnbd"),
            ("purchases", "served"), ("purchases", "predicts_zero")} <= set(beside)


def test_segment_rules_and_feeds_read_the_predictions(engine):
    from tessera.deployment import load_deployment
    from tessera.feeds.selection import feed_bind, feed_rows_sql, uses_predictions
    from tessera.marketing.segments import rule_members_sql
    from tessera.settings import FeedDef
    from tests.conftest import DEMO_CONFIG

    eng, _ = engine
    dep = load_deployment(DEMO_CONFIG)
    rule = {"all": [{"field": "churn_band", "op": "=", "value": "high"},
                    {"field": "clv", "op": ">", "value": 10}]}
    sql, params = rule_members_sql(dep, rule, DAY)
    got = {r[0] for r in eng.rows(SqlStep("t", sql, params))}
    want = {r[0] for r in eng.rows(SqlStep("t", "SELECT customer_id FROM predictions.customer_predictions "
                                                "WHERE as_of_date = $d AND churn_band = 'high' AND clv > 10",
                                           {"d": DAY}))}
    assert got == want and len(got) > 10
    feed = FeedDef(name="churners", segment="x", fields=["customer_id", "email", "churn_risk", "clv"],
                   channel="email")
    assert uses_predictions(feed)
    assert feed_rows_sql(feed).count("?") == len(feed_bind(feed, DAY)) == 4
    plain = FeedDef(name="plain", segment="x", fields=["customer_id", "email"], channel="email")
    assert not uses_predictions(plain) and feed_rows_sql(plain).count("?") == len(feed_bind(plain, DAY))


def test_predictions_follow_merges_and_leave_with_an_erased_person():
    from tessera.identity.rekey import rekey_customer_tables
    from tessera.predictions.build import table_steps
    from tests.stages.test_rekey import D1, D2, warehouse

    con = warehouse()                    # 2 merged into 1, then 1 into 3
    DuckDBEngine(con).run(*table_steps())
    for day, cid, p in ((D1, 1, 0.1), (D1, 3, 0.3), (D2, 2, 0.2)):
        con.execute("INSERT INTO predictions.customer_predictions (as_of_date, customer_id, status, "
                    "purchases, purchase_propensity, model_version) VALUES (?, ?, 'no_purchases', 0, ?, 'v')",
                    [day, cid, p])
    moved = rekey_customer_tables(con)
    assert moved["predictions.customer_predictions"] >= 2
    assert sorted(con.execute("SELECT as_of_date, customer_id, purchase_propensity FROM "
                              "predictions.customer_predictions").fetchall()) == [(D1, 3, 0.3), (D2, 3, 0.2)]
    # an erased person's predictions go on every day (forget), and subject access shows them
    from tessera.deployment import load_deployment
    from tessera.privacy import suppression
    from tests.conftest import DEMO_CONFIG

    from tessera.engine.warehouse import ensure_warehouse

    ensure_warehouse(con)
    dep = load_deployment(DEMO_CONFIG)
    con.execute("CREATE TABLE core.customers (customer_id BIGINT, email VARCHAR, mobile VARCHAR, "
                "phone VARCHAR, erp_id VARCHAR)")
    assert "predictions.customer_predictions" in suppression.subject_access(con, dep, 3)["tables"]
    suppression.forget(con, dep, "k" * 32, customer_ids=[3], request_id="r")
    assert con.execute("SELECT count(*) FROM predictions.customer_predictions").fetchone()[0] == 0


def test_the_asset_reports_the_backtest_and_its_checks_through_dagster(tmp_path):
    import dagster as dg

    from pipelines.definitions import build_assets, build_resources
    from tessera.deployment import load_deployment
    from tessera.engine.warehouse import connect, ensure_warehouse
    from tests.conftest import DEMO_CONFIG

    wh = tmp_path / "wh.duckdb"
    con = connect(wh)
    ensure_warehouse(con)
    con.register("sim", synthetic.orders(1500, seed=5, as_of=DAY))
    con.execute("CREATE TABLE core.orders AS SELECT customer_id, order_date::DATE AS order_date, "
                "amount::DECIMAL(18,2) AS amount FROM sim WHERE order_date <= DATE '2026-11-01'")
    con.execute("CREATE TABLE marts.contact_cards AS SELECT range::BIGINT AS customer_id FROM range(1, 1601)")
    con.close()
    dep = load_deployment(DEMO_CONFIG)
    assets, _ = build_assets(dep)
    wanted = [a for a in assets if any(k.path[0] == "predictions" for k in a.keys)]
    assert len(wanted) == 1
    result = dg.materialize(wanted, resources=build_resources(wh, tmp_path / "l", tmp_path / "f"),
                            partition_key=DAY.isoformat())
    assert result.success
    mats = {e.event_specific_data.materialization.asset_key.to_user_string():
            e.event_specific_data.materialization.metadata
            for e in result.get_asset_materialization_events()}
    assert mats["predictions/customer_predictions"]["dagster/row_count"].value == 1600
    # 1 500 contacts are below min_boosting_rows: no boosting; what is served is marked so
    served = mats["predictions/customer_predictions"]["production_model"].value["purchase"]
    assert served in ("bgnbd", "rfm_logistic", "blend")
    assert f"| purchase | {served} |" in mats["predictions/accuracy"]["backtest"].value
    checks = {e.asset_check_key.name: e for e in result.get_asset_check_evaluations()}
    assert checks["every_contact_has_one_prediction"].passed
    assert "models_beat_their_baselines" in checks


def test_each_target_serves_the_best_model_of_its_backtest(engine):
    eng, stats = engine
    acc = stats["accuracy"]
    for target, metric, higher in (("purchase", "auc", True), ("churn", "auc", True),
                                   ("purchases", "mae", False)):
        served = stats["chosen"][target]
        assert acc[target][served]["served"] == 1.0
        assert sum("served" in fig for fig in acc[target].values()) == 1
        candidates = {m: f[metric] for m, f in acc[target].items()
                      if m in ("gradient_boosting", "gradient_boosting_poisson", "bgnbd", "rfm_logistic",
                               "blend", "bgnbd_sharpened", "gradient_boosting_poisson_sharpened")}
        best = max(candidates.values()) if higher else min(candidates.values())
        assert candidates[served] == best
    # the served model is never worse than the candidates it beat, so the WARN check can
    # only name a naive baseline that was no candidate (recency only, last window, zero)
    for line in baseline_shortfalls(eng, DAY):
        assert "(served)" in line and any(b in line.split(" vs ")[1] for b in
                                          ("recency_only", "last_window", "predicts_zero"))


def test_the_warn_check_names_a_served_model_that_loses_to_a_naive_baseline():
    con = duckdb.connect()
    eng = DuckDBEngine(con)
    from tessera.predictions.build import table_steps

    eng.run(*table_steps())
    rows = [("gradient_boosting", False, "auc", 0.70), ("bgnbd", True, "auc", 0.75),
            ("bgnbd", True, "served", 1.0), ("recency_only", True, "auc", 0.80),
            ("rfm_logistic", True, "auc", 0.60)]
    for model, base, metric, value in rows:
        con.execute("INSERT INTO predictions.accuracy VALUES (?, 'v', 'purchase', ?, ?, ?, ?, ?, 90, "
                    "100, 10)", [DAY, model, base, metric, value, DAY])
    # the served BG/NBD loses to recency only; the unserved boosting's loss is no shortfall
    assert baseline_shortfalls(eng, DAY) == ["purchase auc: bgnbd (served) 0.75 vs recency_only 0.8"]


def test_a_small_base_serves_a_candidate_never_worse_than_the_others_on_the_backtest():
    con = duckdb.connect()
    con.register("sim", synthetic.orders(800, seed=8, as_of=DAY))
    con.execute("CREATE SCHEMA core; CREATE SCHEMA marts")
    con.execute("CREATE TABLE core.orders AS SELECT customer_id, order_date::DATE AS order_date, "
                "amount::DECIMAL(18,2) AS amount FROM sim WHERE order_date <= DATE '2026-11-01'")
    con.execute("CREATE TABLE marts.contact_cards AS SELECT range::BIGINT AS customer_id FROM range(1, 801)")
    eng = DuckDBEngine(con)
    stats = build_predictions(eng, SETTINGS, DAY)
    assert set(stats["boosting_not_trained"]) == {"purchase", "churn", "purchases"}
    assert "gradient_boosting" not in stats["accuracy"]["purchase"]
    for target, metric in (("purchase", "auc"), ("churn", "auc")):
        # without the boosting the blend is the mean of the two baselines, still a candidate
        served = stats["chosen"][target]
        candidates = ("bgnbd", "rfm_logistic", "blend")
        assert served in candidates and set(candidates) <= set(stats["accuracy"][target])
        assert all(stats["accuracy"][target][served][metric] >= stats["accuracy"][target][c][metric]
                   for c in candidates)
    # the day's stored propensity is the served model's
    assert stats["chosen"]["purchases"] in ("bgnbd", "bgnbd_sharpened")
    assert not any(prediction_problems(eng, DAY).values())


def test_rules_and_the_card_read_a_hand_made_days_predictions(tmp_path):
    """"Churn risk is high" and "CLV over 500" select exactly the right contacts, and the
    card shows the person's latest predictions (they are no columns of the card)."""
    from starlette.testclient import TestClient

    from tessera.deployment import load_deployment
    from tessera.marketing.segments import rule_members_sql
    from tessera.predictions.build import table_steps
    from tessera.web import queries
    from tessera.web.app import create_app
    from tests.conftest import DEMO_CONFIG

    wh = tmp_path / "w.duckdb"
    con = duckdb.connect(str(wh))
    con.execute("CREATE SCHEMA marts")
    con.execute("CREATE TABLE marts.contact_cards AS SELECT range::BIGINT AS customer_id, "
                "'P' || range AS first_name FROM range(1, 6)")
    eng = DuckDBEngine(con)
    eng.run(*table_steps())
    rows = [  # customer, status, churn risk, band, clv
        (1, "scored", 0.9, "high", 800.0), (2, "scored", 0.85, "high", 120.0),
        (3, "scored", 0.1, "low", 650.0), (4, "no_purchases", None, None, None),
        (5, "not_enough_history", None, None, None)]
    for cid, status, risk, band, clv in rows:
        con.execute("INSERT INTO predictions.customer_predictions (as_of_date, customer_id, status, "
                    "purchases, p_alive, churn_risk, churn_band, clv, purchase_propensity, "
                    "expected_purchases_90d, model_version) VALUES (?, ?, ?, 1, ?, ?, ?, ?, 0.25, ?, 'v')",
                    [DAY, cid, status, 0.5 if risk is not None else None, risk, band, clv,
                     0.4 if risk is not None else None])
    # an older day says the opposite: only the day asked for counts
    con.execute("INSERT INTO predictions.customer_predictions (as_of_date, customer_id, status, "
                "purchases, churn_band, clv, model_version) VALUES (?, 3, 'scored', 1, 'high', 900, 'v')",
                [DAY - dt.timedelta(days=1)])
    dep = load_deployment(DEMO_CONFIG)

    def members(rule):
        sql, params = rule_members_sql(dep, rule, DAY)
        return sorted(r[0] for r in eng.rows(SqlStep("t", sql, params)))

    assert members({"field": "churn_band", "op": "=", "value": "high"}) == [1, 2]
    assert members({"field": "clv", "op": ">", "value": 500}) == [1, 3]
    assert members({"all": [{"field": "churn_band", "op": "=", "value": "high"},
                            {"field": "clv", "op": ">", "value": 500}]}) == [1]
    assert members({"field": "prediction_status", "op": "=", "value": "no_purchases"}) == [4]
    one = queries.card(eng, 1)["predictions"]
    assert (one["predicted_on"], one["churn_band"], one["clv"]) == (DAY, "high", 800.0)
    assert queries.card(eng, 4)["predictions"]["prediction_status"] == "no_purchases"
    con.close()
    with TestClient(create_app(wh)) as c:
        page = c.get("/card/1").text
        newcomer = c.get("/card/5").text
    assert "churn risk <strong>high</strong>" in page and "CLV 800" in page
    assert "not enough history" in newcomer and "CLV" not in newcomer
