"""The Engine seam: the few operations stage code asks of a SQL engine.

Why so few: each one is something every engine we target (DuckDB today, Spark for
scale-out) can do, and the set is small enough to implement twice and test against
each other. Stage code builds :class:`~tessera.engine.steps.SqlStep` objects and calls
these; it never imports ``duckdb``. Model: splink's ``DatabaseAPI``
(``splink/internals/database_api.py``), whose backends implement a handful of hooks.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Literal, Mapping, Protocol, runtime_checkable

from tessera.engine.steps import SqlStep

if TYPE_CHECKING:
    import pyarrow as pa

FileFormat = Literal["csv", "parquet", "json"]


@runtime_checkable
class Engine(Protocol):
    """What a stage may ask of the warehouse engine."""

    dialect: str  # the sqlglot dialect the engine speaks ("duckdb", "spark")

    def run(self, *steps: SqlStep) -> None:
        """Execute statements that return nothing (DDL, DML), in order."""

    def rows(self, step: SqlStep) -> list[tuple]:
        """A query's rows, for small results (counts, ids, a sample)."""

    def scalar(self, step: SqlStep) -> Any:
        """The first column of a query's first row (None when it has none)."""

    def columns(self, step: SqlStep) -> dict[str, list]:
        """A query's result column by column (names in select order)."""

    def arrow(self, step: SqlStep) -> pa.Table:
        """A query's result as an Arrow table."""

    def arrow_batches(self, step: SqlStep, rows: int = 65_536) -> Iterator[pa.RecordBatch]:
        """A query's result as Arrow record batches of about ``rows`` rows, streamed: a
        writer of a large result holds one batch at a time (XLSX and XML feeds)."""

    def replace_table(self, table: str, step: SqlStep) -> int:
        """``table`` becomes the result of ``step`` (created if missing); returns its rows."""

    def overwrite(self, table: str, step: SqlStep) -> int:
        """Every row of the existing ``table`` becomes the result of ``step``; the table's
        definition (types, constraints) stays. Returns rows written."""

    def replace_partition(self, table: str, partition: Mapping[str, Any], step: SqlStep) -> int:
        """Rows of ``table`` in ``partition`` (column = value for each item, e.g.
        ``{"as_of_date": day}``) become the result of ``step``.

        Re-runnable: a second run of the same day gives the same table (STYLE rule 5).
        ``step`` selects the table's columns in the table's order. Returns rows written.
        """

    def append(self, table: str, step: SqlStep) -> int:
        """Insert the result of ``step`` into ``table``; returns rows written."""

    def together(self) -> AbstractContextManager[Engine]:
        """Replace several tables together: every write inside the block lands, or none.

        DuckDB: one transaction. An engine without multi-table transactions stages the
        new tables and swaps them in at the end.
        """

    def register_arrow(self, name: str, table: pa.Table) -> None:
        """Make an Arrow table queryable under ``name`` for the following steps."""

    def define_keyed_hash(self, key: str) -> None:
        """Make ``tessera_hmac(text)`` (HMAC-SHA256 under ``key``, lower-case hex) callable
        in the following steps. The key is never part of a step's text or parameters, so it
        is neither recorded nor logged."""

    def unregister(self, name: str) -> None:
        """Forget a name given to :meth:`register_arrow`."""

    def copy_to(self, step: SqlStep, path: Path, fmt: FileFormat,
                csv: Mapping[str, Any] | None = None) -> int:
        """Write the result of ``step`` to ``path`` in ``fmt``; returns rows written.
        ``csv``: the CSV dialect (``delimiter``, ``quote``, ``header``), for ``fmt="csv"``."""

    def table_exists(self, schema: str, table: str) -> bool:
        """Whether ``schema.table`` exists (a table or a view)."""
