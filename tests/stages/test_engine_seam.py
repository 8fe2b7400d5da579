"""The engine seam: DuckDB's implementation of the Engine primitives, and the portability
check over every step a real daily run hands to the engine."""

from __future__ import annotations

import duckdb
import pytest

from tessera.engine import DuckDBEngine, SqlStep, recording
from tessera.engine.portability import check, report


def test_portability_check_passes_what_sqlglot_translates():
    v = check(SqlStep("t.ok", "SELECT a, count(*) FROM t GROUP BY ALL "
                              "QUALIFY row_number() OVER (PARTITION BY a ORDER BY a) = 1"))
    assert v.passes, v.problems
    assert "ROW_NUMBER()" in v.spark_sql and "QUALIFY" not in v.spark_sql


def test_portability_check_fails_on_a_function_spark_lacks():
    v = check(SqlStep("t.bad", "SELECT damerau_levenshtein(a, b) FROM t"))
    assert not v.passes
    assert "damerau_levenshtein() has no Spark equivalent" in v.problems[0]


def test_portability_check_accepts_what_the_dialect_maps():
    v = check(SqlStep("t.mapped", "SELECT strip_accents(name) FROM t"))
    assert v.passes and v.mapped == ["strip_accents"]


def test_replace_partition_is_rerunnable_and_together_is_all_or_nothing():
    eng = DuckDBEngine(duckdb.connect())
    eng.run(SqlStep("ddl", "CREATE TABLE t (d INTEGER, v INTEGER)"),
            SqlStep("ddl2", "CREATE TABLE u (v INTEGER)"))
    rows = SqlStep("rows", "SELECT $d, range FROM range(3)")
    assert eng.replace_partition("t", {"d": 1}, rows.bind(d=1)) == 3
    assert eng.replace_partition("t", {"d": 1}, rows.bind(d=1)) == 3
    assert eng.replace_partition("t", {"d": 2}, rows.bind(d=2)) == 3
    assert eng.scalar(SqlStep("n", "SELECT count(*) FROM t")) == 6
    with pytest.raises(duckdb.Error):
        with eng.together():
            eng.replace_table("u", SqlStep("u", "SELECT 1 AS v"))
            eng.replace_partition("t", {"d": 1}, SqlStep("bad", "SELECT 1, no_such_column"))
    assert eng.scalar(SqlStep("n", "SELECT count(*) FROM t")) == 6
    assert eng.scalar(SqlStep("n", "SELECT count(*) FROM u")) == 0


def test_every_step_of_a_daily_run_transpiles_to_spark(demo_env):
    with recording() as log:
        result = demo_env.run_daily()
    assert result.success
    verdicts, text = report(list(log.values()))
    print(text)
    assert len(verdicts) >= 2, "the run handed no steps to the engine"
    assert all(v.passes for v in verdicts), text
