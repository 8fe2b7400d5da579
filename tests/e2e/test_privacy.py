"""Erasure and suppression through the real pipeline: an erased person never comes back.

Runs the daily job on a generated sample, forgets one person who is in the CRM and the
ERP and has orders, then re-delivers them in new files (other case and spacing; only
their phone) and runs again.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import pytest

from tessera.privacy import suppression as privacy
from tessera.deployment import load_deployment
from tests.conftest import AS_OF, DEMO_CONFIG
from tessera.ingest.scrub import scrub_landing_files

KEY = os.environ["TESSERA_SUPPRESSION_KEY"]  # the key the pipeline runs with (conftest)


def _persons(env):
    with open(env.landing / "_truth" / "records.csv", encoding="utf-8") as fh:
        recs = list(csv.DictReader(fh))
    with open(env.landing / "_truth" / "persons.csv", encoding="utf-8") as fh:
        people = {p["person_id"]: p for p in csv.DictReader(fh)}
    return recs, people


@pytest.fixture(scope="module")
def erased(demo_env, demo_run):
    """Forget person P0000001 (always in CRM and ERP with an order) by e-mail."""
    recs, people = _persons(demo_env)
    person = people["P0000001"]
    con = demo_env.connect()
    try:
        mobile = con.execute("""SELECT s.mobile FROM staging.contacts s WHERE s.email_key = ? AND s.mobile IS NOT NULL
                                LIMIT 1""", [person["email"]]).fetchone()[0]
        cid = con.execute("""SELECT DISTINCT cs.customer_id FROM staging.contacts s
                             JOIN core.customer_sources cs USING (source, source_record_id)
                             WHERE s.email_key = ?""", [person["email"]]).fetchall()
        out = privacy.forget(con, load_deployment(DEMO_CONFIG), KEY, emails=[" " + person["email"].upper()],
                             request_id="req-1")
        files = scrub_landing_files(con, load_deployment(DEMO_CONFIG), demo_env.landing,
                                            KEY, "req-1", out["records"], out["orders"])
    finally:
        con.close()
    return {"person": person, "mobile": mobile, "customer_ids": [c[0] for c in cid], "out": out, "files": files}


def _all_text(con) -> str:
    chunks = []
    for schema, table in con.execute("""SELECT table_schema, table_name FROM information_schema.tables
                                         WHERE table_type = 'BASE TABLE'""").fetchall():
        rows = con.execute(f'SELECT * FROM "{schema}"."{table}"').fetchall()
        chunks.append(" ".join(str(v) for r in rows for v in r if v is not None))
    return "\n".join(chunks).lower()


def test_forget_erases_everywhere(demo_env, erased):
    email = erased["person"]["email"]
    assert erased["out"]["customers"] >= 1 and erased["out"]["rows_deleted"] > 0
    con = demo_env.connect()
    try:
        text = _all_text(con)
        left = con.execute("SELECT count(*) FROM core.customers WHERE customer_id IN (SELECT unnest(?::BIGINT[]))",
                           [erased["customer_ids"]]).fetchone()[0]
        erasures = con.execute("SELECT count(*) FROM ops.erasures WHERE request_id = 'req-1'").fetchone()[0]
        supp = con.execute("SELECT count(*) FROM ops.suppressions WHERE reason = 'erasure'").fetchone()[0]
    finally:
        con.close()
    assert email not in text
    assert erased["mobile"][-9:] not in text
    assert left == 0 and erasures >= 1 and supp >= 2
    # archived landing files no longer hold the person
    for p in demo_env.landing.rglob("*"):
        if p.is_file() and "_truth" not in p.parts:
            assert email.encode() not in p.read_bytes().lower(), p
    assert erased["files"] >= 2


def test_forget_drops_the_persons_recommendations(demo_env, erased):
    con = demo_env.connect()
    try:
        left = con.execute("SELECT count(*) FROM recommendations.contact_products "
                           "WHERE customer_id IN (SELECT unnest(?::BIGINT[]))",
                           [erased["customer_ids"]]).fetchone()[0]
        others = con.execute("SELECT count(DISTINCT customer_id) FROM recommendations.contact_products "
                             "WHERE kind = 'collaborative'").fetchone()[0]
    finally:
        con.close()
    assert left == 0
    assert others > 0  # every other card still has its list


def test_forget_is_idempotent(demo_env, erased):
    con = demo_env.connect()
    try:
        again = privacy.forget(con, load_deployment(DEMO_CONFIG), KEY, emails=[erased["person"]["email"]],
                               request_id="req-2")
    finally:
        con.close()
    assert again["rows_deleted"] == 0 and again["customers"] == 0 and again["landing_lines"] == []


def test_erased_person_is_never_resurrected(demo_env, erased):
    p = erased["person"]
    national = erased["mobile"][-10:]
    header = ("crm_id;nome;cognome;email;cellulare;data_nascita;sesso;indirizzo;cap;citta;provincia;paese;"
              "codice_fiscale;consenso_email;data_modifica;livello_fedelta;proprietario\r\n")
    rows = [
        # same e-mail, other case and spacing
        f"CRM-900001;{p['first_name']};{p['last_name']};  {p['email'].upper()}  ;;;;;;;;IT;;1;01/11/2026 10:00;;\r\n",
        # a new e-mail, but their phone in another format
        f"CRM-900002;{p['first_name']};{p['last_name']};brand.new@example.org;{national[:3]} {national[3:]};;;;;;;IT;;1;01/11/2026 10:00;;\r\n",
        # somebody else entirely: must load
        "CRM-900003;Nuova;Persona;nuova.persona@example.org;;;;;;;;IT;;1;01/11/2026 10:00;;\r\n",
    ]
    path = demo_env.landing / "crm" / "crm_contacts_20261102.csv"
    path.write_bytes((header + "".join(rows)).encode("cp1252", errors="replace"))
    result = demo_env.run_daily(AS_OF)
    assert result.success
    con = demo_env.connect()
    try:
        rep = con.execute("""SELECT records, new, rejected, suppressed FROM ops.import_report
                             WHERE file = 'crm/crm_contacts_20261102.csv'""").fetchone()
        ids = {r[0] for r in con.execute("SELECT source_record_id FROM staging.contacts").fetchall()}
        text = _all_text(con)
    finally:
        con.close()
    assert rep == (3, 1, 0, 2)
    assert "CRM-900001" not in ids and "CRM-900002" not in ids and "CRM-900003" in ids
    assert p["email"] not in text and "brand.new@example.org" not in text
    # the re-delivered records are cut out of the archived file as well
    kept = path.read_bytes().decode("cp1252")
    assert "CRM-900001" not in kept and "CRM-900002" not in kept and "CRM-900003" in kept


def test_feed_carries_a_deletion_record(demo_env, erased):
    import datetime as dt
    day = AS_OF + dt.timedelta(days=1)
    result = demo_env.run_daily(day)
    assert result.success
    folder = demo_env.feeds / "newsletter_high_value"
    deleted = set()
    for f in folder.glob("*.deletions.csv"):
        with open(f, encoding="utf-8") as fh:
            deleted |= {int(r["customer_id"]) for r in csv.DictReader(fh)}
    # announced once, in the first delivery after the erasure (the re-run of AS_OF above)
    assert set(erased["customer_ids"]) <= deleted
    with open(folder / f"newsletter_high_value_{day}.deletions.csv", encoding="utf-8") as fh:
        assert not {int(r["customer_id"]) for r in csv.DictReader(fh)} & set(erased["customer_ids"])
    with open(folder / f"newsletter_high_value_{day}.csv", encoding="utf-8") as fh:
        exported = {int(r["customer_id"]) for r in csv.DictReader(fh)}
    assert not exported & set(erased["customer_ids"])


def test_kept_feed_files_lose_the_person(demo_env, erased):
    """What `forget` and every feed's next run do: no kept feed file, in any format, holds
    the person any more; each feed records the request as scrubbed."""
    import datetime as dt
    import zipfile

    from tessera.feeds.erasure import scrub_feeds

    deployment = load_deployment(DEMO_CONFIG)
    con = demo_env.connect()
    try:
        scrub_feeds(con, deployment.feeds, demo_env.feeds, dt.datetime.now())
        scrubbed = {r[0] for r in con.execute(
            "SELECT feed FROM exports.feed_scrubs WHERE request_id = 'req-1'").fetchall()}
    finally:
        con.close()
    assert scrubbed == {f.name for f in deployment.feeds}
    email = erased["person"]["email"].lower().encode()
    for path in demo_env.feeds.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            if path.suffix == ".xlsx":
                with zipfile.ZipFile(path) as zf:
                    data = zf.read("xl/worksheets/sheet1.xml")
            assert email not in data.lower(), path.name


def test_no_personal_data_in_dagster_storage(demo_env, erased):
    """Logs, event records and metadata in DAGSTER_HOME hold no e-mail of any person."""
    _, people = _persons(demo_env)
    emails = {p["email"].encode() for p in people.values()}
    blobs = []
    for path in Path(demo_env.dagster_home).rglob("*"):
        if path.is_file():
            blobs.append(path.read_bytes().lower())
    assert blobs, "DAGSTER_HOME is empty: the runs were not stored"
    hits = [e for e in emails if any(e in b for b in blobs)]
    assert hits == []


def test_forget_interrupted_before_the_files_then_rerun(demo_env, erased):
    """A forget killed after its transaction but before scrubbing files: the person is
    already suppressed (a reload cannot bring them back) and the next run finishes the
    files."""
    _, people = _persons(demo_env)
    person = people["P0000002"]
    deployment = load_deployment(DEMO_CONFIG)
    con = demo_env.connect()
    try:
        first = privacy.forget(con, deployment, KEY, emails=[person["email"]], request_id="req-int")
        # ... killed here: scrub_landing_files never ran
    finally:
        con.close()
    assert first["rows_deleted"] > 0 and first["landing_lines"]
    crm = next((demo_env.landing / "crm").glob("crm_contacts_20261101.csv"))
    assert person["email"].encode() in crm.read_bytes().lower()  # still in the archive
    # A new run re-reading nothing new keeps the person out; a re-delivered copy is suppressed.
    copy = demo_env.landing / "crm" / "crm_contacts_20261101_copy.csv"
    copy.write_bytes(crm.read_bytes())
    assert demo_env.run_daily(AS_OF).success
    con = demo_env.connect()
    try:
        assert con.execute("SELECT count(*) FROM staging.contacts WHERE email_key = ?",
                           [person["email"]]).fetchone()[0] == 0
        # the re-run: nothing left in the warehouse, but the files are scrubbed now
        again = privacy.forget(con, deployment, KEY, emails=[person["email"]], request_id="req-int-2")
        # the re-run knows nothing of the person but the keyed hashes: enough to scrub
        files = scrub_landing_files(con, deployment, demo_env.landing, KEY, "req-int-2")
    finally:
        con.close()
    assert again["customers"] == 0
    # The run already finished the files the killed forget owed (ops.pending_scrubs), so
    # the explicit re-run finds nothing left to rewrite.
    assert files == 0
    assert person["email"].encode() not in crm.read_bytes().lower()
    con = demo_env.connect()
    try:
        assert con.execute("SELECT count(*) FROM ops.pending_scrubs WHERE request_id = 'req-int'"
                           ).fetchone()[0] == 0
    finally:
        con.close()
    copy.unlink()
