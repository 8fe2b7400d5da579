"""The Dagster UI for analysts: column descriptions from the contracts, the run's import
report and rejects per file, and the landing sensor asking for the schedule's day."""

from __future__ import annotations

import datetime as dt

import dagster as dg

from tessera.contracts import column_descriptions, table_entity
from tessera.engine.warehouse import connect, ensure_warehouse


def test_columns_are_described_from_published_and_entity_contracts():
    d = column_descriptions("raw.crm_contacts", "contact", {"loyalty_tier": "loyalty programme tier"})
    assert d["source_record_id"] == "the record's id in its source (CRM id, ERP idgestionale)"
    assert d["email"] == "email (string; format email)"  # no description: what the contract says
    assert d["gender"] == "gender (string; one of M, F)"
    assert d["_file"].startswith("landing file the record came from")
    assert d["loyalty_tier"] == "loyalty programme tier"
    customers = column_descriptions("core.customers")
    assert customers["customer_id"] == "stable id of the person"  # the published contract wins
    assert customers["email"] == "golden e-mail, trimmed and lower-case"
    assert table_entity("staging.order_lines") == "order_line"
    assert table_entity("staging.companies") == "company"
    assert table_entity("marts.contact_cards") == "contact"


def test_table_metadata_carries_the_descriptions(tmp_path):
    from assets._common import table_metadata

    con = connect(tmp_path / "w.duckdb")
    ensure_warehouse(con)
    con.execute("CREATE TABLE staging.contacts (source VARCHAR, email VARCHAR, email_key VARCHAR, "
                "mystery INTEGER)")
    schema = table_metadata(con, "staging", "contacts", 0.1)["dagster/column_schema"]
    got = {c.name: c.description for c in schema.columns}
    assert got == {"source": "name of the source (sources.yaml)", "email": "email (string; format email)",
                   "email_key": "match key: e-mail trimmed and lower-cased; empty for junk addresses",
                   "mystery": None}


def test_run_report_lists_files_and_top_reasons_with_lines(tmp_path):
    from tessera.ingest.run_report import reasons_markdown, run_files, top_reject_reasons

    con = connect(tmp_path / "w.duckdb")
    ensure_warehouse(con)
    now = dt.datetime(2026, 11, 2, 3)
    for source, file, run, records, rejected in [("crm", "crm/a.csv", "r1", 10, 3), ("erp", "erp/b.xml", "r1", 5, 0),
                                                 ("crm", "crm/old.csv", "r0", 7, 1)]:
        con.execute("INSERT INTO ops.import_report (source, file, batch_id, status, records, new, updated, "
                    "unchanged, rejected, sha256, loaded_at) VALUES (?, ?, ?, 'loaded', ?, ?, 0, 0, ?, '', ?)",
                    [source, file, run, records, records - rejected, rejected, now])
    for line, field, reason, run in [(9, "email", "not an e-mail address", "r1"),
                                     (4, "email", "not an e-mail address", "r1"),
                                     (7, "birth_date", "not a date in format %d/%m/%Y (line 7)", "r1"),
                                     (2, "email", "not an e-mail address", "r0")]:
        con.execute("INSERT INTO ops.rejects VALUES ('crm', 'crm/a.csv', ?, ?, ?, 'X1', ?, ?)",
                    [line, field, reason, run, now])
    files = run_files(con, "r1")
    assert [(f["source"], f["file"], f["records"], f["new"], f["rejected"]) for f in files] == [
        ("crm", "crm/a.csv", 10, 7, 3), ("erp", "erp/b.xml", 5, 5, 0)]
    reasons = top_reject_reasons(con, "r1")
    assert reasons == [
        {"source": "crm", "file": "crm/a.csv", "field": "email", "reason": "not an e-mail address",
         "records": 2, "lines": [4, 9]},
        {"source": "crm", "file": "crm/a.csv", "field": "birth_date", "reason": "not a date in format %d/%m/%Y",
         "records": 1, "lines": [7]}]
    md = reasons_markdown(reasons)
    assert "| crm | crm/a.csv | email | not an e-mail address | 2 | 4, 9 |" in md
    assert "X1" not in md  # the record's id (and never a value) stays out


def test_landing_sensor_asks_for_the_day_the_schedule_runs(tmp_path):
    from pipelines.schedules import daily_schedule
    from pipelines.sensors import sensor_partition
    from tessera.deployment import load_deployment
    from tests.conftest import DEMO_CONFIG

    at = dt.datetime(2026, 11, 2, 2, 0, tzinfo=dt.timezone.utc)
    scheduled = list(daily_schedule.evaluate_tick(
        dg.build_schedule_context(scheduled_execution_time=at)).run_requests)[0].partition_key
    assert scheduled == "2026-11-01" == sensor_partition(at) == sensor_partition(at + dt.timedelta(hours=20))

    landing = tmp_path / "landing"
    (landing / "crm").mkdir(parents=True)
    (landing / "crm" / "crm_contacts_20261101.csv").write_text("x")
    from pipelines.definitions import build_definitions

    defs = build_definitions(load_deployment(DEMO_CONFIG), tmp_path / "w.duckdb", landing, tmp_path / "feeds")
    sensor = defs.get_sensor_def("landing_files_sensor")
    context = dg.build_sensor_context(definitions=defs)
    request = list(sensor.evaluate_tick(context).run_requests)[0]
    yesterday = (dt.datetime.now(dt.timezone.utc).date() - dt.timedelta(days=1)).isoformat()
    assert request.partition_key == sensor_partition() == yesterday
