"""The hand-over around a stage run on Spark: DuckDB's tables in (only what changed),
the stage's replaced tables back out (keeping DuckDB's definitions), nothing back from a
stage that fails."""

from __future__ import annotations

import duckdb
import pytest

from tessera.engine import SqlStep

pytestmark = pytest.mark.spark


@pytest.fixture()
def duck(tmp_path):
    con = duckdb.connect(str(tmp_path / "wh.duckdb"))
    con.execute("CREATE SCHEMA core; CREATE SCHEMA marketing; CREATE SCHEMA scratch")
    con.execute("CREATE TABLE core.people (id BIGINT PRIMARY KEY, name VARCHAR, tags VARCHAR[], "
                "seen TIMESTAMP, spent DECIMAL(18,2), h UBIGINT)")
    con.execute("INSERT INTO core.people VALUES (1, 'Ada', ['a'], TIMESTAMP '2026-01-02 03:04:05', "
                "12.50, 18446744073709551615), (2, NULL, NULL, NULL, NULL, NULL)")
    con.execute("CREATE TABLE scratch.files (f VARCHAR)")  # not a handed-over schema
    yield con
    con.close()


def test_a_stage_on_spark_hands_its_tables_back(duck, spark_engine):
    from tessera.engine.handover import Handover, on_spark

    with on_spark(duck, spark_engine) as engine:
        engine.run(SqlStep("ddl", "CREATE TABLE IF NOT EXISTS marketing.top (id BIGINT PRIMARY KEY, "
                                  "name VARCHAR NOT NULL)"),
                   SqlStep("fill", "INSERT INTO marketing.top SELECT id, name FROM core.people "
                                   "WHERE name IS NOT NULL"))
        engine.run(SqlStep("upd", "UPDATE core.people SET spent = spent * 2 WHERE id = 1"))
    assert duck.execute("SELECT * FROM marketing.top").fetchall() == [(1, "Ada")]
    assert duck.execute("SELECT id, tags, CAST(spent AS VARCHAR), h FROM core.people ORDER BY id").fetchall() \
        == [(1, ["a"], "25.00", 18446744073709551615), (2, None, None, None)]
    # the new table was created with the stage's DDL: its key holds on DuckDB
    with pytest.raises(duckdb.ConstraintException):
        duck.execute("INSERT INTO marketing.top VALUES (1, 'again')")
    assert not spark_engine.table_exists("scratch", "files")

    # a second hand-in copies nothing that did not change since
    again = Handover(duck, spark_engine)
    again.hand_in()
    assert again.copied_in == []
    duck.execute("INSERT INTO core.people VALUES (3, 'Bo', [], NULL, 1, 7)")
    again.hand_in()
    assert again.copied_in == ["core.people"]


def test_a_failing_stage_hands_nothing_back(duck, spark_engine):
    from tessera.engine.handover import on_spark

    with pytest.raises(RuntimeError):
        with on_spark(duck, spark_engine) as engine:
            engine.run(SqlStep("del", "DELETE FROM core.people"))
            raise RuntimeError("the stage failed")
    assert duck.execute("SELECT count(*) FROM core.people").fetchone()[0] == 2
