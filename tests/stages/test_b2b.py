"""B2B registries materialised with Dagster over small, hand-written files.

Companies from two nodes (an ERP CSV and a CRM XML), company users, a purchased list of
potential companies with its own sector labels, and one B2C source. Each case has one
observable consequence: legal-name variants link, a bad partita IVA is a reject, the
unlinked users are reported, generic names need the city, the same e-mail in B2C and B2B
is one customer, co-workers, company ids stay stable across runs, and a potential
company registers when the company appears.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tessera.engine.warehouse import connect
from tests.stages.small_world import SmallWorld, crm_people

TESSERA_YAML = """
deployment: test
nodes: [{name: erp}, {name: crm}, {name: lists}]
tree:
  priority: [erp, crm, lists]
"""

LOOKUPS_YAML = """
lookups:
  sector:
    macro:
      - {id: 1, label: Edilizia}
      - {id: 2, label: Pensione}
      - {id: 3, label: Commercio}
"""

SOURCES_YAML = """
sources:
""" + crm_people("source_record_id: id, first_name: nome, last_name: cognome, email: email") + """\
  - name: erp_companies
    entity: company
    node: erp
    format: csv
    path: "erp/aziende_*.csv"
    csv: {delimiter: ";", encoding: utf-8}
    timestamp_format: "%Y-%m-%d"
    columns: {source_record_id: id, legal_name: ragione, vat_number: piva, city: citta,
              country: paese, sector_macro: settore, revenue: fatturato, updated_at: aggiornato}
  - name: crm_companies
    entity: company
    node: crm
    format: xml
    path: "crm/aziende_*.xml"
    xml: {record_tag: azienda, table: aziende-b2b}
    columns: {source_record_id: codice, legal_name: ragionesociale, vat_number: partitaiva,
              city: citta, country: paese, email: email, company_type: tipologia}
  - name: crm_company_users
    entity: company_user
    node: crm
    format: csv
    path: "crm/utenti_*.csv"
    csv: {delimiter: ";", encoding: utf-8}
    columns: {source_record_id: id, first_name: nome, last_name: cognome, company_name: azienda,
              company_vat: piva, email: email, role: ruolo}
  - name: purchased_companies
    entity: potential_company
    node: lists
    format: csv
    path: "lists/potenziali_*.csv"
    csv: {delimiter: ";", encoding: utf-8}
    value_map:
      sector_macro: {Costruzioni: Edilizia, Pensioni: Pensione, "Negozi e commercio": 3}
    columns: {source_record_id: id, legal_name: ragione, vat_number: piva, country: paese,
              sector_macro: settore, city: citta}
"""

PEOPLE = """\
id;nome;cognome;email
P1;Mario;Rossi;mario.rossi@x.it
P2;Sara;Gialli;sara@y.it
"""

ERP_COMPANIES = """\
id;ragione;piva;citta;paese;settore;fatturato;aggiornato
K1;Rossi Costruzioni S.r.l.;12345678903;Torino;IT;Edilizia;1200000;2026-01-01
K2;Bianchi S.p.A.;IT01234567897;Milano;Italia;;;2026-01-01
K3;Bar Centrale;;Torino;IT;;;2026-01-01
K4;Cattiva Srl;12345678904;Roma;IT;;;2026-01-01
K5;Kowalski Sp. z o.o.;PL5260250995;Kraków;Polonia;;;2026-01-01
K6;Omonimi S.r.l.;11111111115;Bari;IT;;;2026-01-01
"""

CRM_COMPANIES = """\
<?xml version="1.0" encoding="UTF-8"?>
<sincronizza><commons><table>aziende-b2b</table></commons><data>
<azienda><codice>X1</codice><ragionesociale>ROSSI COSTRUZIONI SRL</ragionesociale><citta>Torino</citta><paese>IT</paese><tipologia>srl</tipologia></azienda>
<azienda><codice>X2</codice><ragionesociale>Bianchi Spa</ragionesociale><partitaiva>IT 01234567897</partitaiva><citta>Milan</citta><paese>IT</paese><email>info@bianchi.it</email></azienda>
<azienda><codice>X3</codice><ragionesociale>Bar Centrale</ragionesociale><citta>Milano</citta><paese>IT</paese></azienda>
<azienda><codice>X4</codice><ragionesociale>Omonimi SRL</ragionesociale><partitaiva>22222222220</partitaiva><citta>Lecce</citta><paese>IT</paese></azienda>
</data></sincronizza>
"""

USERS = """\
id;nome;cognome;azienda;piva;email;ruolo
U1;Anna;Neri;Rossi Costruzioni srl;;anna.neri@rossi.it;acquisti
U2;Marco;Blu;rossi-costruzioni S.R.L.;;marco.blu@rossi.it;marketing
U3;Piotr;Nowak;Kowalski Sp z oo;;piotr@kowalski.pl;
U4;Gino;Fantasma;Nessuna Azienda Srl;;gino@nessuna.it;
U5;Lia;Dubbia;Omonimi srl;;lia@omonimi.it;
U6;Ugo;Verde;Ragione sbagliata;01234567897;ugo@bianchi.it;
U7;Mario;Rossi;Bianchi S.p.A.;;mario.rossi@x.it;direzione
"""

POTENTIAL = """\
id;ragione;piva;paese;settore;citta
L1;Rossi Costruzioni;12345678903;IT;Costruzioni;Torino
L2;Gialli S.r.l.;;IT;Pensioni;Genova
L3;Neri Srl;;IT;Astrologia;Pisa
L4;Mercato Srl;;IT;negozi  e commercio;Asti
"""


class World(SmallWorld):
    def __init__(self, root: Path):
        super().__init__(root, {"tessera.yaml": TESSERA_YAML, "sources.yaml": SOURCES_YAML,
                                "lookups.yaml": LOOKUPS_YAML})

    def materialize(self):
        return super().materialize(groups=("ingestion", "staging", "identity", "consent",
                                           "golden", "companies", "marts"))

    def company_of(self) -> dict[str, int]:
        return {rid: cid for rid, cid in self.query(
            "SELECT source_record_id, company_id FROM core.company_sources")}


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> World:
    w = World(tmp_path_factory.mktemp("b2b"))
    w.drop("crm/people_1.csv", PEOPLE)
    w.drop("erp/aziende_1.csv", ERP_COMPANIES)
    w.drop("crm/aziende_1.xml", CRM_COMPANIES)
    w.drop("crm/utenti_1.csv", USERS)
    w.drop("lists/potenziali_1.csv", POTENTIAL)
    w.result = w.materialize()
    w.first_ids = w.company_of()
    w.first_potential = w.query("SELECT source_record_id, status, registered_company_id, "
                                "sector_macro FROM core.potential_companies ORDER BY 1")
    w.first_cards = w.query("SELECT customer_id, company_id, company_name, coworker_count "
                            "FROM marts.contact_cards WHERE company_id IS NOT NULL ORDER BY 1")
    return w


def test_bad_vat_is_a_reject_naming_file_line_and_field(world):
    assert world.query("SELECT source, file, line, field, reason FROM ops.rejects "
                       "WHERE source = 'erp_companies'") == [
        ("erp_companies", "erp/aziende_1.csv", 5, "vat_number",
         "not a valid Italian VAT number (check digit)")]
    assert "K4" not in world.first_ids


def test_companies_match_by_vat_then_legal_name_variants(world):
    ids = world.first_ids
    assert ids["K1"] == ids["X1"]              # "Rossi Costruzioni S.r.l." = "ROSSI COSTRUZIONI SRL"
    assert ids["K2"] == ids["X2"]              # same VAT, "IT 0123..." and "IT0123..."
    assert ids["K3"] != ids["X3"]              # a generic name in two cities: two companies
    assert ids["K6"] != ids["X4"]              # same name, two VAT numbers: two companies
    assert len(set(ids.values())) == 7
    rows = dict((r[0], r[1:]) for r in world.query(
        "SELECT cs.source_record_id, cs.matched_by, c.legal_name, c.vat_number, c.city, c.company_type, "
        "c.sector_macro, c.source_count FROM core.company_sources cs JOIN core.companies c USING (company_id)"))
    # the erp wins the name and city; the crm fills what the erp lacks (type, e-mail)
    assert rows["K1"] == ("legal_name", "Rossi Costruzioni S.r.l.", "IT12345678903", "Torino", "srl", 1, 2)
    assert rows["X2"][:4] == ("vat", "Bianchi S.p.A.", "IT01234567897", "Milano")
    lineage = world.query("SELECT field, node, source_record_id FROM core.company_field_lineage "
                          "WHERE company_id = ? ORDER BY field", [ids["K1"]])
    assert ("company_type", "crm", "X1") in lineage and ("legal_name", "erp", "K1") in lineage


def test_users_link_by_legal_name_or_vat_and_unlinked_are_reported(world):
    links = dict((r[0], r[1:]) for r in world.query(
        "SELECT source_record_id, company_record_id, linked_by FROM staging.company_users"))
    assert links["U1"][1] == links["U2"][1] == "legal_name"
    assert links["U3"][1] == "legal_name" and links["U3"][0] == "K5"
    assert links["U6"] == ("K2", "vat") or links["U6"] == ("X2", "vat")
    assert world.query("SELECT source, source_record_id, reason FROM ops.unlinked_company_users "
                       "ORDER BY 2") == [
        ("crm_company_users", "U4", "company not found (legal name or VAT)"),
        ("crm_company_users", "U5", "legal name matches companies with different VAT numbers")]
    meta = world.result.asset_materializations_for_node("staging__company_users")[0].metadata
    assert meta["unlinked"].value == 2 and meta["linked_by_vat"].value == 1
    # unlinked users are still people
    assert world.query("SELECT count(*) FROM core.customer_sources "
                       "WHERE source = 'crm_company_users'") == [(7,)]


def test_same_email_in_b2c_and_b2b_is_one_customer_with_coworkers(world):
    cust = dict(world.query("SELECT source_record_id, customer_id FROM core.customer_sources"))
    assert cust["P1"] == cust["U7"]            # mario.rossi@x.it in both registries
    contacts = world.query("SELECT customer_id, company_id, role, source FROM core.company_contacts "
                           "ORDER BY customer_id")
    assert (cust["P1"], world.first_ids["K2"], "direzione", "crm_company_users") in contacts
    assert len(contacts) == 5                  # U1, U2, U3, U6, U7
    assert world.query("SELECT coworker_id FROM marts.coworkers WHERE customer_id = ?",
                       [cust["U1"]]) == [(cust["U2"],)]
    assert world.query("SELECT coworker_id FROM marts.coworkers WHERE customer_id = ? ORDER BY 1",
                       [cust["U7"]]) == [(cust["U6"],)]
    cards = {r[0]: r[1:] for r in world.first_cards}
    assert cards[cust["P1"]] == (world.first_ids["K2"], "Bianchi S.p.A.", 1)
    assert cards[cust["U3"]] == (world.first_ids["K5"], "Kowalski Sp. z o.o.", 0)
    # the potential registry never reaches companies or contacts
    assert world.query("SELECT count(*) FROM staging.contacts WHERE source = 'purchased_companies'") == [(0,)]


def test_purchased_sector_labels_are_mapped_and_unknown_rejected(world):
    assert world.query("SELECT line, field, reason FROM ops.rejects WHERE source = 'purchased_companies'") == [
        (4, "sector_macro", "not a known sector macro (id or label)")]
    assert world.first_potential == [
        ("L1", "registered", world.first_ids["K1"], 1),     # same VAT as Rossi Costruzioni
        ("L2", "potential", None, 2),                       # "Pensioni" -> Pensione
        ("L4", "potential", None, 3),                       # mapped to an id
    ]


def test_second_run_keeps_company_ids_and_registers_potential(world):
    world.drop("crm/aziende_2.xml", CRM_COMPANIES.replace(
        "<codice>X3</codice>", "<codice>X5</codice><ragionesociale>GIALLI srl</ragionesociale>"
        "<citta>Genova</citta><paese>IT</paese></azienda>\n<azienda><codice>X3</codice>"))
    world.drop("erp/aziende_2.csv", "id;ragione;piva;citta;paese;settore;fatturato;aggiornato\n"
               "K7;Nuova Srl;09876543217;Como;IT;;;2026-02-01\n")
    world.materialize()
    ids = world.company_of()
    assert {k: ids[k] for k in world.first_ids} == world.first_ids
    assert ids["X5"] not in world.first_ids.values() and ids["K7"] not in world.first_ids.values()
    assert len({ids["X5"], ids["K7"]}) == 2
    pot = world.query("SELECT source_record_id, status, registered_company_id, registered_by "
                      "FROM core.potential_companies ORDER BY 1")
    assert pot[1] == ("L2", "registered", ids["X5"], "legal_name")
    assert pot[0][1] == "registered" and pot[2][1] == "potential"


def test_rebuild_keeps_company_and_customer_ids(world):
    """Everything re-read from the landing files: the same companies and people keep their ids."""
    from tessera.ingest.rebuild import reset_loaded_data

    companies = world.company_of()
    people = dict(world.query("SELECT source_record_id, customer_id FROM core.customer_sources"))
    con = connect(world.warehouse)
    try:
        assert reset_loaded_data(con)["files_forgotten"] >= 7
    finally:
        con.close()
    world.materialize()
    assert world.company_of() == companies
    assert dict(world.query("SELECT source_record_id, customer_id FROM core.customer_sources")) == people


def test_forget_erases_a_company_user_everywhere(world):
    """A company user is a person: forget removes their B2B record from raw, staging and
    the company tables (and suppresses their identifiers, like any contact's)."""
    from tessera.deployment import load_deployment
    from tessera.privacy import suppression as privacy

    con = connect(world.warehouse)
    try:
        out = privacy.forget(con, load_deployment(world.config), "test-key",
                             emails=["anna.neri@rossi.it"], request_id="r1")
        assert out["customers"] == 1 and out["identifiers"] >= 1
        for sql in ("SELECT count(*) FROM raw.crm_company_users WHERE source_record_id = 'U1'",
                    "SELECT count(*) FROM staging.company_users WHERE source_record_id = 'U1'",
                    "SELECT count(*) FROM staging.contacts WHERE source_record_id = 'U1'",
                    "SELECT count(*) FROM core.company_contacts WHERE source_record_id = 'U1'"):
            assert con.execute(sql).fetchone() == (0,), sql
        assert con.execute("SELECT count(*) FROM core.company_contacts").fetchone()[0] == 4
    finally:
        con.close()
