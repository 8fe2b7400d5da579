"""The search's token index (``marts.contact_search_tokens``, published in token order)
finds exactly the people an analyst expects, whatever the accents and case, and the same
people as the inline fold a warehouse without the index is searched with."""

from __future__ import annotations

import re
import unicodedata

import pytest

from tessera.card.search import build_contact_search
from tessera.engine import as_engine, read_only
from tessera.engine.duckdb_engine import read_snapshot
from tessera.web import queries
from tessera.web.snapshot import current, publish

PEOPLE = [  # customer_id, first name, surname, e-mail, mobile, city, birth date, gender
    (1, "Mario", "Rossi", "mario.rossi@example.com", "+393331234567", "Milano", "1980-03-04", "M"),
    (2, "Anna", "Rossì", "ANNA@Example.org", "+393339998877", "Roma", "1975-11-30", "F"),
    (3, "Niccolò", "De Luca", "nico@example.com", None, "Torino", "1980-07-07", "M"),
    (4, "Zoë", "ROSSINI", None, "+48601234567", "Kraków", "1990-01-01", "F"),
    (5, "Łukasz", "Wiśniewski", "lukasz@example.pl", "+48605550000", "Warszawa", "1980-12-12", "M"),
    (6, None, None, "only.mail@example.com", None, None, None, None),
    (7, "Rossella", "Bianchi", "rb@example.com", "+393331230000", "Milano", "2001-02-03", "F"),
]


def _fold(text: str) -> str:
    return "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c)).lower()


def expected(query: str) -> list[int]:
    """The oracle, in plain Python: every word is the start of a word of a person's
    fields (or the start of the e-mail when it has an '@', or the gender or id whole, or
    digits inside a phone), listed in registry order."""
    def words_of(p):
        text = " ".join(str(v) for v in (p[1], p[2], p[3], p[6], p[5]) if v)
        return [w for w in re.split(r"[\W_]+", _fold(text)) if w]

    def matches(p, word):
        if "@" in word[1:]:
            return bool(p[3]) and _fold(p[3]).startswith(_fold(word))
        parts = [w for w in re.split(r"[\W_]+", _fold(word)) if w]
        ok = bool(parts) and all(any(w.startswith(part) for w in words_of(p)) for part in parts)
        ok |= _fold(word) in (str(p[0]), _fold(p[7] or "\0"))
        digits = re.sub(r"\D", "", word)
        ok |= len(digits) >= 4 and len(digits) >= len(word.lstrip("+")) - 2 and digits in (p[4] or "").lstrip("+")
        return ok

    hits = [p for p in PEOPLE if all(matches(p, w) for w in query.split())]
    hits.sort(key=lambda p: (not (p[1] or p[2]), _fold(p[2] or p[3] or ""), _fold(p[1] or ""),
                             p[3] or "", p[0]))
    return [p[0] for p in hits]


QUERIES = ["rossi", "ROSSÌ", "Rossì", "ross", "rossini", "niccolo", "NICCOLÒ", "de luca", "zoe",
           "łukasz", "wisniewski", "1980", "1980 rossi", "rossi 1899", "mario.rossi@", "anna@example.ORG",
           "only.mail@example.com", "123", "1234567", "3331230000", "f", "m rossi", "4", "milano",
           "kraków", "krakow", "example", "ossi", "m@"]


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory):
    from tessera.engine.warehouse import connect

    path = tmp_path_factory.mktemp("search") / "warehouse.duckdb"
    con = connect(path)
    con.execute("CREATE SCHEMA IF NOT EXISTS marts")
    con.execute("""CREATE TABLE marts.contact_cards (customer_id BIGINT, first_name VARCHAR,
        last_name VARCHAR, email VARCHAR, mobile VARCHAR, phone VARCHAR, city VARCHAR, birth_date DATE,
        gender VARCHAR, erp_id VARCHAR, tax_code VARCHAR, order_number BIGINT)""")
    con.executemany("INSERT INTO marts.contact_cards VALUES (?, ?, ?, ?, ?, NULL, ?, ?, ?, NULL, NULL, 0)",
                    [list(p) for p in PEOPLE])
    build_contact_search(con)
    con.execute("CREATE SCHEMA IF NOT EXISTS core")
    con.execute("""CREATE TABLE core.companies AS SELECT * FROM (VALUES
        (10, 'Acme Srl', 'IT001', 'E10', 'info@acme.it', 'Milano', 'Lombardia', 'MI', 'IT', '1', '11', '2', 'b2b', 5),
        (11, 'Àcme Nord', 'IT002', 'E11', 'nord@acme.it', 'Torino', 'Piemonte', 'TO', 'IT', '1', '12', '2', 'b2b', 8),
        (12, 'Beta Spa', 'IT003', 'E12', 'ciao@beta.it', 'Roma', 'Lazio', 'RM', 'IT', '3', '31', '4', 'pa', 40))
        AS t(company_id, legal_name, vat_number, erp_id, email, city, region, province, country,
             sector_macro, sector_micro, source_macro, company_type, employees)""")
    con.execute("""CREATE TABLE core.company_contacts AS SELECT * FROM (VALUES
        (1, 10, 'marketing'), (2, 11, 'finance'), (3, 12, 'marketing'), (7, 10, 'finance'))
        AS t(customer_id, company_id, role)""")
    con.execute("""CREATE TABLE core.potential_companies AS SELECT * FROM (VALUES
        ('list', 'r1', 'Gamma Srl', 'IT009', 'g@gamma.it', 'Bari', 'Puglia', 'BA', 'IT', '5', '51', 'potential', NULL, NULL),
        ('list', 'r2', 'Delta Srl', 'IT010', 'd@delta.it', 'Lecce', 'Puglia', 'LE', 'IT', '6', '61', 'registered', 12, 'tessera'))
        AS t(source, source_record_id, legal_name, vat_number, email, city, region, province, country,
             sector_macro, sector_micro, status, registered_company_id, registered_by)""")
    publish(as_engine(con), path)
    con.close()
    return path


@pytest.mark.parametrize("query", QUERIES)
def test_the_index_finds_exactly_the_expected_people_in_registry_order(warehouse, query):
    with read_snapshot(current(warehouse)) as engine:
        assert queries._has(engine, "marts.contact_search_tokens")  # the index, not the fold
        got = [r[0] for r in queries.search(engine, query).rows]
    assert got == expected(query), query


def test_the_published_index_is_in_token_order_and_keys_in_registry_order(warehouse):
    with read_snapshot(current(warehouse)) as engine:
        from tessera.engine import SqlStep

        tokens = [r[0] for r in engine.rows(SqlStep("t", "SELECT token FROM marts.contact_search_tokens"))]
        ranks = [r[0] for r in engine.rows(SqlStep("t", "SELECT search_rank FROM marts.contact_search"))]
    assert tokens == sorted(tokens) and "rossi" in tokens and "#1234567" in tokens and "!4" in tokens
    assert ranks == list(range(1, len(PEOPLE) + 1))


def test_without_the_index_the_same_people_are_found(warehouse, tmp_path):
    import shutil

    from tessera.engine.warehouse import connect

    copy = tmp_path / "old.duckdb"
    shutil.copyfile(warehouse, copy)
    con = connect(copy)
    con.execute("DROP TABLE marts.contact_search_tokens")
    con.close()
    with read_only(copy) as engine:
        for query in QUERIES + [""]:
            assert [r[0] for r in queries.search(engine, query).rows] == expected(query), query
    with read_only(copy) as engine:
        assert [r[0] for r in queries.search(engine, "", letter="R").rows] == [2, 1, 4]


def _ids(html: str, what: str) -> list[int]:
    return [int(x) for x in re.findall(rf'<td><a href="/{what}/(\d+)', html)]


def test_the_other_registries_filter_by_their_fields(warehouse):
    from starlette.testclient import TestClient

    from tessera.web.app import create_app

    with TestClient(create_app(warehouse)) as client:
        companies = lambda **f: _ids(client.get("/companies", params={f"f_{k}": v for k, v in f.items()}).text,
                                     "company")
        assert companies(region="Lombardia") == [10]
        assert companies(sector_macro="1") == [11, 10]  # legal-name order, accents aside
        assert companies(legal_name="acme") == [11, 10]  # starts with, accents and case aside
        assert companies(legal_name="ACME", province="TO") == [11]
        assert companies(sector_macro="1", company_type="pa") == []
        assert companies(email="ciao@") == [12] and companies(erp_id="E12") == [12]
        users = lambda **f: _ids(client.get("/company-users", params={f"f_{k}": v for k, v in f.items()}).text,
                                 "card")
        assert users(role="marketing") == [3, 1]  # De Luca, Rossi
        assert users(company="acme", role="finance") == [7, 2]  # Bianchi, Rossì
        assert users(last_name="rossi") == [2, 1] and users(sector_macro="3") == [3]
        potential = lambda **f: _ids(client.get("/potential-companies",
                                                params={f"f_{k}": v for k, v in f.items()}).text, "company")
        html = client.get("/potential-companies", params={"f_region": "Puglia"}).text
        assert html.count("<tr>") - 1 == 2 and "Gamma Srl" in html and "Delta Srl" in html
        html = client.get("/potential-companies", params={"f_region": "Puglia", "f_sector_macro": "6"}).text
        assert "Delta Srl" in html and "Gamma Srl" not in html
        # the values offered, with their counts; the contacts' filters are not offered here
        html = client.get("/companies").text
        assert re.search(r'<option value="1">1 \(2\)</option>', html.split('id="opt-sector_macro"')[1])
        assert 'name="f_legal_name"' in html and 'id="opt-legal_name"' in html
        assert 'name="f_profession"' not in html
        assert 'name="f_role"' in client.get("/company-users").text
