"""Forget reaches every archived delivery: CSV, XML, JSON lines, XLSX imports and API
snapshots are rewritten without the erased person's records, the rest of each file stays
as it was, and the warehouse's stored line numbers (raw, rejects) follow the new files."""
from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import openpyxl

from tessera.privacy import suppression as privacy
from tessera.deployment import load_deployment
from tessera.ingest.load import ingest_source
from tessera.engine.warehouse import connect, ensure_warehouse
from tests.core.test_api import TOKEN, Api, serve
from tessera.ingest.scrub import scrub_landing_files

KEY = os.environ["TESSERA_SUPPRESSION_KEY"]
NOW = dt.datetime(2026, 11, 1, 6, 0)
GONE = "erased.person@example.it"

TESSERA_YAML = """
deployment: test
nodes: [{name: crm}, {name: erp}]
tree: {priority: [erp, crm]}
"""

SOURCES_YAML = """
sources:
  - name: crm_csv
    entity: contact
    node: crm
    format: csv
    path: "crm/*.csv"
    csv: {{delimiter: ";", encoding: utf-8}}
    columns: {{source_record_id: id, email: email, first_name: name, birth_date: born}}
  - name: erp_xml
    entity: contact
    node: erp
    format: xml
    path: "erp/*.xml"
    xml: {{record_tag: utente}}
    columns: {{source_record_id: id, email: email, first_name: nome}}
  - name: web_jsonl
    entity: contact
    node: crm
    format: jsonl
    path: "web/*.jsonl"
    columns: {{source_record_id: id, email: email}}
  - name: xlsx_import
    entity: contact
    node: crm
    format: xlsx
    path: "xlsx/*.xlsx"
    xlsx: {{sheet: Import}}
    columns: {{source_record_id: ID, email: Email, first_name: Nome}}
  - name: crm_api
    entity: contact
    node: crm
    format: api
    api:
      url: "http://127.0.0.1:{port}/people"
      pagination: page
      page_size: 3
      token_env: TESSERA_TEST_TOKEN
      backoff_s: 0.01
    columns: {{source_record_id: id, email: profile.email, first_name: profile.name}}
"""

CSV = (
    "id;email;name;born\r\n"
    "C1;keep.one@example.it;Uno;01/01/1980\r\n"
    "C2;ERASED.person@example.it ;\"Due\r\nsu due righe\";02/02/1980\r\n"
    "C3;keep.three@example.it;Tre;31/02/1980\r\n"       # bad date: a reject on line 5
    "C4;keep.four@example.it;Quattro;04/04/1980\r\n"
)

XML = """<?xml version="1.0" encoding="UTF-8"?>
<sincronizza>
  <!-- a comment with <utente> inside -->
  <utente>
    <id>X1</id><email>keep.one@example.it</email><nome>Uno</nome>
  </utente>
  <utente>
    <id>X2</id>
    <email>erased.person@example.it</email>
    <nome><![CDATA[Due </utente> finto]]></nome>
  </utente>
  <utente><id>X3</id><email>keep.three@example.it</email><nome>Tre</nome></utente>
</sincronizza>
"""

JSONL = ('{"id": "J1", "email": "keep.one@example.it"}\n'
         '{"id": "J2", "email": "Erased.Person@example.it"}\n'
         '{"id": "J3", "email": "keep.three@example.it"}\n')


def _workbook(path: Path) -> None:
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.title = "Import"
    ws.append(["ID", "Email", "Nome"])
    ws.append(["W1", "keep.one@example.it", "Uno"])
    ws.append(["W2", "erased.person@example.it", "Due"])
    ws.append(["W3", "keep.three@example.it", "Tre"])
    ws.append(["W4", "not-an-email", "Quattro"])        # a reject on row 5
    notes = wb.create_sheet("Notes")
    notes.append(["kept as it is"])
    wb.save(path)


def test_forget_rewrites_every_kind_of_landing_file(tmp_path, monkeypatch):
    people = [{"id": "U1", "profile": {"email": "keep.api@example.it", "name": "A"}},
              {"id": "U2", "profile": {"email": GONE, "name": "B"}},
              {"id": "U3", "profile": {"email": "keep.api3@example.it", "name": "C"}},
              {"id": "U4", "profile": {"email": "broken@@example.it", "name": "D"}}]
    server = serve(Api(records=people))
    try:
        config = tmp_path / "config"
        config.mkdir()
        (config / "tessera.yaml").write_text(TESSERA_YAML)
        (config / "sources.yaml").write_text(SOURCES_YAML.format(port=server.server_address[1]))
        monkeypatch.setenv("TESSERA_TEST_TOKEN", TOKEN)
        dep = load_deployment(config)
        landing = tmp_path / "landing"
        for sub in ("crm", "erp", "web", "xlsx"):
            (landing / sub).mkdir(parents=True)
        (landing / "crm" / "a.csv").write_bytes(CSV.encode("utf-8"))
        (landing / "erp" / "a.xml").write_text(XML, encoding="utf-8")
        (landing / "web" / "a.jsonl").write_text(JSONL, encoding="utf-8")
        _workbook(landing / "xlsx" / "a.xlsx")

        con = connect(tmp_path / "wh.duckdb")
        ensure_warehouse(con)
        for s in dep.sources:
            ingest_source(con, dep, s, landing, "b1", NOW, suppression_key=KEY, token=TOKEN)
        before = dict(con.execute("SELECT source, line FROM ops.rejects WHERE field <> '*'").fetchall())
        assert before == {"crm_csv": 5, "xlsx_import": 5, "crm_api": 4}
        assert con.execute("SELECT _line FROM raw.erp_xml WHERE source_record_id = 'X3'").fetchone()[0] == 12

        out = privacy.forget(con, dep, KEY, emails=[GONE.upper()], request_id="r1")
        assert {k: sorted(v) for k, v in out["records"].items()} == {
            "crm_csv": ["C2"], "erp_xml": ["X2"], "web_jsonl": ["J2"], "xlsx_import": ["W2"],
            "crm_api": ["U2"]}
        n = scrub_landing_files(con, dep, landing, KEY, "r1", out["records"], out["orders"])
        assert n == 5

        # Every file lost the person and nothing else.
        assert (landing / "crm" / "a.csv").read_bytes().decode() == (
            "id;email;name;born\r\n"
            "C1;keep.one@example.it;Uno;01/01/1980\r\n"
            "C3;keep.three@example.it;Tre;31/02/1980\r\n"
            "C4;keep.four@example.it;Quattro;04/04/1980\r\n")
        assert (landing / "erp" / "a.xml").read_text() == XML.replace(
            "  <utente>\n    <id>X2</id>\n    <email>erased.person@example.it</email>\n"
            "    <nome><![CDATA[Due </utente> finto]]></nome>\n  </utente>\n", "")
        assert (landing / "web" / "a.jsonl").read_text() == JSONL.replace(
            '{"id": "J2", "email": "Erased.Person@example.it"}\n', "")
        wb = openpyxl.load_workbook(landing / "xlsx" / "a.xlsx", read_only=True)
        assert [list(r) for r in wb["Import"].iter_rows(values_only=True)] == [
            ["ID", "Email", "Nome"], ["W1", "keep.one@example.it", "Uno"],
            ["W3", "keep.three@example.it", "Tre"], ["W4", "not-an-email", "Quattro"]]
        assert [list(r) for r in wb["Notes"].iter_rows(values_only=True)] == [["kept as it is"]]
        wb.close()
        snapshots = list((landing / "_api" / "crm_api").glob("*.jsonl"))
        assert len(snapshots) == 1
        text = snapshots[0].read_text()
        assert "keep.api@example.it" in text and GONE not in text.lower()
        for p in landing.rglob("*"):
            if p.is_file():
                assert b"erased.person" not in p.read_bytes().lower(), p

        # Stored lines follow the rewritten files.
        after = dict(con.execute("SELECT source, line FROM ops.rejects WHERE field <> '*'").fetchall())
        assert after == {"crm_csv": 3, "xlsx_import": 4, "crm_api": 3}
        csv_lines = (landing / "crm" / "a.csv").read_text().splitlines()
        assert csv_lines[after["crm_csv"] - 1].startswith("C3;")
        assert con.execute("SELECT _line FROM raw.crm_csv WHERE source_record_id = 'C4'").fetchone()[0] == 4
        xml_lines = (landing / "erp" / "a.xml").read_text().splitlines()
        x3 = con.execute("SELECT _line FROM raw.erp_xml WHERE source_record_id = 'X3'").fetchone()[0]
        assert x3 == 7 and "<id>X3</id>" in xml_lines[x3 - 1]
        assert con.execute("SELECT _line FROM raw.web_jsonl WHERE source_record_id = 'J3'").fetchone()[0] == 2
        assert con.execute("SELECT _line FROM raw.crm_api WHERE source_record_id = 'U3'").fetchone()[0] == 2

        # The ledger knows the rewritten files: the next run loads nothing again.
        for s in dep.sources:
            if s.format != "api":
                outcome = ingest_source(con, dep, s, landing, "b2", NOW, suppression_key=KEY)
                assert [f.status for f in outcome.files] == ["already_loaded"], s.name
        # Idempotent: nothing left to remove.
        assert scrub_landing_files(con, dep, landing, KEY, "r1b", {}, []) == 0
        con.close()
    finally:
        server.shutdown()
        server.server_close()


def test_forget_rewrites_utf16_xml(tmp_path):
    config = tmp_path / "config"
    config.mkdir()
    (config / "tessera.yaml").write_text(TESSERA_YAML)
    (config / "sources.yaml").write_text("""
sources:
  - name: erp_xml
    entity: contact
    node: erp
    format: xml
    path: "erp/*.xml"
    xml: {record_tag: utente}
    columns: {source_record_id: id, email: email, first_name: nome}
""")
    dep = load_deployment(config)
    landing = tmp_path / "landing"
    (landing / "erp").mkdir(parents=True)
    (landing / "erp" / "a.xml").write_bytes(XML.replace('encoding="UTF-8"', 'encoding="UTF-16"').encode("utf-16"))
    con = connect(tmp_path / "wh.duckdb")
    ensure_warehouse(con)
    ingest_source(con, dep, dep.sources[0], landing, "b1", NOW, suppression_key=KEY)
    assert con.execute("SELECT count(*) FROM raw.erp_xml").fetchone()[0] == 3
    out = privacy.forget(con, dep, KEY, emails=[GONE], request_id="r1")
    assert scrub_landing_files(con, dep, landing, KEY, "r1", out["records"], out["orders"]) == 1
    text = (landing / "erp" / "a.xml").read_bytes().decode("utf-16")
    assert GONE not in text and "keep.three@example.it" in text and "keep.one@example.it" in text
    con.close()
