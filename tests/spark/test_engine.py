"""The Spark engine's primitives: what the stages rely on from any engine."""

from __future__ import annotations

import datetime as dt

import pytest

from tessera.engine import SqlStep

pytestmark = pytest.mark.spark


def _n(engine, table: str) -> int:
    return engine.scalar(SqlStep("n", f"SELECT count(*) FROM {table}"))


def test_replace_partition_is_rerunnable_and_together_is_all_or_nothing(spark_engine, tmp_path):
    from tessera.engine.spark_engine import SparkEngine

    eng = spark_engine
    eng.run(SqlStep("ddl", "CREATE TABLE IF NOT EXISTS main.t (d INTEGER NOT NULL, v INTEGER)"),
            SqlStep("ddl2", "CREATE TABLE main.u (v INTEGER)"))
    rows = SqlStep("rows", "SELECT $d, v FROM (VALUES (0), (1), (2)) r(v)")
    assert eng.replace_partition("main.t", {"d": 1}, rows.bind(d=1)) == 3
    assert eng.replace_partition("main.t", {"d": 1}, rows.bind(d=1)) == 3
    assert eng.replace_partition("main.t", {"d": 2}, rows.bind(d=2)) == 3
    assert _n(eng, "main.t") == 6
    with pytest.raises(Exception):
        with eng.together():
            eng.replace_table("main.u", SqlStep("u", "SELECT 1 AS v"))
            assert _n(eng, "main.u") == 1  # a block reads its own writes
            eng.replace_partition("main.t", {"d": 1}, SqlStep("bad", "SELECT 1, no_such_column"))
    assert (_n(eng, "main.t"), _n(eng, "main.u")) == (6, 0)
    # the catalog on disk is the committed one: a second engine over the directory agrees
    again = SparkEngine(eng.spark, eng.warehouse)
    assert (_n(again, "main.t"), _n(again, "main.u")) == (6, 0)
    assert again.rows(SqlStep("types", "SELECT data_type FROM information_schema.columns "
                              "WHERE table_name = 't' ORDER BY ordinal_position")) == [("INTEGER",), ("INTEGER",)]


def test_delete_update_insert_and_views_follow_the_new_versions(spark_engine):
    eng = spark_engine
    eng.run(SqlStep("ddl", "CREATE TABLE main.h (seg VARCHAR, id BIGINT, entered DATE, left_on DATE)"))
    eng.append("main.h", SqlStep("rows", "SELECT * FROM (VALUES ('a', 1, DATE '2026-01-01', NULL), "
                                 "('a', 2, DATE '2026-01-02', NULL), ('b', 1, DATE '2026-01-01', NULL)) v"))
    eng.run(SqlStep("view", "CREATE OR REPLACE VIEW main.open_h AS SELECT seg, id FROM main.h "
                    "WHERE left_on IS NULL"))
    day = dt.date(2026, 1, 3)
    eng.run(SqlStep("close", "UPDATE main.h SET left_on = $day WHERE seg = $seg AND id NOT IN "
                    "(SELECT 2)", {"day": day, "seg": "a"}),
            SqlStep("undo", "DELETE FROM main.h WHERE seg = ? AND id = ?", ["b", 1]),
            SqlStep("ins", "INSERT INTO main.h (id, seg) VALUES (9, 'c')"))
    assert eng.rows(SqlStep("all", "SELECT seg, id, left_on FROM main.h ORDER BY seg, id")) == [
        ("a", 1, day), ("a", 2, None), ("c", 9, None)]
    assert eng.rows(SqlStep("view", "SELECT seg, id FROM main.open_h ORDER BY 1, 2")) == [("a", 2), ("c", 9)]
    # UPDATE ... FROM on a temp table (the identity stage's relabelling)
    eng.run(SqlStep("tmp", "CREATE OR REPLACE TEMP TABLE _lab AS SELECT id, id AS cid FROM main.h"),
            SqlStep("upd", "UPDATE _lab SET cid = m.c FROM (SELECT 9 AS i, 1 AS c) m WHERE _lab.cid = m.i"))
    assert eng.rows(SqlStep("lab", "SELECT id, cid FROM _lab ORDER BY id")) == [(1, 1), (2, 2), (9, 1)]
    eng.run(SqlStep("drop", "DROP TABLE IF EXISTS _lab"), SqlStep("dropv", "DROP VIEW main.open_h"))
    assert not eng.table_exists("main", "open_h") and eng.table_exists("main", "h")


def test_parameters_are_values_never_sql(spark_engine):
    eng = spark_engine
    evil = "x' OR '1'='1"
    assert eng.rows(SqlStep("p", "SELECT ?, '?', ?", [evil, 2])) == [(evil, "?", 2)]
    assert eng.scalar(SqlStep("p", "SELECT count(*) FROM (VALUES ('a')) t(x) WHERE x = $v", {"v": evil})) == 0
    assert eng.rows(SqlStep("types", "SELECT $d + 1, $ts, $dec, $lst, $none IS NULL", {
        "d": dt.date(2026, 1, 31), "ts": dt.datetime(2026, 1, 1, 8, 30), "dec": 1.25,
        "lst": ["a", "b"], "none": None})) == [
        (dt.date(2026, 2, 1), dt.datetime(2026, 1, 1, 8, 30), 1.25, ["a", "b"], True)]


def test_mapped_functions_give_duckdbs_values(spark_engine):
    import duckdb

    sql = ("SELECT strip_accents('Lucía Ñúñez'), jaro_winkler_similarity('Łukasz', 'Lukasz'), "
           "try_strptime('1/2/2026', '%d/%m/%Y'), try_strptime('2026-02-01', ['%d/%m/%Y', '%Y-%m-%d']), "
           "try_strptime('junk', '%Y-%m-%d'), strftime(DATE '2026-02-01', '%Y%m%d'), "
           "regexp_full_match('abc', 'a.c'), list_has_any([1, 2], [2, 3]), epoch(TIMESTAMP '2026-01-01 00:00:00')")
    assert spark_engine.rows(SqlStep("fns", sql)) == duckdb.connect().execute(sql).fetchall()


def test_copy_to_writes_one_file_and_vacuum_keeps_the_live_versions(spark_engine, tmp_path):
    import csv

    import pyarrow.parquet as pq

    eng = spark_engine
    eng.replace_table("main.f", SqlStep("f", "SELECT * FROM (VALUES (1, 'a'), (2, 'b')) v(id, name)"))
    eng.replace_table("main.f", SqlStep("f", "SELECT id, name FROM main.f WHERE id = 2"))
    assert eng.copy_to(SqlStep("out", "SELECT * FROM main.f"), tmp_path / "f.csv", "csv") == 1
    assert list(csv.reader((tmp_path / "f.csv").open())) == [["id", "name"], ["2", "b"]]
    assert eng.copy_to(SqlStep("out", "SELECT * FROM main.f"), tmp_path / "f.parquet", "parquet") == 1
    assert pq.read_table(tmp_path / "f.parquet").to_pylist() == [{"id": 2, "name": "b"}]
    assert eng.vacuum() == 1  # the first version of main.f
    assert eng.rows(SqlStep("f", "SELECT * FROM main.f")) == [(2, "b")]


def test_a_fresh_session_opens_a_warehouse_whose_view_precedes_its_table(spark_engine):
    """The next run's process opens the Spark warehouse in a new session that knows none of
    its names: a view listed in the catalog before the table it reads (a table rewritten
    after the view was first made) must still open (the bench's second call found it did not)."""
    import json

    from tessera.engine.spark_engine import SparkEngine

    eng = spark_engine
    eng.run(SqlStep("t", "CREATE TABLE main.base AS SELECT 1 AS v UNION ALL SELECT 2"),
            SqlStep("v", "CREATE VIEW main.over_base AS SELECT sum(v) AS s FROM main.base"))
    path = eng.warehouse / "_tessera_catalog.json"
    catalog = json.loads(path.read_text())
    reordered = {"main.over_base": catalog.pop("main.over_base"), **catalog}
    path.write_text(json.dumps(reordered))
    fresh = SparkEngine(eng.spark.newSession(), eng.warehouse)  # its own temp views: none yet
    assert fresh.scalar(SqlStep("s", "SELECT s FROM main.over_base")) == 3
