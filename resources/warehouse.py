"""The warehouse resource: dagster-duckdb's DuckDBResource, offline and privacy-safe.

dagster-duckdb-polars fails at run time on duckdb 2.0, so assets run SQL through a
plain DuckDBResource connection. The extension auto-install/auto-load settings are
switched off because Tessera must work with no internet access.

DuckDB error messages quote the offending value ("Could not convert string
'mario@x.it' to ..."), and Dagster stores exception texts in its run storage
(RELIABILITY.md rule 10). Errors raised while an asset holds the connection are
re-raised with every quoted literal redacted, without the original chained.
"""

from __future__ import annotations

import os
import re
import time
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
import duckdb
from dagster_duckdb import DuckDBResource

from tessera.engine.space import OutOfSpace, file_named_in, is_out_of_space
from tessera.engine.warehouse import OFFLINE_SETTINGS, apply_limits, warehouse_limits

_QUOTED = re.compile(r"'(?:[^']|'')*'")
# DuckDB words a full temp directory as "Out of Memory Error: failed to offload data block"
# (the spill space is capped by the free space of the temp directory's drive).
_TEMP_FULL = "failed to offload data block"


class WarehouseError(RuntimeError):
    """A warehouse error whose message has had its quoted values removed."""


def redact(message: str) -> str:
    return _QUOTED.sub("'<redacted>'", message)


class TesseraWarehouse(DuckDBResource):
    # Tests only (TESSERA_TEST_HOLD): every connection writes ``<hold_file>.reached`` and
    # waits while ``hold_file`` exists, so a test can kill or overlap a run at a known point.
    hold_file: str | None = None
    # The deployment's ``warehouse:`` settings (the environment overrides them); every
    # connection gets the resolved memory limit and temp directory (warehouse_limits).
    memory_limit: str | None = None
    temp_directory: str | None = None

    def limits(self) -> dict[str, str]:
        config = self.connection_config or {}
        return warehouse_limits(self.database, config.get("memory_limit") or self.memory_limit,
                                config.get("temp_directory") or self.temp_directory)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        super().setup_for_execution(context)
        # A run launched by the UI or the schedule records its executing process, so that
        # a later command can tell it is dead once that process is gone (pipelines/runs.py).
        if context.instance is not None and context.dagster_run is not None:
            from pipelines.runs import record_executor

            record_executor(context.instance, context.dagster_run)

    def _hold(self) -> None:
        hold = Path(self.hold_file)
        hold.with_name(hold.name + ".reached").write_text(str(os.getpid()))
        deadline = time.monotonic() + 600
        while hold.exists() and time.monotonic() < deadline:
            time.sleep(0.1)

    @contextmanager
    def get_connection(self):
        with super().get_connection() as con:
            apply_limits(con, self.limits())
            if self.hold_file:
                self._hold()
            try:
                yield con
            except duckdb.Error as exc:
                if is_out_of_space(exc) or _TEMP_FULL in str(exc):
                    raise WarehouseError(str(self.out_of_space(exc))) from None
                raise WarehouseError(f"{type(exc).__name__}: {redact(str(exc))}") from None
            except OutOfSpace:
                raise  # already names its place (a feed folder, the landing archive)
            except OSError as exc:
                if is_out_of_space(exc):
                    raise OutOfSpace("a file written by this step", exc.filename or self.database) from exc
                raise

    def out_of_space(self, exc: duckdb.Error) -> OutOfSpace:
        """Which of the warehouse's places is full: its file (and WAL) or its temp directory
        (DuckDB's default, ``<warehouse>.tmp``, unless ``temp_directory`` is set)."""
        temp_dir = self.limits().get("temp_directory") or f"{self.database}.tmp"
        named = file_named_in(str(exc))
        if _TEMP_FULL in str(exc) or (named and named.startswith(temp_dir)):
            what, path = "the warehouse's temp directory", temp_dir
        elif named:
            what, path = "the warehouse", named
        else:
            what, path = f"the warehouse (or its temp directory {temp_dir})", self.database
        return OutOfSpace(what, path, detail=f"{type(exc).__name__}: {redact(str(exc))}")


def warehouse_resource(path: str, memory_limit: str | None = None,
                       hold_file: str | None = None,
                       temp_directory: str | None = None) -> TesseraWarehouse:
    return TesseraWarehouse(database=path, connection_config=dict(OFFLINE_SETTINGS), hold_file=hold_file,
                            memory_limit=memory_limit, temp_directory=temp_directory)
