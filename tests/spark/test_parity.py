"""Parity: a stage run on Spark gives the same tables, row for row, as on DuckDB.

Both engines start from the warehouse of one real daily run (the generated sample, DuckDB)
- the DuckDB file copied, its tables copied into a Spark warehouse - and run the same
stage function for the same day; every output table is then compared as a multiset of
rows. Columns that hold the wall-clock time of the run are left out."""

from __future__ import annotations

import datetime as dt
import shutil

import pytest

from tessera.engine import SqlStep
from tests.conftest import AS_OF, DEMO_CONFIG
from tests.spark.conftest import differences

pytestmark = pytest.mark.spark

RUN_AT = dt.datetime(2026, 11, 1, 6, 0, 0)


@pytest.fixture(scope="module")
def engines(parity_seed, spark, tmp_path_factory):
    """One pair of warehouses for the whole module (the lane's time is Spark's fixed cost
    per job, not the copy, but one engine per module also registers the catalog's views
    once). The tests share it in file order: each leaves the tables it writes identical
    on both engines (that is what it asserts), so the next one starts from equal inputs;
    ``test_a_changed_mapping_breaks_parity``, which leaves them different, stays last."""
    from tessera.engine import DuckDBEngine
    from tessera.engine.spark_engine import SparkEngine
    from tessera.engine.warehouse import connect

    duck_src, spark_src = parity_seed
    root = tmp_path_factory.mktemp("parity_module")
    shutil.copyfile(duck_src, root / "duck.duckdb")
    shutil.copytree(spark_src, root / "spark")
    con = connect(root / "duck.duckdb")
    spark_engine = SparkEngine(spark, root / "spark", hmac_key="tests-only-suppression-key")
    yield DuckDBEngine(con), spark_engine
    spark_engine.close()
    con.close()


@pytest.fixture(scope="module")
def deployment():
    from tessera.deployment import load_deployment

    return load_deployment(DEMO_CONFIG)


def _on_both(engines, fn, *args):
    return [fn(engine, *args) for engine in engines]


def staging_tables(deployment) -> list[str]:
    """Every staging table the daily job builds for the deployment (``assets/staging.py``:
    each entity with a source, contacts always), in the assets' order (companies before
    their users, which link to them), plus the users' link report."""
    from tessera.vocabulary import ENTITY_TABLES

    tables = [f"staging.{t}" for e, t in ENTITY_TABLES.items() if e == "contact" or deployment.sources_of(e)]
    if deployment.sources_of("company_user"):
        tables.append("ops.unlinked_company_users")
    return tables


def build_staging(engine, deployment) -> dict[str, int | dict]:
    """The daily job's staging on one engine, in full (``incremental: false``, the demo's)."""
    from tessera.companies.registry import link_company_users
    from tessera.ingest.staging import build_contacts, build_entity
    from tessera.vocabulary import ENTITY_TABLES

    out: dict[str, int | dict] = {"contact": build_contacts(engine, deployment)}
    for entity in ENTITY_TABLES:
        if entity != "contact" and deployment.sources_of(entity):
            out[entity] = build_entity(engine, deployment, entity)
            if entity == "company_user":
                out["company_user_links"] = link_company_users(engine, RUN_AT)
    return out


def test_staging(engines, deployment):
    """Staging from the raw tables (published to Spark as Parquet) on both engines: every
    staging table of the daily job, row for row. First in the module: every later stage
    reads these tables, so from here on both engines start from staging each built."""
    duck, spark = _on_both(engines, build_staging, deployment)
    assert duck == spark
    tables = staging_tables(deployment)
    assert len(tables) >= 10 and duck["contact"] > 100
    assert differences(*engines, {t: () for t in tables}) == {}


def test_rfm(engines):
    from tessera.marketing.rfm import build_rfm

    duck, spark = _on_both(engines, build_rfm, AS_OF)
    assert duck == spark and duck["scored"] > 0
    assert differences(*engines, {"marketing.rfm_scores": ()}) == {}


def test_scoring(engines, deployment):
    from tessera.marketing.scoring import build_scores

    duck, spark = _on_both(engines, build_scores, deployment, AS_OF)
    assert duck == spark and duck["scored"] > 0
    assert differences(*engines, {"marketing.scores": (), "marketing.score_actions": ()}) == {}


def test_stages(engines, deployment):
    from tessera.marketing.stages import build_stages

    duck, spark = _on_both(engines, build_stages, deployment, AS_OF)
    assert duck == spark
    assert differences(*engines, {"marketing.stages": (), "marketing.stage_history": (),
                                  "marketing.funnel_daily": (), "marketing.stage_runs": ()}) == {}


def test_segments(engines, deployment):
    from tessera.marketing.segments import build_segment

    assert deployment.segments
    for segment in deployment.segments:
        duck, spark = _on_both(engines, build_segment, deployment, segment, AS_OF)
        assert duck == spark, segment.name
    assert differences(*engines, {
        "marketing.segment_members": (), "marketing.segment_history": (),
        "marketing.static_segment_base": (), "ops.segment_runs": ("built_at",)}) == {}


def test_golden_records(engines, deployment):
    from tessera.identity.golden import build_customers, build_orders

    duck, spark = _on_both(engines, build_customers, deployment, RUN_AT)
    assert duck == spark and duck["customers"] > 0
    duck, spark = _on_both(engines, build_orders, deployment)
    assert duck == spark
    assert differences(*engines, {"core.customers": (), "core.customer_field_lineage": (),
                                  "core.orders": ()}) == {}


def test_identity_resolution(engines, deployment):
    from tessera.identity import model_store
    from tessera.identity.resolve import resolve

    # the daily run stored its probabilistic fit on DuckDB only (refit_every_days): drop it,
    # so that both engines fit the model afresh and the fit itself is compared
    model_store.drop(engines[0])
    duck, spark = _on_both(engines, resolve, RUN_AT, "parity-run", deployment.identity)
    assert duck.get("model_refit") == "no fitted model"
    assert duck == spark
    assert differences(*engines, {"core.customer_sources": (), "core.merge_log": (),
                                  "core.refused_merges": ()}) == {}


def test_events_linkage(engines, deployment):
    from tessera.identity.linkage import build_events, events_linkage

    duck, spark = _on_both(engines, build_events, deployment)
    assert duck == spark
    assert duck["events"] > 0 and duck["anonymous_events"] < duck["events"]
    assert differences(*engines, {"core.events": ()}) == {}
    checked = _on_both(engines, events_linkage, deployment)
    assert checked[0] == checked[1]
    assert (checked[0]["owned_but_unlinked"], checked[0]["linked_elsewhere"],
            checked[0]["not_a_customer"]) == (0, 0, 0)


def test_contact_cards(engines, deployment):
    """The card (soft deletes, annotations, the person's company) on both engines, with a
    delete and a restore of one person stamped in the same microsecond (the delete wins:
    no ``rowid`` decides) and a later restore of another."""
    from tessera.card.annotations import build_annotations
    from tessera.card.marts import build_contact_cards
    from tessera.privacy.bulk import request_bulk_edit

    # the CRM notes and tasks the card counts, linked to their customers (issue 17, fifth
    # increment: on Spark in the daily job too)
    duck, spark = _on_both(engines, build_annotations, deployment)
    assert duck == spark and duck["notes"] > 0
    assert differences(*engines, {"core.notes": (), "core.tasks": ()}) == {}

    ids = [r[0] for r in engines[0].rows(SqlStep("ids", "SELECT customer_id FROM core.customers "
                                                        "ORDER BY customer_id LIMIT 3"))]
    at = dt.datetime(2026, 11, 1, 5, 0, 0, 123456)
    for engine in engines:
        request_bulk_edit(engine, "delete", ids, edit_id="e1", now=at)
        request_bulk_edit(engine, "restore", ids[:1], edit_id="e2", now=at)
        request_bulk_edit(engine, "restore", ids[1:2], edit_id="e3", now=at + dt.timedelta(microseconds=1))
    duck, spark = _on_both(engines, build_contact_cards, True, deployment)
    assert duck == spark and duck["cards"] > 0
    cards = {r[0] for r in engines[1].rows(SqlStep("cards", "SELECT customer_id FROM marts.contact_cards"))}
    assert ids[0] not in cards and ids[2] not in cards and ids[1] in cards
    assert differences(*engines, {"marts.contact_cards": ()}) == {}


def test_order_average_rounds_exact_cents_on_both_engines(engines):
    """Means that sit on a half cent (1.005, -1.005, 2.675) and one that does not (0.00667):
    the same exact, half-away-from-zero cents on both engines, where ``round(avg(amount), 2)``
    gave 1.00 on DuckDB (a DOUBLE mean) and 1.01 on Spark (an exact DECIMAL)."""
    from decimal import Decimal

    from tessera.card.marts import order_summary_sql

    amounts = {1: ["1.00", "1.01"], 2: ["-1.00", "-1.01"], 3: ["2.67", "2.68"], 4: ["0.01", "0.01", "0.00"],
               5: ["1234567.89"]}
    values = ", ".join(f"({cid}, CAST('{a}' AS DECIMAL(18,2)), DATE '2026-11-01')"
                       for cid, xs in amounts.items() for a in xs)
    orders = f"(SELECT * FROM (VALUES {values}) AS t(customer_id, amount, order_date)) AS orders"
    step = SqlStep("order_avg", f"SELECT customer_id, order_avg FROM ({order_summary_sql(orders)}) "
                                "ORDER BY customer_id")
    duck, spark = (engine.rows(step) for engine in engines)
    expected = [(1, Decimal("1.01")), (2, Decimal("-1.01")), (3, Decimal("2.68")), (4, Decimal("0.01")),
                (5, Decimal("1234567.89"))]
    assert [tuple(r) for r in duck] == expected
    assert [tuple(r) for r in spark] == expected


def test_companies(engines, deployment):
    """Golden companies (a name group with two VATs links nothing by name: min = max, not
    count(DISTINCT) OVER) and the people of each company."""
    from tessera.companies.registry import build_company_contacts, resolve_companies

    duck, spark = _on_both(engines, resolve_companies, deployment, RUN_AT)
    assert duck == spark and duck["companies"] > 0
    duck, spark = _on_both(engines, build_company_contacts, deployment)
    assert duck == spark and duck["links"] > 0
    assert differences(*engines, {"core.company_sources": (), "core.companies": (),
                                  "core.company_field_lineage": (), "core.company_contacts": ()}) == {}


def _rounded(value):
    if isinstance(value, float):
        return round(value, 9)
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_rounded(v) for v in value]
    return value


def test_recommendations(engines, deployment):
    """Every list kind (the co-occurrence SQL, buy again, popular, and the ALS fit over the
    same ordered matrix) and the back-test, on both engines."""
    from tessera.recommendations.daily import build_recommendations

    duck, spark = _on_both(engines, build_recommendations, deployment.recommendations, AS_OF)
    # the back-test's means are sums of floats in whatever order each engine adds them
    assert _rounded(duck) == _rounded(spark)
    assert differences(*engines, {"recommendations.contact_products": (),
                                  "recommendations.evaluation": (),
                                  "recommendations.unknown_products": ()}) == {}
    assert engines[1].scalar(SqlStep("n", "SELECT count(*) FROM recommendations.contact_products")) > 0


def test_predictions(engines, deployment):
    """The predictions stage's SQL (the day's purchase days, the features at every cut-off,
    the outcomes of every window, the stored rows) on both engines: the models fitted in
    Python over them then give the same contacts' figures, back-test and parameters."""
    from tessera.predictions.build import build_predictions
    from tessera.predictions.checks import prediction_problems

    duck, spark = _on_both(engines, build_predictions, deployment.predictions, AS_OF)
    for key in ("contacts", "model_version", "by_status", "by_churn_band", "skipped", "chosen",
                "boosting_not_trained", "accuracy", "parameters"):
        assert _rounded(duck[key]) == _rounded(spark[key]), key
    assert duck["by_status"]["scored"] > 0
    assert differences(*engines, {"predictions.customer_predictions": (),
                                  "predictions.accuracy": (),
                                  "predictions.model_parameters": ()}) == {}
    assert prediction_problems(engines[1], AS_OF) == prediction_problems(engines[0], AS_OF)


# the feeds the lane compares: a segment's e-mail audience, a hashed diff audience, every
# contact (no channel), and the predictions-sourced one with its recommendation lists
PARITY_FEEDS = ("newsletter_high_value", "ads_high_value", "bi_contacts", "churn_offers")


def test_feeds(engines, deployment):
    """Each feed's rows of the day (selection with consent, bounces and the suppression
    ledger), its file columns (renamed, identifiers SHA-256 hashed) and its diff against
    the state delivered the day before (added, changed, removed rows), on both engines.
    Each engine keeps the state under its own row digest (DuckDB ``hash``, Spark
    ``xxhash64``), as a warehouse does; the day changes and drops some cards."""
    from tessera.feeds.diff import diff_file_step, diff_step, full_step, stored_rows_step
    from tessera.feeds.publish import _mart_columns
    from tessera.feeds.selection import feed_rows_step
    from tests.spark.conftest import canonical

    feeds = [f for f in deployment.feeds if f.name in PARITY_FEEDS]
    assert len(feeds) == len(PARITY_FEEDS)
    for engine in engines:
        engine.define_keyed_hash("tests-only-suppression-key")
        for feed in feeds:  # the day before: everything delivered but three rows
            engine.replace_table(f"exports.{feed.name}",
                                 stored_rows_step(feed, AS_OF, _mart_columns(engine, feed)))
            engine.run(SqlStep("gone", f"DELETE FROM exports.{feed.name} WHERE customer_id IN "
                               f"(SELECT customer_id FROM exports.{feed.name} "
                               "ORDER BY customer_id LIMIT 3)"))
        engine.run(SqlStep("changed", "UPDATE marts.contact_cards SET city = 'Nowhere', "
                           "first_name = 'Zed' WHERE customer_id IN (SELECT customer_id FROM "
                           "marts.contact_cards ORDER BY customer_id LIMIT 40)"),
                   SqlStep("dropped", "DELETE FROM marts.contact_cards WHERE customer_id IN "
                           "(SELECT customer_id FROM marts.contact_cards "
                           "ORDER BY customer_id DESC LIMIT 40)"))
    kinds = {"added": 0, "changed": 0, "removed": 0}
    for feed in feeds:
        out = []
        for engine in engines:
            day = engine.arrow(feed_rows_step(feed, AS_OF, _mart_columns(engine, feed)))
            engine.register_arrow("_feed_day", day)
            diff = engine.arrow(diff_step(feed, "_feed_day", AS_OF + dt.timedelta(days=1), AS_OF))
            engine.register_arrow("_feed_diff", diff)
            try:
                out.append({"rows": canonical(tuple(r.values()) for r in day.to_pylist()),
                            "file": canonical(engine.rows(full_step(feed, "_feed_day"))),
                            **{k: canonical(engine.rows(diff_file_step(feed, "_feed_diff", k)))
                               for k in kinds}})
            finally:
                engine.unregister("_feed_diff")
                engine.unregister("_feed_day")
        assert out[0] == out[1], feed.name
        assert out[0]["rows"], feed.name
        for k in kinds:
            kinds[k] += len(out[0][k])
    assert all(kinds.values()), kinds


def test_view_cards_coworkers_potential_companies(engines, deployment):
    """A view node's cards (its golden profile over the person's card), the co-workers
    view and the potential companies registry, on both engines."""
    import pyarrow.compute as pc

    from tessera.card.marts import build_view_cards
    from tessera.companies.registry import build_coworkers, build_potential_companies
    from tests.spark.conftest import canonical

    view = engines[0].arrow(SqlStep("v", "SELECT * FROM core.customers WHERE customer_id % 2 = 0"))
    view = view.set_column(view.schema.get_field_index("first_name"), "first_name",
                           pc.utf8_upper(view.column("first_name")))
    for engine in engines:
        engine.run(SqlStep("views", "CREATE SCHEMA IF NOT EXISTS views"))
        engine.register_arrow("_view", view)
        engine.replace_table("views.parity_customers", SqlStep("v", "SELECT * FROM _view"))
        engine.unregister("_view")
    duck, spark = _on_both(engines, build_view_cards, deployment, "parity")
    assert duck == spark and duck["cards"] > 0
    duck, spark = _on_both(engines, build_coworkers)
    assert duck == spark and duck["coworker_pairs"] > 0
    duck, spark = _on_both(engines, build_potential_companies, RUN_AT, deployment)
    assert duck == spark
    assert differences(*engines, {"views.parity_contact_cards": (),
                                  "core.potential_companies": ()}) == {}
    # a view, not a table: compared by its rows
    coworkers = [canonical(e.rows(SqlStep("c", "SELECT * FROM marts.coworkers"))) for e in engines]
    assert coworkers[0] == coworkers[1]
    names = dict(engines[1].rows(SqlStep("n", """
        SELECT v.customer_id, v.first_name IS NOT DISTINCT FROM upper(c.first_name)
        FROM views.parity_contact_cards v JOIN core.customers c ON c.customer_id = v.customer_id""")))
    assert names and all(names.values())


def _sync_to_spark(engines, *tables):
    """What the hand-over does before a stage, for the tables a feed's day reads that the
    DuckDB side wrote (the lane has no hand-over: each engine keeps its own warehouse)."""
    for table in tables:
        engines[1].load_arrow(table, engines[0].arrow(SqlStep("t", f"SELECT * FROM {table}")))


def _published(engines, feed, day, out, now):
    """One feed day published (by DuckDB, the day's rows and diff on ``engines[1]`` when
    given); its files' rows and digests."""
    import hashlib

    from tessera.feeds.publish import build_feed

    stats = build_feed(engines[0], feed, day, out, now, environ={}, compute=engines[1])
    files = {f["kind"]: (f["rows"], hashlib.sha256((out / feed.name / f["file"]).read_bytes()).hexdigest())
             for f in stats["files"]}
    return stats["rows"], files


def test_feed_days_published_from_spark(engines, deployment, tmp_path):
    """The daily job's feed on ``engine: spark``: the day's rows and its diff computed on
    Spark (compared by values), files and records written by DuckDB. Each such day is then
    re-published by DuckDB alone (a re-run of the last delivered day has the same base):
    the same rows, byte-identical files, and the same stored state, digests included (so a
    deployment can switch engines without resending its audience as changed). A full feed
    on one day; a hashed diff feed on the next day after DuckDB delivered its first (two
    Spark days cost the lane a few minutes under load, so the diff feed's first is
    DuckDB's)."""
    from tests.spark.conftest import canonical

    from tessera.feeds.publish import prepare_feed

    duck, spark = engines
    now = dt.datetime(2026, 11, 3, 6, 0, 0)
    state = lambda f: canonical(duck.rows(SqlStep("s", f"SELECT * FROM exports.{f.name}")))  # noqa: E731
    for engine in engines:
        engine.define_keyed_hash("tests-only-suppression-key")
    feeds = {f.name: f for f in deployment.feeds}
    after = AS_OF + dt.timedelta(days=1)
    plan = [("newsletter_high_value", AS_OF), ("ads_high_value", AS_OF), ("ads_high_value", after)]
    for name, day in plan:
        feed = feeds[name]
        if day == after:  # the next day: the same segment, some delivered cards changed, others gone
            sent = [r[0] for r in duck.rows(SqlStep("sent", f"SELECT customer_id FROM exports.{name} "
                                                    "WHERE valid_to IS NULL ORDER BY 1"))]
            assert len(sent) >= 5
            changed, dropped = ", ".join(map(str, sent[-3:])), ", ".join(map(str, sent[:2]))
            for engine in engines:
                engine.run(SqlStep("members", "INSERT INTO marketing.segment_members "
                                   "SELECT CAST(? AS DATE), segment, customer_id FROM "
                                   "marketing.segment_members WHERE as_of_date = ?", [after, AS_OF]),
                           SqlStep("changed", "UPDATE marts.contact_cards SET email = 'x' || email "
                                   f"WHERE customer_id IN ({changed})"),
                           SqlStep("dropped", f"DELETE FROM marts.contact_cards WHERE customer_id IN ({dropped})"))
        prepare_feed(duck, feed, day)
        if (name, day) == ("ads_high_value", AS_OF):  # the base of the next day, by DuckDB
            _published((duck, None), feed, day, tmp_path / "duck", now)
            continue
        _sync_to_spark(engines, f"exports.{feed.name}", "exports.feed_erasure_notices")
        hybrid = _published(engines, feed, day, tmp_path / "spark", now)
        hybrid_state = state(feed)
        alone = _published((duck, None), feed, day, tmp_path / "duck", now)
        assert hybrid == alone, (name, day)
        assert hybrid_state == state(feed), (name, day)
        assert hybrid[0], (name, day)
    # the second day of the diff feed: the changed e-mails and the dropped cards
    assert hybrid[1]["changed"][0] >= 1 and hybrid[1]["removed"][0] >= 1


def test_a_changed_mapping_breaks_parity(engines, deployment, monkeypatch):
    """The lane catches a Spark mapping that means something else: ``epoch`` mapped to a
    reversed clock makes the oldest mobile number win the most-recent rule on Spark."""
    from tessera.engine import dialect
    from tessera.identity.golden import build_customers

    monkeypatch.setitem(dialect.SPARK_EQUIVALENTS, "epoch", "(0 - unix_timestamp({0}))")
    _on_both(engines, build_customers, deployment, RUN_AT)
    diff = differences(*engines, {"core.customers": (), "core.customer_field_lineage": ()})
    assert "core.customer_field_lineage" in diff


def test_a_changed_mapping_breaks_staging_parity(engines, deployment, monkeypatch):
    """The staging comparison catches a Spark mapping that means something else: accents
    not folded (``strip_accents`` mapped to the value itself) changes the name and address
    match keys of the sample's accented Italian and Polish names on Spark only. Last in the
    module, after the lineage's check (it leaves staging.contacts different on the two
    engines); contacts only, to keep the lane short."""
    from tessera.engine import dialect
    from tessera.ingest.staging import build_contacts

    monkeypatch.setitem(dialect.SPARK_EQUIVALENTS, "strip_accents", "{0}")
    duck, spark = _on_both(engines, build_contacts, deployment)
    assert duck == spark  # the same rows: only their keys differ
    diff = differences(*engines, {"staging.contacts": ()})
    assert "staging.contacts" in diff
