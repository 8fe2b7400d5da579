"""Identity and golden stages materialised with Dagster over small, hand-written files.

Two contact sources on two nodes (erp beats crm); the cases are chosen so that each
rule has one observable consequence: e-mail links across sources with case and spaces,
junk e-mails never link, the tree decides names, mobile follows "most recent", an
empty value never wins, consent is the most restrictive, ids survive merges and splits.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tessera.engine.warehouse import connect
from tests.stages.small_world import SmallWorld

TESSERA_YAML = """
deployment: test
nodes: [{name: erp}, {name: crm}]
tree:
  priority: [erp, crm]
  field_rules: {mobile: most_recent}
identity:
  junk_emails: []
"""

SOURCES_YAML = """
sources:
  - name: erp_people
    entity: contact
    node: erp
    format: csv
    path: "erp/*.csv"
    csv: {delimiter: ",", encoding: utf-8}
    timestamp_format: "%Y-%m-%d"
    columns: {source_record_id: id, erp_id: id, first_name: first, last_name: last, email: email,
              mobile: mobile, updated_at: updated}
  - name: crm_people
    entity: contact
    node: crm
    format: csv
    path: "crm/*.csv"
    csv: {delimiter: ";", encoding: cp1252}
    timestamp_format: "%Y-%m-%d"
    columns: {source_record_id: id, first_name: first, last_name: last, email: email,
              mobile: mobile, consent_email: consent, updated_at: updated}
"""

ERP_1 = """id,first,last,email,mobile,updated
E1,Mario,Rossi,mario.rossi@x.it,3471111111,2026-01-01
E2,Anna,Bianchi,anna@x.it,,2026-01-01
E3,Shop,Desk,info@shop.it,,2026-01-01
"""

CRM_1 = """id;first;last;email;mobile;consent;updated
C1;MARIO;ROSSI; Mario.Rossi@X.IT ;+39 347 222 2222;1;2026-06-01
C2;Anna;Bianchi;anna.b@y.it;;1;2026-01-01
C3;Luca;Verdi;info@shop.it;;1;2026-01-01
C4;;Rossi;mario.rossi@x.it;;0;2025-01-01
"""


class World(SmallWorld):
    def __init__(self, root: Path):
        super().__init__(root, {"tessera.yaml": TESSERA_YAML, "sources.yaml": SOURCES_YAML})

    def materialize(self):
        return super().materialize(groups=("ingestion", "staging", "identity", "consent", "golden"))

    def customer_of(self) -> dict[str, int]:
        return {rid: cid for rid, cid in self.query(
            "SELECT source_record_id, customer_id FROM core.customer_sources")}


@pytest.fixture()
def world(tmp_path) -> World:
    w = World(tmp_path)
    w.drop("erp/erp_1.csv", ERP_1)
    w.drop("crm/crm_1.csv", CRM_1, "cp1252")
    w.materialize()
    return w


def test_email_links_across_sources_but_junk_never_links(world):
    ids = world.customer_of()
    assert ids["E1"] == ids["C1"] == ids["C4"]  # case and spaces do not matter
    assert ids["E3"] != ids["C3"]  # info@ is a junk local part
    assert ids["E2"] != ids["C2"]
    assert len(set(ids.values())) == 5


def test_golden_fields_follow_the_tree_and_overrides(world):
    cid = world.customer_of()["E1"]
    row = world.query("SELECT first_name, last_name, email, mobile, email_consent, source_count "
                      "FROM core.customers WHERE customer_id = ?", [cid])[0]
    first, last, email, mobile, consent, n = row
    assert (first, last) == ("Mario", "Rossi")  # erp beats crm's "MARIO ROSSI"
    assert email == "mario.rossi@x.it"
    assert mobile == "+393472222222"  # most_recent: the CRM record of 2026-06-01
    assert consent == "withdrawn"  # C4 said no: the most restrictive state wins
    assert n == 3
    lineage = dict((f, (node, src, rid, rule)) for f, node, src, rid, rule in world.query(
        "SELECT field, node, source, source_record_id, rule FROM core.customer_field_lineage "
        "WHERE customer_id = ?", [cid]))
    assert lineage["first_name"] == ("erp", "erp_people", "E1", "tree_priority")
    assert lineage["mobile"] == ("crm", "crm_people", "C1", "most_recent")


def test_empty_value_never_wins(world):
    # C2 alone: its (granted) consent and names; E3 has no mobile, so none is invented
    cid = world.customer_of()["E3"]
    assert world.query("SELECT mobile FROM core.customers WHERE customer_id = ?", [cid]) == [(None,)]
    cid = world.customer_of()["C4"]
    first = world.query("SELECT first_name FROM core.customers WHERE customer_id = ?", [cid])[0][0]
    assert first == "Mario"


def test_ids_are_stable_and_merges_are_logged(world):
    before = world.customer_of()
    # C2 changes e-mail to Anna's ERP address: C2 and E2 become one person
    world.drop("crm/crm_2.csv", "id;first;last;email;mobile;consent;updated\n"
                                "C2;Anna;Bianchi;ANNA@x.it;;1;2026-07-01\n", "cp1252")
    world.materialize()
    after = world.customer_of()
    for rid in ("E1", "C1", "C4", "E3", "C3"):
        assert after[rid] == before[rid], rid
    assert after["E2"] == after["C2"]
    survivor = min(before["E2"], before["C2"])  # tie on overlap: the smaller id is kept
    assert after["E2"] == survivor
    log = world.query("SELECT event, customer_id, other_customer_id FROM core.merge_log")
    assert ("merged", survivor, max(before["E2"], before["C2"])) in log


def test_split_keeps_the_id_with_the_larger_part(world):
    before = world.customer_of()
    world.drop("erp/erp_2.csv", "id,first,last,email,mobile,updated\n"
                                "E1,Mario,Rossi,mario.new@z.it,3471111111,2026-08-01\n")
    world.materialize()
    after = world.customer_of()
    assert after["C1"] == after["C4"] == before["C1"]  # two records of three keep the id
    assert after["E1"] != before["E1"]
    assert after["E1"] > max(before.values())  # a fresh id, never a reused one
    log = world.query("SELECT event, customer_id, other_customer_id FROM core.merge_log")
    assert ("split", before["E1"], after["E1"]) in log


def test_lineage_names_the_step_that_decided(world):
    world.drop("crm/crm_3.csv", "id;first;last;email;mobile;consent;updated\n"
                                "C5;Giulia;Neri;giulia@z.it;;1;2025-01-01\n"
                                "C6;Giuly;;giulia@z.it;;1;2026-02-01\n", "cp1252")
    world.materialize()
    cid = world.customer_of()["C5"]
    assert world.customer_of()["C6"] == cid
    lineage = {f: (rid, rule) for f, rid, rule in world.query(
        "SELECT field, source_record_id, rule FROM core.customer_field_lineage WHERE customer_id = ?", [cid])}
    assert lineage["first_name"] == ("C6", "recency")        # same node: the newer record
    assert lineage["last_name"] == ("C5", "only_value")      # C6 has none: empty never wins
    mario = world.customer_of()["E1"]
    rules = dict(world.query("SELECT field, rule FROM core.customer_field_lineage WHERE customer_id = ?", [mario]))
    assert rules["first_name"] == "tree_priority" and rules["mobile"] == "most_recent"


def test_ids_survive_a_second_run_and_a_rebuild(world):
    from tessera.ingest.rebuild import reset_loaded_data

    before = world.customer_of()
    merges = world.query("SELECT count(*) FROM core.merge_log")[0][0]
    world.materialize()  # a second run with nothing new
    assert world.customer_of() == before
    con = connect(world.warehouse)
    try:
        out = reset_loaded_data(con)
    finally:
        con.close()
    assert out["files_forgotten"] == 2 and out["raw_tables"] == 2
    world.materialize()  # every landing file read again, everything re-derived
    assert world.customer_of() == before
    assert world.query("SELECT count(*) FROM core.merge_log")[0][0] == merges
    assert world.query("SELECT count(*) FROM raw.crm_people")[0][0] == 4
