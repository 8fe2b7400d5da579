"""The page reads the published snapshot only: every table its reads name must be one the
daily job publishes, or the page would silently show an empty tab."""

from __future__ import annotations

import re
from pathlib import Path

import tessera.web.queries as queries
from tessera.card.search import SEARCH_TABLE
from tessera.web.snapshot import READ_SCHEMAS, READ_TABLES, SOFT_DELETED, snapshot_root

SCHEMAS = ("core", "marts", "marketing", "ops", "staging", "predictions", "recommendations")


def test_every_table_the_page_reads_is_published():
    text = Path(queries.__file__).read_text(encoding="utf-8")
    named = set(re.findall(rf"\b((?:{'|'.join(SCHEMAS)})\.[a-z_]+)\b", text))
    named = {t for t in named if t.split(".")[0] not in READ_SCHEMAS}
    # ops.bulk_edits is read only on a warehouse with no snapshot (published as its outcome)
    missing = named - set(READ_TABLES) - {SOFT_DELETED, "ops.bulk_edits", SEARCH_TABLE}
    assert missing == set()
    assert SEARCH_TABLE in READ_TABLES


def test_the_snapshot_lives_beside_its_warehouse():
    assert snapshot_root("/data/a/warehouse.duckdb") == Path("/data/a/warehouse.web")


def test_day_kept_tables_publish_their_latest_day_and_no_sql_views(tmp_path):
    """The lists keep a week of days and the page shows a person's latest: only the
    latest day is copied (a week's copy grew the snapshot sevenfold), and the SQL views
    over the lists (another select of the same rows) are not copied at all."""
    import duckdb
    import pyarrow.parquet as pq

    from tessera.engine import as_engine
    from tessera.web.snapshot import publish

    wh = tmp_path / "warehouse.duckdb"
    con = duckdb.connect(str(wh))
    con.execute("CREATE SCHEMA recommendations; CREATE SCHEMA predictions")
    con.execute("""CREATE TABLE recommendations.contact_products AS
        SELECT * FROM (VALUES (DATE '2026-11-01', 'combined', 2, 1, 'p1', 1.0),
                              (DATE '2026-11-02', 'combined', 2, 1, 'p2', 1.0),
                              (DATE '2026-11-02', 'combined', 1, 1, 'p3', 1.0))
        AS t(as_of_date, kind, customer_id, rank, product_id, score)""")
    con.execute("""CREATE VIEW recommendations.combined AS SELECT * FROM recommendations.contact_products
        WHERE as_of_date = (SELECT max(as_of_date) FROM recommendations.contact_products)""")
    con.execute("""CREATE TABLE recommendations.evaluation AS
        SELECT * FROM (VALUES (DATE '2026-11-01', 0.5), (DATE '2026-11-02', 0.6)) AS t(as_of_date, ndcg)""")
    con.execute("""CREATE TABLE predictions.customer_predictions AS
        SELECT * FROM (VALUES (DATE '2026-11-01', 1, 1), (DATE '2026-11-02', 1, 2)) AS t(as_of_date, customer_id, p)""")
    con.execute("""CREATE TABLE recommendations.model_pairs AS
        SELECT * FROM (VALUES (DATE '2026-11-01', 'bought_together', 'p1', 'p2', 1.0)) AS t(trained_on, kind, a, b, score)""")
    out = publish(as_engine(con), wh)
    con.close()
    folder = Path(out["folder"])
    # the stored model is not the page's
    assert not (folder / "recommendations.model_pairs.parquet").exists()
    lists = pq.read_table(folder / "recommendations.contact_products.parquet").to_pylist()
    assert [(r["customer_id"], r["product_id"]) for r in lists] == [(1, "p3"), (2, "p2")]
    assert [r["p"] for r in pq.read_table(folder / "predictions.customer_predictions.parquet").to_pylist()] == [2]
    # not person rows: every day stays (the page picks the latest itself)
    assert pq.read_table(folder / "recommendations.evaluation.parquet").num_rows == 2
    assert not (folder / "recommendations.combined.parquet").exists()


def test_events_are_published_as_a_base_and_the_days_since(tmp_path, monkeypatch):
    """Day 1 copies core.events in full; day 2 links that base and writes only the rows
    the history recorded since (new, relinked) and the keys of the base's rows that went
    away: the page reads exactly the table. An erasure writes the base again."""
    import datetime as dt
    import os

    import duckdb

    from tessera.engine import SqlStep, as_engine, read_snapshot
    from tessera.history.versions import record_day
    from tessera.identity.events_incremental import STATE_DDL
    import tessera.web.snapshot as snapshot
    from tessera.web.snapshot import publish

    monkeypatch.setattr(snapshot, "REBASE_SHARE", 10.0)  # a few rows change most of this table
    wh = tmp_path / "warehouse.duckdb"
    con = duckdb.connect(str(wh))
    engine = as_engine(con)
    con.execute("CREATE SCHEMA core; CREATE SCHEMA ops")
    con.execute(STATE_DDL)
    con.execute("CREATE TABLE ops.erasures (customer_id BIGINT, erased_at TIMESTAMP)")
    con.execute("""CREATE TABLE core.events AS SELECT * FROM (VALUES
        ('e1', 1, 'page_view', TIMESTAMP '2026-11-01 10:00', '{}', 'web', 'email'),
        ('e2', 2, 'page_view', TIMESTAMP '2026-11-01 11:00', '{}', 'web', 'email'),
        ('e3', 2, 'email_open', TIMESTAMP '2026-11-01 12:00', '{}', 'web', 'email'),
        ('e4', NULL, 'page_view', TIMESTAMP '2026-11-01 13:00', '{}', 'web', NULL))
        AS t(event_id, customer_id, event_type, occurred_at, properties, source, linked_by)""")

    def day(d: int, built: str, recorded: str) -> None:
        con.execute("INSERT INTO ops.events_state VALUES (CAST(? AS TIMESTAMP), 'd', NULL, 'incremental', NULL, 0)",
                    [built])
        record_day(engine, dt.date(2026, 11, d), f"run-{d}", dt.datetime.fromisoformat(recorded))

    def page_rows(folder) -> list:
        with read_snapshot(folder) as snap:
            return sorted(snap.rows(SqlStep("t", "SELECT * FROM core.events")), key=repr)

    def table_rows() -> list:
        return sorted(con.execute("SELECT * FROM core.events").fetchall(), key=repr)

    day(1, "2026-11-01 06:00", "2026-11-01 06:05")
    first = Path(publish(engine, wh)["folder"])
    assert not (first / "core.events.delta.parquet").exists()
    # day 2: two new events, e1 relinked to 3, e2 gone
    con.execute("""INSERT INTO core.events VALUES
        ('e5', 1, 'page_view', TIMESTAMP '2026-11-02 10:00', '{}', 'web', 'email'),
        ('e6', 3, 'page_view', TIMESTAMP '2026-11-02 11:00', '{}', 'web', 'email')""")
    con.execute("UPDATE core.events SET customer_id = 3 WHERE event_id = 'e1'")
    con.execute("DELETE FROM core.events WHERE event_id = 'e2'")
    day(2, "2026-11-02 06:00", "2026-11-02 06:05")
    second = Path(publish(engine, wh)["folder"])
    assert (second / "core.events.delta.parquet").exists()
    assert os.stat(second / "core.events.parquet").st_ino == os.stat(first / "core.events.parquet").st_ino
    assert page_rows(second) == table_rows()
    with read_snapshot(second) as snap:   # a card's look-up
        assert snap.rows(SqlStep("t", "SELECT event_id FROM core.events WHERE customer_id = 3 "
                                      "ORDER BY event_id")) == [("e1",), ("e6",)]
    # day 3 on the same base: e5 goes again; still the table
    con.execute("DELETE FROM core.events WHERE event_id = 'e5'")
    day(3, "2026-11-03 06:00", "2026-11-03 06:05")
    third = Path(publish(engine, wh)["folder"])
    assert (third / "core.events.delta.parquet").exists() and page_rows(third) == table_rows()
    # an erasure: the base is written again, without the person
    con.execute("DELETE FROM core.events WHERE customer_id = 2")
    con.execute("INSERT INTO ops.erasures VALUES (2, now())")
    day(4, "2026-11-04 06:00", "2026-11-04 06:05")
    fourth = Path(publish(engine, wh)["folder"])
    assert not (fourth / "core.events.delta.parquet").exists() and page_rows(fourth) == table_rows()
    # core.events built after the day was recorded: in full
    con.execute("INSERT INTO core.events VALUES ('e7', 1, 'page_view', TIMESTAMP '2026-11-05 10:00', '{}', 'web', 'email')")
    day(5, "2026-11-05 07:00", "2026-11-05 06:05")
    fifth = Path(publish(engine, wh)["folder"])
    assert not (fifth / "core.events.delta.parquet").exists() and page_rows(fifth) == table_rows()
    con.close()
