"""Fixtures of the unit-level tests: an empty warehouse with every layer's tables."""

from __future__ import annotations

import pytest

from tessera.engine.warehouse import connect, ensure_warehouse


@pytest.fixture
def con(tmp_path):
    """A fresh warehouse in its own folder (stages write files beside it: quarantine,
    snapshots), closed after the test."""
    c = connect(tmp_path / "wh" / "warehouse.duckdb")
    ensure_warehouse(c)
    yield c
    c.close()
