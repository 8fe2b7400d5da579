"""An engine that reads some tables as they were: the as-of overlay of a backfill.

Why a wrapper and not a parameter of every stage: the partitioned stages (RFM, scores,
stages, segments, predictions, recommendations, feeds) read the current-state tables by
name (``marts.contact_cards``, ``core.orders`` ...). A backfill of day D must give them
those tables as they were at the end of D (``tessera.history``). Wrapping the engine
redirects each named table to a temporary view of its recorded version, for every step
the stage runs, so no stage SQL changes and the same code serves today and any past
day. It works over any engine of the seam (the views are plain ``SELECT`` statements).
"""

from __future__ import annotations

import re
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Mapping

from tessera.engine.base import Engine, FileFormat
from tessera.engine.steps import SqlStep


def view_name(table: str) -> str:
    """The temporary view standing for ``schema.table``."""
    return "asof__" + table.replace(".", "__")


class OverlayEngine:
    """Delegates to ``engine``; every step reads ``relations[table]`` wherever its SQL
    names ``table`` (``schema.table``, unquoted, as stage SQL writes it).

    Writes name their target table outside the step's SQL, so they are never redirected.
    """

    def __init__(self, engine: Engine, relations: Mapping[str, str]) -> None:
        self.engine = engine
        self.dialect = engine.dialect
        self.relations = dict(relations)
        self._patterns = [(re.compile(rf"(?<![\w.\"]){re.escape(t)}(?![\w\"])", re.IGNORECASE),
                           view_name(t)) for t in sorted(self.relations, key=len, reverse=True)]
        for table, sql in self.relations.items():
            engine.run(SqlStep("overlay.view", f"CREATE OR REPLACE TEMP VIEW {view_name(table)} AS {sql}"))

    def rewrite(self, step: SqlStep) -> SqlStep:
        sql = step.sql
        for pattern, name in self._patterns:
            sql = pattern.sub(name, sql)
        return step if sql == step.sql else SqlStep(step.name, sql, step.params)

    def __getattr__(self, name: str) -> Any:  # e.g. DuckDBEngine.con
        return getattr(self.engine, name)

    def run(self, *steps: SqlStep) -> None:
        self.engine.run(*(self.rewrite(s) for s in steps))

    def rows(self, step: SqlStep) -> list[tuple]:
        return self.engine.rows(self.rewrite(step))

    def scalar(self, step: SqlStep) -> Any:
        return self.engine.scalar(self.rewrite(step))

    def columns(self, step: SqlStep) -> dict[str, list]:
        return self.engine.columns(self.rewrite(step))

    def arrow(self, step: SqlStep):
        return self.engine.arrow(self.rewrite(step))

    def arrow_batches(self, step: SqlStep, rows: int = 65_536):
        return self.engine.arrow_batches(self.rewrite(step), rows)

    def replace_table(self, table: str, step: SqlStep) -> int:
        return self.engine.replace_table(table, self.rewrite(step))

    def overwrite(self, table: str, step: SqlStep) -> int:
        return self.engine.overwrite(table, self.rewrite(step))

    def replace_partition(self, table: str, partition: Mapping[str, Any], step: SqlStep) -> int:
        return self.engine.replace_partition(table, partition, self.rewrite(step))

    def append(self, table: str, step: SqlStep) -> int:
        return self.engine.append(table, self.rewrite(step))

    @contextmanager
    def together(self) -> Iterator[Engine]:
        with self.engine.together():
            yield self

    def register_arrow(self, name: str, table) -> None:
        self.engine.register_arrow(name, table)

    def unregister(self, name: str) -> None:
        self.engine.unregister(name)

    def copy_to(self, step: SqlStep, path: Path, fmt: FileFormat,
                csv: Mapping[str, Any] | None = None) -> int:
        return self.engine.copy_to(self.rewrite(step), path, fmt, csv)

    def table_exists(self, schema: str, table: str) -> bool:
        return self.engine.table_exists(schema, table)
