"""Batch-level expectations with great-expectations 1.x, kept for analysts.

Contract checks at ingestion judge one record at a time. These judge the batch of
every staging table: did the number of rows collapse compared with the previous load,
are the keys null or duplicated, how many records lack an e-mail or a product. They run
inside Dagster asset checks (dagster-ge's op factories are broken with current GX,
STYLE.md rule 12), and the blocking ones stop identity resolution and everything after
it. The thresholds are per entity, in ``tessera.yaml`` (``expectations:``), with
defaults (``tessera.settings.EntityExpectations``).

Results go to ``ops.expectation_results``: expectation, column, success, counts and
percentages. The result format asks GX for no unexpected values at all
(``partial_unexpected_count: 0``, no unexpected rows or index queries), and only numeric
fields are copied out of the result: an unexpected value is personal data.

GX analytics are switched off before GX is imported (``GX_ANALYTICS_ENABLED=False``);
the data context is ephemeral, so nothing is written to disk and nothing leaves the
machine.

GX runs on its SQL execution engine, in the warehouse: its metrics are aggregate
queries over the staging table (through SQLAlchemy and duckdb-engine on a cursor of the
run's own connection), so no row leaves DuckDB. Until 2026-12-07 the columns were
fetched into a pandas frame: at the reference scale the 50.8 M keys of
``staging.events`` took 46.8 s and 9.7 GB, the daily run's memory peak. One difference
from the pandas engine: a compound key with a NULL part is not counted as a repeat (SQL
compares NULLs as unknown); a NULL ``source_record_id`` fails the not-null expectation,
which blocks the run, either way.
"""

from __future__ import annotations

import datetime as dt
import math
import os
from dataclasses import dataclass

import duckdb
# imported with the module, before great_expectations: imported later (inside validate),
# the interpreter's exit listed DuckDB's type constants as leaked nanobind instances
# (module teardown order; cosmetic, but it reads like a crash)
import duckdb_engine

from tessera.settings import EntityExpectations
from tessera.engine.warehouse import transaction

RESULT_FORMAT = {"result_format": "BASIC", "partial_unexpected_count": 0,
                 "include_unexpected_rows": False, "return_unexpected_index_query": False}
ROW_COUNT = "expect_table_row_count_to_be_between"


@dataclass(frozen=True)
class ExpectationOutcome:
    expectation: str
    column: str | None
    blocking: bool
    success: bool
    element_count: int | None
    unexpected_count: int | None
    unexpected_percent: float | None
    observed_value: float | None
    expected: str


@dataclass(frozen=True)
class Expectation:
    kind: str                # the GX class name
    kwargs: dict
    blocking: bool
    expected: str


def entity_expectations(entity: str, settings: EntityExpectations,
                        previous_rows: int | None) -> list[Expectation]:
    """The suite of one staging table; the row-count floor follows the previous load.

    Without a previous non-empty load there is nothing to compare with: the floor is 0
    (a source whose first file has not arrived yet must not block the run).
    """
    ratio = settings.row_count_min_ratio
    floor = math.ceil(previous_rows * ratio) if previous_rows else 0
    out = [
        Expectation("ExpectTableRowCountToBeBetween", {"min_value": floor}, settings.row_count_blocking,
                    f">= {floor}" + (f" ({ratio:.0%} of the previous {previous_rows})"
                                     if previous_rows else "")),
        Expectation("ExpectColumnValuesToNotBeNull", {"column": "source_record_id"}, True, "no nulls"),
        Expectation("ExpectCompoundColumnsToBeUnique", {"column_list": ["source", "source_record_id"]},
                    True, "unique"),
    ]
    for column, rate in settings.null_rates_of(entity).items():
        mostly = round(1 - rate.max_share, 6)
        out.append(Expectation("ExpectColumnValuesToNotBeNull", {"column": column, "mostly": mostly},
                               rate.blocking, f"mostly {mostly:g}"))
    return out


def contact_expectations(previous_rows: int | None) -> list[Expectation]:
    """The default suite of ``staging.contacts``."""
    return entity_expectations("contact", EntityExpectations(), previous_rows)


def previous_row_count(con: duckdb.DuckDBPyConnection, table: str, batch_id: str) -> int | None:
    row = con.execute(
        "SELECT observed_value FROM ops.expectation_results WHERE table_name = ? AND expectation = ? "
        "AND batch_id <> ? AND observed_value IS NOT NULL ORDER BY validated_at DESC LIMIT 1",
        [table, ROW_COUNT, batch_id]).fetchone()
    return int(row[0]) if row else None


def _block_spark_connect() -> None:
    """Keep great_expectations from importing pyspark's Spark Connect client.

    great_expectations imports ``pyspark.sql.connect`` when pyspark is installed (the
    Spark lane installs it). Without its grpc dependencies, that module takes an
    interpreter started with ``python -c`` (pytest-xdist workers, one-line scripts) for a
    doctest run and calls ``sys.exit(0)`` on import: the step ends with no error at all.
    Tessera's Spark engine is classic Spark, not Connect, so the client is blocked unless
    something imported it already: the import then fails with ImportError, which
    great_expectations expects.
    """
    import sys

    sys.modules.setdefault("pyspark.sql.connect", None)  # type: ignore[arg-type]


def _gx():
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
    _block_spark_connect()
    import great_expectations as gx
    import great_expectations.expectations as gxe

    return gx, gxe


def _autocommit_wrapper():
    """duckdb-engine's DBAPI wrapper, in autocommit: SQLAlchemy ends each of GX's
    connections with a ROLLBACK, which on a DuckDB cursor drops the result GX has not
    fetched yet (GX reads it after giving the connection back), and GX's queries only
    read."""
    class AutocommitWrapper(duckdb_engine.ConnectionWrapper):
        def begin(self) -> None:
            """No transaction: each of GX's reads runs on its own (autocommit)."""

        def commit(self) -> None:
            """Nothing to commit: GX only reads."""

        def rollback(self) -> None:
            """Nothing to undo; a real ROLLBACK would drop GX's unread result."""

    return AutocommitWrapper


def validate(con: duckdb.DuckDBPyConnection, select: str,
             expectations: list[Expectation]) -> list[ExpectationOutcome]:
    """Run the expectations on ``select`` (a query over committed tables) with an
    ephemeral GX context and GX's SQL engine, on cursors of ``con``."""
    gx, gxe = _gx()
    context = gx.get_context(mode="ephemeral")
    try:
        from great_expectations.data_context.types.base import ProgressBarsConfig

        context.variables.progress_bars = ProgressBarsConfig(globally=False)
    except Exception:  # pragma: no cover
        pass  # progress bars are cosmetic: an older/newer GX without this setting still validates
    wrapper = _autocommit_wrapper()
    # the URL only names the dialect: every connection is a cursor of the run's database
    source = context.data_sources.add_sql(
        "tessera", connection_string="duckdb:///:memory:",
        kwargs={"creator": lambda: wrapper(con.cursor()), "query_cache_size": 0})
    asset = source.add_query_asset("batch", query=select)
    batch = asset.add_batch_definition_whole_table("whole").get_batch()
    suite = gx.ExpectationSuite(name="tessera_batch", expectations=[
        getattr(gxe, e.kind)(**e.kwargs) for e in expectations])
    try:
        result = batch.validate(suite, result_format=RESULT_FORMAT)
    finally:
        # the pool holds cursors of the run's connection: closed now, not at exit
        source.get_execution_engine().engine.dispose()
    by_config = {}
    for r in result.results:
        d = r.to_json_dict()
        kwargs = d["expectation_config"]["kwargs"]
        key = (d["expectation_config"]["type"], kwargs.get("column") or ",".join(kwargs.get("column_list") or []))
        by_config[key] = d
    out = []
    for e in expectations:
        gx_type = getattr(gxe, e.kind)(**e.kwargs).expectation_type
        column = e.kwargs.get("column") or ",".join(e.kwargs.get("column_list") or []) or None
        d = by_config[(gx_type, column or "")]
        res = d.get("result") or {}
        observed = res.get("observed_value")
        out.append(ExpectationOutcome(
            expectation=gx_type, column=column, blocking=e.blocking, success=bool(d["success"]),
            element_count=_int(res.get("element_count")),
            unexpected_count=_int(res.get("unexpected_count")),
            unexpected_percent=_float(res.get("unexpected_percent")),
            observed_value=_float(observed) if isinstance(observed, (int, float)) else None,
            expected=e.expected))
    return out


def _int(v):
    return int(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def _float(v):
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def check_staged_contacts(con: duckdb.DuckDBPyConnection, batch_id: str,
                          now: dt.datetime | None = None,
                          settings: EntityExpectations | None = None) -> list[ExpectationOutcome]:
    """Validate ``staging.contacts`` and record the outcome (re-runnable per batch)."""
    return check_staged(con, "contact", "contacts", batch_id, now, settings)


def check_staged(con: duckdb.DuckDBPyConnection, entity: str, table_name: str, batch_id: str,
                 now: dt.datetime | None = None,
                 settings: EntityExpectations | None = None,
                 written: str | None = None) -> list[ExpectationOutcome]:
    """Validate ``staging.<table_name>`` and record the outcome (re-runnable per batch).

    Only the columns the suite reads are selected; a column the table lacks (an entity
    whose sources map no such field) reads as all empty. ``written``: a select of the
    keys this run wrote (:mod:`tessera.ingest.check_scope`); the batch is then those
    rows (null keys, repeats among them, null rates), the row count the whole table's.
    """
    now = now or dt.datetime.now().replace(microsecond=0)
    settings = settings or EntityExpectations()
    table = f"staging.{table_name}"
    expectations = entity_expectations(entity, settings, previous_row_count(con, table, batch_id))
    have = {r[0] for r in con.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_schema = 'staging' "
        "AND table_name = ?", [table_name]).fetchall()}
    wanted = ["source", "source_record_id"] + [
        c for c in settings.null_rates_of(entity) if c not in ("source", "source_record_id")]
    select = ", ".join(f'"{c}"' if c in have else f'CAST(NULL AS VARCHAR) AS "{c}"' for c in wanted)
    if written is None:
        outcomes = validate(con, f"SELECT {select} FROM {table}", expectations)
    else:
        # GX reads through cursors of the connection (other connections): the batch is a
        # committed table for the check's life, not a temporary one
        batch = f"ops._batch_{table_name}"
        con.execute(f"""CREATE OR REPLACE TABLE {batch} AS SELECT {select} FROM {table} t
            WHERE EXISTS (SELECT 1 FROM ({written}) k
                          WHERE k.source = t.source AND k.source_record_id = t.source_record_id)""")
        try:
            counted = [e for e in expectations if e.kind == "ExpectTableRowCountToBeBetween"]
            rest = [e for e in expectations if e not in counted]
            by_kind = dict(zip(map(id, counted), validate(con, f"SELECT 1 AS one FROM {table}", counted)))
            by_kind.update(zip(map(id, rest), validate(con, f"SELECT * FROM {batch}", rest)))
            outcomes = [by_kind[id(e)] for e in expectations]
        finally:
            con.execute(f"DROP TABLE IF EXISTS {batch}")
    with transaction(con):
        con.execute("DELETE FROM ops.expectation_results WHERE batch_id = ? AND table_name = ?",
                    [batch_id, table])
        for o in outcomes:
            con.execute(
                "INSERT INTO ops.expectation_results VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [batch_id, table, o.expectation, o.column, o.blocking, o.success, o.element_count,
                 o.unexpected_count, o.unexpected_percent, o.observed_value, o.expected, now])
    return outcomes
