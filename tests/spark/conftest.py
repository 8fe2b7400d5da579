"""The Spark lane: one local Spark session for the whole test session, and the DuckDB
warehouse of one real daily run copied into a Spark warehouse, for the parity tests.

Skipped, with the reason, where PySpark (the ``spark`` extra) or Java is missing."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tessera.engine import SqlStep

# every table a parity test's stages read or write, copied from DuckDB into Spark
PARITY_TABLES = [
    "staging.contacts", "staging.bounces", "staging.orders", "staging.events", "core.customer_sources", "core.consents", "core.orders",
    "core.events", "core.customers", "core.customer_field_lineage", "core.merge_log",
    "marts.contact_cards", "marketing.rfm_scores", "marketing.scores", "marketing.score_actions",
    "marketing.stages", "marketing.stage_history", "marketing.funnel_daily", "marketing.stage_runs",
    "marketing.segment_members", "marketing.segment_history",
    "marketing.segment_overrides", "marketing.static_segment_base", "ops.segment_runs",
    "core.refused_merges", "ops.sequences",
    # the card's inputs (annotations, bulk edits, the person's company) and the B2B stage's
    "staging.notes", "staging.tasks", "core.notes", "core.tasks", "ops.bulk_edits",
    "staging.companies", "staging.company_users",
    "core.company_sources", "core.companies", "core.company_field_lineage",
    "core.company_contacts", "marts.coworkers",
    # recommendations' inputs
    "staging.order_lines", "staging.products",
    # predictions' tables (the daily run's day, replaced by the test's)
    "predictions.customer_predictions", "predictions.accuracy", "predictions.model_parameters",
    # feeds' inputs (the suppression ledger, erasures, deliveries) and potential companies
    "ops.suppressions", "ops.erasures", "exports.feed_deliveries", "exports.feed_erasure_notices",
    "staging.potential_companies", "core.potential_companies", "recommendations.contact_products",
]


@pytest.fixture(scope="session")
def spark():
    pytest.importorskip("pyspark", reason="PySpark is not installed (pip install -e '.[spark]')")
    if not (shutil.which("java") or os.environ.get("JAVA_HOME")):
        pytest.skip("no Java on PATH nor JAVA_HOME: the Spark lane needs Java 17")
    from tessera.engine.spark_engine import spark_session

    session = spark_session("local[2]", app_name="tessera-tests", conf={
        "spark.sql.shuffle.partitions": "2", "spark.ui.enabled": "false",
        "spark.default.parallelism": "2", "spark.driver.memory": "1g"})
    session.sparkContext.setLogLevel("WARN")
    yield session
    session.stop()


@pytest.fixture()
def spark_engine(spark, tmp_path):
    from tessera.engine.spark_engine import SparkEngine

    engine = SparkEngine(spark, tmp_path / "spark_wh", hmac_key="tests-only-suppression-key")
    yield engine
    engine.close()


def raw_tables(duck_con) -> list[str]:
    """Every ``raw.*`` table of the run: staging's inputs, published to Spark as Parquet as
    the daily job's hand-over publishes them."""
    return [f"raw.{t}" for (t,) in duck_con.execute(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'raw' ORDER BY 1").fetchall()]


def copy_tables(duck_con, engine, tables: list[str]) -> None:
    """DuckDB tables (or views) into the Spark engine, as tables of the same rows: Parquet
    written by pyarrow (``load_arrow``, as the daily job's hand-over does), no Spark job
    per table."""
    from tessera.engine.warehouse import table_exists

    with engine.together():  # one catalog write for them all
        for name in tables:
            schema, table = name.split(".")
            if table_exists(duck_con, schema, table):
                engine.load_arrow(name, duck_con.execute(f"SELECT * FROM {name}").to_arrow_table())


@pytest.fixture(scope="session")
def duck_daily(tmp_path_factory):
    """One all-DuckDB daily run of the generated sample for the whole lane (the parity
    tests start from it, the Spark daily run is compared with it)."""
    from tessera.sampledata.generator import generate
    from tests.conftest import AS_OF, PipelineEnv

    env = PipelineEnv(tmp_path_factory.mktemp("tessera"))
    generate(env.landing, contacts=150, seed=7, as_of=AS_OF)
    assert env.run_daily().success, "the daily job failed on the generated sample"
    return env


@pytest.fixture(scope="session")
def parity_seed(duck_daily, spark, tmp_path_factory):
    """The DuckDB warehouse after the daily run (a file to copy per test) and the same
    tables in a Spark warehouse directory (a directory to copy per test)."""
    from tessera.engine.spark_engine import SparkEngine

    root = tmp_path_factory.mktemp("parity")
    duck = root / "duck.duckdb"
    shutil.copyfile(duck_daily.warehouse, duck)
    con = duck_daily.connect()
    try:
        engine = SparkEngine(spark, root / "spark")
        copy_tables(con, engine, raw_tables(con) + PARITY_TABLES)
        engine.close()
    finally:
        con.close()
    return duck, root / "spark"


def canonical(rows) -> list[tuple]:
    """Rows compared as values: floats to 9 places, lists as tuples, any order."""
    def value(v):
        if isinstance(v, float):
            return round(v, 9)
        if isinstance(v, (list, tuple)):
            return tuple(value(x) for x in v)
        return v
    return sorted((tuple(value(v) for v in r) for r in rows), key=repr)


def table_rows(engine, table: str, exclude: tuple[str, ...] = ()) -> tuple[list[str], list[tuple]]:
    schema, name = table.split(".")
    cols = [c for (c,) in engine.rows(SqlStep("cols", "SELECT column_name FROM information_schema.columns "
                                              "WHERE table_schema = $s AND table_name = $t "
                                              "ORDER BY ordinal_position", {"s": schema, "t": name}))
            if c not in exclude]
    rows = engine.rows(SqlStep("rows", f"SELECT {', '.join(chr(34) + c + chr(34) for c in cols)} FROM {table}"))
    return cols, canonical(rows)


def differences(duck_engine, spark_engine, tables: dict[str, tuple[str, ...]]) -> dict[str, str]:
    """Per table whose rows differ between the engines, what differs (empty: parity)."""
    out = {}
    for table, exclude in tables.items():
        dc, dr = table_rows(duck_engine, table, exclude)
        sc, sr = table_rows(spark_engine, table, exclude)
        if dc != sc:
            out[table] = f"columns differ: {dc} vs {sc}"
        elif dr != sr:
            only_d = [r for r in dr if r not in set(sr)]
            only_s = [r for r in sr if r not in set(dr)]
            # the columns that differ, for rows with the same first column (an id)
            by_id = {r[0]: r for r in only_s}
            cols = sorted({f"{c}: {a!r} vs {b!r}" for r in only_d if r[0] in by_id
                           for c, a, b in zip(dc, r, by_id[r[0]]) if a != b})[:5]
            out[table] = (f"{len(dr)} vs {len(sr)} rows, {len(only_d)} only on DuckDB, "
                          f"{len(only_s)} only on Spark; e.g. {cols or only_d[:2]}")
    return out
