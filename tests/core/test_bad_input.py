"""Bad input never loads silently (issue #20, items 5-12): each test writes real files,
loads them into a real DuckDB warehouse with the demo configuration, and checks the
report's counts, the rejects (file, line, field, reason; never the value), that the
other records and files still load and that nothing already stored is lost."""
from __future__ import annotations

import csv
import datetime as dt
import io
from pathlib import Path

import pytest

from tessera.deployment import load_deployment
from tessera.engine.warehouse import connect, ensure_warehouse
from tessera.ingest.load import ingest_source
from tessera.settings.sources import DateRange

DEMO = Path(__file__).resolve().parents[2] / "examples" / "demo"
NOW = dt.datetime(2026, 11, 1, 6, 0, 0)


@pytest.fixture(scope="module")
def demo():
    return load_deployment(DEMO)


@pytest.fixture
def con(tmp_path):
    c = connect(tmp_path / "wh" / "warehouse.duckdb")
    ensure_warehouse(c)
    yield c
    c.close()


@pytest.fixture
def landing(tmp_path) -> Path:
    d = tmp_path / "landing"
    d.mkdir()
    return d


def crm_row(**over) -> dict:
    row = dict(
        source_record_id="C001", first_name="Niccol\u00f2", last_name="D'Amato",
        email="niccolo.damato@example.it", mobile="+39 333 1234567", birth_date="14/02/1980",
        gender="M", address="Via Garibaldi 1", postcode="00184", city="Roma", province="RM",
        country="IT", tax_code="DMTNCC80B14H501X", consent_email="si",
        updated_at="01/10/2026 10:30", loyalty_tier="gold",
    )
    row.update(over)
    return row


def crm_text(rows: list[dict], dep) -> str:
    src = dep.source("crm_contacts")
    buf = io.StringIO(newline="")
    writer = csv.writer(buf, delimiter=";", lineterminator="\r\n")
    writer.writerow(list(src.columns.values()))
    for r in rows:
        writer.writerow([r.get(canon, "") for canon in src.columns])
    return buf.getvalue()


def put(landing: Path, rel: str, data: bytes | str, encoding: str = "cp1252") -> Path:
    path = landing / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data if isinstance(data, bytes) else data.encode(encoding))
    return path


def ingest(con, dep, landing, source="crm_contacts", batch="b1", src=None):
    return ingest_source(con, dep, src or dep.source(source), landing, batch, now=NOW)


def rows(con, sql, params=None):
    return con.execute(sql, params or []).fetchall()


def rejects(con, source="crm_contacts", file=None):
    got = rows(con, "SELECT file, line, field, reason FROM ops.rejects WHERE source = ? "
                    "ORDER BY file, line, field", [source])
    return [r[1:] for r in got if file is None or r[0].endswith(file)]


def outcome(f):
    return (f.status, f.records, f.new, f.rejected)


def no_value_in_storage(con, *values: str) -> None:
    """No refused value in rejects, the import report or its reasons (RELIABILITY rule 10)."""
    for table in ("ops.rejects", "ops.import_report", "ops.import_reject_reasons"):
        text = " ".join(str(r) for r in rows(con, f"SELECT * FROM {table}"))
        for value in values:
            assert value not in text, (table, value)


# --------------------------------------------------------------------------- #
# 8. One bad record never stops the others
# --------------------------------------------------------------------------- #
def event(i, **over) -> str:
    import json

    rec = {"event_id": f"e{i}", "type": "page_view", "occurred_at": "2026-10-30T08:00:00Z",
           "email": f"a{i}@example.it", "properties": {"url": "/it"}}
    rec.update(over)
    return json.dumps(rec)


DEEP = "[" * 100_000 + "]" * 100_000


@pytest.mark.parametrize("bom", [False, True], ids=["duckdb-path", "exact-reader"])
def test_a_json_line_nested_100000_deep_is_one_reject_and_the_run_goes_on(con, demo, landing, bom):
    deep_property = event(3)[:-1] + ', "deep": ' + DEEP + "}"
    text = "\n".join([event(1), DEEP, deep_property, event(4)]) + "\n"
    put(landing, "web/web_events_20261101.jsonl", ("\ufeff" if bom else "") + text, "utf-8")
    put(landing, "web/web_events_20261102.jsonl", event(5) + "\n", "utf-8")
    out = ingest(con, demo, landing, source="web_events")
    # Line 3 is an object whose unmapped key nests deeply: DuckDB reads it (and keeps
    # it), Python's parser cannot, so the exact reader refuses it.
    first = (out.files[0].records, out.files[0].rejected)
    assert first == ((4, 2) if bom else (4, 1))
    assert outcome(out.files[1]) == ("loaded", 1, 1, 0)
    got = rejects(con, "web_events")
    assert got[0] == (2, "*", "JSON nested too deeply")
    if bom:
        assert got[1] == (3, "*", "JSON nested too deeply")
    stored = sorted(r[0] for r in rows(con, "SELECT source_record_id FROM raw.web_events"))
    assert stored == (["e1", "e4", "e5"] if bom else ["e1", "e3", "e4", "e5"])


def test_a_reader_that_crashes_fails_its_file_only_and_names_no_value(con, demo, landing, monkeypatch):
    from tessera.ingest import load

    real = load.READERS["xml"]

    def crashing(path, source, result):
        if path.name.endswith("02.xml"):
            raise ValueError("Mario Rossi <mario@example.it> broke the parser")
        yield from real(path, source, result)

    monkeypatch.setitem(load.READERS, "xml", crashing)
    order = ('<?xml version="1.0" encoding="UTF-8"?>\n<sincronizza>\n<commons><table>ordini'
             "</table></commons>\n<ordini>\n<ordine><idOrdine>{}</idOrdine><idCliente>1</idCliente>"
             "<data>15/10/2026</data><importo>5</importo><idCanaleMacro>1</idCanaleMacro>"
             "</ordine>\n</ordini>\n</sincronizza>\n")
    put(landing, "ecommerce/ordini_20261101.xml", order.format("O1"), "utf-8")
    put(landing, "ecommerce/ordini_20261102.xml", order.format("O2"), "utf-8")
    put(landing, "ecommerce/ordini_20261103.xml", order.format("O3"), "utf-8")
    out = ingest(con, demo, landing, source="shop_orders")
    assert [f.status for f in out.files] == ["loaded", "failed", "loaded"]
    assert "ValueError" in out.files[1].message and "ordini_20261102.xml" in out.files[1].message
    assert rows(con, "SELECT source_record_id FROM raw.shop_orders ORDER BY 1") == [("O1",), ("O3",)]
    assert rows(con, "SELECT status FROM ops.import_report WHERE file LIKE '%02.xml'") == [("failed",)]
    no_value_in_storage(con, "Mario", "mario@example.it")


# --------------------------------------------------------------------------- #
# 7. Values
# --------------------------------------------------------------------------- #
def test_control_characters_are_refused_per_field_and_line_breaks_kept(con, demo, landing):
    put(landing, "crm/crm_contacts_20261101.csv", crm_text([
        crm_row(source_record_id="C1", first_name="An\x00na"),
        crm_row(source_record_id="C2", last_name="Ros\x1bsi", city="Mi\x7flano"),
        crm_row(source_record_id="C3", address="Via Roma 1\r\nscala B\tint. 4"),
    ], demo))
    f = ingest(con, demo, landing).files[0]
    assert outcome(f) == ("loaded", 3, 1, 2)
    reason = "contains a control character (only tab and line breaks are allowed)"
    assert rejects(con) == [(2, "first_name", reason), (3, "city", reason), (3, "last_name", reason)]
    assert rows(con, "SELECT source_record_id, address FROM raw.crm_contacts") == [
        ("C3", "Via Roma 1\r\nscala B\tint. 4")]
    no_value_in_storage(con, "An\x00na", "Ros\x1bsi")


def test_control_characters_in_json_escapes_are_refused_too(con, demo, landing):
    put(landing, "web/web_events_20261101.jsonl",
        event(1, email="a\u0000b@example.it") + "\n" + event(2, type="cl\u0007ick") + "\n"
        + event(3) + "\n", "utf-8")
    f = ingest(con, demo, landing, source="web_events").files[0]
    assert outcome(f) == ("loaded", 3, 1, 2)
    assert [(r[0], r[1]) for r in rejects(con, "web_events")] == [(1, "email"), (2, "event_type")]


def test_a_field_bigger_than_the_limit_is_refused_and_the_limit_is_configurable(con, demo, landing):
    put(landing, "crm/crm_contacts_20261101.csv", crm_text([
        crm_row(source_record_id="C1", address="x" * (3 << 20)),
        crm_row(source_record_id="C2", address="y" * 2000),
    ], demo))
    f = ingest(con, demo, landing).files[0]
    assert outcome(f) == ("loaded", 2, 1, 1)
    assert rejects(con) == [(2, "address", "value longer than 64 KiB (the source's max_field_kb)")]
    small = demo.source("crm_contacts").model_copy(update={"max_field_kb": 1})
    put(landing, "crm/crm_contacts_20261102.csv", crm_text([
        crm_row(source_record_id="C3", address="z" * 1100), crm_row(source_record_id="C4")], demo))
    f = ingest(con, demo, landing, batch="b2", src=small).files[1]
    assert outcome(f) == ("loaded", 2, 1, 1)
    assert rejects(con, file="1102.csv") == [
        (2, "address", "value longer than 1 KiB (the source's max_field_kb)")]


@pytest.mark.parametrize("exact", [False, True], ids=["duckdb-path", "exact-reader"])
def test_json_key_twice_non_finite_numbers_and_numbers_for_text(con, demo, landing, exact):
    dup = event(2)[:-1] + ', "email": "other@example.it"}'
    lines = [event(1), dup, event(3, type=5), event(4, type=True), event(17, event_id=17), event(6)]
    if exact:
        lines.append(event(7)[:-1] + ', "score": NaN}')
        lines.append(event(8)[:-1] + ', "email": Infinity}')
    put(landing, "web/web_events_20261101.jsonl", "\n".join(lines) + "\n", "utf-8")
    f = ingest(con, demo, landing, source="web_events").files[0]
    n = len(lines)
    assert outcome(f) == ("loaded", n, 3, n - 3)
    text = "a number where text is expected (leading zeros or a sign may be lost; deliver it as text)"
    expected = [(2, "email", "key 'email' given twice in one record"),
                (3, "event_type", text), (4, "event_type", text)]
    if exact:
        expected += [(7, "*", "a non-finite number (NaN or Infinity) is not JSON"),
                     (8, "*", "a non-finite number (NaN or Infinity) is not JSON")]
    assert rejects(con, "web_events") == expected
    # An id given as a JSON number is exact: it is kept as its text.
    assert sorted(r[0] for r in rows(con, "SELECT source_record_id FROM raw.web_events")) == [
        "17", "e1", "e6"]
    no_value_in_storage(con, "other@example.it")


def test_xml_child_element_twice_is_refused_naming_field_and_line(con, demo, landing):
    put(landing, "ecommerce/ordini_20261101.xml",
        '<?xml version="1.0" encoding="UTF-8"?>\n<sincronizza>\n<commons><table>ordini'
        "</table></commons>\n<ordini>\n"
        "<ordine><idOrdine>O1</idOrdine><idCliente>1</idCliente><idCliente>2</idCliente>"
        "<data>15/10/2026</data><importo>5</importo><idCanaleMacro>1</idCanaleMacro></ordine>\n"
        "<ordine><idOrdine>O2</idOrdine><idCliente>1</idCliente>"
        "<data>15/10/2026</data><importo>5</importo><idCanaleMacro>1</idCanaleMacro></ordine>\n"
        "</ordini>\n</sincronizza>\n", "utf-8")
    f = ingest(con, demo, landing, source="shop_orders").files[0]
    assert outcome(f) == ("loaded", 2, 1, 1)
    assert rejects(con, "shop_orders") == [(5, "customer_ref", "element <idCliente> given twice in one record")]


def test_xml_bytes_contradicting_the_declared_encoding_are_refused(con, demo, landing):
    body = ("<?xml version=\"1.0\" encoding=\"ISO-8859-1\"?>\n<sincronizza>\n<commons><table>ordini"
            "</table></commons>\n<ordini>\n<ordine><idOrdine>O1</idOrdine><idCliente>Citt\u00e0"
            "</idCliente><data>15/10/2026</data><importo>5</importo><idCanaleMacro>1</idCanaleMacro>"
            "</ordine>\n</ordini>\n</sincronizza>\n")
    put(landing, "ecommerce/ordini_20261101.xml", body, "utf-8")
    f = ingest(con, demo, landing, source="shop_orders").files[0]
    assert f.status == "failed" and "UTF-8" in f.message and "latin-1" in f.message
    assert rows(con, "SELECT count(*) FROM raw.shop_orders") == [(0,)]


def test_xml_doctype_reject_names_its_line(con, demo, landing):
    put(landing, "ecommerce/ordini_20261101.xml",
        '<?xml version="1.0"?>\n<!-- export -->\n<!DOCTYPE x [<!ENTITY xxe "Mario">]>\n'
        "<sincronizza><ordini/></sincronizza>\n", "utf-8")
    f = ingest(con, demo, landing, source="shop_orders").files[0]
    assert f.status == "failed"
    assert rows(con, "SELECT line, field, reason FROM ops.rejects") == [
        (None, "*", "ordini_20261101.xml: line 3: XML with a DOCTYPE declaration is refused; nothing loaded")]
    no_value_in_storage(con, "Mario")


def test_implausible_birth_dates_are_refused_and_ranges_are_configurable(con, demo, landing):
    put(landing, "crm/crm_contacts_20261101.csv", crm_text([
        crm_row(source_record_id="C1", birth_date="01/01/2090"),
        crm_row(source_record_id="C2", birth_date="31/12/1899"),
        crm_row(source_record_id="C3", birth_date="01/01/1940"),
    ], demo))
    f = ingest(con, demo, landing).files[0]
    assert outcome(f) == ("loaded", 3, 1, 2)
    assert rejects(con) == [(2, "birth_date", "implausible date: after today"),
                            (3, "birth_date", "implausible date: before 1900-01-01")]
    strict = demo.source("crm_contacts").model_copy(
        update={"date_ranges": {"birth_date": DateRange(min="1950-01-01", max="2010-12-31")}})
    put(landing, "crm/crm_contacts_20261102.csv", crm_text([
        crm_row(source_record_id="C4", birth_date="01/01/1940"),
        crm_row(source_record_id="C5", birth_date="01/01/2011")], demo))
    f = ingest(con, demo, landing, batch="b2", src=strict).files[1]
    assert outcome(f) == ("loaded", 2, 0, 2)
    assert rejects(con, file="1102.csv") == [(2, "birth_date", "implausible date: before 1950-01-01"),
                                             (3, "birth_date", "implausible date: after 2010-12-31")]
