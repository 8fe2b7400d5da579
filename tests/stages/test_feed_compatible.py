"""Issue 14 item 2: the "compatible" export of each registry is read back unchanged by the
import of the same registry (the real ingestion, into a fresh warehouse)."""

from __future__ import annotations

import datetime as dt
import decimal

import pytest

from tessera.deployment import load_deployment
from tessera.engine.warehouse import connect, ensure_warehouse
from tessera.feeds.compatible import (compatible_export, compatible_source,
                                      compatible_source_yaml)
from tessera.ingest.load import ingest_source

NOW = dt.datetime(2026, 11, 2, 6, 0)
TESSERA_YAML = "deployment: roundtrip\nnodes: [{name: crm}]\ntree: {priority: [crm]}\n"
REGISTRIES = ["b2c_users", "b2b_companies", "b2b_company_users", "potential_companies"]
T1 = dt.datetime(2026, 10, 30, 10, 11, 12)

CUSTOMERS = [
    # customer_id, erp_id, email, first_name, last_name, mobile, phone, address, postcode,
    # city, province, country, birth_date, gender, tax_code, email_consent, sms_consent, updated_at
    (101, "E-001", "anna.neri@x.it", "Anna", "Neri", "+393331234567", None,
     'Via Roma 1; "bis"', "00184", "Roma", "RM", "IT", dt.date(1980, 2, 14), "F", None,
     "granted", "withdrawn", T1),
    (102, None, "lucja@x.pl", "Łucja", "Wiśniewska", None, "+48221234567", "ul. Długa 5\nlok. 2",
     "00-950", "Warszawa", None, "PL", None, None, None, "unknown", "unknown", T1),
    (103, "=cmd", "marco@x.it", "Marco", "Bianchi", None, None, None, None, "Torino", "TO", "IT",
     dt.date(1999, 12, 31), "M", None, "withdrawn", "granted", None),
    (201, None, "giulia@alfa.it", "Giulia", "Verdi", "+393479876543", None, None, None, None, None,
     "IT", None, None, None, "granted", "unknown", T1),
]
COMPANIES = [
    (1, "Alfa Costruzioni S.r.l.", "01234567897", "ERP-9", "info@alfa.it", "+390212345678",
     "Via Milano 3", "20100", "Milano", "IT-25", "MI", "IT", "spa", decimal.Decimal("1500000.50"), 42, T1),
    (2, "Beta & Figli", "12345678903", None, None, None, None, None, "Torino", None, "TO", "IT",
     None, None, None, None),
]
POTENTIAL = [
    ("lists", "P-7", "crm", "Gamma S.n.c.", "01234567897", "gamma@x.it", None, "Bari", "IT-75", "BA",
     "IT", T1),
]


def _golden(con):
    con.execute("""CREATE TABLE core.customers (customer_id BIGINT, erp_id VARCHAR, email VARCHAR,
        first_name VARCHAR, last_name VARCHAR, mobile VARCHAR, phone VARCHAR, address VARCHAR,
        postcode VARCHAR, city VARCHAR, province VARCHAR, country VARCHAR, birth_date DATE,
        gender VARCHAR, tax_code VARCHAR, email_consent VARCHAR, sms_consent VARCHAR,
        updated_at TIMESTAMP)""")
    con.executemany("INSERT INTO core.customers VALUES (" + ", ".join(["?"] * 18) + ")", CUSTOMERS)
    con.execute("""CREATE TABLE core.companies (company_id BIGINT, legal_name VARCHAR,
        vat_number VARCHAR, erp_id VARCHAR, email VARCHAR, phone VARCHAR, address VARCHAR,
        postcode VARCHAR, city VARCHAR, region VARCHAR, province VARCHAR, country VARCHAR,
        company_type VARCHAR, revenue DECIMAL(18, 2), employees INTEGER, updated_at TIMESTAMP)""")
    con.executemany("INSERT INTO core.companies VALUES (" + ", ".join(["?"] * 16) + ")", COMPANIES)
    con.execute("""CREATE TABLE core.company_contacts (customer_id BIGINT, company_id BIGINT,
        role VARCHAR, source VARCHAR, source_record_id VARCHAR, linked_by VARCHAR)""")
    con.execute("INSERT INTO core.company_contacts VALUES (201, 1, 'buyer', 'crm', 'U1', 'vat')")
    con.execute("""CREATE TABLE core.potential_companies (source VARCHAR, source_record_id VARCHAR,
        node VARCHAR, legal_name VARCHAR, vat_number VARCHAR, email VARCHAR, phone VARCHAR,
        city VARCHAR, region VARCHAR, province VARCHAR, country VARCHAR, updated_at TIMESTAMP)""")
    con.executemany("INSERT INTO core.potential_companies VALUES (" + ", ".join(["?"] * 12) + ")",
                    POTENTIAL)


@pytest.fixture(scope="module")
def roundtrip(tmp_path_factory):
    root = tmp_path_factory.mktemp("compatible")
    config = root / "config"
    config.mkdir()
    (config / "tessera.yaml").write_text(TESSERA_YAML)
    (config / "sources.yaml").write_text("sources: []\n")
    base = load_deployment(config)
    src = connect(root / "golden.duckdb")
    ensure_warehouse(src)
    _golden(src)
    landing = root / "landing"
    stats, entries = {}, []
    for reg in REGISTRIES:
        stats[reg] = compatible_export(src, base, reg, landing / reg / f"{reg}_20261102.csv")
        entries.append(compatible_source_yaml(
            compatible_source(base, reg, f"back_{reg}", "crm", f"{reg}/*.csv")))
    (config / "sources.yaml").write_text("sources:\n" + "".join(entries))
    dep = load_deployment(config)
    dst = connect(root / "restored.duckdb")
    ensure_warehouse(dst)
    outcomes = {s.name: ingest_source(dst, dep, s, landing, "b1", NOW) for s in dep.sources}
    yield src, dst, stats, outcomes, landing
    src.close()
    dst.close()


def _raw(dst, reg, cols):
    return dst.execute(f"SELECT {', '.join(cols)} FROM raw.back_{reg} ORDER BY source_record_id").fetchall()


def test_every_record_is_read_back_with_no_reject(roundtrip):
    _, dst, stats, outcomes, _ = roundtrip
    assert {k: v.rows for k, v in stats.items()} == {"b2c_users": 3, "b2b_companies": 2,
                                                      "b2b_company_users": 1, "potential_companies": 1}
    assert dst.execute("SELECT count(*) FROM ops.rejects").fetchone()[0] == 0
    for reg, n in (("b2c_users", 3), ("b2b_companies", 2), ("b2b_company_users", 1),
                   ("potential_companies", 1)):
        assert dst.execute(f"SELECT count(*) FROM raw.back_{reg}").fetchone()[0] == n


def test_b2c_users_round_trip(roundtrip):
    _, dst, _, _, landing = roundtrip
    cols = ["source_record_id", "erp_id", "email", "first_name", "last_name", "mobile", "phone",
            "address", "postcode", "city", "province", "country", "birth_date", "gender",
            "consent_email", "consent_sms", "updated_at"]
    consent = {"granted": True, "withdrawn": False, "unknown": None}
    expected = [(str(c[0]), *c[1:14], consent[c[15]], consent[c[16]], c[17]) for c in CUSTOMERS[:3]]
    got = _raw(dst, "b2c_users", cols)
    assert got == expected
    text = (landing / "b2c_users" / "b2c_users_20261102.csv").read_text(encoding="utf-8")
    assert text.splitlines()[0].startswith("codice;idgestionale;nome;cognome;email;")
    assert ";00184;" in text and "14/02/1980" in text and "30/10/2026 10:11:12" in text


def test_b2b_companies_round_trip(roundtrip):
    _, dst, _, _, _ = roundtrip
    # every field of the companies' import layout (Sendero's list has no phone)
    cols = ["source_record_id", "legal_name", "vat_number", "erp_id", "email", "address",
            "postcode", "city", "region", "province", "country", "company_type", "revenue",
            "employees", "updated_at"]
    got = _raw(dst, "b2b_companies", cols)
    assert got == [(str(c[0]), *c[1:5], *c[6:]) for c in COMPANIES]


def test_b2b_company_users_round_trip(roundtrip):
    _, dst, _, _, _ = roundtrip
    got = _raw(dst, "b2b_company_users", ["source_record_id", "first_name", "last_name",
                                          "company_name", "company_vat", "email", "mobile", "role",
                                          "consent_email", "consent_sms", "updated_at"])
    assert got == [("201", "Giulia", "Verdi", "Alfa Costruzioni S.r.l.", "01234567897",
                    "giulia@alfa.it", "+393479876543", "buyer", True, None, T1)]


def test_potential_companies_round_trip(roundtrip):
    _, dst, _, _, _ = roundtrip
    got = _raw(dst, "potential_companies", ["source_record_id", "legal_name", "vat_number", "email",
                                            "phone", "city", "region", "province", "country"])
    p = POTENTIAL[0]
    assert got == [(p[1], p[3], p[4], p[5], p[6], p[7], p[8], p[9], p[10])]
