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
from tessera.ingest.load import ingest_source
from tessera.settings.sources import DateRange

DEMO = Path(__file__).resolve().parents[2] / "examples" / "demo"
NOW = dt.datetime(2026, 11, 1, 6, 0, 0)


@pytest.fixture(scope="module")
def demo():
    return load_deployment(DEMO)


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


# --------------------------------------------------------------------------- #
# 5. Every physical record accounted for
# --------------------------------------------------------------------------- #
def physical_records(data: bytes) -> int:
    """Records counted without any CSV parser: non-blank lines after the header (the
    files here have no legitimately quoted newline)."""
    return sum(1 for line in data.split(b"\r\n")[1:] if line.strip())


def test_an_unterminated_quote_rejects_its_line_and_the_records_after_it_load(con, demo, landing):
    text = crm_text([crm_row(source_record_id=f"C{i}", first_name=f"Nome{i}") for i in range(1, 7)], demo)
    text = text.replace(";Nome3;", ';"Nome3;')  # the quote never closes
    path = put(landing, "crm/crm_contacts_20261101.csv", text)
    f = ingest(con, demo, landing).files[0]
    assert outcome(f) == ("loaded", physical_records(path.read_bytes()), 5, 1) == ("loaded", 6, 5, 1)
    (reject,) = rejects(con)
    assert reject[:2] == (4, "*")
    assert reject[2].startswith("malformed CSV record: the quote opened on line 4 runs over 4 lines")
    assert sorted(r[0] for r in rows(con, "SELECT source_record_id FROM raw.crm_contacts")) == [
        "C1", "C2", "C4", "C5", "C6"]
    no_value_in_storage(con, "Nome3")


def test_a_quote_closed_records_later_gives_back_the_records_it_swallowed(con, demo, landing):
    text = crm_text([crm_row(source_record_id=f"C{i}", first_name=f"Nome{i}", loyalty_tier="gold")
                     for i in range(1, 6)], demo)
    # Opened in record C2 (line 3), closed at the end of record C4 (line 5): the quotes
    # are balanced and well placed, so the byte scan vouches for the file; the record
    # from line 3 to 5 has the wrong width.
    text = text.replace(";Nome2;", ';"Nome2;').replace("C4;Nome4", "C4;Nome4").replace(
        "gold;\r\nC5", 'gold";\r\nC5')
    path = put(landing, "crm/crm_contacts_20261101.csv", text)
    f = ingest(con, demo, landing).files[0]
    assert f.records == physical_records(path.read_bytes()) == 5
    assert f.new + f.rejected == 5
    got = rejects(con)
    assert got[0][:2] == (3, "*") and "the quote opened on line 3" in got[0][2]
    stored = sorted(r[0] for r in rows(con, "SELECT source_record_id FROM raw.crm_contacts"))
    assert {"C1", "C3", "C5"} <= set(stored)   # C3, swallowed before, is loaded


def test_one_line_per_record_after_many_broken_quotes(con, demo, landing):
    text = crm_text([crm_row(source_record_id=f"C{i}", first_name=f"N{i}") for i in range(1, 41)], demo)
    for i in range(3, 41, 4):
        text = text.replace(f";N{i};", f';"N{i};')
    path = put(landing, "crm/crm_contacts_20261101.csv", text)
    f = ingest(con, demo, landing).files[0]
    assert (f.records, f.new, f.rejected) == (physical_records(path.read_bytes()), 30, 10) == (40, 30, 10)
    assert [r[0] for r in rejects(con)] == [i + 1 for i in range(3, 41, 4)]


# --------------------------------------------------------------------------- #
# 9. Headers
# --------------------------------------------------------------------------- #
def test_a_header_giving_a_column_twice_is_refused_naming_it(con, demo, landing):
    text = crm_text([crm_row()], demo).replace("cognome", "nome", 1)
    put(landing, "crm/crm_contacts_20261101.csv", text)
    f = ingest(con, demo, landing).files[0]
    assert f.status == "failed"
    assert "column name(s) ['nome'] appear more than once in the header" in f.message
    assert rows(con, "SELECT count(*) FROM raw.crm_contacts") == [(0,)]


def test_an_unknown_extra_column_is_refused_unless_the_source_ignores_extras(con, demo, landing):
    text = crm_text([crm_row()], demo)
    head, rest = text.split("\r\n", 1)
    text = head + ";note_interne\r\n" + rest.replace("\r\n", ";segreto\r\n")
    put(landing, "crm/crm_contacts_20261101.csv", text)
    f = ingest(con, demo, landing).files[0]
    assert f.status == "failed"
    assert "header has column(s) ['note_interne'] that the source's mapping does not name" in f.message
    assert "extra_columns: ignore" in f.message
    lenient = demo.source("crm_contacts").model_copy(update={"extra_columns": "ignore"})
    f = ingest(con, demo, landing, batch="b2", src=lenient).files[0]
    assert outcome(f) == ("loaded", 1, 1, 0)
    no_value_in_storage(con, "segreto")


def test_a_header_in_another_delimiter_says_so(con, demo, landing):
    put(landing, "crm/crm_contacts_20261101.csv", crm_text([crm_row()], demo).replace(";", ","))
    f = ingest(con, demo, landing).files[0]
    assert f.status == "failed"
    assert "the header reads as one column: is the delimiter ',' rather than ';'?" in f.message


# --------------------------------------------------------------------------- #
# 6. Encodings
# --------------------------------------------------------------------------- #
POLISH = [crm_row(source_record_id=f"P{i}", first_name=name, last_name=last, city=city)
          for i, (name, last, city) in enumerate([
              ("\u0141ucja", "W\u00f3jcik", "Wroc\u0142aw"), ("Ma\u0142gorzata", "Kowalska", "\u0141\u00f3d\u017a"),
              ("Zbigniew", "\u015awi\u0105tek", "Gda\u0144sk"), ("Jo\u0142anta", "Nowak", "Bia\u0142ystok")])]


@pytest.mark.parametrize("declared", ["cp1252", "latin-1"])
def test_a_polish_cp1250_file_declared_otherwise_is_refused_naming_cp1250(con, demo, landing, declared):
    put(landing, "crm/crm_contacts_20261101.csv", crm_text([crm_row()], demo))
    ingest(con, demo, landing)
    before = rows(con, "SELECT * FROM raw.crm_contacts")
    src = demo.source("crm_contacts")
    src = src.model_copy(update={"csv": src.csv.model_copy(update={"encoding": declared})})
    put(landing, "crm/crm_contacts_20261102.csv", crm_text(POLISH, demo), "cp1250")
    f = ingest(con, demo, landing, batch="b2", src=src).files[1]
    assert f.status == "failed"
    assert f"declares {declared} but the bytes look like cp1250" in f.message
    assert "declare encoding: cp1250" in f.message
    assert rows(con, "SELECT * FROM raw.crm_contacts") == before
    no_value_in_storage(con, "Wroc", "Kowalska")


def test_a_windows_1252_file_declared_latin1_is_refused_naming_cp1252(con, demo, landing):
    src = demo.source("crm_contacts")
    src = src.model_copy(update={"csv": src.csv.model_copy(update={"encoding": "latin-1"})})
    put(landing, "crm/crm_contacts_20261101.csv", crm_text([
        crm_row(last_name="D\u2019Amato", address="Via dell\u2019Orso 1 \u2013 scala B")], demo), "cp1252")
    f = ingest(con, demo, landing, src=src).files[0]
    assert f.status == "failed" and "look like cp1252" in f.message
    assert rows(con, "SELECT count(*) FROM raw.crm_contacts") == [(0,)]


def test_genuine_code_page_text_with_odd_signs_still_loads(con, demo, landing):
    put(landing, "crm/crm_contacts_20261101.csv", crm_text([
        crm_row(address="Via Roma N\u00b0civico 3", last_name="D\u2019Amato", city="Forl\u00ec")], demo))
    f = ingest(con, demo, landing).files[0]
    assert outcome(f) == ("loaded", 1, 1, 0)


# --------------------------------------------------------------------------- #
# 10. Deliveries: an empty full snapshot deletes nothing by itself
# --------------------------------------------------------------------------- #
def _file(outcome_, name):
    return next(f for f in outcome_.files if f.file.endswith(name))


@pytest.mark.parametrize("content", ["header only", "zero bytes"])
def test_an_empty_full_snapshot_is_refused_unless_allowed_and_nothing_is_deleted(con, demo, landing,
                                                                                 content):
    snap = demo.source("crm_contacts").model_copy(update={"delivery": "full_snapshot"})
    two = [crm_row(), crm_row(source_record_id="C002", email="b@example.it", mobile="+39 333 7654321",
                              tax_code="")]
    put(landing, "crm/crm_contacts_20261101.csv", crm_text(two, demo))
    assert outcome(_file(ingest(con, demo, landing, src=snap), "20261101.csv")) == ("loaded", 2, 2, 0)
    put(landing, "crm/crm_contacts_20261102.csv", crm_text([], demo) if content == "header only" else b"")
    f = _file(ingest(con, demo, landing, batch="b2", src=snap), "20261102.csv")
    assert f.status == "failed" and f.records == 0
    assert f.message == ("crm_contacts_20261102.csv: a full snapshot with no records (empty or header "
                         "only) is refused as suspicious: nothing loaded, nothing deleted; if an empty "
                         "snapshot can be genuine, set allow_empty_snapshot: true on source crm_contacts")
    assert rows(con, "SELECT status, records FROM ops.import_report WHERE file LIKE '%20261102.csv'") == [
        ("failed", 0)]
    assert rows(con, "SELECT count(*) FROM raw.crm_contacts") == [(2,)]
    # Refused, not remembered: it is refused again until removed or allowed.
    assert _file(ingest(con, demo, landing, batch="b3", src=snap), "20261102.csv").status == "failed"
    allowed = snap.model_copy(update={"allow_empty_snapshot": True})
    f = _file(ingest(con, demo, landing, batch="b4", src=allowed), "20261102.csv")
    assert outcome(f) == ("empty", 0, 0, 0)
    assert rows(con, "SELECT status, records, message FROM ops.import_report WHERE batch_id = 'b4'") == [
        ("empty", 0, "crm_contacts_20261102.csv: no records (empty or header only); nothing changed")]
    assert rows(con, "SELECT count(*) FROM raw.crm_contacts") == [(2,)]


def test_an_empty_delta_is_reported_as_empty(con, demo, landing):
    put(landing, "web/web_events_20261101.jsonl", "")
    f = ingest(con, demo, landing, source="web_events").files[0]
    assert outcome(f) == ("empty", 0, 0, 0)


# --------------------------------------------------------------------------- #
# 12. The old messages that quoted the file: file, line, field, reason only
# --------------------------------------------------------------------------- #
def test_an_xml_table_mismatch_names_file_line_and_field_but_not_the_files_value(con, demo, landing):
    body = ('<?xml version="1.0" encoding="UTF-8"?>\n<sincronizza>\n<commons>\n'
            '<table>clienti di mario.rossi@example.it</table>\n</commons>\n<utenti>\n'
            '<utente><idgestionale>1</idgestionale><nome>Mario</nome></utente>\n</utenti>\n</sincronizza>\n')
    put(landing, "erp/erp_contacts_20261101.xml", body, encoding="utf-8")
    f = ingest(con, demo, landing, source="erp_contacts").files[0]
    assert f.status == "failed"
    assert f.message == ("erp_contacts_20261101.xml: line 4: field <table>: the file declares another "
                         "table; expected 'anagrafiche-b2c'; nothing loaded")
    no_value_in_storage(con, "mario.rossi", "clienti di")


def test_a_csv_error_becomes_a_fixed_reason_without_the_record(con, demo, landing):
    text = crm_text([crm_row(), crm_row(source_record_id="C002", email="x@example.it")], demo)
    text = text.replace(";Niccol\u00f2;", ';"Nicc"ol\u00f2;', 1)  # a quote closed mid-field
    put(landing, "crm/crm_contacts_20261101.csv", text)
    f = ingest(con, demo, landing).files[0]
    assert outcome(f) == ("loaded", 2, 1, 1)
    assert rejects(con) == [(2, "*", "malformed CSV record (a closing quote is followed by something "
                                     "other than the delimiter)")]
    no_value_in_storage(con, "Nicc", "niccolo.damato")


# --------------------------------------------------------------------------- #
# 7. Values: entity references, NaN, and 'today' as the run's date
# --------------------------------------------------------------------------- #
def test_entity_references_and_nan_are_refused_in_csv_names_and_real_names_load(con, demo, landing):
    put(landing, "crm/crm_contacts_20261101.csv", crm_text([
        crm_row(source_record_id="C1", first_name="&xxe;", email="c1@example.it"),
        crm_row(source_record_id="C2", last_name="Ren&#233;e", email="c2@example.it"),
        crm_row(source_record_id="C3", first_name="NaN", email="c3@example.it"),
        crm_row(source_record_id="C4", city="nan", email="c4@example.it"),
        crm_row(source_record_id="C5", first_name="Nan", last_name="Rossi & Figli; Srl",
                email="c5@example.it"),
    ], demo))
    f = ingest(con, demo, landing).files[0]
    assert outcome(f) == ("loaded", 5, 1, 4)
    entity = "contains an entity reference such as &name; (deliver the character itself)"
    nan = "NaN (a missing-value marker) is not a value; leave the field empty"
    assert rejects(con) == [(2, "first_name", entity), (3, "last_name", entity),
                            (4, "first_name", nan), (5, "city", nan)]
    assert rows(con, "SELECT source_record_id, first_name, last_name FROM raw.crm_contacts") == [
        ("C5", "Nan", "Rossi & Figli; Srl")]


def test_an_entity_reference_in_json_text_is_refused(con, demo, landing):
    put(landing, "web/web_events_20261101.jsonl",
        event(1, type="&xxe;") + "\n" + event(2, type="page_view") + "\n", encoding="utf-8")
    f = ingest(con, demo, landing, source="web_events").files[0]
    assert outcome(f) == ("loaded", 2, 1, 1)
    assert rejects(con, source="web_events") == [
        (1, "event_type", "contains an entity reference such as &name; (deliver the character itself)")]


def test_today_in_a_date_range_is_the_runs_date_not_the_databases(con, demo, landing):
    """A birth date after the run's day is refused even when the machine's clock (and the
    database's current_date) is later; the same record loads in a run dated after it."""
    put(landing, "crm/crm_contacts_20261101.csv", crm_text([
        crm_row(source_record_id="C1", birth_date="15/11/2026")], demo))
    src = demo.source("crm_contacts")
    f = ingest_source(con, demo, src, landing, "b1", now=dt.datetime(2026, 11, 1, 6)).files[0]
    assert outcome(f) == ("loaded", 1, 0, 1)
    assert rejects(con) == [(2, "birth_date", "implausible date: after today")]
    put(landing, "crm/crm_contacts_20261201.csv", crm_text([
        crm_row(source_record_id="C1", birth_date="15/11/2026", loyalty_tier="silver")], demo))
    f = ingest_source(con, demo, src, landing, "b2", now=dt.datetime(2026, 12, 1, 6)).files[1]
    assert outcome(f) == ("loaded", 1, 1, 0)


def test_json_key_twice_on_the_first_line_and_in_another_shape(con, demo, landing):
    # the landing compares each record's keys with the first line's: a first line giving
    # a key twice, and later records of other shapes, are still checked key by key
    dup = event(1)[:-1] + ', "email": "other@example.it"}'
    reordered = '{"type": "page_view", "event_id": "e3", "type": "click", "occurred_at": "2026-10-01T10:00:00Z"}'
    lines = [dup, event(2), reordered, event(4)]
    put(landing, "web/web_events_20261101.jsonl", "\n".join(lines) + "\n", "utf-8")
    f = ingest(con, demo, landing, source="web_events").files[0]
    assert outcome(f) == ("loaded", 4, 2, 2)
    assert rejects(con, "web_events") == [(1, "email", "key 'email' given twice in one record"),
                                          (3, "event_type", "key 'type' given twice in one record")]
