"""Privacy operations through the CLI on a real pipeline: subject access, stop monitoring,
soft delete with restore and purge."""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import json
import os
import signal
import subprocess
import sys

import pytest

from tessera.cli import main
from tessera.sampledata.generator import generate
from tessera.engine.warehouse import connect
from tests.conftest import AS_OF, DEMO_CONFIG, PROJECT_ROOT


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


CRM_HEADER = ("crm_id;nome;cognome;email;cellulare;data_nascita;sesso;indirizzo;cap;citta;provincia;"
              "paese;codice_fiscale;consenso_email;data_modifica;livello_fedelta;proprietario\r\n")


def _crm_file(home, name: str, crm_id: str, first: str, email: str) -> None:
    row = f"{crm_id};{first};Back;{email};;;;;;;;IT;;1;02/11/2026 10:00;;\r\n"
    (home / "landing" / "crm" / name).write_bytes((CRM_HEADER + row).encode("cp1252"))


def test_unsuppress_readmits_one_identifier_audited_and_restores_nothing(home, capsys):
    p, cid = person1(home)
    assert main(["forget", "--yes", "--email", p["email"]]) == 0
    suppressed = q(home, "SELECT kind, id_hash FROM ops.suppressions WHERE reason = 'erasure'")
    email_hash = q(home, "SELECT id_hash FROM ops.suppressions WHERE reason = 'erasure' AND kind = 'email'")
    assert len(email_hash) >= 1
    # While suppressed, a new delivery of the person is refused.
    _crm_file(home, "crm_contacts_20261102.csv", "CRMBACK1", "During", p["email"])
    assert main(["run", "--date", AS_OF.isoformat()]) == 0
    assert q(home, "SELECT count(*) FROM staging.contacts WHERE email_key = ?", [p["email"]]) == [(0,)]

    capsys.readouterr()
    # The reason is mandatory, one identifier only, and a script must say --yes.
    assert main(["unsuppress", "--email", p["email"], "--yes"]) == 2
    assert main(["unsuppress", "--email", p["email"], "--erp-id", "X1", "--reason", "r", "--yes"]) == 2
    assert main(["unsuppress", "--email", p["email"], "--reason", "consented again"]) == 2
    assert q(home, "SELECT count(*) FROM ops.suppressions WHERE reason = 'erasure'") == [(len(suppressed),)]
    assert main(["unsuppress", "--email", "  " + p["email"].upper(), "--reason",
                 "consented again at the shop, ticket 4711", "--by", "dpo", "--yes",
                 "--request-id", "unsup-1"]) == 0
    assert main(["unsuppress", "--email", p["email"], "--reason", "again", "--yes"]) == 1  # nothing left
    out = capsys.readouterr()
    assert p["email"] not in out.out + out.err and p["email"].upper() not in out.out + out.err

    audit = q(home, """SELECT request_id, kind, id_hash, lifted_reason, lifted_channel, why, requested_by,
                              os_user <> '', lifted_at IS NOT NULL FROM ops.unsuppressions""")
    assert audit == [("unsup-1", "email", email_hash[0][0], "erasure", "all",
                      "consented again at the shop, ticket 4711", "dpo", True, True)]
    # Only that identifier's erasure entry went; the person's other identifiers stay suppressed.
    left = q(home, "SELECT kind, id_hash FROM ops.suppressions WHERE reason = 'erasure'")
    assert sorted(left) == sorted(x for x in suppressed if x != ("email", email_hash[0][0]))
    assert q(home, "SELECT count(*) FROM ops.erasures WHERE customer_id = ?", [cid]) == [(1,)]
    # The audit keeps the keyed hash only, never the address.
    assert p["email"] not in str(q(home, "SELECT * FROM ops.unsuppressions")).lower()

    # The next run loads what arrives after; nothing of the erased history comes back.
    _crm_file(home, "crm_contacts_20261103.csv", "CRMBACK2", "Returned", p["email"])
    assert main(["run", "--date", AS_OF.isoformat()]) == 0
    back = q(home, "SELECT source_record_id, first_name FROM staging.contacts WHERE email_key = ?", [p["email"]])
    assert back == [("CRMBACK2", "Returned")]
    new_cid = q(home, """SELECT cs.customer_id FROM core.customer_sources cs
                         WHERE cs.source = 'crm_contacts' AND cs.source_record_id = 'CRMBACK2'""")[0][0]
    assert q(home, "SELECT count(*) FROM core.customer_sources WHERE customer_id = ?", [new_cid]) == [(1,)]
    assert q(home, "SELECT count(*) FROM core.orders WHERE customer_id = ?", [new_cid]) == [(0,)]
    landing = b"".join(f.read_bytes() for f in (home / "landing").rglob("*")
                       if f.is_file() and "_truth" not in f.parts)
    assert b"During" not in landing  # the record refused while suppressed stays cut out


def _cli_killed_at(point: str, *args: str) -> subprocess.CompletedProcess:
    """A real `tessera` process (the env the fixture set) that SIGKILLs itself at ``point``."""
    from pipelines import runs

    runs._release_all()  # the in-process commands before it keep their turn until released
    env = {**os.environ, "TESSERA_TEST_KILL_AT": point}
    return subprocess.run([sys.executable, "-m", "tessera.cli", "--wait", "60", *args],
                          cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=600)


def _landing_bytes(home) -> bytes:
    return b"".join(f.read_bytes() for f in (home / "landing").rglob("*")
                    if f.is_file() and "_truth" not in f.parts).lower()


def _assert_files_and_warehouse_agree(home) -> None:
    """No temporary copies; the file ledger fingerprints the files as they are; every stored
    contact line points at a line of its file that holds that record's id; nothing owed."""
    assert not [f for f in (home / "landing").rglob("*.forget-tmp")]
    for source, file, sha in q(home, "SELECT source, file, sha256 FROM ops.file_ledger"):
        path = home / "landing" / file
        if path.is_file() and not file.startswith("_api"):
            assert hashlib.sha256(path.read_bytes()).hexdigest() == sha, (source, file)
    for file, line, rid in q(home, "SELECT _file, _line, source_record_id FROM raw.crm_contacts"):
        lines = (home / "landing" / file).read_bytes().split(b"\n")
        assert rid.encode() in lines[line - 1], (file, line)
    assert q(home, "SELECT count(*) FROM ops.pending_scrubs") == [(0,)]
    assert q(home, "SELECT count(*) FROM ops.scrub_files") == [(0,)]


def test_a_killed_forget_or_purge_is_rolled_back_or_finished_by_the_next_command(home):
    with open(home / "landing" / "_truth" / "persons.csv", encoding="utf-8") as fh:
        people = [r for r in csv.DictReader(fh)]
    emails = [p["email"] for p in people if p["email"]
              and q(home, "SELECT count(*) FROM staging.contacts WHERE email_key = ?", [p["email"]])[0][0]]
    a, b, c, d = emails[:4]
    raw_before = q(home, "SELECT count(*) FROM raw.crm_contacts")[0][0]

    # Killed inside the warehouse transaction: nothing happened, the warehouse opens.
    done = _cli_killed_at("forget-before-commit", "forget", "--yes", "--email", a)
    assert done.returncode == -signal.SIGKILL
    assert q(home, "SELECT count(*) FROM raw.crm_contacts") == [(raw_before,)]
    assert q(home, "SELECT count(*) FROM ops.suppressions WHERE reason = 'erasure'") == [(0,)]
    assert q(home, "SELECT count(*) FROM ops.erasures") == [(0,)]
    assert q(home, "SELECT count(*) FROM ops.pending_scrubs") == [(0,)]
    assert a.encode() in _landing_bytes(home)

    # Killed after it, before the files: the next command (a purge with nothing to purge)
    # finishes the files.
    done = _cli_killed_at("forget-after-commit", "forget", "--yes", "--email", a)
    assert done.returncode == -signal.SIGKILL
    assert q(home, "SELECT count(*) FROM staging.contacts WHERE email_key = ?", [a]) == [(0,)]
    assert a.encode() in _landing_bytes(home)
    assert q(home, "SELECT count(DISTINCT request_id) FROM ops.pending_scrubs") == [(1,)]
    assert main(["purge", "--yes"]) == 0
    assert a.encode() not in _landing_bytes(home)
    _assert_files_and_warehouse_agree(home)

    # Killed with the new file written but not yet renamed: the next daily run finishes it.
    done = _cli_killed_at("scrub-before-rename", "forget", "--yes", "--email", b)
    assert done.returncode == -signal.SIGKILL
    assert [f for f in (home / "landing").rglob("*.forget-tmp")]  # the copy it was writing
    assert q(home, "SELECT count(*) FROM ops.scrub_files") == [(1,)]
    assert main(["run", "--date", AS_OF.isoformat()]) == 0
    assert b.encode() not in _landing_bytes(home)
    _assert_files_and_warehouse_agree(home)

    # Killed right after a rename: the ledger and stored lines are brought to the new file.
    done = _cli_killed_at("scrub-after-rename", "forget", "--yes", "--email", c)
    assert done.returncode == -signal.SIGKILL
    assert q(home, "SELECT count(*) FROM ops.scrub_files") == [(1,)]
    assert main(["purge", "--yes"]) == 0
    assert c.encode() not in _landing_bytes(home)
    _assert_files_and_warehouse_agree(home)

    # A purge killed after its transaction: the soft delete is marked applied with the
    # erasure (never erased twice), and the files are finished by the next command.
    cid = q(home, """SELECT cs.customer_id FROM staging.contacts s JOIN core.customer_sources cs
                     USING (source, source_record_id) WHERE s.email_key = ?""", [d])[0][0]
    assert main(["bulk-edit", "delete", "--yes", "--customer-id", str(cid)]) == 0
    done = _cli_killed_at("forget-after-commit", "purge", "--yes", "--grace-hours", "0")
    assert done.returncode == -signal.SIGKILL
    assert q(home, "SELECT count(*) FROM core.customers WHERE customer_id = ?", [cid]) == [(0,)]
    assert q(home, "SELECT count(*) FROM ops.bulk_edits WHERE customer_id = ? AND applied_at IS NULL",
             [cid]) == [(0,)]
    assert d.encode() in _landing_bytes(home)
    assert main(["export-person", "--customer-id", str(cid), "--out", str(home / "x.json")]) == 0
    assert json.loads((home / "x.json").read_text())["tables"] == {}
    assert d.encode() not in _landing_bytes(home)
    _assert_files_and_warehouse_agree(home)
    assert main(["run", "--date", (AS_OF + dt.timedelta(days=1)).isoformat()]) == 0
    for e in (a, b, c, d):
        assert q(home, "SELECT count(*) FROM staging.contacts WHERE email_key = ?", [e]) == [(0,)]
