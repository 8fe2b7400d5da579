"""Properties per registry ([Contacthub] base and extended properties): typed extended
properties on companies, company users and contacts flow through import, golden record,
card, segments and feeds; a switched-off base property is neither required, stored,
shown nor exported.

The whole pipeline materialised with Dagster over small hand-written files."""
from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest

from tessera.deployment import load_deployment
from tessera.engine.warehouse import connect
from tessera.yamlfile import ConfigError
from tests.stages.small_world import SmallWorld, crm_people

TESSERA_YAML = """
deployment: props
nodes: [{name: erp}, {name: crm}]
tree:
  priority: [erp, crm]
properties:
  contact:
    - {name: vip, type: boolean}
  company:
    - {name: esg_rating, type: lookup, table: esg_rating, description: "ESG rating (A best)"}
    - {name: certified, type: boolean}
    - {name: founded_on, type: date}
    - {name: plants, type: integer}
  company_user:
    - {name: badge, type: string, required: true}
switched_off:
  contact: [tax_code]
  company: [employees]
"""

LOOKUPS_YAML = """
lookups:
  esg_rating:
    macro: [{id: 1, label: A}, {id: 2, label: B}, {id: 3, label: C}]
"""

SOURCES_YAML = """
sources:
""" + crm_people("source_record_id: id, first_name: nome, last_name: cognome, email: email, vip: vip") + """\
  - name: erp_companies
    entity: company
    node: erp
    format: csv
    path: "erp/aziende_*.csv"
    csv: {delimiter: ";", encoding: utf-8}
    date_format: "%Y-%m-%d"
    columns: {source_record_id: id, legal_name: ragione, vat_number: piva, city: citta,
              country: paese, revenue: fatturato, esg_rating: esg, certified: certificata,
              founded_on: fondata, plants: stabilimenti}
  - name: crm_company_users
    entity: company_user
    node: crm
    format: csv
    path: "crm/utenti_*.csv"
    csv: {delimiter: ";", encoding: utf-8}
    columns: {source_record_id: id, first_name: nome, last_name: cognome, company_name: azienda,
              email: email, role: ruolo, badge: badge}
"""

SEGMENTS_YAML = """
segments:
  - name: certified_a_companies
    description: People of certified companies rated A
    rule:
      all:
        - {field: company_esg_rating, op: "=", value: 1}
        - {field: company_certified, op: "=", value: true}
"""

FEEDS_YAML = """
feeds:
  - name: certified_people
    segment: certified_a_companies
    channel: none
    format: csv
    fields: [customer_id, email, company_name, company_esg_rating, company_founded_on, vip]
"""

PEOPLE = """\
id;nome;cognome;email;vip
P1;Mario;Rossi;mario.rossi@x.it;si
P2;Sara;Gialli;sara@y.it;no
"""

COMPANIES = """\
id;ragione;piva;citta;paese;fatturato;esg;certificata;fondata;stabilimenti
K1;Rossi Costruzioni S.r.l.;12345678903;Torino;IT;1200000;a;si;1990-05-01;3
K2;Bianchi S.p.A.;IT01234567897;Milano;IT;;B;si;2001-01-01;1
K3;Verdi S.r.l.;;Roma;IT;;A;no;;
K4;Neri S.r.l.;;Bari;IT;;Z;si;;
"""

USERS = """\
id;nome;cognome;azienda;email;ruolo;badge
U1;Anna;Neri;Rossi Costruzioni srl;anna.neri@rossi.it;acquisti;B-1
U2;Marco;Blu;Bianchi Spa;marco.blu@bianchi.it;marketing;B-2
U3;Ugo;Verde;Verdi Srl;ugo@verdi.it;;B-3
U4;Lia;Senza;Rossi Costruzioni srl;lia@rossi.it;;
U5;Mario;Rossi;Rossi Costruzioni S.r.l.;mario.rossi@x.it;direzione;B-5
"""


class World(SmallWorld):
    def __init__(self, root: Path):
        super().__init__(root, {"tessera.yaml": TESSERA_YAML, "sources.yaml": SOURCES_YAML,
                                "lookups.yaml": LOOKUPS_YAML, "segments.yaml": SEGMENTS_YAML,
                                "feeds.yaml": FEEDS_YAML},
                         {"crm/people_1.csv": PEOPLE, "erp/aziende_1.csv": COMPANIES,
                          "crm/utenti_1.csv": USERS})

    def materialize(self):
        return super().materialize("2026-11-01")


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> World:
    w = World(tmp_path_factory.mktemp("props"))
    w.result = w.materialize()
    return w


def test_extended_company_properties_are_typed_and_checked(world):
    rows = world.query("SELECT legal_name, esg_rating, certified, founded_on, plants "
                       "FROM core.companies ORDER BY legal_name")
    import datetime as dt
    assert rows == [("Bianchi S.p.A.", 2, True, dt.date(2001, 1, 1), 1),
                    ("Rossi Costruzioni S.r.l.", 1, True, dt.date(1990, 5, 1), 3),
                    ("Verdi S.r.l.", 1, False, None, None)]
    # a label the settings table does not know is a reject, not a company
    assert world.query("SELECT source, line, field, reason FROM ops.rejects WHERE source = 'erp_companies'") == [
        ("erp_companies", 5, "esg_rating", "not a known esg rating macro (id or label)")]
    # a required extended property of company users: the user without a badge is rejected
    assert world.query("SELECT line, field, reason FROM ops.rejects WHERE source = 'crm_company_users'") == [
        (5, "badge", "required field is empty")]
    # a company user's own property stays with the person's link to the company
    assert world.query("SELECT source_record_id, badge FROM core.company_contacts ORDER BY 1") == [
        ("U1", "B-1"), ("U2", "B-2"), ("U3", "B-3"), ("U5", "B-5")]


def test_extended_company_property_flows_to_card_segment_and_feed(world):
    cards = world.query("SELECT email, company_esg_rating, company_certified, vip FROM marts.contact_cards "
                        "WHERE company_id IS NOT NULL ORDER BY email")
    assert cards == [("anna.neri@rossi.it", 1, True, None), ("marco.blu@bianchi.it", 2, True, None),
                     ("mario.rossi@x.it", 1, True, True), ("ugo@verdi.it", 1, False, None)]
    members = world.query("SELECT c.email FROM marketing.segment_members m JOIN marts.contact_cards c "
                          "USING (customer_id) WHERE m.segment = 'certified_a_companies' ORDER BY 1")
    assert members == [("anna.neri@rossi.it",), ("mario.rossi@x.it",)]
    path = world.feeds / "certified_people" / "certified_people_2026-11-01.csv"
    with open(path, encoding="utf-8") as fh:
        got = sorted((r["email"], r["company_esg_rating"], r["company_founded_on"], r["vip"])
                     for r in csv.DictReader(fh))
    assert got == [("anna.neri@rossi.it", "1", "1990-05-01", ""),
                   ("mario.rossi@x.it", "1", "1990-05-01", "true")]


def test_a_switched_off_base_property_is_absent_everywhere(world):
    from tessera.engine import as_engine
    from tessera.feeds.compatible import compatible_step
    from tessera.ingest.templates import registry_columns
    from tessera.vocabulary import field_catalogue

    dep = world.deployment
    assert "tax_code" not in world.columns("raw.crm_people")
    assert "tax_code" not in world.columns("core.customers")
    assert "tax_code" not in world.columns("marts.contact_cards")
    assert world.query("SELECT count(*) FROM staging.contacts WHERE tax_code IS NOT NULL") == [(0,)]
    assert "employees" not in world.columns("core.companies")
    assert "company_employees" not in world.columns("marts.contact_cards")
    assert "tax_code" not in field_catalogue(dep) and "company_employees" not in field_catalogue(dep)
    assert "codicefiscale" not in [c.header for c in registry_columns(dep, "b2c_users")]
    assert "dipendenti" not in [c.header for c in registry_columns(dep, "b2b_companies")]
    con = connect(world.warehouse)
    try:
        step = compatible_step(as_engine(con), dep, "b2b_companies")
        headers = [d[0] for d in con.execute(f"SELECT * FROM ({step.sql}) LIMIT 0", step.params).description]
    finally:
        con.close()
    assert "dipendenti" not in headers and "esg_rating" in headers
    # the search still works without the field: one row per card (5 people: Mario is
    # both a B2C contact and a company user; the user without a badge was rejected)
    assert world.query("SELECT count(*) FROM marts.contact_search") == [(5,)]
    assert world.query("SELECT count(*) FROM marts.contact_cards") == [(5,)]


@pytest.mark.parametrize("old,new,message", [
    ("    columns: {source_record_id: id, first_name: nome,",
     "    columns: {tax_code: cf, source_record_id: id, first_name: nome,",
     "'tax_code' is switched off for 'contact'"),
    ("company: [employees]", "company: [legal_name]", "'legal_name' cannot be switched off"),
    ("company: [employees]", "company: [turnover]", "'turnover' is not a base property of 'company'"),
])
def test_switched_off_configuration_errors(tmp_path, old, new, message):
    w = World(tmp_path)
    for name in ("tessera.yaml", "sources.yaml"):
        path = w.config / name
        path.write_text(path.read_text().replace(old, new, 1))
    with pytest.raises(ConfigError, match=message):
        load_deployment(w.config)


def test_a_switched_off_field_cannot_be_exported(tmp_path):
    w = World(tmp_path)
    path = w.config / "feeds.yaml"
    path.write_text(path.read_text().replace("fields: [customer_id, email,", "fields: [customer_id, tax_code,"))
    with pytest.raises(ConfigError, match="tax_code"):
        load_deployment(w.config)


def test_a_lookup_property_needs_a_known_table(tmp_path):
    w = World(tmp_path)
    (w.config / "lookups.yaml").write_text("lookups: {}\n")
    with pytest.raises(ConfigError, match="unknown settings table 'esg_rating'"):
        load_deployment(w.config)
    shutil.rmtree(w.root / "config")
