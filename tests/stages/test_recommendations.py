"""Recommendations on a small hand-made catalogue whose answers are known: each kind's
top product, lift against a best seller, exclusions, cold contacts, no list for a person
without a card, the back-test figures against hand-computed values, and re-runs."""
from __future__ import annotations

import datetime as dt
import math

import duckdb
import pytest

from tessera.engine import as_engine, step_from_file
from tessera.recommendations.checks import list_problems
from tessera.recommendations.daily import build_recommendations, table_steps, worse_than_popular
from tessera.settings.recommendations import RecommendationSettings

DAY = dt.date(2026, 11, 30)
CATALOGUE = ["X", "Y", "A", "C", "BEST", "Z", "GONE", "MILK"]


def _tables(con) -> None:
    con.execute("""
        CREATE SCHEMA staging; CREATE SCHEMA core; CREATE SCHEMA marts;
        CREATE TABLE staging.products (source_record_id VARCHAR);
        CREATE TABLE marts.contact_cards (customer_id BIGINT);
        CREATE TABLE core.orders (order_id VARCHAR, customer_id BIGINT, order_date DATE);
        CREATE TABLE staging.order_lines (order_id VARCHAR, product_id VARCHAR);
        CREATE TABLE core.events (customer_id BIGINT, event_type VARCHAR, occurred_at TIMESTAMP,
                                  properties VARCHAR)""")
    con.executemany("INSERT INTO staging.products VALUES (?)", [[p] for p in CATALOGUE])


def _order(con, oid, customer, day, *products):
    con.execute("INSERT INTO core.orders VALUES (?, ?, ?)", [oid, customer, day])
    con.executemany("INSERT INTO staging.order_lines VALUES (?, ?)", [[oid, p] for p in products])


def _view(con, customer, at, product, via_url=True):
    props = f'{{"url": "/it/prodotti/{product}"}}' if via_url else f'{{"product_id": "{product}"}}'
    con.execute("INSERT INTO core.events VALUES (?, 'page_view', ?, ?)", [customer, at, props])


@pytest.fixture()
def shop():
    """Contacts 1-40 with cards. 1-30 view X, buy Y two days later; BEST is in most
    orders; A and C always go together in one order (1-20); 1-10 buy MILK every month.
    41 bought and viewed but has no card (erased); 50 has a card and no history (cold);
    60 viewed X recently and bought A."""
    con = duckdb.connect()
    _tables(con)
    con.executemany("INSERT INTO marts.contact_cards VALUES (?)",
                    [[c] for c in [*range(1, 41), 50, 60]])
    base = dt.date(2026, 9, 1)
    for c in range(1, 31):
        d = base + dt.timedelta(days=c)
        _view(con, c, dt.datetime.combine(d, dt.time(10)), "X", via_url=c % 2 == 0)
        _order(con, f"y{c}", c, d + dt.timedelta(days=2), "Y")
        _order(con, f"b{c}", c, d - dt.timedelta(days=20), "BEST", "Z")
    for c in range(1, 21):
        _order(con, f"ac{c}", c, base + dt.timedelta(days=c + 5), "A", "C", "BEST")
    for c in range(1, 11):
        for m in range(3):
            _order(con, f"m{c}-{m}", c, base + dt.timedelta(days=30 * m + c), "MILK")
    _order(con, "e1", 41, base, "Y", "A", "BEST")
    _view(con, 41, dt.datetime(2026, 11, 20, 9), "X")
    _order(con, "u1", 60, base, "A", "NOT_IN_CATALOGUE")
    _view(con, 60, dt.datetime(2026, 11, 25, 9), "X")
    _view(con, 60, dt.datetime(2026, 11, 25, 9, 5), "GHOST")
    yield con
    con.close()


def _settings(**kw) -> RecommendationSettings:
    base = dict(min_support=2, exclude_products=["GONE"], evaluation={"enabled": False},
                als={"factors": 4, "iterations": 5, "seed": 7})
    return RecommendationSettings(**{**base, **kw})


def _lists(con, customer, kind):
    return [r[0] for r in con.execute(
        "SELECT product_id FROM recommendations.contact_products WHERE customer_id = ? AND kind = ? "
        "AND as_of_date = ? ORDER BY rank", [customer, kind, DAY]).fetchall()]


def test_each_kind_finds_its_known_answer(shop):
    build_recommendations(shop, _settings(), DAY)
    # 60 viewed X (last week): Y is what X's viewers bought next
    assert _lists(shop, 60, "bought_after_viewing")[0] == "Y"
    # 60 bought A: C always goes with A; BEST is in every basket but lift keeps it below C
    together = _lists(shop, 60, "bought_together")
    assert together[0] == "C"
    assert together.index("C") < together.index("BEST")
    # buy again: MILK for the monthly buyers, ahead of what they bought once
    assert _lists(shop, 3, "buy_again")[0] == "MILK"
    # the combination and the best sellers give everyone with a card a list
    assert _lists(shop, 60, "combined")
    assert _lists(shop, 60, "popular")[0] == "BEST"


def test_without_lift_the_best_seller_tops_bought_together(shop):
    build_recommendations(shop, _settings(lift=False), DAY)
    assert _lists(shop, 60, "bought_together")[0] == "BEST"


def test_exclusions_unknown_products_and_people_without_a_card(shop):
    stats = build_recommendations(shop, _settings(), DAY)
    rows = shop.execute("SELECT kind, customer_id, product_id FROM recommendations.contact_products").fetchall()
    # nobody without a card (41 is erased) gets a list
    assert 41 not in {c for _, c, _ in rows}
    # the excluded and the unknown products are never offered
    assert not {"GONE", "NOT_IN_CATALOGUE", "GHOST"} & {p for _, _, p in rows}
    # discovery kinds never offer what the contact bought; buy again only offers it
    assert "A" not in _lists(shop, 60, "bought_together") + _lists(shop, 60, "collaborative")
    assert set(_lists(shop, 60, "buy_again")) == {"A"}
    # unknown ids are reported, by origin
    unknown = shop.execute("SELECT origin, product_id, occurrences FROM recommendations.unknown_products "
                           "ORDER BY ALL").fetchall()
    assert unknown == [("order_line", "NOT_IN_CATALOGUE", 1), ("view", "GHOST", 1)]
    assert stats["unknown_product_ids"] == {"order_line": 1, "view": 1}
    assert list_problems(shop, _settings()) == {
        "contacts_without_card": 0, "broken_rankings": 0, "excluded_or_unknown_products": 0,
        "bought_products_offered": 0}


def test_cold_contact_gets_the_best_sellers_from_collaborative(shop):
    stats = build_recommendations(shop, _settings(), DAY)
    assert stats["cold_contacts"] >= 1
    assert _lists(shop, 50, "collaborative") == _lists(shop, 50, "popular")
    assert _lists(shop, 50, "popular")[0] == "BEST"


def test_the_check_sees_a_bought_product_and_a_person_without_card(shop):
    build_recommendations(shop, _settings(), DAY)
    shop.execute("DELETE FROM marts.contact_cards WHERE customer_id = 60")
    shop.execute("INSERT INTO recommendations.contact_products VALUES (?, 'collaborative', 3, 99, 'MILK', 1.0)",
                 [DAY])
    problems = list_problems(shop, _settings())
    assert problems["contacts_without_card"] == 1
    assert problems["bought_products_offered"] == 1
    assert problems["broken_rankings"] == 1


def test_rerun_gives_the_same_lists_and_old_days_are_dropped(shop):
    s = _settings(keep_days=2)
    build_recommendations(shop, s, DAY - dt.timedelta(days=3))
    build_recommendations(shop, s, DAY)
    first = shop.execute("SELECT * FROM recommendations.contact_products ORDER BY ALL").fetchall()
    build_recommendations(shop, s, DAY)
    again = shop.execute("SELECT * FROM recommendations.contact_products ORDER BY ALL").fetchall()
    assert first == again
    assert {r[0] for r in first} == {DAY}


def test_evaluation_figures_match_hand_computed_values():
    con = duckdb.connect()
    engine = as_engine(con)
    _tables(con)
    engine.run(*table_steps())
    con.execute("""
        CREATE TEMP TABLE _rec_truth AS SELECT * FROM (VALUES
            ('new_items', 1, 'A'), ('new_items', 1, 'B'), ('new_items', 2, 'C')) t(mode, customer_id, product_id);
        CREATE TEMP TABLE _rec_eval_lists AS SELECT * FROM (VALUES
            ('new_items', 'popular', 1, 1, 'A', 3.0), ('new_items', 'popular', 1, 2, 'X', 2.0),
            ('new_items', 'popular', 1, 3, 'B', 1.0), ('new_items', 'popular', 1, 4, 'C', 0.5))
            t(mode, kind, customer_id, rank, product_id, score);
        CREATE TEMP TABLE _rec_eval_kinds AS SELECT 'popular' AS kind""")
    step = step_from_file("tessera.recommendations", "evaluation.sql", day=DAY, k=3,
                          cutoff=DAY, catalogue=10)
    engine.replace_partition("recommendations.evaluation", {"as_of_date": DAY}, step)
    (contacts, hit, prec, rec, mapk, ndcg, cov), = con.execute(
        "SELECT contacts, hit_rate, precision_at_k, recall_at_k, map_at_k, ndcg_at_k, coverage "
        "FROM recommendations.evaluation").fetchall()
    # contact 1: hits at ranks 1 and 3 of 3; contact 2: C is at rank 4, beyond k, so a miss
    ndcg1 = (1 + 1 / math.log2(4)) / (1 + 1 / math.log2(3))
    assert contacts == 2
    assert hit == pytest.approx(0.5)
    assert prec == pytest.approx((2 / 3) / 2)
    assert rec == pytest.approx(1 / 2)
    assert mapk == pytest.approx(((1 + 2 / 3) / 2) / 2)
    assert ndcg == pytest.approx(ndcg1 / 2)
    assert cov == pytest.approx(3 / 10)  # A, X, B within the top 3


def test_a_sample_of_the_held_out_contacts_scores_the_contacts_with_the_smallest_hash():
    """truth.sql with sample 1 of 2 contacts: the one whose id hashes lower is scored,
    and the figures are that contact's alone (hand-computed as above)."""
    from tessera.recommendations.lists import file_steps

    con = duckdb.connect()
    engine = as_engine(con)
    _tables(con)
    engine.run(*table_steps())
    con.execute("INSERT INTO marts.contact_cards VALUES (1), (2)")
    _order(con, "o1", 1, DAY, "A", "C")   # C is not in the truth below: bought before
    _order(con, "o2", 2, DAY, "X")
    con.execute("""
        CREATE TEMP TABLE _rec_catalogue AS SELECT source_record_id AS product_id FROM staging.products;
        CREATE TEMP TABLE _rec_bought AS SELECT 1 AS customer_id, 'C' AS product_id;
        CREATE TEMP TABLE _rec_eval_lists AS SELECT * FROM (VALUES
            ('new_items', 'popular', 1, 1, 'A', 3.0), ('new_items', 'popular', 1, 2, 'Y', 2.0),
            ('new_items', 'popular', 2, 1, 'Y', 3.0), ('new_items', 'popular', 2, 2, 'Z', 2.0),
            ('new_items', 'popular', 2, 3, 'X', 1.0))
            t(mode, kind, customer_id, rank, product_id, score);
        CREATE TEMP TABLE _rec_eval_kinds AS SELECT 'popular' AS kind""")
    figures = {}
    for sample in (0, 2, 5, 1):
        engine.run(*file_steps("truth.sql", cutoff=DAY, day=DAY, sample=sample))
        engine.replace_partition("recommendations.evaluation", {"as_of_date": DAY}, step_from_file(
            "tessera.recommendations", "evaluation.sql", day=DAY, k=3, cutoff=DAY, catalogue=10))
        figures[sample] = con.execute(
            "SELECT contacts, hit_rate, precision_at_k, recall_at_k, map_at_k, ndcg_at_k FROM "
            "recommendations.evaluation WHERE mode = 'new_items'").fetchone()
    # contact 1 (truth A): a hit at rank 1; contact 2 (truth X): a hit at rank 3
    one = (1, 1.0, 1 / 3, 1.0, 1.0, 1.0)
    two = (1, 1.0, 1 / 3, 1.0, 1 / 3, (1 / math.log2(4)) / 1.0)
    both = (2, *[(a + b) / 2 for a, b in zip(one[1:], two[1:])])
    # a sample as large as the contacts (or 0) is the full evaluation, to the digit
    assert figures[0] == figures[2] == figures[5]
    assert figures[0] == pytest.approx(both)
    lower = con.execute("SELECT customer_id FROM (VALUES (1), (2)) t(customer_id) "
                        "ORDER BY hash(customer_id), customer_id LIMIT 1").fetchone()[0]
    assert figures[1] == pytest.approx(one if lower == 1 else two)


def _same_figures(rows, other):
    """The same evaluation rows (a parallel average of doubles may differ in the last bit)."""
    assert len(rows) == len(other)
    for a, b in zip(rows, other):
        assert {k: v for k, v in a.items() if not isinstance(v, float)} == \
            {k: v for k, v in b.items() if not isinstance(v, float)}
        assert {k: v for k, v in a.items() if isinstance(v, float)} == \
            pytest.approx({k: v for k, v in b.items() if isinstance(v, float)}, rel=1e-12)


def test_the_back_test_on_a_sample_of_its_contacts(shop):
    full = build_recommendations(shop, _settings(evaluation={"holdout_days": 90, "k": 3,
                                                             "sample_contacts": 0}), DAY)
    assert full["evaluated_contacts"] == full["held_out_contacts"] > 5
    covering = build_recommendations(shop, _settings(evaluation={
        "holdout_days": 90, "k": 3, "sample_contacts": full["held_out_contacts"]}), DAY)
    _same_figures(covering["evaluation"], full["evaluation"])
    assert covering["weights"] == full["weights"]
    sampled = build_recommendations(shop, _settings(evaluation={"holdout_days": 90, "k": 3,
                                                                "sample_contacts": 5}), DAY)
    assert sampled["evaluated_contacts"] == 5
    assert sampled["held_out_contacts"] == full["held_out_contacts"]
    assert max(r["contacts"] for r in sampled["evaluation"]) == 5
    # the same five every run
    again = build_recommendations(shop, _settings(evaluation={"holdout_days": 90, "k": 3,
                                                              "sample_contacts": 5}), DAY)
    _same_figures(again["evaluation"], sampled["evaluation"])


def test_back_test_runs_in_the_build_and_compares_with_popular(shop):
    # held-out: the last 90 days, where 1-30 bought Y after viewing X
    stats = build_recommendations(shop, _settings(evaluation={"holdout_days": 90, "k": 3}), DAY)
    rows = {(r["mode"], r["kind"]): r for r in stats["evaluation"]}
    assert {m for m, _ in rows} == {"new_items", "all_items"}
    assert rows[("new_items", "popular")]["contacts"] > 0
    for r in stats["evaluation"]:
        assert 0 <= r["hit_rate"] <= 1 and 0 <= r["ndcg_at_k"] <= 1
    assert worse_than_popular([
        {"mode": "new_items", "kind": "popular", "contacts": 5, "ndcg_at_k": 0.3},
        {"mode": "new_items", "kind": "bought_together", "contacts": 5, "ndcg_at_k": 0.2},
        {"mode": "new_items", "kind": "combined", "contacts": 5, "ndcg_at_k": 0.4},
    ]) == ["bought_together (new_items)"]


def test_lists_are_deterministic(shop):
    build_recommendations(shop, _settings(), DAY)
    first = shop.execute("SELECT * FROM recommendations.contact_products ORDER BY ALL").fetchall()
    shop.execute("DROP SCHEMA recommendations CASCADE")
    build_recommendations(shop, _settings(), DAY)
    assert shop.execute("SELECT * FROM recommendations.contact_products ORDER BY ALL").fetchall() == first


def test_settings_refuse_unknown_weights():
    with pytest.raises(ValueError, match="unknown kinds"):
        RecommendationSettings(weights={"collabrative": 1.0})


def test_recommend_csv_command_writes_lists_and_the_back_test(tmp_path, capsys):
    from tessera.cli import main

    orders = ["customer_id,order_id,order_date,product_id"]
    views = ["customer_id,viewed_at,product_id"]
    for c in range(1, 31):
        d = dt.date(2026, 9, 1) + dt.timedelta(days=c)
        views.append(f"c{c},{d}T10:00:00,X")
        orders += [f"c{c},o{c},{d + dt.timedelta(days=1)},Y", f"c{c},o{c},{d + dt.timedelta(days=1)},BEST",
                   f"c{c},p{c},{d + dt.timedelta(days=40)},Y"]
    (tmp_path / "orders.csv").write_text("\n".join(orders) + "\n", encoding="utf-8")
    (tmp_path / "views.csv").write_text("\n".join(views) + "\n", encoding="utf-8")
    out = tmp_path / "out"
    rc = main(["recommend-csv", "--orders", str(tmp_path / "orders.csv"), "--views",
               str(tmp_path / "views.csv"), "--cutoff", "2026-10-10", "--out", str(out)])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "held out" in printed and "popular" in printed and "combination weights" in printed
    ev = duckdb.sql(f"SELECT mode, kind, contacts, hit_rate FROM read_csv('{out / 'evaluation.csv'}') "
                    "WHERE kind = 'buy_again' AND mode = 'all_items'").fetchall()
    # every held-out order re-buys Y, which buy again offers first to everyone
    assert ev and ev[0][3] == pytest.approx(1.0)
    lists = duckdb.sql(f"SELECT DISTINCT customer FROM read_csv('{out / 'recommendations.csv'}')").fetchall()
    assert {r[0] for r in lists} == {f"c{c}" for c in range(1, 31)}


def test_asset_and_checks_through_dagster(tmp_path, shop):
    import dagster as dg

    from pipelines.definitions import build_assets, build_resources
    from tessera.deployment import load_deployment
    from tessera.engine.warehouse import connect
    from tests.core.test_marketing_rules import DEMO

    wh = tmp_path / "wh.duckdb"
    connect(wh).close()  # the warehouse's schemas and ops tables
    shop.execute(f"ATTACH '{wh}' AS wh")
    for schema, table in (("staging", "products"), ("marts", "contact_cards"), ("core", "orders"),
                          ("staging", "order_lines"), ("core", "events")):
        shop.execute(f"CREATE SCHEMA IF NOT EXISTS wh.{schema}")
        shop.execute(f"CREATE OR REPLACE TABLE wh.{schema}.{table} AS SELECT * FROM {schema}.{table}")
    shop.execute("DETACH wh")
    dep = load_deployment(DEMO)
    dep = dep.model_copy(update={"recommendations": _settings(evaluation={"holdout_days": 90, "k": 3})})
    assets, checks = build_assets(dep)
    wanted = [a for a in assets if any(k.path[0] == "recommendations" for k in a.keys)]
    wanted_checks = [c for c in checks if any(k.asset_key.path[0] == "recommendations" for k in c.check_keys)]
    result = dg.materialize(wanted + wanted_checks, partition_key=DAY.isoformat(),
                            resources=build_resources(wh, tmp_path / "landing", tmp_path / "feeds"))
    assert result.success
    evals = {c.check_name: c for c in result.get_asset_check_evaluations()}
    assert evals["lists_respect_contacts_and_exclusions"].passed
    assert "kinds_beat_popularity" in evals
    meta = {m.event_specific_data.materialization.asset_key.to_user_string():
            m.event_specific_data.materialization.metadata for m in result.get_asset_materialization_events()}
    ev = meta["recommendations/evaluation"]
    assert "| mode | kind | contacts |" in ev["evaluation"].value
    assert 0.0 <= ev["new_items/combined/ndcg_at_k"].value <= 1.0
    assert ev["combination_weight_set"].value  # the tuned set's name, and its weights
    assert set(ev["combination_weights"].value) >= {"collaborative", "popular"}
    # fewer contacts with a held-out purchase than the sample: every one is scored
    assert ev["evaluated_contacts"].value == ev["held_out_contacts"].value > 0
    assert meta["recommendations/contact_products"]["contacts"].value == 42


def test_without_an_event_source_the_purchase_kinds_still_work(shop):
    shop.execute("DROP TABLE core.events")
    stats = build_recommendations(shop, _settings(), DAY)
    assert _lists(shop, 60, "bought_together")[0] == "C"
    assert _lists(shop, 60, "bought_after_viewing") == []
    assert stats["unknown_product_ids"] == {"order_line": 1}


def test_viewed_together_follows_co_views_in_a_day(shop):
    # 1-10 view X and then Z on the same day; 11-13 view X and MILK on different days
    for c in range(1, 11):
        _view(shop, c, dt.datetime(2026, 10, c, 11), "Z")
        _view(shop, c, dt.datetime(2026, 10, c, 12), "X")
    for c in (11, 12, 13):
        _view(shop, c, dt.datetime(2026, 10, 1, 9), "X")
        _view(shop, c, dt.datetime(2026, 10, 2, 9), "MILK")
    build_recommendations(shop, _settings(), DAY)
    together = _lists(shop, 60, "viewed_together")  # 60 viewed X last week
    assert together[0] == "Z"
    assert "MILK" not in together  # viewed by the same people, never on the same day


def test_collaborative_follows_contacts_with_the_same_taste(shop):
    shop.executemany("INSERT INTO staging.products VALUES (?)", [[p] for p in ("P1", "P2", "P3", "Q1", "Q2", "Q3")])
    shop.executemany("INSERT INTO marts.contact_cards VALUES (?)", [[c] for c in range(100, 141)])
    d = dt.date(2026, 8, 1)
    for c in range(100, 120):  # one taste: P1, P2, P3
        _order(shop, f"p{c}", c, d, "P1", "P2", "P3")
    for c in range(120, 140):  # the other: Q1, Q2, Q3
        _order(shop, f"q{c}", c, d, "Q1", "Q2", "Q3")
    _order(shop, "p140", 140, d, "P1", "P2")
    build_recommendations(shop, _settings(als={"factors": 8, "iterations": 15, "seed": 7}), DAY)
    assert _lists(shop, 140, "collaborative")[0] == "P3"


def test_min_buyers_keeps_rarely_bought_products_out_of_the_model_lists(shop):
    # P4 is bought by one contact only: the model may offer it with min_buyers 0, never
    # with min_buyers 2, and the taste it learnt from the rest is the same (P3 first)
    shop.executemany("INSERT INTO staging.products VALUES (?)", [[p] for p in ("P1", "P2", "P3", "P4")])
    shop.executemany("INSERT INTO marts.contact_cards VALUES (?)", [[c] for c in range(100, 121)])
    d = dt.date(2026, 8, 1)
    for c in range(100, 120):
        _order(shop, f"p{c}", c, d, "P1", "P2", "P3")
    _order(shop, "p4", 100, d, "P4")
    _order(shop, "p120", 120, d, "P1", "P2")
    als = {"factors": 8, "iterations": 15, "seed": 7}
    everything = build_recommendations(shop, _settings(als={**als, "min_buyers": 0}), DAY)
    # (contacts the model knows: a cold contact's fallback, the best sellers, may hold P4)
    offered = {r[0] for r in shop.execute(
        "SELECT DISTINCT product_id FROM recommendations.contact_products "
        "WHERE kind = 'collaborative' AND as_of_date = ? AND customer_id BETWEEN 101 AND 120", [DAY]).fetchall()}
    assert "P4" in offered and everything["als_candidate_products"] == everything["als_products"]
    pruned = build_recommendations(shop, _settings(als={**als, "min_buyers": 2}), DAY)
    offered = {r[0] for r in shop.execute(
        "SELECT DISTINCT product_id FROM recommendations.contact_products "
        "WHERE kind = 'collaborative' AND as_of_date = ? AND customer_id BETWEEN 101 AND 120", [DAY]).fetchall()}
    assert "P4" not in offered and _lists(shop, 120, "collaborative")[0] == "P3"
    # every product bought by two contacts or more stays a candidate; P4 and the products
    # seen only in views (X, GHOST is unknown) do not
    buyers = dict(shop.execute(
        "SELECT l.product_id, count(DISTINCT o.customer_id) FROM core.orders o "
        "JOIN staging.order_lines l USING (order_id) WHERE l.product_id <> 'NOT_IN_CATALOGUE' "
        "GROUP BY l.product_id").fetchall())
    assert pruned["als_candidate_products"] == sum(1 for n in buyers.values() if n >= 2)
    assert pruned["als_products"] == everything["als_products"]


def test_the_card_tab_shows_the_top_products_first(shop):
    from tessera.web import queries

    engine = as_engine(shop)
    (empty,) = queries._recommendations(engine, {"customer_id": 60})
    assert "No recommendations yet" in empty.empty
    build_recommendations(shop, _settings(evaluation={"holdout_days": 90, "k": 3}), DAY)
    top, kinds, accuracy, weights = queries._recommendations(as_engine(shop), {"customer_id": 60})
    assert [r[top.columns.index("product_id")] for r in top.rows] == _lists(shop, 60, "combined")
    assert kinds.rows[0][0] == "combined"
    assert dict(kinds.rows)["bought_together"].split(", ") == _lists(shop, 60, "bought_together")
    assert {r[0] for r in accuracy.rows} == {"new_items", "all_items"}
    assert weights.rows  # the chosen set, one row per kind


def test_the_back_test_tunes_the_weights_of_the_combination(shop):
    stats = build_recommendations(shop, _settings(evaluation={"holdout_days": 90, "k": 3}), DAY)
    rows = {(m, k): r for r in stats["evaluation"] for m, k in [(r["mode"], r["kind"])]}
    for mode in ("new_items", "all_items"):
        sets = shop.execute("""SELECT weight_set, max(ndcg_at_k), bool_or(chosen) FROM
            recommendations.combination_weights WHERE mode = ? GROUP BY weight_set""", [mode]).fetchall()
        chosen = [(s, n) for s, n, c in sets if c]
        # one chosen set per mode, the best one, and the evaluation's combination scores just that
        assert len(chosen) == 1
        assert chosen[0][1] == pytest.approx(max(n for _, n, _ in sets))
        assert rows[(mode, "combined")]["ndcg_at_k"] == pytest.approx(chosen[0][1])
        if mode == "new_items":
            assert {"configured", "only:collaborative", "only:popular"} <= {s for s, _, _ in sets}
        else:  # buy again's weight, tried beside the chosen discovery weights
            assert {s.rsplit(":", 1)[-1] for s, _, _ in sets} >= {"0", "1", "4"}
            assert stats["weight_set"] == chosen[0][0]
    # buy again alone is one of the sets: on repeat purchases the combination matches it
    assert rows[("all_items", "combined")]["ndcg_at_k"] >= rows[("all_items", "buy_again")]["ndcg_at_k"] - 1e-9
    # off: the configured weights, and no set is stored for the day
    again = build_recommendations(shop, _settings(evaluation={"holdout_days": 90, "k": 3,
                                                              "tune_weights": False}), DAY)
    assert again["weight_set"] == "configured"
    assert shop.execute("SELECT count(*) FROM recommendations.combination_weights").fetchone()[0] == 0


def test_buy_again_joins_the_combination_only_when_bought_products_are_kept(shop):
    weights = {"collaborative": 0.0, "popular": 0.01, "buy_again": 1.0}
    build_recommendations(shop, _settings(weights=weights, exclude_bought=False), DAY)
    assert _lists(shop, 3, "combined")[0] == "MILK"   # what contact 3 re-buys every month
    build_recommendations(shop, _settings(weights=weights), DAY)
    assert "MILK" not in _lists(shop, 3, "combined")  # bought, so excluded from discovery


def test_baskets_larger_than_max_basket_make_no_pairs(shop):
    # A, C and BEST always come in one order of three: with max_basket 2 they pair with nothing
    build_recommendations(shop, _settings(max_basket=2), DAY)
    assert _lists(shop, 60, "bought_together") == []
    build_recommendations(shop, _settings(max_basket=3), DAY)
    assert _lists(shop, 60, "bought_together")[0] == "C"


def test_the_days_fit_starts_from_the_back_tests_and_reruns_the_same(shop):
    s = _settings(evaluation={"holdout_days": 90, "k": 3},
                  als={"factors": 4, "iterations": 5, "warm_iterations": 2, "seed": 7})
    stats = build_recommendations(shop, s, DAY)
    assert stats["als_iterations"] == 2   # warm: the back-test's factors, two more iterations
    first = shop.execute("SELECT * FROM recommendations.contact_products ORDER BY ALL").fetchall()
    build_recommendations(shop, s, DAY)
    assert shop.execute("SELECT * FROM recommendations.contact_products ORDER BY ALL").fetchall() == first
    cold = build_recommendations(shop, _settings(als={"factors": 4, "iterations": 5, "seed": 7}), DAY)
    assert cold["als_iterations"] == 5    # no back-test: a full fit


def test_excluding_bought_products_leaves_the_rest_of_the_full_ranking_in_order(shop):
    # The model's and the best sellers' whole ranking with bought products kept, then the
    # top 3 with them excluded: the second is the first without what the contact bought
    # (candidates are cut to each contact's need, so this checks nothing got lost)
    build_recommendations(shop, _settings(exclude_bought=False, top_n=8), DAY)
    full = {kind: {c: _lists(shop, c, kind) for c in [*range(1, 41), 50, 60]}
            for kind in ("collaborative", "popular")}
    build_recommendations(shop, _settings(top_n=3), DAY)
    bought = {}
    for c, p in shop.execute("SELECT o.customer_id, l.product_id FROM core.orders o "
                             "JOIN staging.order_lines l USING (order_id)").fetchall():
        bought.setdefault(c, set()).add(p)
    for kind, lists in full.items():
        assert any(len(v) > 3 for v in lists.values())
        for c, ranked in lists.items():
            assert _lists(shop, c, kind) == [p for p in ranked if p not in bought.get(c, set())][:3], (kind, c)


def test_the_back_test_runs_every_n_days_and_the_days_between_reuse_its_weights(shop):
    s = _settings(evaluation={"holdout_days": 90, "k": 3, "every_days": 7},
                  weights={"collaborative": 0.0, "popular": 1.0})
    first = build_recommendations(shop, s, DAY)
    assert first["back_test_run"] and first["weight_set"] != "configured"
    between = build_recommendations(shop, s, DAY + dt.timedelta(days=1))
    assert not between["back_test_run"] and between["evaluation"] == []
    # the day between trainings ranks with the stored model and its tuned weights
    assert not between["model_trained"] and between["model_trained_on"] == str(DAY)
    assert between["weights"] == first["weights"] and between["weight_set"] == first["weight_set"]
    # trained every day: the model is new, the weights are the last back-test's
    daily = s.model_copy(update={"retrain_every_days": 1})
    between = build_recommendations(shop, daily, DAY + dt.timedelta(days=1))
    assert between["model_trained"] and not between["back_test_run"]
    assert between["weights"] == first["weights"]
    assert between["weight_set"] == f"{first['weight_set']} (back-test of {DAY})"
    assert shop.execute("SELECT count(*) FROM recommendations.evaluation WHERE as_of_date > ?",
                        [DAY]).fetchone()[0] == 0
    assert build_recommendations(shop, s, DAY + dt.timedelta(days=7))["back_test_run"]


def test_the_models_unbought_top_in_blocks_is_the_whole_filter():
    """The model's first n products each contact did not buy, found block by block, are
    those of one filter over every list (block edges, padding and no purchase included)."""
    import numpy as np

    from tessera.recommendations.collaborative import _row_dots, _unbought_top

    rng = np.random.default_rng(3)
    users = np.arange(0, 50, 2, dtype=np.int32)
    ids = rng.integers(0, 20, (len(users), 8))
    ids[3, 5:] = -1  # padding of a short list
    scores = rng.random(ids.shape).astype(np.float32)
    b_u = rng.choice(users, 40).astype(np.int64)
    b_i = rng.integers(0, 20, 40)
    bought = np.unique(b_u * 20 + b_i)
    for b in (bought, bought[:0]):
        want_u, want_i, want_s = [], [], []
        for row, u in enumerate(users):
            kept = [(i, s) for i, s in zip(ids[row], scores[row]) if i >= 0 and u * 20 + i not in set(b)][:3]
            want_u += [u] * len(kept)
            want_i += [i for i, _ in kept]
            want_s += [s for _, s in kept]
        for block in (1, 4, 7, 1000):
            got_u, got_i, got_s = _unbought_top(users, ids, scores, b, 20, 3, block=block)
            assert got_u.tolist() == want_u and got_i.tolist() == want_i and got_s.tolist() == want_s
    uf, itf = rng.random((50, 4)).astype(np.float32), rng.random((20, 4)).astype(np.float32)
    assert _row_dots(uf, itf, b_u, b_i, block=7) == pytest.approx((uf[b_u] * itf[b_i]).sum(axis=1), rel=1e-6)


def test_the_check_sees_a_repeated_rank_and_a_repeated_product(shop):
    """Within one list: a rank given twice (still 1 to n at its ends) and a product given
    twice are each a broken ranking."""
    build_recommendations(shop, _settings(), DAY)
    lists = shop.execute("""SELECT kind, customer_id FROM recommendations.contact_products
        GROUP BY ALL HAVING count(*) >= 3 ORDER BY ALL LIMIT 2""").fetchall()
    assert len(lists) == 2
    (k1, c1), (k2, c2) = lists
    shop.execute("UPDATE recommendations.contact_products SET rank = 3 WHERE kind = ? AND customer_id = ? "
                 "AND rank = 2", [k1, c1])
    shop.execute("""UPDATE recommendations.contact_products SET product_id = (
        SELECT product_id FROM recommendations.contact_products WHERE kind = $k AND customer_id = $c AND rank = 1)
        WHERE kind = $k AND customer_id = $c AND rank = 2""", {"k": k2, "c": c2})
    assert list_problems(shop, _settings())["broken_rankings"] == 2
    # ranks beyond a 64-bit mask's reach are counted as a list of distinct values
    assert list_problems(shop, _settings().model_copy(update={"top_n": 80}))["broken_rankings"] == 2
    # products are told apart by their catalogue index: a bit mask while the catalogue
    # fits 128 bits, a list of distinct indexes beyond (the extra products are offered to
    # nobody, so nothing else changes)
    shop.execute("INSERT INTO staging.products SELECT 'EXTRA' || i FROM range(130) t(i)")
    assert list_problems(shop, _settings())["broken_rankings"] == 2
    shop.execute("DELETE FROM staging.products WHERE source_record_id LIKE 'EXTRA%'")
    assert list_problems(shop, _settings())["broken_rankings"] == 2


def test_a_day_between_trainings_ranks_the_changed_contacts_and_carries_the_rest(shop):
    """The model is trained on DAY; the next day 25 buys A, 60 views C and 70 gets a card:
    those three are ranked with the stored model, the other 40 carried. The lists are the
    ones a full ranking with the same model gives, and a day without changes ranks no one."""
    s = _settings()
    assert build_recommendations(shop, s, DAY)["model_trained"]
    day2, day3 = DAY + dt.timedelta(days=1), DAY + dt.timedelta(days=2)
    assert "A" in _lists(shop, 25, "popular")
    _order(shop, "n1", 25, day2, "A")
    _view(shop, 60, dt.datetime.combine(day2, dt.time(10)), "C")
    shop.execute("INSERT INTO marts.contact_cards VALUES (70)")
    stats = build_recommendations(shop, s, day2)
    assert not stats["model_trained"] and stats["model_trained_on"] == str(DAY)
    assert (stats["ranked_contacts"], stats["carried_contacts"], stats["contacts"]) == (3, 40, 43)

    def day_rows(day):
        return shop.execute("SELECT * FROM recommendations.contact_products WHERE as_of_date = ? "
                            "ORDER BY ALL", [day]).fetchall()

    incremental = day_rows(day2)
    assert "A" not in [r[4] for r in incremental if r[2] == 25 and r[1] == "popular"]
    assert {r[2] for r in incremental} == {*range(1, 41), 50, 60, 70}
    # the same day ranked in full with the same model (no earlier day to carry from)
    shop.execute("DELETE FROM recommendations.list_days WHERE as_of_date = ?", [DAY])
    full = build_recommendations(shop, s, day2)
    assert (full["ranked_contacts"], full["carried_contacts"], full["model_trained"]) == (43, 0, False)
    assert day_rows(day2) == incremental
    # nothing changed: every list carried, the same
    quiet = build_recommendations(shop, s, day3)
    assert (quiet["ranked_contacts"], quiet["carried_contacts"]) == (0, 43)
    assert [r[1:] for r in day_rows(day3)] == [r[1:] for r in incremental]
    # a card that goes (an erasure) leaves every later day's lists
    shop.execute("DELETE FROM marts.contact_cards WHERE customer_id = 25")
    build_recommendations(shop, s, day3)
    assert 25 not in {r[2] for r in day_rows(day3)}
    assert list_problems(shop, s) == {k: 0 for k in list_problems(shop, s)}


def test_the_model_is_trained_again_when_due_or_when_the_settings_change(shop):
    s = _settings(retrain_every_days=3)
    assert build_recommendations(shop, s, DAY)["model_trained"]
    assert not build_recommendations(shop, s, DAY + dt.timedelta(days=2))["model_trained"]
    assert build_recommendations(shop, s, DAY + dt.timedelta(days=3))["model_trained"]
    assert build_recommendations(shop, _settings(retrain_every_days=3, top_n=4),
                                 DAY + dt.timedelta(days=4))["model_trained"]
    # the days kept name their models; older unnamed models go
    kept = {r[0] for r in shop.execute("SELECT DISTINCT trained_on FROM recommendations.models").fetchall()}
    named = {r[0] for r in shop.execute("SELECT DISTINCT trained_on FROM recommendations.list_days").fetchall()}
    assert kept == named


def test_the_product_ids_core_events_stored_give_the_lists_the_properties_give(shop):
    from tessera.engine.warehouse import sql_literal
    from tessera.identity.linkage import product_id_sql

    settings = _settings()
    lists = "SELECT kind, customer_id, rank, product_id, score FROM recommendations.contact_products ORDER BY ALL"
    unknown = "SELECT origin, product_id, occurrences FROM recommendations.unknown_products ORDER BY ALL"
    build_recommendations(shop, settings, DAY)
    read, read_unknown = shop.execute(lists).fetchall(), shop.execute(unknown).fetchall()
    # the column as the events' build stores it: every view names its product
    shop.execute("ALTER TABLE core.events ADD COLUMN product_id VARCHAR")
    shop.execute(f"UPDATE core.events SET product_id = "
                 f"{product_id_sql('properties', sql_literal(settings.product_url_pattern))}")
    assert shop.execute("SELECT count(*) - count(product_id) FROM core.events").fetchone()[0] == 0
    build_recommendations(shop, settings, DAY)
    assert shop.execute(lists).fetchall() == read
    assert shop.execute(unknown).fetchall() == read_unknown == [
        ("order_line", "NOT_IN_CATALOGUE", 1), ("view", "GHOST", 1)]
    # the stored id is what is read (the properties are not read again) ...
    shop.execute("UPDATE core.events SET product_id = 'X' WHERE product_id = 'GHOST'")
    build_recommendations(shop, settings, DAY)
    assert shop.execute(unknown).fetchall() == [("order_line", "NOT_IN_CATALOGUE", 1)]
    # ... unless none is stored at all (a table or a recorded day from before the column)
    shop.execute("UPDATE core.events SET product_id = NULL")
    build_recommendations(shop, settings, DAY)
    assert shop.execute(lists).fetchall() == read
    assert shop.execute(unknown).fetchall() == read_unknown
