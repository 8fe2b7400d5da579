"""The staging checks after an incremental build judge the rows the run wrote, and the
whole table whenever that would not be enough (tessera.ingest.check_scope)."""

from __future__ import annotations

import datetime as dt

import duckdb
import pytest

from tessera.engine.warehouse import ensure_warehouse
from tessera.ingest.changed_keys import CHANGED_DDL, STATE_DDL
from tessera.ingest.check_scope import duplicate_keys, record_verdict, written_keys
from tessera.ingest.expectations import check_staged
from tessera.settings import EntityExpectations

T = "staging.orders"


@pytest.fixture()
def con():
    con = duckdb.connect()
    ensure_warehouse(con)
    con.execute("CREATE SCHEMA IF NOT EXISTS staging")
    con.execute(STATE_DDL)
    con.execute(CHANGED_DDL)
    con.execute("""CREATE TABLE staging.orders AS SELECT * FROM (VALUES
        ('shop', 'A', NULL), ('shop', 'B', 'b@x.it'), ('shop', 'C', 'c@x.it'), ('shop', 'D', NULL))
        AS t(source, source_record_id, email)""")
    yield con
    con.close()


def _state(con, run, mode="incremental"):
    con.execute("DELETE FROM ops.staging_state")
    con.execute("INSERT INTO ops.staging_state VALUES (?, 'shop', 'd', 1, 1, now(), ?, NULL, ?)", [T, mode, run])


def _written(con, run, *keys):
    for k in keys:
        con.execute("INSERT INTO ops.changed_keys VALUES (?, 'order', 'shop', ?, 'changed', now())", [run, k])


def test_the_written_rows_only_after_an_incremental_build_whose_last_verdict_passed(con):
    _state(con, "r2")
    _written(con, "r2", "B", "C")
    assert written_keys(con, T, "order", "r2", "keys_are_unique") is None        # no verdict yet
    record_verdict(con, T, "keys_are_unique", "r1", "table", 4, False, dt.datetime(2026, 11, 1))
    assert written_keys(con, T, "order", "r2", "keys_are_unique") is None        # it failed
    record_verdict(con, T, "keys_are_unique", "r1b", "table", 4, True, dt.datetime(2026, 11, 1, 1))
    written = written_keys(con, T, "order", "r2", "keys_are_unique")
    assert sorted(con.execute(f"SELECT source_record_id FROM ({written})").fetchall()) == [("B",), ("C",)]
    assert written_keys(con, T, "order", "r3", "keys_are_unique") is None        # not this run's build
    _state(con, "r2", mode="full")
    assert written_keys(con, T, "order", "r2", "keys_are_unique") is None        # a full build


def test_a_written_key_repeating_an_untouched_row_is_found(con):
    _state(con, "r2")
    record_verdict(con, T, "keys_are_unique", "r1", "table", 4, True, dt.datetime(2026, 11, 1))
    con.execute("INSERT INTO staging.orders VALUES ('shop', 'A', 'a@x.it')")       # A written again
    _written(con, "r2", "A")
    written = written_keys(con, T, "order", "r2", "keys_are_unique")
    assert duplicate_keys(con, T, written) == (1, 2)
    assert duplicate_keys(con, T, None) == (1, None)


def test_the_batch_expectations_judge_the_written_rows_and_count_the_whole_table(con):
    _state(con, "r2")
    record_verdict(con, T, "order_pass", "r1", "table", 4, True, dt.datetime(2026, 11, 1))
    _written(con, "r2", "B", "D")
    written = written_keys(con, T, "order", "r2", "order_pass")
    settings = EntityExpectations(null_rates={"email": {"max_share": 0.4}})
    out = {(o.expectation, o.column): o for o in
           check_staged(con, "order", "orders", "r2", dt.datetime(2026, 11, 2), settings, written=written)}
    assert out[("expect_table_row_count_to_be_between", None)].observed_value == 4
    assert out[("expect_column_values_to_not_be_null", "source_record_id")].element_count == 2
    # D's empty e-mail is one of the 2 written rows: 50 % > 40 %; A's is not judged
    email = out[("expect_column_values_to_not_be_null", "email")]
    assert (email.element_count, email.unexpected_count, email.success) == (2, 1, False)
    whole = {(o.expectation, o.column): o for o in
             check_staged(con, "order", "orders", "r2", dt.datetime(2026, 11, 2), settings)}
    assert whole[("expect_column_values_to_not_be_null", "email")].unexpected_count == 2
    assert con.execute("SELECT count(*) FROM information_schema.tables WHERE table_name LIKE '_batch_%'").fetchone()[0] == 0
