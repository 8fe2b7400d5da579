"""The DuckDB warehouse: connection settings, layers and the operational tables.

One schema per layer, and an asset key is the table it writes (``["core", "customers"]``
is ``core.customers``). DuckDB allows a single writing process per file, so every
writing asset sits in the ``duckdb`` concurrency pool (size 1) and each write is one
transaction that can be re-run (RELIABILITY.md, rules 3 and 4).
"""

from __future__ import annotations

import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import duckdb

LAYERS = ("raw", "staging", "core", "marts", "marketing", "segments", "predictions", "recommendations", "exports",
          "activation", "history", "ops")

# DuckDB would otherwise download extensions from the internet the first time a
# function needs one; Tessera runs offline, so a missing extension must fail loudly.
OFFLINE_SETTINGS = {
    "autoinstall_known_extensions": False,
    "autoload_known_extensions": False,
}

SQL_DIR = Path(__file__).resolve().parent / "sql"


# Without a configured bound, the warehouse takes this share of the machine's memory
# (DuckDB's own default is 80 %, which leaves too little for Python, the OS page cache
# and the other processes of a 2-core, 24 GiB reference machine). 25 %, not 30 %: the
# reference run of 2026-12-06 at 30 % (7.2 GiB) peaked at 13.5 GB, its steps at 8.1-8.4 GB
# with DuckDB at its limit and Python (the JSON lines reader, ALS, the batch expectations)
# beside it; 6 GiB leaves the rest of the 8 GB target to Python. It spills to its temp
# directory beyond it.
DEFAULT_MEMORY_SHARE = 0.25
MIN_MEMORY_LIMIT = 256 * 1024 ** 2
_UNITS = {"": 1, "B": 1, "KB": 1000, "MB": 1000 ** 2, "GB": 1000 ** 3, "TB": 1000 ** 4,
          "KIB": 1024, "MIB": 1024 ** 2, "GIB": 1024 ** 3, "TIB": 1024 ** 4}


def physical_memory() -> int:
    """The memory this process may use: physical RAM, or a smaller cgroup (container) limit."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    for cgroup in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(cgroup).read_text().strip()
        except OSError:
            continue
        if text.isdigit() and 0 < int(text) < total:
            total = int(text)
    return total


def memory_limit_bytes(spec: str | None) -> int:
    """``30%`` (of :func:`physical_memory`), ``6GB``, ``512MiB``, or empty for the default share."""
    text = (spec or "").strip().upper().replace(" ", "")
    if not text:
        return max(MIN_MEMORY_LIMIT, int(physical_memory() * DEFAULT_MEMORY_SHARE))
    if text.endswith("%"):
        share = float(text[:-1])
        if not 0 < share <= 100:
            raise ValueError(f"memory_limit {spec!r}: a share must be above 0 % and at most 100 %")
        return max(MIN_MEMORY_LIMIT, int(physical_memory() * share / 100))
    number = text.rstrip("KMGTIB")
    unit = text[len(number):]
    try:
        value = float(number)
    except ValueError:
        value = -1.0
    if unit not in _UNITS or value <= 0:
        raise ValueError(f"memory_limit {spec!r}: expected a share (30%) or a size (6GB, 512MiB)")
    return int(value * _UNITS[unit])


def warehouse_limits(database: str | Path, memory_limit: str | None = None,
                     temp_directory: str | Path | None = None) -> dict[str, str]:
    """The memory limit and temp directory of the warehouse's connections.

    The environment (``TESSERA_MEMORY_LIMIT``, ``TESSERA_TEMP_DIRECTORY``) wins over the
    deployment's ``warehouse:`` settings passed here, which win over the defaults (a share
    of the machine; DuckDB's ``<warehouse>.tmp``). A relative temp directory is relative
    to the warehouse file's folder.
    """
    spec = os.environ.get("TESSERA_MEMORY_LIMIT") or memory_limit
    temp = os.environ.get("TESSERA_TEMP_DIRECTORY") or temp_directory
    if str(database) == ":memory:":
        temp_path = Path(temp) if temp else None
    else:
        base = Path(database).resolve().parent
        temp_path = base / temp if temp else Path(f"{Path(database).resolve()}.tmp")
    limits = {"memory_limit": f"{memory_limit_bytes(spec) // 1024 ** 2}MiB"}
    if temp_path is not None:
        limits["temp_directory"] = str(temp_path)
    return limits


def apply_limits(con: duckdb.DuckDBPyConnection, limits: dict[str, str]) -> None:
    """SET rather than connection config: in one process every connection to a file shares
    one database, and DuckDB refuses a second connection whose config differs from the
    first's; a SET applies to that shared database instead."""
    for name, value in limits.items():
        con.execute(f"SET {name} = {sql_literal(value)}")


def connect(path: str | Path, read_only: bool = False, memory_limit: str | None = None,
            threads: int | None = None, temp_directory: str | Path | None = None) -> duckdb.DuckDBPyConnection:
    """A warehouse connection, always bounded (:func:`warehouse_limits`)."""
    config: dict = dict(OFFLINE_SETTINGS)
    if threads:
        config["threads"] = threads
    if not read_only:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(str(path), read_only=read_only, config=config)
    try:
        apply_limits(con, warehouse_limits(path, memory_limit, temp_directory))
    except BaseException:
        con.close()
        raise
    return con


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
