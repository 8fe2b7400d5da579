"""The engine layer: named SQL steps, the Engine seam, DuckDB behind it, and the dialect.

Stage code (``tessera.<stage>``) builds :class:`SqlStep` objects and hands them to an
:class:`Engine`; every DuckDB-only spelling lives in :mod:`tessera.engine.dialect`.
This layer imports nothing of the stages. The DuckDB engine is imported on first use,
so that importing a stage's vocabulary does not load DuckDB and Arrow.
"""

from __future__ import annotations

from typing import Any

from tessera.engine.base import Engine
from tessera.engine.steps import SqlStep, step_from_file

__all__ = ["DuckDBEngine", "Engine", "SqlStep", "WarehouseUnavailable", "as_engine", "read_only",
           "read_snapshot", "recording", "step_from_file"]


def __getattr__(name: str) -> Any:
    if name in ("DuckDBEngine", "WarehouseUnavailable", "as_engine", "read_only", "read_snapshot",
                "recording"):
        from tessera.engine import duckdb_engine

        return getattr(duckdb_engine, name)
    raise AttributeError(name)
