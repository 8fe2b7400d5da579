"""The consent ledger through real ingestion: "no" is only lifted by an explicit, newer yes."""

from __future__ import annotations

import datetime as dt

import pytest

from tests.stages.test_identity_golden import SOURCES_YAML, World

CONSENT_SOURCE = """
  - name: preference_centre
    entity: consent
    node: crm
    format: csv
    path: "prefs/*.csv"
    csv: {delimiter: ",", encoding: utf-8}
    timestamp_format: "%Y-%m-%d"
    columns: {source_record_id: id, email: email, channel: channel, state: state, kind: kind,
              occurred_at: at}
"""

ERP = "id,first,last,email,mobile,updated\nE1,Mario,Rossi,mario@x.it,,2026-01-01\n"
HEADER = "id;first;last;email;mobile;consent;updated\n"


@pytest.fixture()
def world(tmp_path) -> World:
    w = World(tmp_path)
    (w.config / "sources.yaml").write_text(SOURCES_YAML + CONSENT_SOURCE)
    w.drop("erp/erp_1.csv", ERP)
    return w


def state(w: World, rid: str, channel: str = "email") -> str:
    cid = w.customer_of()[rid]
    return w.query("SELECT email_consent, sms_consent FROM core.customers WHERE customer_id = ?",
                   [cid])[0][0 if channel == "email" else 1]


def test_bulk_import_saying_yes_never_lifts_an_opt_out(world):
    world.drop("crm/crm_1.csv", HEADER + "C1;Mario;Rossi;mario@x.it;;0;2026-03-01\n", "cp1252")
    world.materialize()
    assert state(world, "C1") == "withdrawn"
    world.drop("crm/crm_2.csv", HEADER + "C1;Mario;Rossi;mario@x.it;;1;2026-05-01\n", "cp1252")
    world.materialize()
    assert state(world, "C1") == "withdrawn"
    # the import's "yes" is in the ledger, it just does not outrank the "no"
    kinds = world.query("SELECT state, kind, explicit FROM core.consent_events ORDER BY occurred_at")
    assert kinds == [("withdrawn", "IMPORT", False), ("granted", "IMPORT", False)]


def test_late_older_file_never_regresses_an_opt_out(world):
    world.drop("crm/crm_2.csv", HEADER + "C1;Mario;Rossi;mario@x.it;;0;2026-06-01\n", "cp1252")
    world.materialize()
    # an older export (updated 2025) delivered after the newer one
    world.drop("crm/crm_3_old.csv", HEADER + "C1;Mario;Rossi;mario@x.it;;1;2025-01-01\n", "cp1252")
    world.materialize()
    assert state(world, "C1") == "withdrawn"


def test_merge_of_opted_out_and_opted_in_records_is_opted_out(world):
    world.drop("crm/crm_1.csv", HEADER + "C1;Mario;Rossi;mario@x.it;;1;2026-06-01\n"
                                         "C2;Mario;Rossi;MARIO@x.it;;0;2026-01-01\n", "cp1252")
    world.materialize()
    ids = world.customer_of()
    assert ids["C1"] == ids["C2"] == ids["E1"]
    assert state(world, "C1") == "withdrawn"


def test_explicit_newer_consent_event_regrants(world):
    world.drop("crm/crm_1.csv", HEADER + "C1;Mario;Rossi;mario@x.it;;0;2026-03-01\n", "cp1252")
    world.drop("prefs/p1.csv", "id,email,channel,state,kind,at\n"
                               "P1,mario@x.it,email,granted,FROM_INIT,2026-02-01\n")
    world.materialize()
    assert state(world, "C1") == "withdrawn"  # the explicit yes is OLDER than the no
    world.drop("prefs/p2.csv", "id,email,channel,state,kind,at\n"
                               "P2,mario@x.it,email,granted,MANAGE,2026-04-01\n")
    world.materialize()
    assert state(world, "C1") == "granted"


def test_unsubscribe_withdraws_only_its_channel(world):
    world.drop("crm/crm_1.csv", HEADER + "C1;Mario;Rossi;mario@x.it;;1;2026-03-01\n", "cp1252")
    world.drop("prefs/p1.csv", "id,email,channel,state,kind,at\n"
                               "P1,mario@x.it,sms,granted,MANAGE,2026-02-01\n"
                               "P2,mario@x.it,sms,withdrawn,MANAGE,2026-04-01\n")
    world.materialize()
    assert state(world, "C1") == "granted"
    assert state(world, "C1", "sms") == "withdrawn"


def test_bulk_edit_is_applied_in_the_next_run_and_audited(world):
    world.drop("crm/crm_1.csv", HEADER + "C1;Mario;Rossi;mario@x.it;;1;2026-03-01\n", "cp1252")
    world.materialize()
    assert state(world, "C1") == "granted"
    from tessera.privacy.bulk import request_bulk_edit
    from tessera.engine.warehouse import connect

    con = connect(world.warehouse)
    try:
        n = request_bulk_edit(con, "disable_email", [world.customer_of()["C1"]], edit_id="B1",
                              requested_by="analyst-7", now=dt.datetime(2026, 11, 1, 9, 0))
    finally:
        con.close()
    assert n == 1
    assert state(world, "C1") == "granted"  # applied by the next run, not before
    world.materialize()
    assert state(world, "C1") == "withdrawn"
    audit = world.query("SELECT edit_id, action, requested_by, applied_at IS NOT NULL FROM ops.bulk_edits")
    assert audit == [("B1", "disable_email", "analyst-7", True)]
