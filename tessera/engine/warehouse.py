"""The DuckDB warehouse: connection settings, layers and the operational tables.

One schema per layer, and an asset key is the table it writes (``["core", "customers"]``
is ``core.customers``). DuckDB allows a single writing process per file, so every
writing asset sits in the ``duckdb`` concurrency pool (size 1) and each write is one
transaction that can be re-run (RELIABILITY.md, rules 3 and 4).
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import duckdb

LAYERS = ("raw", "staging", "core", "marts", "marketing", "segments", "predictions", "recommendations", "exports",
          "history", "ops")

# DuckDB would otherwise download extensions from the internet the first time a
# function needs one; Tessera runs offline, so a missing extension must fail loudly.
OFFLINE_SETTINGS = {
    "autoinstall_known_extensions": False,
    "autoload_known_extensions": False,
}

SQL_DIR = Path(__file__).resolve().parent / "sql"


def connect(path: str | Path, read_only: bool = False, memory_limit: str | None = None,
            threads: int | None = None) -> duckdb.DuckDBPyConnection:
    config: dict = dict(OFFLINE_SETTINGS)
    if memory_limit:
        config["memory_limit"] = memory_limit
    if threads:
        config["threads"] = threads
    if not read_only:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    return duckdb.connect(str(path), read_only=read_only, config=config)


def sql_file(name: str) -> str:
    return (SQL_DIR / name).read_text(encoding="utf-8")


def ensure_warehouse(con: duckdb.DuckDBPyConnection) -> None:
    """Create the layer schemas and the operational tables if they are missing."""
    for layer in LAYERS:
        con.execute(f"CREATE SCHEMA IF NOT EXISTS {layer}")
    con.execute(sql_file("ops_tables.sql"))


def sql_literal(value: str) -> str:
    """A SQL string literal (quotes doubled), for the few places that cannot take a
    parameter: views, DDL, and SQL text assembled from validated configuration."""
    return "'" + value.replace("'", "''") + "'"


@contextmanager
def unordered(con: duckdb.DuckDBPyConnection) -> Iterator[duckdb.DuckDBPyConnection]:
    """Let DuckDB write a statement's rows in any order (``preserve_insertion_order``).

    For statements whose rows carry their own order (a row id, a line): keeping the
    insertion order cost a fifth of checking a 1 M-record file and of storing it.
    The previous setting comes back afterwards, since other statements (landing a
    CSV file, whose row ids are its records' positions) depend on it.
    """
    before = con.execute("SELECT current_setting('preserve_insertion_order')").fetchall()[0][0]
    con.execute("SET preserve_insertion_order = false")
    try:
        yield con
    finally:
        con.execute(f"SET preserve_insertion_order = {'true' if before else 'false'}")


@contextmanager
def transaction(con: duckdb.DuckDBPyConnection) -> Iterator[duckdb.DuckDBPyConnection]:
    """All-or-nothing: a failure anywhere leaves the warehouse as it was.

    The first error is the one raised: a ROLLBACK that fails in turn (the database was
    invalidated by an I/O error) must not replace it, and a failed COMMIT is rolled back
    so that the connection's next statement does not fail with "transaction is aborted"."""
    con.execute("BEGIN TRANSACTION")
    try:
        yield con
    except BaseException:
        _rollback_quietly(con)
        raise
    try:
        con.execute("COMMIT")
    except BaseException:
        _rollback_quietly(con)
        raise


def _rollback_quietly(con: duckdb.DuckDBPyConnection) -> None:
    try:
        con.execute("ROLLBACK")
    except duckdb.Error:
        pass  # the transaction is gone already; the error being raised is the one to see


def table_exists(con: duckdb.DuckDBPyConnection, schema: str, table: str) -> bool:
    return bool(con.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_schema = ? AND table_name = ?",
        [schema, table],
    ).fetchone()[0])


def count(con: duckdb.DuckDBPyConnection, table: str, where: str = "", params=None) -> int:
    sql = f"SELECT count(*) FROM {table}" + (f" WHERE {where}" if where else "")
    return int(con.execute(sql, params or []).fetchone()[0])


def column_schema(con: duckdb.DuckDBPyConnection, schema: str, table: str) -> list[tuple[str, str]]:
    return [tuple(r) for r in con.execute(
        "SELECT column_name, data_type FROM information_schema.columns "
        "WHERE table_schema = ? AND table_name = ? ORDER BY ordinal_position",
        [schema, table],
    ).fetchall()]


class Timer:
    """Wall time of a step, reported in asset metadata."""

    def __init__(self) -> None:
        self.start = time.perf_counter()

    @property
    def seconds(self) -> float:
        return round(time.perf_counter() - self.start, 3)
