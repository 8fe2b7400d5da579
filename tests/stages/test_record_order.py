"""The newest value wins by the time the data describes, not by arrival (#20 item 4).

Days delivered out of order through real files: a source ordered by its records'
``updated_at`` and a source ordered by the business date in its files' names keep the
newer value when yesterday's file arrives after today's. Pushes are ordered by the
sequence assigned on receipt, whatever their idempotency keys make the names sort.
"""

from __future__ import annotations

import hashlib

import pytest

from tessera.deployment import load_deployment
from tessera.yamlfile import ConfigError
from tests.stages.test_identity_golden import SOURCES_YAML, World

DATED_SOURCE = """
  - name: shop_people
    entity: contact
    node: crm
    format: csv
    path: "shop/*.csv"
    csv: {delimiter: ",", encoding: utf-8}
    record_order: {by: file_date, pattern: '_(\\d{8})\\.csv$', format: '%Y%m%d'}
    columns: {source_record_id: id, first_name: first, last_name: last, email: email, city: city}
  - name: web_signups
    entity: contact
    node: crm
    format: push
    push: {token_env: TESSERA_PUSH_TEST}
    record_order: {by: delivery}
    columns: {source_record_id: id, email: email, city: city}
"""

CRM_HEADER = "id;first;last;email;mobile;consent;updated\n"


@pytest.fixture()
def world(tmp_path) -> World:
    w = World(tmp_path)
    (w.config / "sources.yaml").write_text(SOURCES_YAML + DATED_SOURCE)
    w.drop("erp/erp_1.csv", "id,first,last,email,mobile,updated\nE1,Mario,Rossi,mario@x.it,,2026-01-01\n")
    return w


def staged(w: World, source: str, rid: str, col: str):
    return w.query(f"SELECT {col} FROM staging.contacts WHERE source = ? AND source_record_id = ?",
                   [source, rid])[0][0]


def test_a_late_older_file_never_overwrites_a_newer_record(world):
    # today's CRM export arrives first ...
    world.drop("crm/crm_20261102.csv", CRM_HEADER + "C1;Anna;Bianchi;anna.new@y.it;;1;2026-11-02\n", "cp1252")
    world.materialize()
    # ... and yesterday's, with the old address, arrives after it (and sorts after it too)
    world.drop("crm/crm_zz_resent_20261101.csv", CRM_HEADER + "C1;Anna;Bianchi;anna.old@y.it;;1;2026-11-01\n",
               "cp1252")
    world.materialize()
    assert staged(world, "crm_people", "C1", "email") == "anna.new@y.it"
    cid = world.customer_of()["C1"]
    assert world.query("SELECT email FROM core.customers WHERE customer_id = ?", [cid]) == [("anna.new@y.it",)]
    # both versions are kept in raw: nothing is lost, the older one just does not win
    assert world.query("SELECT count(*) FROM raw.crm_people WHERE source_record_id = 'C1'") == [(2,)]
    # a genuinely newer version still wins
    world.drop("crm/crm_20261103.csv", CRM_HEADER + "C1;Anna;Bianchi;anna.3@y.it;;1;2026-11-03\n", "cp1252")
    world.materialize()
    assert staged(world, "crm_people", "C1", "email") == "anna.3@y.it"


def test_a_source_ordered_by_its_files_business_date(world):
    header = "id,first,last,email,city\n"
    world.drop("shop/people_20261102.csv", header + "S1,Luca,Verdi,luca@z.it,Torino\n")
    world.materialize()
    world.drop("shop/people_20261101.csv", header + "S1,Luca,Verdi,luca@z.it,Milano\n")  # late, older
    world.materialize()
    assert staged(world, "shop_people", "S1", "city") == "Torino"
    world.drop("shop/people_20261104.csv", header + "S1,Luca,Verdi,luca@z.it,Genova\n")
    world.materialize()
    assert staged(world, "shop_people", "S1", "city") == "Genova"


def _key_sorting_before(other_tag: str) -> str:
    for i in range(10_000):
        k = f"key-{i}"
        if hashlib.sha256(k.encode()).hexdigest()[:24] < other_tag:
            return k
    raise AssertionError("no key found")


def test_pushes_are_ordered_by_receipt_not_by_name(world):
    from tessera.ingest.push import land_records

    source = {s.name: s for s in load_deployment(world.config).sources}["web_signups"]
    first_key = "zzz-first"
    first_tag = hashlib.sha256(first_key.encode()).hexdigest()[:24]
    second_key = _key_sorting_before(first_tag)  # its hash-derived name sorted first before
    p1, dup1 = land_records([{"id": "W1", "email": "w@x.it", "city": "Roma"}], world.landing, source, first_key)
    p2, dup2 = land_records([{"id": "W1", "email": "w@x.it", "city": "Napoli"}], world.landing, source, second_key)
    assert not dup1 and not dup2 and p1.name < p2.name  # names follow receipt
    again, dup = land_records([{"id": "W1", "city": "Bari"}], world.landing, source, first_key)
    assert dup and again == p1  # a retried key lands nothing
    world.materialize()
    assert staged(world, "web_signups", "W1", "city") == "Napoli"  # the newer push wins


def test_a_declared_order_must_name_a_date_field(world):
    (world.config / "sources.yaml").write_text(SOURCES_YAML.replace(
        "    timestamp_format: \"%Y-%m-%d\"\n    columns: {source_record_id: id, first_name: first",
        "    timestamp_format: \"%Y-%m-%d\"\n    record_order: {by: record_timestamp, column: email}\n"
        "    columns: {source_record_id: id, first_name: first", 1))
    with pytest.raises(ConfigError, match="record_order.column: 'email' is not a mapped date or timestamp"):
        load_deployment(world.config)
