"""The DuckDB implementation of the :class:`~tessera.engine.base.Engine` seam.

Why it also records: the portability check (tests/core/test_portability.py) runs the
daily job with :func:`recording` on and transpiles every step the stages ran to Spark
SQL, so a DuckDB-only spelling that slipped past :mod:`tessera.engine.dialect` fails CI.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import os
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Mapping

import duckdb
import pyarrow as pa

from tessera.engine.base import Engine, FileFormat
from tessera.engine.steps import SqlStep
from tessera.engine.warehouse import connect, sql_literal, table_exists, transaction

_RECORDERS: list[dict[tuple[str, str], SqlStep]] = []


@contextmanager
def recording() -> Iterator[dict[tuple[str, str], SqlStep]]:
    """Collect every distinct step run by any DuckDB engine inside the block."""
    log: dict[tuple[str, str], SqlStep] = {}
    _RECORDERS.append(log)
    try:
        yield log
    finally:
        _RECORDERS.remove(log)


def _record(step: SqlStep) -> None:
    for log in _RECORDERS:
        log.setdefault((step.name, step.sql), step)


# TESSERA_STEP_TIMES=<file>: every step's name and seconds appended as a JSON line, to
# find where a stage's time goes at scale (bench/README.md, "profiling a stage") without
# patching the code. Off by default: one environment lookup per step.
_STEP_TIMES = os.environ.get("TESSERA_STEP_TIMES")


def _timed(step: SqlStep, seconds: float) -> None:
    with open(_STEP_TIMES, "a", encoding="utf-8") as fh:
        fh.write(json.dumps({"step": step.name, "s": round(seconds, 3), "pid": os.getpid()}) + "\n")


_FORMATS = {"csv": "FORMAT csv, HEADER true", "parquet": "FORMAT parquet",
            "json": "FORMAT json"}


class DuckDBEngine:
    """An Engine over one DuckDB connection (the single writer of the warehouse file)."""

    dialect = "duckdb"
    # the published folder a read_snapshot session reads (immutable): readers may cache
    # what they learn of its tables under this name
    snapshot_folder: str | None = None

    def __init__(self, con: duckdb.DuckDBPyConnection) -> None:
        self.con = con
        self._depth = 0

    def _exec(self, step: SqlStep) -> duckdb.DuckDBPyConnection:
        _record(step)
        started = time.perf_counter() if _STEP_TIMES else 0.0
        if not step.params:
            cur = self.con.execute(step.sql)
        else:
            params = dict(step.params) if isinstance(step.params, Mapping) else list(step.params)
            cur = self.con.execute(step.sql, params)
        if _STEP_TIMES:
            _timed(step, time.perf_counter() - started)
        return cur

    def run(self, *steps: SqlStep) -> None:
        for step in steps:
            self._exec(step)

    def rows(self, step: SqlStep) -> list[tuple]:
        return self._exec(step).fetchall()

    def scalar(self, step: SqlStep) -> Any:
        row = self._exec(step).fetchone()
        # DuckDB 2 keeps a partly read result open, and register() refuses to run beside
        # one ("unfinished result from execute()"): finish it here.
        self.con.complete()
        return row[0] if row else None

    def columns(self, step: SqlStep) -> dict[str, list]:
        return self.arrow(step).to_pydict()

    def arrow(self, step: SqlStep) -> pa.Table:
        # a relation hands its batches to Arrow directly; execute()'s DB-API result
        # would copy them once more
        _record(step)
        self.con.complete()
        params = (dict(step.params) if isinstance(step.params, Mapping) else list(step.params)) or None
        started = time.perf_counter() if _STEP_TIMES else 0.0
        table = self.con.sql(step.sql, params=params).to_arrow_table()
        if _STEP_TIMES:
            _timed(step, time.perf_counter() - started)
        return table

    def arrow_batches(self, step: SqlStep, rows: int = 65_536) -> Iterator[pa.RecordBatch]:
        # a relation streams; a DB-API result (execute) is materialised whole first
        _record(step)
        params = None
        if step.params:
            params = dict(step.params) if isinstance(step.params, Mapping) else list(step.params)
        yield from self.con.sql(step.sql, params=params).to_arrow_reader(rows)

    def replace_table(self, table: str, step: SqlStep) -> int:
        self._exec(SqlStep(step.name, f"CREATE OR REPLACE TABLE {table} AS {step.sql}", step.params))
        return int(self.con.execute(f"SELECT count(*) FROM {table}").fetchone()[0])

    def overwrite(self, table: str, step: SqlStep) -> int:
        with self.together():
            self.con.execute(f"DELETE FROM {table}")
            return self.append(table, step)

    def replace_partition(self, table: str, partition: Mapping[str, Any], step: SqlStep) -> int:
        where = " AND ".join(f"{column} = ?" for column in partition)
        with self.together():
            self.con.execute(f"DELETE FROM {table} WHERE {where}", list(partition.values()))
            return self.append(table, step)

    def append(self, table: str, step: SqlStep) -> int:
        row = self._exec(SqlStep(step.name, f"INSERT INTO {table} {step.sql}", step.params)).fetchone()
        return int(row[0]) if row else 0

    @contextmanager
    def together(self) -> Iterator[Engine]:
        if self._depth:  # already inside: the outer block is the unit
            self._depth += 1
            try:
                yield self
            finally:
                self._depth -= 1
            return
        self._depth = 1
        try:
            with transaction(self.con):
                yield self
        finally:
            self._depth = 0

    def register_arrow(self, name: str, table: pa.Table) -> None:
        self.con.complete()  # a result left open by a caller's fetchone() blocks register()
        self.con.register(name, table)

    def define_keyed_hash(self, key: str) -> None:
        # a temporary macro built from the key's inner and outer pads: HMAC set-based in
        # SQL, no Python call per value
        if not key:
            raise ValueError("the suppression key is empty; set TESSERA_SUPPRESSION_KEY")
        raw = key.encode("utf-8")
        if len(raw) > 64:
            raw = hashlib.sha256(raw).digest()
        raw = raw.ljust(64, b"\0")
        ipad = bytes(b ^ 0x36 for b in raw).hex()
        opad = bytes(b ^ 0x5C for b in raw).hex()
        self.con.complete()
        self.con.execute(
            "CREATE OR REPLACE TEMP MACRO tessera_hmac(v) AS "
            f"sha256(unhex('{opad}') || unhex(sha256(unhex('{ipad}') || encode(v))))")

    def unregister(self, name: str) -> None:
        self.con.complete()
        self.con.unregister(name)

    def copy_to(self, step: SqlStep, path: Path, fmt: FileFormat,
                csv: Mapping[str, Any] | None = None) -> int:
        opts = _FORMATS[fmt]
        if fmt == "csv" and csv:
            header = "true" if csv.get("header", True) else "false"
            delimiter, quote = csv.get("delimiter", ","), csv.get("quote", '"')
            opts = (f"FORMAT csv, HEADER {header}, DELIMITER {sql_literal(delimiter)}, "
                    f"QUOTE {sql_literal(quote)}, ESCAPE {sql_literal(quote)}")
        row = self._exec(SqlStep(step.name, f"COPY ({step.sql}) TO {sql_literal(str(path))} "
                                 f"({opts})", step.params)).fetchone()
        return int(row[0]) if row else 0

    def table_exists(self, schema: str, table: str) -> bool:
        return table_exists(self.con, schema, table)


def as_engine(target: Engine | duckdb.DuckDBPyConnection) -> Engine:
    """An Engine for a stage entry point that is still called with a DuckDB connection.

    Assets, the CLI and tests hand stages a connection today; stages migrated onto the
    seam accept either, so callers can move one at a time.
    """
    if isinstance(target, duckdb.DuckDBPyConnection):
        return DuckDBEngine(target)
    return target


class WarehouseUnavailable(RuntimeError):
    """The warehouse cannot be read now: it was never built, or a run holds the writer's
    lock (a DuckDB writer also blocks read-only readers, RELIABILITY.md rule 3)."""


@contextmanager
def read_only(path: str | Path, threads: int | None = None) -> Iterator[Engine]:
    """A short read-only session on the warehouse file, for front ends that only look.

    Opened per use and closed at once, so a reader never holds the file while the daily
    job needs to write it; while a run writes, it raises :class:`WarehouseUnavailable`
    (with no DuckDB text in it) instead of waiting.
    """
    path = Path(path)
    if not path.is_file():
        raise WarehouseUnavailable("no warehouse yet: run the daily job first (make demo)")
    try:
        con = connect(path, read_only=True, threads=threads)
    except duckdb.IOException as exc:
        busy = "lock" in str(exc).lower()
        raise WarehouseUnavailable(
            "a run is writing the warehouse; try again when it ends" if busy
            else "the warehouse file cannot be opened") from None
    try:
        yield DuckDBEngine(con)
    finally:
        con.close()


# A published snapshot (a folder of ``<schema>.<table>.parquet`` files) is opened once per
# process as an in-memory database of views; each use gets its own cursor. Two folders are
# kept open: the newest, and the one a request may still be reading as a new one appears.
_SNAPSHOTS: dict[str, duckdb.DuckDBPyConnection] = {}
_SNAPSHOT_LOCK = threading.Lock()


def _snapshot_connection(folder: Path, threads: int | None) -> duckdb.DuckDBPyConnection:
    key = str(folder.resolve())
    with _SNAPSHOT_LOCK:
        con = _SNAPSHOTS.get(key)
        if con is not None:
            return con
        config: dict = {"autoinstall_known_extensions": False, "autoload_known_extensions": False}
        if threads:
            config["threads"] = threads
        con = duckdb.connect(":memory:", config=config)
        # a published folder never changes: each file's footer (a 50 M-row table's holds
        # hundreds of row groups' statistics) is parsed once, not at every request
        con.execute("SET parquet_metadata_cache = true")
        files = {f.stem: f for f in folder.glob("*.parquet")}
        for stem, file in sorted(files.items()):
            schema, _, table = stem.partition(".")
            if "." in table:
                continue  # a part of a table published as a base and its days (below)
            con.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
            select = f"SELECT * FROM read_parquet({sql_literal(str(file))})"
            delta, hidden = files.get(f"{stem}.delta"), files.get(f"{stem}.hidden")
            if delta is not None and hidden is not None:
                # the base less its rows that went away or changed, plus the rows since
                # (tessera.web.snapshot: core.events)
                select = (f"SELECT * FROM read_parquet({sql_literal(str(file))}) b WHERE NOT EXISTS ("
                          f"SELECT 1 FROM read_parquet({sql_literal(str(hidden))}) x "
                          "WHERE x.source = b.source AND x.event_id = b.event_id) "
                          f"UNION ALL SELECT * FROM read_parquet({sql_literal(str(delta))})")
            con.execute(f'CREATE VIEW "{schema}"."{table}" AS {select}')
        _SNAPSHOTS[key] = con
        for old in list(_SNAPSHOTS)[:-2]:
            _SNAPSHOTS.pop(old).close()
        return con


@atexit.register
def _close_snapshots() -> None:
    # an open connection left to interpreter exit makes nanobind print "leaked instances"
    with _SNAPSHOT_LOCK:
        while _SNAPSHOTS:
            _SNAPSHOTS.popitem()[1].close()


@contextmanager
def read_snapshot(folder: str | Path, threads: int | None = None) -> Iterator[Engine]:
    """A read-only session on a published snapshot folder: never touches the warehouse
    file, so it answers while a run holds the writer's lock (the page's normal path)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise WarehouseUnavailable("the published snapshot is gone; try again")
    cursor = _snapshot_connection(folder, threads).cursor()
    try:
        engine = DuckDBEngine(cursor)
        engine.snapshot_folder = str(folder.resolve())
        yield engine
    finally:
        cursor.close()
