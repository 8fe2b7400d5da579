"""Identity rules on real files and a real DuckDB warehouse, without Dagster.

Each test writes a small contact file, runs ingestion, staging and identity from
``tessera/`` and looks at ``core.customer_sources``, ``core.refused_merges`` and
``core.merge_log``. The records are chosen so that exactly one rule can explain each
link (or each refusal).
"""

from __future__ import annotations

import datetime as dt
import textwrap
from pathlib import Path

import pytest

from tessera.deployment import load_deployment
from tessera.identity.resolve import resolve
from tessera.ingest.load import ingest_source
from tessera.ingest.staging import build_contacts
from tessera.engine.warehouse import connect, ensure_warehouse

HEADER = "id,erp,first,last,email,mobile,tax,birth,address,postcode,city,country"

TESSERA_YAML = """
deployment: test
nodes: [{name: crm}]
tree: {priority: [crm]}
identity:
"""

SOURCES_YAML = """
sources:
  - name: people
    entity: contact
    node: crm
    format: csv
    path: "people/*.csv"
    csv: {delimiter: ",", encoding: utf-8}
    date_format: "%Y-%m-%d"
    default_country: IT
    columns: {source_record_id: id, erp_id: erp, first_name: first, last_name: last, email: email,
              mobile: mobile, tax_code: tax, birth_date: birth, address: address, postcode: postcode,
              city: city, country: country}
"""

# Filler strangers: varied names, dates and places, so that term frequencies mean something.
FIRSTS = ["Luca", "Giulia", "Marco", "Sara", "Paolo", "Elena", "Davide", "Chiara", "Andrea", "Marta",
          "Stefano", "Laura", "Franco", "Irene", "Piero", "Nadia"]
LASTS = ["Bruno", "Gallo", "Conti", "Costa", "Fontana", "Moretti", "Barbieri", "Lombardi", "Rinaldi",
         "Caruso", "Ferri", "Greco", "Marini", "Serra", "Vitale", "Testa"]


def filler(k: int = 16) -> str:
    return "\n".join(
        f"F{i},,{FIRSTS[i]},{LASTS[i]},,,,19{50 + i}-0{1 + i % 9}-1{i % 10},{10 + i} Via Po {i},"
        f"{10100 + 37 * i},Citta{i}," for i in range(k))


def run(tmp_path: Path, rows: str, identity_yaml: str = "", run_no: int = 1) -> dict:
    cfg = tmp_path / "config"
    cfg.mkdir(exist_ok=True)
    (cfg / "tessera.yaml").write_text(TESSERA_YAML + textwrap.indent(textwrap.dedent(identity_yaml), "  ")
                                      + ("  junk_emails: []\n" if not identity_yaml.strip() else ""))
    (cfg / "sources.yaml").write_text(SOURCES_YAML)
    landing = tmp_path / "landing"
    (landing / "people").mkdir(parents=True, exist_ok=True)
    (landing / "people" / f"p{run_no}.csv").write_text(
        HEADER + "\n" + textwrap.dedent(rows).strip() + "\n" + filler() + "\n")
    deployment = load_deployment(cfg)
    con = connect(tmp_path / "wh.duckdb")
    try:
        ensure_warehouse(con)
        ingest_source(con, deployment, deployment.sources[0], landing, f"b{run_no}")
        build_contacts(con, deployment)
        stats = resolve(con, dt.datetime(2026, 1, run_no), f"r{run_no}", deployment.identity)
        ids = dict(con.execute("SELECT source_record_id, customer_id FROM core.customer_sources").fetchall())
        rule = dict(con.execute("SELECT source_record_id, matched_by FROM core.customer_sources").fetchall())
        refused = con.execute("SELECT source_record_id_a, source_record_id_b, rule, reason "
                              "FROM core.refused_merges ORDER BY ALL").fetchall()
        log = con.execute("SELECT event, rule, evidence FROM core.merge_log ORDER BY ALL").fetchall()
    finally:
        con.close()
    return {"ids": ids, "rule": rule, "refused": refused, "log": log, "stats": stats}


def test_each_deterministic_rule_links_on_its_key(tmp_path):
    r = run(tmp_path, """
        A1,E-7,Mario,Rossi,,,,,,,,
        A2,e-7,Mario,Rossi,,,,,,,,
        B1,,Anna,Neri, Anna.Neri@Example.IT ,,,,,,,
        B2,,Anna,Neri,anna.neri@example.it,,,,,,,
        C1,,Carlo,Verdi,,,RSSMRA80A01H501U,,,,,
        C2,,Carlo,Verdi,,,rssmra80a01h501u,,,,,
        D1,,Dino,Zoff,,347 111 2222,,,,,,
        D2,,Dino,Zoff,,+39 3471112222,,,,,,
        D3,,Ugo,Bassi,,3471112222,,,,,,
    """)
    ids, rule = r["ids"], r["rule"]
    assert ids["A1"] == ids["A2"] and rule["A1"] == "erp_id"
    assert ids["B1"] == ids["B2"] and rule["B1"] == "email"
    assert ids["C1"] == ids["C2"] and rule["C1"] == "tax_code"
    assert ids["D1"] == ids["D2"] and rule["D1"] == "mobile+last_name"
    assert ids["D3"] != ids["D1"]  # same mobile, another surname: not this rule
    assert len({ids["A1"], ids["B1"], ids["C1"], ids["D1"], ids["D3"]}) == 5


def test_tax_code_with_a_wrong_check_letter_never_links(tmp_path):
    r = run(tmp_path, """
        C1,,Carlo,Verdi,,,RSSMRA80A01H501X,,,,,
        C2,,Carla,Bianchi,,,RSSMRA80A01H501X,,,,,
    """)
    assert r["ids"]["C1"] != r["ids"]["C2"]


def test_junk_values_never_link(tmp_path):
    r = run(tmp_path, """
        J1,,Gentile,Cliente,info@shop.it,0000000,,,,,,
        J2,,Gentile,Cliente,info@shop.it,0000000,,,,,,
        J3,,nome,cognome,test@test.it,1234567,,,,,,
        J4,,Nome,Cognome,x@y.it,1234567,,,,,,
    """, """
        junk_emails: ["test@test.it"]
    """)
    ids = r["ids"]
    assert len({ids[k] for k in ("J1", "J2", "J3", "J4")}) == 4


def test_two_erp_ids_are_never_joined_and_the_refusal_is_recorded(tmp_path):
    r = run(tmp_path, """
        E1,ERP-1,Mario,Rossi,family@x.it,,,,,,,
        E2,ERP-2,Maria,Rossi,family@x.it,,,,,,,
        E3,,Maria,Rossi,family@x.it,,,,,,,
    """)
    ids = r["ids"]
    assert ids["E1"] != ids["E2"]
    assert r["refused"], "the refused merge must be recorded"
    # refused at the e-mail rule, and again if scoring proposes the same people
    assert {rule for _, _, rule, _ in r["refused"]} <= {"email", "probabilistic"}
    assert ("E2", "E1", "email", "conflicting_erp_id") in r["refused"]
    assert all("conflicting_erp_id" in reason for *_, reason in r["refused"])
    assert any(ev == "refused" and rule == "email" for ev, rule, _ in r["log"])
    # no personal value in the evidence
    assert not any("family@" in evidence for *_, evidence in r["log"])


def test_cluster_never_grows_past_the_configured_size(tmp_path):
    rows = "\n".join(f"S{i},,P{i},Q{i},shared@office.it,,,,,,," for i in range(5))
    r = run(tmp_path, rows, """
        max_cluster_size: 3
    """)
    ids = r["ids"]
    sizes: dict[int, int] = {}
    for k in (f"S{i}" for i in range(5)):
        sizes[ids[k]] = sizes.get(ids[k], 0) + 1
    assert max(sizes.values()) <= 3
    assert any("cluster_too_large" in reason for *_, reason in r["refused"])


def test_manual_never_and_always_merge_pairs(tmp_path):
    r = run(tmp_path, """
        N1,,Luigi,Bassi,luigi@x.it,,,,,,,
        N2,,Luigi,Bassi,luigi@x.it,,,,,,,
        M1,,Teresa,Lupo,teresa@x.it,,,,,,,
        M2,,T,Lupo-Verdi,tlv@y.it,,,,,,,
    """, """
        never_merge:
          - [{source: people, id: N1}, {source: people, id: N2}]
        always_merge:
          - [{source: people, id: M1}, {source: people, id: M2}]
    """)
    ids = r["ids"]
    assert ids["N1"] != ids["N2"]
    assert ids["M1"] == ids["M2"] and r["rule"]["M1"] == "always_merge"
    assert any("conflicting_never_merge" in reason for *_, reason in r["refused"])


def test_probabilistic_match_without_a_shared_key(tmp_path):
    r = run(tmp_path, """
        P1,,Giuseppe,Mancuso,g.mancuso@x.it,3331234567,,1975-03-14,12 Via Garibaldi,20121,Milano,
        P2,,Giusepe,Mancuso,peppe75@y.it,3389999999,,1975-03-14,12 via garibaldi,20121,Milano,
        S1,,Giuseppe,Mancuso,,,,1961-11-02,4 Corso Italia,80100,Napoli,
    """)
    ids, rule = r["ids"], r["rule"]
    assert ids["P1"] == ids["P2"]  # typo'd name, same birth date and address
    assert rule["P2"] == "probabilistic"
    assert ids["S1"] != ids["P1"]  # same name, another person
    log = r["stats"]["links_by_stage"]["probabilistic"]
    assert log["links"] == 1


def test_same_name_strangers_with_name_built_emails_are_not_matched(tmp_path):
    # user names derived from names must not count as evidence twice
    r = run(tmp_path, """
        Q1,,Marco,Ferrari,marco.ferrari@gmail.com,,,1980-01-01,1 Via Milano,00100,Roma,
        Q2,,Marco,Ferrari,marco.ferrari@libero.it,,,1991-07-21,9 Via Napoli,50100,Firenze,
    """)
    assert r["ids"]["Q1"] != r["ids"]["Q2"]


def test_names_alone_never_link(tmp_path):
    r = run(tmp_path, """
        R1,,Zebedeo,Quagliarulo,,,,,,,,
        R2,,Zebedeo,Quagliarulo,,,,,,,,
    """)
    assert r["ids"]["R1"] != r["ids"]["R2"]


def test_staging_normalises_match_keys(tmp_path):
    run(tmp_path, """
        K1,,  José Maria ,D'Angelo,Ünïcode@Exämple.it,0039 347 1234567,rssmra80a01h501u,,"3 Main St.",00 184,Roma,
        K2,,Luca,Rossi,,(347) 123-4567,,,,,,US
        K3,,Ava,Smith,,0412 345 678,,,,,,AU
        K4,,Bo,Jones,,1-347-123-4567,,,,,,US
        K5,,Jan,Kowal,,030 1234567,,,,,,DE
    """)
    con = connect(tmp_path / "wh.duckdb", read_only=True)
    try:
        rows = {r[0]: r[1:] for r in con.execute(
            "SELECT source_record_id, first_key, last_key, email_key, mobile, tax_code_key, address_key, "
            "postcode_key FROM staging.contacts WHERE source_record_id LIKE 'K%'").fetchall()}
    finally:
        con.close()
    assert rows["K1"] == ("josemaria", "dangelo", "ünïcode@exämple.it", "+393471234567",
                          "RSSMRA80A01H501U", "3 main street", "00184")
    # the record's country decides the calling code; the national trunk prefix is dropped
    assert rows["K2"][3] == rows["K4"][3] == "+13471234567"
    assert rows["K3"][3] == "+61412345678"
    assert rows["K5"][3] == "+49301234567"


@pytest.mark.parametrize("code,valid", [
    ("RSSMRA80A01H501U", True), ("RSSMRA80A01H501X", False), ("MRTMTT91D08F205J", True),
    ("RSSMRA80A01H50", False), ("DE123456789", True), ("1804974", True), ("180497", False),
])
def test_tax_code_checksum(code, valid):
    import duckdb

    from tessera.ingest.staging import tax_code_key_sql

    got = duckdb.connect().execute(f"SELECT {tax_code_key_sql('x')} FROM (SELECT ? AS x)", [code]).fetchone()[0]
    assert (got == code) is valid


@pytest.mark.parametrize("identity_yaml,expected", [
    ("  probabilistic: {treshold: 0.8}\n", "identity.probabilistic.treshold: unknown key"),
    ("  rules: [[email], [emial]]\n", "identity.rules[1][0]"),
    ("  never_merge:\n    - [{source: nope, id: A}, {source: people, id: B}]\n",
     "identity.never_merge[0][0].source: unknown contact source 'nope'"),
])
def test_identity_settings_errors_name_file_line_and_key(tmp_path, identity_yaml, expected):
    from tessera.yamlfile import ConfigError

    cfg = tmp_path / "config"
    cfg.mkdir()
    (cfg / "tessera.yaml").write_text(TESSERA_YAML + identity_yaml)
    (cfg / "sources.yaml").write_text(SOURCES_YAML)
    with pytest.raises(ConfigError) as err:
        load_deployment(cfg)
    assert "tessera.yaml:" in str(err.value)
    assert expected in str(err.value)
