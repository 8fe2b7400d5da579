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

import re
from contextlib import contextmanager

import duckdb
from dagster_duckdb import DuckDBResource

from tessera.engine.warehouse import OFFLINE_SETTINGS

_QUOTED = re.compile(r"'(?:[^']|'')*'")


class WarehouseError(RuntimeError):
    """A warehouse error whose message has had its quoted values removed."""


def redact(message: str) -> str:
    return _QUOTED.sub("'<redacted>'", message)


class TesseraWarehouse(DuckDBResource):
    @contextmanager
    def get_connection(self):
        with super().get_connection() as con:
            try:
                yield con
            except duckdb.Error as exc:
                raise WarehouseError(f"{type(exc).__name__}: {redact(str(exc))}") from None


def warehouse_resource(path: str, memory_limit: str | None = None) -> TesseraWarehouse:
    config = dict(OFFLINE_SETTINGS)
    if memory_limit:
        config["memory_limit"] = memory_limit
    return TesseraWarehouse(database=path, connection_config=config)
