"""Privacy operations through the CLI on a real pipeline: subject access, stop monitoring,
soft delete with restore and purge."""

from __future__ import annotations

import csv
import datetime as dt
import json

import pytest

from tessera.cli import main
from tessera.sampledata.generator import generate
from tessera.engine.warehouse import connect
from tests.conftest import AS_OF, DEMO_CONFIG


@pytest.fixture()
def home(tmp_path, monkeypatch):
    for var, val in {"TESSERA_HOME": tmp_path, "TESSERA_CONFIG": DEMO_CONFIG,
                     "DAGSTER_HOME": tmp_path / "dagster_home",
                     "TESSERA_SUPPRESSION_KEY": "cli-test-key"}.items():
        monkeypatch.setenv(var, str(val))
    for var in ("TESSERA_WAREHOUSE", "TESSERA_LANDING", "TESSERA_FEEDS"):
        monkeypatch.delenv(var, raising=False)
    generate(tmp_path / "landing", contacts=60, seed=3, as_of=AS_OF)
    assert main(["run", "--date", AS_OF.isoformat()]) == 0
    return tmp_path


def q(home, sql, params=None):
    con = connect(home / "warehouse.duckdb")
    try:
        return con.execute(sql, params or []).fetchall()
    finally:
        con.close()


def person1(home):
    with open(home / "landing" / "_truth" / "persons.csv", encoding="utf-8") as fh:
        p = next(r for r in csv.DictReader(fh) if r["person_id"] == "P0000001")
    cid = q(home, """SELECT DISTINCT cs.customer_id FROM staging.contacts s
                     JOIN core.customer_sources cs USING (source, source_record_id) WHERE s.email_key = ?""",
            [p["email"]])[0][0]
    return p, cid


def test_subject_access_export(home, capsys):
    p, cid = person1(home)
    out = home / "sar.json"
    assert main(["export-person", "--email", p["email"], "--out", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["customer_id"] == cid
    assert data["tables"]["core.customers"][0]["email"] == p["email"]
    assert "raw.erp_contacts" in data["tables"] and "raw.crm_contacts" in data["tables"]
    assert "core.orders" in data["tables"]
    assert "recommendations.contact_products" in data["tables"]  # profiling is personal data
    assert p["email"] not in capsys.readouterr().out  # the CLI never echoes personal data


def test_stop_monitoring_keeps_no_new_events(home):
    p, cid = person1(home)
    assert main(["stop-monitoring", "--customer-id", str(cid)]) == 0
    events = home / "landing" / "web" / "web_events_20261102.jsonl"
    events.write_text(
        json.dumps({"event_id": "EVX1", "type": "page_view", "occurred_at": "2026-11-02T10:00:00Z",
                    "email": p["email"].upper(), "properties": {}}) + "\n" +
        json.dumps({"event_id": "EVX2", "type": "page_view", "occurred_at": "2026-11-02T10:00:00Z",
                    "email": "someone.else@example.org", "properties": {}}) + "\n", encoding="utf-8")
    assert main(["run", "--date", AS_OF.isoformat()]) == 0
    ids = {r[0] for r in q(home, "SELECT source_record_id FROM staging.events")}
    assert "EVX2" in ids and "EVX1" not in ids
    assert q(home, "SELECT suppressed FROM ops.import_report WHERE file LIKE '%20261102.jsonl'") == [(1,)]
    # the person's other data is untouched
    assert q(home, "SELECT count(*) FROM core.customers WHERE customer_id = ?", [cid]) == [(1,)]


def test_soft_delete_restore_and_purge(home):
    p, cid = person1(home)
    other = q(home, "SELECT min(customer_id) FROM core.customers WHERE customer_id <> ?", [cid])[0][0]
    assert main(["bulk-edit", "delete", "--yes", "--customer-id", str(cid), "--customer-id", str(other), "--by", "t"]) == 0
    assert main(["run", "--date", AS_OF.isoformat()]) == 0
    cards = {r[0] for r in q(home, "SELECT customer_id FROM marts.contact_cards")}
    assert cid not in cards and other not in cards
    assert q(home, "SELECT count(*) FROM core.customers WHERE customer_id IN (?, ?)", [cid, other]) == [(2,)]
    assert main(["bulk-edit", "restore", "--customer-id", str(other)]) == 0
    assert main(["run", "--date", AS_OF.isoformat()]) == 0
    assert other in {r[0] for r in q(home, "SELECT customer_id FROM marts.contact_cards")}
    assert main(["purge", "--yes", "--grace-hours", "0"]) == 0
    assert q(home, "SELECT count(*) FROM core.customers WHERE customer_id = ?", [cid]) == [(0,)]
    assert q(home, "SELECT count(*) FROM core.customers WHERE customer_id = ?", [other]) == [(1,)]
    # the purge is an erasure: the person does not come back with the next run
    assert main(["run", "--date", (AS_OF + dt.timedelta(days=1)).isoformat()]) == 0
    assert q(home, "SELECT count(*) FROM staging.contacts WHERE email_key = ?", [p["email"]]) == [(0,)]


def test_imports_for_a_soft_deleted_person_are_held_until_restored(home):
    import time

    p, cid = person1(home)
    crm_id = q(home, """SELECT source_record_id FROM core.customer_sources
                        WHERE customer_id = ? AND source = 'crm_contacts' LIMIT 1""", [cid])[0][0]
    assert main(["bulk-edit", "delete", "--yes", "--customer-id", str(cid)]) == 0
    time.sleep(1.1)  # the new file is loaded strictly after the soft delete
    header = ("crm_id;nome;cognome;email;cellulare;data_nascita;sesso;indirizzo;cap;citta;provincia;paese;"
              "codice_fiscale;consenso_email;data_modifica;livello_fedelta;proprietario\r\n")
    row = f"{crm_id};Renamed;Person;{p['email']};;;;;;;;IT;;1;02/11/2026 10:00;;\r\n"
    (home / "landing" / "crm" / "crm_contacts_20261102.csv").write_bytes((header + row).encode("cp1252"))
    assert main(["run", "--date", AS_OF.isoformat()]) == 0
    assert q(home, "SELECT count(*) FROM raw.crm_contacts WHERE source_record_id = ? AND first_name = 'Renamed'",
             [crm_id]) == [(1,)]  # received and kept...
    assert q(home, "SELECT first_name FROM staging.contacts WHERE source = 'crm_contacts' AND source_record_id = ?",
             [crm_id])[0][0] != "Renamed"  # ...but held while the person is soft-deleted
    assert main(["bulk-edit", "restore", "--customer-id", str(cid)]) == 0
    assert main(["run", "--date", AS_OF.isoformat()]) == 0
    assert q(home, "SELECT first_name FROM staging.contacts WHERE source = 'crm_contacts' AND source_record_id = ?",
             [crm_id]) == [("Renamed",)]


def test_purge_interrupted_then_rerun(home):
    """A purge that fails inside its transaction erases nothing (no half-erased person);
    one stopped between the warehouse and the files is finished by the next purge."""
    p, cid = person1(home)
    assert main(["bulk-edit", "delete", "--yes", "--customer-id", str(cid), "--by", "t"]) == 0
    before = q(home, "SELECT count(*) FROM raw.crm_contacts")[0][0]
    # A real failure half-way through the deletes: a table whose customer_id cannot be
    # compared with the erased ids (a cast error, raised after raw and staging are done).
    con = connect(home / "warehouse.duckdb")
    con.execute("CREATE TABLE marts.zz_broken (customer_id VARCHAR)")
    con.execute("INSERT INTO marts.zz_broken VALUES ('not-a-number')")
    con.close()
    with pytest.raises(Exception):
        main(["purge", "--yes", "--grace-hours", "0"])
    assert q(home, "SELECT count(*) FROM raw.crm_contacts")[0][0] == before
    assert q(home, "SELECT count(*) FROM core.customers WHERE customer_id = ?", [cid]) == [(1,)]
    assert q(home, "SELECT count(*) FROM ops.suppressions WHERE reason = 'erasure'") == [(0,)]
    assert q(home, "SELECT count(*) FROM ops.erasures") == [(0,)]
    q(home, "DROP TABLE marts.zz_broken")

    # Stopped after the warehouse transaction, before the landing files were rewritten.
    from tessera.privacy import suppression as privacy
    from tessera.deployment import load_deployment

    con = connect(home / "warehouse.duckdb")
    try:
        out = privacy.forget(con, load_deployment(DEMO_CONFIG), "cli-test-key", customer_ids=[cid],
                             request_id="purge-killed")
    finally:
        con.close()
    assert out["customers"] == 1
    landing_text = b"".join(f.read_bytes() for f in (home / "landing").rglob("*")
                            if f.is_file() and "_truth" not in f.parts).lower()
    assert p["email"].encode() in landing_text  # files not done yet
    assert main(["purge", "--yes", "--grace-hours", "0"]) == 0  # the next nightly purge finishes it
    landing_text = b"".join(f.read_bytes() for f in (home / "landing").rglob("*")
                            if f.is_file() and "_truth" not in f.parts).lower()
    assert p["email"].encode() not in landing_text
    assert q(home, "SELECT count(*) FROM ops.bulk_edits WHERE customer_id = ? AND applied_at IS NULL",
             [cid]) == [(0,)]
    assert main(["purge", "--yes", "--grace-hours", "0"]) == 0  # and then there is nothing left to do
    assert main(["run", "--date", (AS_OF + dt.timedelta(days=1)).isoformat()]) == 0
    assert q(home, "SELECT count(*) FROM staging.contacts WHERE email_key = ?", [p["email"]]) == [(0,)]


def test_rebuild_keeps_ids_and_never_brings_back_the_erased(home):
    p, cid = person1(home)
    assert main(["forget", "--yes", "--email", p["email"]]) == 0
    ids = dict(q(home, "SELECT source || ':' || source_record_id, customer_id FROM core.customer_sources"))
    other = q(home, "SELECT min(customer_id) FROM core.customers")[0][0]
    assert main(["bulk-edit", "delete", "--yes", "--customer-id", str(other)]) == 0
    assert main(["rebuild", "--yes", "--date", AS_OF.isoformat()]) == 2  # a pending soft delete
    assert main(["bulk-edit", "restore", "--customer-id", str(other)]) == 0
    assert main(["rebuild", "--date", AS_OF.isoformat()]) == 2  # no --yes
    assert main(["rebuild", "--yes", "--date", AS_OF.isoformat()]) == 0
    assert dict(q(home, "SELECT source || ':' || source_record_id, customer_id FROM core.customer_sources")) == ids
    assert q(home, "SELECT count(*) FROM staging.contacts WHERE email_key = ?", [p["email"]]) == [(0,)]
    assert q(home, "SELECT count(*) FROM core.customers WHERE customer_id = ?", [cid]) == [(0,)]
