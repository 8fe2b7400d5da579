"""Personal data never reaches Dagster's run storage through a DuckDB error message."""

from __future__ import annotations

import dagster as dg
import pytest
from dagster_duckdb import DuckDBResource

from resources.warehouse import WarehouseError, redact, warehouse_resource


def test_redact_removes_quoted_values():
    msg = "Conversion Error: Could not convert string 'mario.rossi@x.it' to BOOL"
    assert redact(msg) == "Conversion Error: Could not convert string '<redacted>' to BOOL"
    assert redact("it''s 'a ''quoted'' value' here") .count("<redacted>") >= 1


def test_asset_failure_keeps_values_out_of_the_event_log(tmp_path):
    @dg.asset
    def leaky(warehouse: DuckDBResource):
        with warehouse.get_connection() as con:
            con.execute("SELECT CAST('mario.rossi@x.it' AS BOOLEAN)").fetchall()

    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize([leaky], resources={"warehouse": warehouse_resource(str(tmp_path / "w.duckdb"))},
                            instance=instance, raise_on_error=False)
    assert not result.success
    text = " ".join(str(e.dagster_event) + str(e.user_message) for e in instance.all_logs(result.run_id))
    assert "mario.rossi@x.it" not in text
    assert "WarehouseError" in text and "<redacted>" in text


def test_warehouse_error_type(tmp_path):
    res = warehouse_resource(str(tmp_path / "w.duckdb"))
    with pytest.raises(WarehouseError) as info:
        with res.get_connection() as con:
            con.execute("SELECT CAST('secret' AS INTEGER)")
    assert "secret" not in str(info.value)
