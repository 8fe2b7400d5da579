"""The page reads the published snapshot only: every table its reads name must be one the
daily job publishes, or the page would silently show an empty tab."""

from __future__ import annotations

import re
from pathlib import Path

import tessera.web.queries as queries
from tessera.card.search import SEARCH_TABLE
from tessera.web.snapshot import READ_SCHEMAS, READ_TABLES, SOFT_DELETED, snapshot_root

SCHEMAS = ("core", "marts", "marketing", "ops", "staging", "predictions", "recommendations")


def test_every_table_the_page_reads_is_published():
    text = Path(queries.__file__).read_text(encoding="utf-8")
    named = set(re.findall(rf"\b((?:{'|'.join(SCHEMAS)})\.[a-z_]+)\b", text))
    named = {t for t in named if t.split(".")[0] not in READ_SCHEMAS}
    # ops.bulk_edits is read only on a warehouse with no snapshot (published as its outcome)
    missing = named - set(READ_TABLES) - {SOFT_DELETED, "ops.bulk_edits", SEARCH_TABLE}
    assert missing == set()
    assert SEARCH_TABLE in READ_TABLES


def test_the_snapshot_lives_beside_its_warehouse():
    assert snapshot_root("/data/a/warehouse.duckdb") == Path("/data/a/warehouse.web")
