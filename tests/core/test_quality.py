"""Batch expectations with great-expectations on a real DuckDB file, with outbound
network blocked: results hold counts, never the unexpected values."""
from __future__ import annotations

import datetime as dt
import socket

import pytest

from tessera.ingest.expectations import check_staged_contacts


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Any connection other than to this machine fails the test (GX analytics, etc.)."""
    real_connect = socket.socket.connect

    def guarded(self, address):
        host = address[0] if isinstance(address, tuple) else address
        if isinstance(host, str) and host not in ("127.0.0.1", "::1", "localhost") \
                and not host.startswith("/"):
            raise AssertionError(f"network access attempted: {host}")
        return real_connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", guarded)
    monkeypatch.setenv("GX_ANALYTICS_ENABLED", "False")


def stage(con, rows):
    con.execute("CREATE OR REPLACE TABLE staging.contacts (source VARCHAR, source_record_id VARCHAR, "
                "email VARCHAR, last_name VARCHAR)")
    con.executemany("INSERT INTO staging.contacts VALUES (?, ?, ?, ?)", rows)


def results(con, batch):
    return {(r[0], r[1]): r[2:] for r in con.execute(
        "SELECT expectation, column_name, blocking, success, element_count, unexpected_count, "
        "observed_value FROM ops.expectation_results WHERE batch_id = ?", [batch]).fetchall()}


def test_good_batch_then_a_collapsed_one_with_duplicates(con):
    stage(con, [("crm", f"C{i}", f"p{i}@example.it", "Rossi") for i in range(10)])
    out = check_staged_contacts(con, "run1", dt.datetime(2026, 11, 1))
    assert all(o.success for o in out)
    r = results(con, "run1")
    assert r[("expect_table_row_count_to_be_between", None)] == (True, True, None, None, 10.0)
    assert r[("expect_column_values_to_not_be_null", "email")][:4] == (False, True, 10, 0)

    # Next load: 4 rows only (< 50% of 10), a duplicate key, a null id, e-mails missing.
    stage(con, [("crm", "C1", "secret.person@example.it", None), ("crm", "C1", None, None),
                ("crm", None, None, "Bianchi"), ("crm", "C3", None, None)])
    out = check_staged_contacts(con, "run2", dt.datetime(2026, 11, 2))
    failed = {(o.expectation, o.column) for o in out if not o.success}
    assert failed == {
        ("expect_table_row_count_to_be_between", None),
        ("expect_column_values_to_not_be_null", "source_record_id"),
        ("expect_compound_columns_to_be_unique", "source,source_record_id"),
        ("expect_column_values_to_not_be_null", "email"),
        ("expect_column_values_to_not_be_null", "last_name"),
    }
    r = results(con, "run2")
    assert r[("expect_table_row_count_to_be_between", None)][1:] == (False, None, None, 4.0)
    assert r[("expect_column_values_to_not_be_null", "email")] == (False, False, 4, 3, None)
    assert r[("expect_compound_columns_to_be_unique", "source,source_record_id")][3] == 2
    expected = con.execute("SELECT expected FROM ops.expectation_results WHERE batch_id = 'run2' "
                           "AND expectation = 'expect_table_row_count_to_be_between'").fetchone()[0]
    assert expected == ">= 5 (50% of the previous 10)"
    # Re-running the check for the same batch replaces its rows; values never stored.
    check_staged_contacts(con, "run2", dt.datetime(2026, 11, 2))
    assert con.execute("SELECT count(*) FROM ops.expectation_results WHERE batch_id = 'run2'"
                       ).fetchone()[0] == 5
    everything = " ".join(str(v) for row in con.execute(
        "SELECT * FROM ops.expectation_results").fetchall() for v in row)
    assert "secret.person" not in everything and "Bianchi" not in everything


def test_every_staging_table_has_its_suite_with_configured_thresholds(con):
    from tessera.settings import EntityExpectations, NullRate
    from tessera.ingest.expectations import check_staged

    settings = EntityExpectations(row_count_min_ratio=0.8,
                                  null_rates={"product_id": NullRate(max_share=0.2, blocking=True)})
    con.execute("CREATE TABLE staging.order_lines (source VARCHAR, source_record_id VARCHAR, "
                "product_id VARCHAR, quantity BIGINT)")
    con.executemany("INSERT INTO staging.order_lines VALUES (?, ?, ?, ?)",
                    [("shop", f"L{i}", None if i < 2 else f"P{i}", 1) for i in range(10)])
    out = check_staged(con, "order_line", "order_lines", "run1", dt.datetime(2026, 11, 1), settings)
    assert all(o.success for o in out)          # 20 % empty: exactly the limit
    # Next load: 7 rows (< 80 % of 10), 3 of them without a product (43 %).
    con.execute("DELETE FROM staging.order_lines WHERE source_record_id IN ('L7', 'L8', 'L9')")
    con.execute("UPDATE staging.order_lines SET product_id = NULL WHERE source_record_id = 'L5'")
    out = check_staged(con, "order_line", "order_lines", "run2", dt.datetime(2026, 11, 2), settings)
    failed = {(o.expectation, o.column, o.blocking) for o in out if not o.success}
    assert failed == {("expect_table_row_count_to_be_between", None, True),
                      ("expect_column_values_to_not_be_null", "product_id", True)}
    rows = con.execute(
        "SELECT expectation, column_name, success, element_count, unexpected_count, observed_value, "
        "expected FROM ops.expectation_results WHERE batch_id = 'run2' "
        "AND table_name = 'staging.order_lines' ORDER BY expectation, column_name").fetchall()
    assert rows == [
        ("expect_column_values_to_not_be_null", "product_id", False, 7, 3, None, "mostly 0.8"),
        ("expect_column_values_to_not_be_null", "source_record_id", True, 7, 0, None, "no nulls"),
        ("expect_compound_columns_to_be_unique", "source,source_record_id", True, 7, 0, None, "unique"),
        ("expect_table_row_count_to_be_between", None, False, None, None, 7.0,
         ">= 8 (80% of the previous 10)"),
    ]

    # A table whose entity has no default null rates: keys and row count only. The
    # previous count is per table: contacts' history does not move the bounces' floor.
    stage(con, [("crm", f"C{i}", f"p{i}@example.it", "Rossi") for i in range(50)])
    check_staged(con, "contact", "contacts", "run2", dt.datetime(2026, 11, 2))
    con.execute("CREATE TABLE staging.bounces (source VARCHAR, source_record_id VARCHAR, "
                "email VARCHAR)")
    con.executemany("INSERT INTO staging.bounces VALUES (?, ?, ?)",
                    [("esp", "b1", "x@example.it"), ("esp", "b1", "x@example.it")])
    out = check_staged(con, "bounce", "bounces", "run3", dt.datetime(2026, 11, 3))
    assert [(o.expectation, o.success) for o in out] == [
        ("expect_table_row_count_to_be_between", True),
        ("expect_column_values_to_not_be_null", True),
        ("expect_compound_columns_to_be_unique", False)]
