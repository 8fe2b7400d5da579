"""``warehouse:`` in tessera.yaml: how much of the machine the warehouse may use."""

from __future__ import annotations

from pydantic import field_validator

from tessera.settings.base import _Strict


class WarehouseSettings(_Strict):
    """DuckDB's memory limit and spill folder for every connection of the deployment.

    ``memory_limit``: a share of the machine's memory (``30%``) or a size (``6GB``,
    ``512MiB``); empty: 30 % of the machine (``tessera.engine.warehouse``). Beyond it
    DuckDB spills to ``temp_directory`` (relative to the warehouse file's folder; empty:
    ``<warehouse>.tmp``). ``TESSERA_MEMORY_LIMIT`` / ``TESSERA_TEMP_DIRECTORY`` override
    both for one process.
    """

    memory_limit: str | None = None
    temp_directory: str | None = None

    @field_validator("memory_limit")
    @classmethod
    def _parses(cls, value: str | None) -> str | None:
        from tessera.engine.warehouse import memory_limit_bytes

        memory_limit_bytes(value)  # raises ValueError with the accepted forms
        return value
