"""The fast trim of landed values gives what the full replacement gives, value by value."""

from __future__ import annotations

import itertools

import duckdb

from tessera.ingest.load import _TRIM_RE, _trimmed
from tessera.engine.warehouse import sql_literal

EDGES = ["", " ", "\t", "\n", "\r", "\f", "\u00a0", "\v", "\u2003", "é", "  \u00a0\t"]
CORES = ["", "a", "a b", "é", "x\u00a0y", "line\nbreak", "{\"k\": \"v \"}"]


def test_fast_trim_matches_the_replacement_on_every_edge():
    values = sorted({p + c + s for p, c, s in itertools.product(EDGES, CORES, EDGES)}) + [None]
    con = duckdb.connect()
    con.execute("CREATE TABLE v (i INTEGER, x VARCHAR)")
    con.executemany("INSERT INTO v VALUES (?, ?)", list(enumerate(values)))
    got = con.execute(f"""
        SELECT i, {_trimmed('x')} AS fast,
               nullif(regexp_replace(x, {sql_literal(_TRIM_RE)}, '', 'g'), '') AS full
        FROM v ORDER BY i""").fetchall()
    differ = [(values[i], fast, full) for i, fast, full in got if fast != full]
    assert differ == []
    by_value = {values[i]: fast for i, fast, _ in got}
    # the blanks a CRM leaves go (NBSP included), inner ones and other characters stay
    assert by_value["\u00a0a b\t"] == "a b"
    assert by_value[" \n"] is None
    assert by_value["\va\u2003"] == "\va\u2003"
    assert by_value["x\u00a0y"] == "x\u00a0y"
