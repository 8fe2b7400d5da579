"""Issue 14: every feed format's content and types, formula neutralisation per format,
byte-identical re-export, hashed identifiers against the platforms' published values,
and the atomic write under a kill."""

from __future__ import annotations

import csv
import datetime as dt
import decimal
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import openpyxl
import pyarrow.parquet as pq
import pytest
from lxml import etree

from tessera.engine import as_engine
from tessera.feeds.erasure import read_feed_file
from tessera.feeds.hashing import hash_identifier
from tessera.feeds.publish import build_feed
from tessera.feeds.files import sweep_stale_temps
from tests.conftest import PROJECT_ROOT
from tests.stages.feeds_world import D1, feed, make_world

NOW = dt.datetime(2026, 11, 2, 6, 0)
NOTE_1 = "=HYPERLINK(\"http://evil\")"
NOTE_3 = "\tTab;\"quoted\",comma\nnewline"


@pytest.fixture()
def world(tmp_path):
    con = make_world(tmp_path / "w.duckdb")
    yield con, tmp_path / "feeds"
    con.close()


def _publish(world, **kw):
    con, out = world
    f = feed(**kw)
    stats = build_feed(con, f, D1, out, NOW)
    return out / f.name, stats


def test_csv_with_dialect_and_spreadsheet_neutralisation(world):
    folder, stats = _publish(world, name="c", format="csv", for_spreadsheet=True,
                             csv={"delimiter": ";", "quote": '"'})
    text = (folder / f"c_{D1}.csv").read_text(encoding="utf-8")
    rows = list(csv.reader(text.splitlines(keepends=True), delimiter=";"))
    assert rows[0] == ["customer_id", "email", "mobile", "first_name", "note", "order_summary",
                       "birth_date"]
    assert [r[0] for r in rows[1:]] == ["1", "2", "3", "4"]  # 5 has no e-mail consent
    assert rows[1] == ["1", "John_Smith@gmail.com", "'+1 (650) 555-1212", "John", "'" + NOTE_1,
                       "350.00", "1980-02-14"]
    assert rows[2][4] == "'@SUM(A1)" and rows[2][5] == "-12.50" and rows[2][6] == ""
    assert rows[3][4] == "'" + NOTE_3 and rows[3][2] == ""
    assert rows[4][4] == "'-5" and rows[4][3] == "Zoë"
    assert stats["rows"] == 4 and stats["manifest"]["rows"] == 4


def test_machine_csv_keeps_values_exactly(world):
    folder, _ = _publish(world, name="m", format="csv")
    with open(folder / f"m_{D1}.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    assert rows[1][2] == "+1 (650) 555-1212" and rows[1][4] == NOTE_1
    assert rows[3][4] == NOTE_3 and rows[4][4] == "-5"


@pytest.mark.parametrize("delimiter,quote,spreadsheet", [
    ("|", "'", False), ("\t", '"', False), (";", "'", True), (",", '"', True)])
def test_a_headerless_csv_reads_back_with_its_declared_dialect(world, delimiter, quote, spreadsheet):
    con, _ = world
    # a value holding the quote character, the delimiters, a newline and non-ASCII text
    con.execute("UPDATE marts.contact_cards SET first_name = 'D''Ãngelo \"Zoë\"|;' WHERE customer_id = 4")
    folder, stats = _publish(world, name="h", format="csv", for_spreadsheet=spreadsheet,
                             csv={"delimiter": delimiter, "quote": quote, "header": False})
    # the declared encoding is UTF-8 (strict: a wrong byte fails), the declared dialect
    # with the quote doubled inside quoted values (RFC 4180's rule, with that quote)
    with open(folder / f"h_{D1}.csv", newline="", encoding="utf-8", errors="strict") as fh:
        rows = list(csv.reader(fh, delimiter=delimiter, quotechar=quote, doublequote=True,
                               strict=True))
    neutral = (lambda v: "'" + v if spreadsheet and v[:1] in ("=", "+", "-", "@", "\t") else v)
    expected = [
        ["1", "John_Smith@gmail.com", neutral("+1 (650) 555-1212"), "John", neutral(NOTE_1),
         "350.00", "1980-02-14"],
        ["2", "b@x.it", neutral("+39 333 1234567"), "Łucja", neutral("@SUM(A1)"), "-12.50", ""],
        ["3", "c@x.it", "", "Città", neutral(NOTE_3), "0.00", "2000-01-01"],
        ["4", "d@x.it", neutral("+48 601 234 567"), 'D\'Ãngelo "Zoë"|;', neutral("-5"), "1.00", ""],
    ]
    assert rows == expected  # no header row: the first line is customer 1
    assert stats["rows"] == 4
    # the reader a forget scrubs kept files with reads it the same way
    f = feed(name="h", format="csv", for_spreadsheet=spreadsheet,
             csv={"delimiter": delimiter, "quote": quote, "header": False})
    names = [c.out for c in f.columns]
    back = read_feed_file(as_engine(con), folder / f"h_{D1}.csv", f, names).to_pylist()
    assert [[r[n] or "" for n in names] for r in back] == expected


def test_jsonl_keeps_values_and_types(world):
    folder, _ = _publish(world, name="j", format="jsonl")
    lines = (folder / f"j_{D1}.jsonl").read_text(encoding="utf-8").splitlines()
    docs = [json.loads(line) for line in lines]
    assert [d["customer_id"] for d in docs] == [1, 2, 3, 4]
    assert docs[0] == {"customer_id": 1, "email": "John_Smith@gmail.com",
                       "mobile": "+1 (650) 555-1212", "first_name": "John", "note": NOTE_1,
                       "order_summary": 350.0, "birth_date": "1980-02-14"}
    assert docs[1]["note"] == "@SUM(A1)" and docs[1]["birth_date"] is None
    assert docs[2]["note"] == NOTE_3 and docs[2]["mobile"] is None
    assert docs[3]["note"] == "-5"


def test_parquet_keeps_values_and_types(world):
    folder, _ = _publish(world, name="p", format="parquet")
    t = pq.read_table(folder / f"p_{D1}.parquet")
    types = {f.name: str(f.type) for f in t.schema}
    assert types == {"customer_id": "int64", "email": "string", "mobile": "string",
                     "first_name": "string", "note": "string", "order_summary": "decimal128(12, 2)",
                     "birth_date": "date32[day]"}
    rows = t.to_pylist()
    assert rows[0]["mobile"] == "+1 (650) 555-1212" and rows[0]["note"] == NOTE_1
    assert rows[0]["order_summary"] == decimal.Decimal("350.00")
    assert rows[0]["birth_date"] == dt.date(1980, 2, 14)
    assert rows[2]["note"] == NOTE_3 and rows[3]["note"] == "-5"


def test_xlsx_cells_are_text_neutralised_and_typed(world):
    folder, _ = _publish(world, name="x", format="xlsx")
    ws = openpyxl.load_workbook(folder / f"x_{D1}.xlsx").active
    rows = [[c for c in r] for r in ws.iter_rows(values_only=False)]
    assert [c.value for c in rows[0]] == ["customer_id", "email", "mobile", "first_name", "note",
                                          "order_summary", "birth_date"]
    one = rows[1]
    assert one[0].value == 1 and one[0].data_type == "n"
    assert one[2].value == "'+1 (650) 555-1212" and one[2].data_type == "s"
    assert one[4].value == "'" + NOTE_1 and one[4].data_type == "s"  # never a formula
    assert one[5].value == 350.0
    assert one[6].value.date() == dt.date(1980, 2, 14)
    assert rows[2][4].value == "'@SUM(A1)" and rows[4][4].value == "'-5"
    assert rows[3][4].value == "'" + NOTE_3 and rows[3][2].value is None  # NULL keeps its column
    assert len(rows) == 5


def test_xml_uses_configured_names_and_keeps_values(world):
    folder, _ = _publish(world, name="e", format="xml", xml={"root": "Anagrafiche", "record": "Cliente"},
                         fields=["customer_id", {"field": "mobile", "name": "Cellulare"}, "note",
                                 "order_summary", "birth_date"])
    root = etree.parse(str(folder / f"e_{D1}.xml")).getroot()
    assert root.tag == "Anagrafiche"
    recs = root.findall("Cliente")
    assert [r.findtext("customer_id") for r in recs] == ["1", "2", "3", "4"]
    assert recs[0].findtext("Cellulare") == "+1 (650) 555-1212"
    assert recs[0].findtext("note") == NOTE_1
    assert recs[0].findtext("order_summary") == "350.00"
    assert recs[0].findtext("birth_date") == "1980-02-14"
    assert recs[2].find("Cellulare") is None  # NULL: no element
    assert recs[2].findtext("note") == NOTE_3
    assert recs[3].findtext("note") == "-5"


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet", "xlsx", "xml"])
def test_the_same_day_exported_twice_is_byte_identical(world, fmt):
    con, out = world
    f = feed(name=f"b_{fmt}", format=fmt, for_spreadsheet=True)
    build_feed(con, f, D1, out, NOW)
    first = {p.name: p.read_bytes() for p in (out / f.name).iterdir() if "manifest" not in p.name}
    time.sleep(1.1)  # a writer that stamps the time would now differ
    build_feed(con, f, D1, out, NOW + dt.timedelta(hours=1))
    second = {p.name: p.read_bytes() for p in (out / f.name).iterdir() if "manifest" not in p.name}
    assert first.keys() == second.keys() and len(first) == 2
    assert first == second
    manifest = json.loads((out / f.name / f"{f.name}_{D1}.manifest.json").read_text())
    for entry in manifest["files"]:
        assert entry["sha256"] == hashlib.sha256(second[entry["file"]]).hexdigest()


# Published examples: Meta's customer-information parameters page (e-mail and phone).
META_EMAIL = ("John_Smith@gmail.com", "62a14e44f765419d10fea99367361a727c12365e2520f32218d505ed9aa0f62f")
META_PHONE = ("+1 (650) 555-1212", "e323ec626319ca94ee8bff2e4c87cf613be6ea19919ed1364124e16807ab3176")


def test_hashes_match_the_platforms_published_values():
    assert hash_identifier("email", META_EMAIL[0]) == META_EMAIL[1]
    assert hash_identifier("email", "  " + META_EMAIL[0].upper() + " ") == META_EMAIL[1]
    assert hash_identifier("phone", META_PHONE[0]) == META_PHONE[1]
    assert hash_identifier("phone", "0016505551212") == META_PHONE[1]
    # Google: E.164 with the '+', and gmail.com local-part dots removed
    assert hash_identifier("phone_e164", META_PHONE[0]) == hashlib.sha256(b"+16505551212").hexdigest()
    assert hash_identifier("email_google", "John.Smith@GoogleMail.com ") == \
        hashlib.sha256(b"johnsmith@googlemail.com").hexdigest()
    assert hash_identifier("email_google", "john.smith@x.it") == hashlib.sha256(b"john.smith@x.it").hexdigest()
    assert hash_identifier("email", "  ") is None and hash_identifier("phone", None) is None


def test_hashed_feed_columns_equal_the_reference(world):
    con, _ = world
    folder, _ = _publish(world, name="h", format="parquet", fields=[
        "customer_id", {"field": "email", "name": "em", "hash": "email"},
        {"field": "email", "name": "em_g", "hash": "email_google"},
        {"field": "mobile", "name": "ph", "hash": "phone"},
        {"field": "mobile", "name": "ph_e164", "hash": "phone_e164"}])
    rows = pq.read_table(folder / f"h_{D1}.parquet").to_pylist()
    cards = dict((r[0], r[1:]) for r in con.execute(
        "SELECT customer_id, email, mobile FROM marts.contact_cards").fetchall())
    assert rows[0]["em"] == META_EMAIL[1] and rows[0]["ph"] == META_PHONE[1]
    for r in rows:
        email, mobile = cards[r["customer_id"]]
        assert r["em"] == hash_identifier("email", email)
        assert r["em_g"] == hash_identifier("email_google", email)
        assert r["ph"] == hash_identifier("phone", mobile)
        assert r["ph_e164"] == hash_identifier("phone_e164", mobile)
    assert rows[2]["ph"] is None  # no mobile: no hash of the empty string


KILLED_WRITER = """
import sys, duckdb
from pathlib import Path
from tessera.engine import DuckDBEngine, SqlStep
from tessera.feeds.formats import write_feed_file
eng = DuckDBEngine(duckdb.connect())
rows = 30_000_000 if sys.argv[2] == "csv" else 3_000_000
step = SqlStep("big", f"SELECT range AS customer_id, 'x' || range AS note FROM range({rows})")
write_feed_file(eng, step, Path(sys.argv[1]), sys.argv[2])
"""


@pytest.mark.parametrize("fmt", ["csv", "xml"])
def test_a_writer_killed_midway_leaves_the_old_file_and_no_partial_one(tmp_path, fmt):
    path = tmp_path / f"feed.{fmt}"
    path.write_bytes(b"yesterday's whole file\n")
    started = time.time()
    proc = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, str(path), fmt], cwd=PROJECT_ROOT,
                            env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)})
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            temps = [p for p in tmp_path.iterdir() if p.name.startswith(".")]
            if temps and temps[0].stat().st_size > 1 << 20:
                break
            assert proc.poll() is None, "the writer finished before it could be killed"
            time.sleep(0.05)
        else:
            pytest.fail("the writer never started writing")
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert path.read_bytes() == b"yesterday's whole file\n"
    assert [p.name for p in tmp_path.iterdir() if not p.name.startswith(".")] == [path.name]
    removed = sweep_stale_temps(tmp_path, time.time() + 1)
    assert removed["files"] >= 1 and started
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]


def test_xml_and_xlsx_escape_markup_and_control_characters(tmp_path):
    import duckdb

    from tessera.engine import DuckDBEngine, SqlStep
    from tessera.feeds.formats import write_feed_file

    eng = DuckDBEngine(duckdb.connect())
    step = SqlStep("t", "SELECT 1 AS customer_id, ? AS note, TRUE AS flag, "
                        "TIMESTAMP '2026-11-02 10:30:00' AS seen", ["a\x01b\rc<&>\"d'"])
    write_feed_file(eng, step, tmp_path / "f.xml", "xml")
    rec = etree.parse(str(tmp_path / "f.xml")).getroot().find("record")
    assert rec.findtext("note") == "a\ufffdb\rc<&>\"d'"
    assert rec.findtext("flag") == "true" and rec.findtext("seen") == "2026-11-02 10:30:00"
    write_feed_file(eng, step, tmp_path / "f.xlsx", "xlsx")
    row = list(openpyxl.load_workbook(tmp_path / "f.xlsx").active.iter_rows(values_only=True))[1]
    assert row == (1, "a\ufffdb\rc<&>\"d'", True, dt.datetime(2026, 11, 2, 10, 30))
