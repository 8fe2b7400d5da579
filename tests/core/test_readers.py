"""Tests for tessera.ingest.formats on real files: CSV in code pages, XML, JSON lines."""
from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from tessera.settings import CsvDialect, Source, XmlLayout
from tessera.ingest.formats import (
    FileRejected,
    Problem,
    ReadResult,
    check_encoding,
    encoding_of,
    fingerprint,
    read_csv,
    read_jsonl,
    read_xml,
    read_xml_parallel,
)


def csv_source(encoding="cp1252", delimiter=";", columns=None, header=True) -> Source:
    return Source(
        name="crm", entity="contact", node="crm", format="csv", path="*.csv",
        csv=CsvDialect(delimiter=delimiter, encoding=encoding, header=header),
        columns=columns or {"source_record_id": "id", "first_name": "nome", "postcode": "cap",
                            "address": "note"},
    )


def xml_source(table="anagrafiche-b2c") -> Source:
    return Source(
        name="erp", entity="contact", node="erp", format="xml", path="*.xml",
        xml=XmlLayout(record_tag="utente", table=table),
        columns={"source_record_id": "idgestionale", "first_name": "nome", "city": "citta"},
    )


def jsonl_source() -> Source:
    return Source(
        name="web", entity="event", node="web", format="jsonl", path="*.jsonl",
        columns={"source_record_id": "event_id", "event_type": "type", "email": "email",
                 "properties": "properties", "address": "properties.url"},
    )


def checked_fingerprint(path: Path, encoding: str | None) -> tuple[str, int]:
    """The loader's order: the strict decode first (FileRejected), then the sha256."""
    check_encoding(path, encoding)
    return fingerprint(path)


def read_all(reader, path: Path, source: Source) -> tuple[list[dict], ReadResult]:
    result = ReadResult()
    rows = [r for batch in reader(path, source, result) for r in batch.to_pylist()]
    return rows, result


# --------------------------------------------------------------------------- #
# CSV
# --------------------------------------------------------------------------- #
CRLF = "\r\n"


@pytest.mark.parametrize("encoding,name1,name2", [
    ("cp1252", "Niccol\u00f2 D'Amato", "Universit\u00e0 \u20ac Citt\u00e0"),
    ("cp1250", "\u0141\u00f3d\u017a \u017bak", "\u0160koda \u010cern\u00fd \u0159"),
])
def test_csv_code_page_with_quoted_newline(tmp_path, encoding, name1, name2):
    text = (
        "id;nome;cap;note" + CRLF
        + f'1;{name1};00184;"riga uno{CRLF}riga due"' + CRLF
        + f'2;"{name2}";"00100";"con ""virgolette"""' + CRLF
        + CRLF                                     # a blank line is skipped, not a record
        + "3;Zo\u00eb;;" + CRLF
    )
    if encoding == "cp1250":
        text = text.replace("Zo\u00eb", "Zo\u00e4")
    path = tmp_path / "c.csv"
    path.write_bytes(text.encode(encoding))
    src = csv_source(encoding=encoding)
    sha, size = checked_fingerprint(path, encoding_of(src))
    assert sha == hashlib.sha256(path.read_bytes()).hexdigest()
    assert size == path.stat().st_size

    rows, result = read_all(read_csv, path, src)
    assert result.records == 3
    assert result.problems == []
    assert [r["_line"] for r in rows] == [2, 4, 6]
    assert rows[0] == {"source_record_id": "1", "first_name": name1, "postcode": "00184",
                       "address": "riga uno\r\nriga due", "_line": 2}
    assert rows[1]["first_name"] == name2
    assert rows[1]["postcode"] == "00100"
    assert rows[1]["address"] == 'con "virgolette"'
    assert rows[2]["postcode"] == "" and rows[2]["address"] == ""


def test_csv_wrong_field_count_is_a_problem_on_its_line(tmp_path):
    path = tmp_path / "c.csv"
    path.write_bytes((
        "id;nome;cap;note\n"
        '1;Anna;00184;"a\nb"\n'       # lines 2-3
        "2;Luca;20121\n"                # line 4: 3 fields
        "3;Sara;10121;x;extra\n"        # line 5: 5 fields
        "4;Ugo;80100;y\n"               # line 6
    ).encode("cp1252"))
    rows, result = read_all(read_csv, path, csv_source())
    assert result.records == 4
    assert result.problems == [
        Problem(4, "*", "expected 4 fields, found 3"),
        Problem(5, "*", "expected 4 fields, found 5"),
    ]
    assert [(r["source_record_id"], r["_line"]) for r in rows] == [("1", 2), ("4", 6)]


def test_csv_header_is_stripped_and_column_order_is_free(tmp_path):
    path = tmp_path / "c.csv"
    path.write_bytes(b" note ; cap ;id;nome\nx;00010;7;Eva\n")
    rows, result = read_all(read_csv, path, csv_source())
    assert rows == [{"source_record_id": "7", "first_name": "Eva", "postcode": "00010",
                     "address": "x", "_line": 2}]


def test_csv_without_header_maps_by_position(tmp_path):
    path = tmp_path / "c.csv"
    path.write_bytes(b"7,Eva\n8,Ivo\n")
    src = csv_source(encoding="utf-8", delimiter=",", header=False,
                     columns={"source_record_id": "0", "first_name": "1"})
    rows, result = read_all(read_csv, path, src)
    assert [(r["source_record_id"], r["first_name"], r["_line"]) for r in rows] == [
        ("7", "Eva", 1), ("8", "Ivo", 2)]


def test_csv_missing_mapped_header_column_rejects_file(tmp_path):
    path = tmp_path / "c.csv"
    path.write_bytes(b"id;nome;note\n1;Anna;x\n")
    with pytest.raises(FileRejected) as exc:
        read_all(read_csv, path, csv_source())
    msg = str(exc.value)
    assert "c.csv" in msg and "line 1" in msg and "'cap'" in msg


def test_csv_empty_file_gives_no_records(tmp_path):
    path = tmp_path / "c.csv"
    path.write_bytes(b"")
    rows, result = read_all(read_csv, path, csv_source())
    assert rows == [] and result.records == 0


def test_utf8_file_declared_cp1252_is_rejected(tmp_path):
    path = tmp_path / "crm.csv"
    path.write_bytes("id;nome;cap;note\n1;Niccol\u00f2;00184;x\n".encode("utf-8"))
    with pytest.raises(FileRejected) as exc:
        checked_fingerprint(path, "cp1252")
    msg = str(exc.value)
    assert "crm.csv" in msg and "UTF-8" in msg and "cp1252" in msg
    assert "Niccol" not in msg


@pytest.mark.parametrize("encoding", ["cp1252", "cp1250", "latin-1"])
def test_ascii_only_file_passes_any_declared_code_page(tmp_path, encoding):
    path = tmp_path / "a.csv"
    path.write_bytes(b"id;nome;cap;note\n1;Anna;00184;x\n")
    sha, size = checked_fingerprint(path, encoding)
    assert size == len(path.read_bytes())


def test_cp1252_file_declared_cp1252_passes(tmp_path):
    path = tmp_path / "a.csv"
    path.write_bytes("id;nome\n1;Citt\u00e0 \u20ac\n".encode("cp1252"))
    checked_fingerprint(path, "cp1252")


def test_invalid_bytes_in_utf8_file_reject_it_naming_the_line(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_bytes("id,nome\n1,Jos\u00e9\n2,Ren".encode("utf-8") + b"\xe9" + b"e\n3,Ugo\n")
    with pytest.raises(FileRejected) as exc:
        checked_fingerprint(path, "utf-8")
    msg = str(exc.value)
    assert "bad.csv" in msg and "line 3" in msg and "utf-8" in msg


def test_invalid_bytes_after_first_chunk_report_the_right_line(tmp_path):
    # The decoder is fed 1 MiB chunks: the line count must carry across chunks.
    line = b"x" * 99 + b"\n"
    body = line * 20000  # 2,000,000 bytes, 20000 lines
    path = tmp_path / "big.csv"
    path.write_bytes(body + b"bad \xff byte\n")
    with pytest.raises(FileRejected) as exc:
        checked_fingerprint(path, "utf-8")
    assert "line 20001" in str(exc.value)


def test_truncated_multibyte_sequence_at_end_is_rejected(tmp_path):
    path = tmp_path / "t.csv"
    path.write_bytes("id\n1 \u20ac".encode("utf-8")[:-1])
    with pytest.raises(FileRejected, match="truncated"):
        checked_fingerprint(path, "utf-8")


def test_utf8_bom_is_accepted_and_stripped(tmp_path):
    path = tmp_path / "bom.csv"
    path.write_bytes(b"\xef\xbb\xbf" + "id,nome,cap,note\n1,Andr\u00e9,00184,x\n".encode("utf-8"))
    src = csv_source(encoding="utf-8", delimiter=",")
    checked_fingerprint(path, encoding_of(src))
    rows, result = read_all(read_csv, path, src)
    assert rows == [{"source_record_id": "1", "first_name": "Andr\u00e9", "postcode": "00184",
                     "address": "x", "_line": 2}]


def test_encoding_of():
    assert encoding_of(csv_source(encoding="cp1250")) == "cp1250"
    assert encoding_of(jsonl_source()) == "utf-8"
    assert encoding_of(xml_source()) is None


# --------------------------------------------------------------------------- #
# XML (Sendero <sincronizza> layout)
# --------------------------------------------------------------------------- #
def sendero(records: str, table: str = "anagrafiche-b2c", prolog: str = "") -> str:
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        + prolog
        + "<sincronizza>\n"
        "  <commons>\n"
        f"    <table>{table}</table>\n"
        "  </commons>\n"
        "  <utenti>\n"
        + records
        + "  </utenti>\n"
        "</sincronizza>\n"
    )


RECORDS = (
    "    <utente>\n"                                  # line 7 (without prolog)
    "      <idgestionale>00042</idgestionale>\n"
    "      <nome> Niccol\u00f2 </nome>\n"
    "      <!-- a comment -->\n"
    "      <citta></citta>\n"
    "      <ignorato>x</ignorato>\n"
    "    </utente>\n"
    "    <utente><idgestionale>43</idgestionale><nome>Zo\u00eb &amp; Co</nome></utente>\n"  # line 14
)


def test_xml_reads_records_with_lines(tmp_path):
    path = tmp_path / "e.xml"
    path.write_bytes(sendero(RECORDS).encode("utf-8"))
    rows, result = read_all(read_xml, path, xml_source())
    assert result.records == 2 and result.problems == []
    assert rows == [
        {"source_record_id": "00042", "first_name": "Niccol\u00f2", "city": "", "_line": 7},
        {"source_record_id": "43", "first_name": "Zo\u00eb & Co", "city": None, "_line": 14},
    ]


def test_xml_in_iso_8859_1_declared_in_prolog(tmp_path):
    path = tmp_path / "e.xml"
    text = sendero(RECORDS).replace('encoding="UTF-8"', 'encoding="ISO-8859-1"')
    path.write_bytes(text.encode("latin-1"))
    rows, _ = read_all(read_xml, path, xml_source())
    assert rows[0]["first_name"] == "Niccol\u00f2"


@pytest.mark.parametrize("doctype", [
    "<!DOCTYPE sincronizza>\n",
    '<!DOCTYPE sincronizza [<!ENTITY x "boom">]>\n',
    '<!DOCTYPE sincronizza [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;">]>\n',
])
def test_xml_with_doctype_is_refused(tmp_path, doctype):
    path = tmp_path / "e.xml"
    path.write_bytes(sendero(RECORDS.replace("Niccol\u00f2", "&x;") if "x " in doctype else RECORDS,
                             prolog=doctype).encode("utf-8"))
    result = ReadResult()
    with pytest.raises(FileRejected, match="DOCTYPE") as exc:
        list(read_xml(path, xml_source(), result))
    assert "e.xml" in str(exc.value)
    assert result.records == 0


def test_xml_doctype_after_long_prolog_comment_is_refused(tmp_path):
    # Regression: the DOCTYPE scan once only looked at the first 64 KiB, so this file
    # loaded with the entity reference silently dropped (first_name empty).
    pad = "<!-- " + "x" * 70_000 + " -->\n"
    path = tmp_path / "e.xml"
    path.write_bytes(sendero(RECORDS.replace("Niccol\u00f2", "&x;"),
                             prolog=pad + '<!DOCTYPE sincronizza [<!ENTITY x "boom">]>\n')
                     .encode("utf-8"))
    with pytest.raises(FileRejected, match="DOCTYPE"):
        read_all(read_xml, path, xml_source())


@pytest.mark.parametrize("cut", [0.5, 0.9, 0.99])
def test_truncated_xml_is_refused_whole(tmp_path, cut):
    data = sendero(RECORDS).encode("utf-8")
    path = tmp_path / "e.xml"
    path.write_bytes(data[: int(len(data) * cut)])
    result = ReadResult()
    batches = []
    with pytest.raises(FileRejected) as exc:
        for b in read_xml(path, xml_source(), result):
            batches.append(b)
    assert batches == []  # nothing was handed on before the refusal
    msg = str(exc.value)
    assert "e.xml" in msg and "not well-formed" in msg and "nothing loaded" in msg


def test_mismatched_tags_are_refused_with_line(tmp_path):
    path = tmp_path / "e.xml"
    path.write_bytes(sendero(RECORDS.replace("</citta>", "</city>")).encode("utf-8"))
    with pytest.raises(FileRejected, match=r"line 11: XML is not well-formed"):
        read_all(read_xml, path, xml_source())


def test_xml_other_table_is_refused(tmp_path):
    path = tmp_path / "e.xml"
    path.write_bytes(sendero(RECORDS, table="ordini").encode("utf-8"))
    with pytest.raises(FileRejected) as exc:
        read_all(read_xml, path, xml_source())
    msg = str(exc.value)
    # the configured table is named; the file's own text is not repeated (issue #20, item 12)
    assert "line 4: field <table>" in msg and "'anagrafiche-b2c'" in msg and "ordini" not in msg


def test_xml_without_table_declaration_is_refused(tmp_path):
    path = tmp_path / "e.xml"
    text = sendero(RECORDS).replace("    <table>anagrafiche-b2c</table>\n", "")
    path.write_bytes(text.encode("utf-8"))
    with pytest.raises(FileRejected, match="no <commons><table>"):
        read_all(read_xml, path, xml_source())


def test_xml_table_not_checked_when_not_configured(tmp_path):
    path = tmp_path / "e.xml"
    path.write_bytes(sendero(RECORDS, table="whatever").encode("utf-8"))
    rows, result = read_all(read_xml, path, xml_source(table=None))
    assert result.records == 2


# --------------------------------------------------------------------------- #
# JSON lines
# --------------------------------------------------------------------------- #
def test_jsonl_reads_nested_paths_and_reports_bad_lines(tmp_path):
    lines = [
        '{"event_id": "e1", "type": "page_view", "email": "a@b.it", '
        '"properties": {"url": "/it/scarpe", "ms": 12}}',
        "",
        '{"event_id": "e2", "type": "download", "properties": {"url": "/cat\u00e0logo.pdf"}}',
        '{"event_id": "e3", "type": oops}',
        '["not", "an", "object"]',
        '{"event_id": 4, "type": "open", "email": null, "properties": {"url": true, "x": [1, 2]}}',
        '{"event_id": "e5", "type": "open", "properties": "flat"}',
    ]
    path = tmp_path / "w.jsonl"
    path.write_bytes(("\n".join(lines) + "\n").encode("utf-8"))
    rows, result = read_all(read_jsonl, path, jsonl_source())
    assert result.records == 6
    assert [(p.line, p.field) for p in result.problems] == [(4, "*"), (5, "*")]
    assert result.problems[0].reason.startswith("not valid JSON")
    assert result.problems[1].reason == "a JSON object is expected"
    assert [r["_line"] for r in rows] == [1, 3, 6, 7]
    assert rows[0]["address"] == "/it/scarpe"
    assert rows[0]["properties"] == '{"url":"/it/scarpe","ms":12}'  # minified, keys in order
    assert rows[1]["address"] == "/cat\u00e0logo.pdf" and rows[1]["email"] is None
    assert rows[2]["source_record_id"] == "4" and rows[2]["email"] is None
    assert rows[2]["address"] == "true"
    assert rows[3]["address"] is None and rows[3]["properties"] == "flat"


# --------------------------------------------------------------------------- #
# XML line numbers past 65,535 (libxml2 keeps 16 bits; lxml was one line late)
# --------------------------------------------------------------------------- #
def big_sendero(n: int) -> tuple[bytes, list[int]]:
    lines = ['<?xml version="1.0" encoding="UTF-8"?>', "<sincronizza>",
             "<commons><table>anagrafiche-b2c</table></commons>", "<utenti>",
             "<!-- <utente> in a comment is not a record -->"]
    expected = []
    for i in range(n):
        expected.append(len(lines) + 1)
        lines += ["  <utente>", f"    <idgestionale>{i}</idgestionale>",
                  "    <nome><![CDATA[<utente> in CDATA]]></nome>", "  </utente>"]
    lines += ["</utenti>", "</sincronizza>"]
    return ("\n".join(lines) + "\n").encode("utf-8"), expected


def test_xml_lines_are_exact_past_65535(tmp_path):
    data, expected = big_sendero(20_000)            # about 80,000 lines
    path = tmp_path / "big.xml"
    path.write_bytes(data)
    rows, result = read_all(read_xml, path, xml_source())
    assert result.records == 20_000
    assert [r["_line"] for r in rows] == expected
    assert rows[-1]["first_name"] == "<utente> in CDATA"


@pytest.mark.parametrize("chunk", [7, 64, 1000])
def test_record_start_lines_across_chunk_boundaries(tmp_path, chunk):
    from tessera.ingest.formats import record_start_lines

    data, expected = big_sendero(300)
    path = tmp_path / "s.xml"
    path.write_bytes(data)
    assert list(record_start_lines(path, "utente", chunk_size=chunk)) == expected


@pytest.mark.parametrize("chunk", [7, 64, 1000, 1 << 20])
def test_record_start_lines_plain_and_marked_up_stretches(tmp_path, chunk):
    """Stretches without comments, CDATA or PIs take the byte-comparison path; the
    others the token scan: both count the same start tags (not <utenteX>, not the
    ones inside a comment, CDATA or a PI)."""
    from tessera.ingest.formats import record_start_lines

    text, expected = '<?xml version="1.0" encoding="UTF-8"?>\n<sincronizza>\n<utenti>\n', []
    for i in range(3000):
        if i % 1000 == 500:
            text += "<!-- <utente> commented out\n<utente> -->\n"
        if i % 1000 == 700:
            text += "<note><![CDATA[<utente> in CDATA]]></note>\n<?pi <utente> ?>\n"
        text += "<utenteX>no</utenteX>\n"
        expected.append(text.count("\n") + 1)
        opener = ["<utente>", '<utente id="1">', "<utente\t>", "<utente\n>"][i % 4]
        text += f"{opener}\n<idgestionale>{i}</idgestionale>\n</utente>\n"
    expected.append(text.count("\n") + 1)
    text += "<utente/>\n</utenti>\n</sincronizza>\n"
    path = tmp_path / "p.xml"
    path.write_bytes(text.encode("utf-8"))
    assert list(record_start_lines(path, "utente", chunk_size=chunk)) == expected


# --------------------------------------------------------------------------- #
# CSV: the pyarrow fast path and the Python path give the same records and lines
# --------------------------------------------------------------------------- #
FAST_CASES = {
    "clean_crlf_quoted_newlines": (
        'id;nome;cap;note\r\n1;"Niccol\u00f2";00184;"riga uno\r\nriga due"\r\n'
        '2;"con ""virgolette"" e ; punto";00100;"a\nb\nc"\r\n\r\n   \r\n3;Zo\u00eb;;\r\n4;Ugo;1;y'),
    "quote_inside_unquoted_field": 'id;nome;cap;note\n1;Via 5" Roma;00184;x\n',
    "text_after_closing_quote": 'id;nome;cap;note\n1;"ab"c;00184;x\n2;Eva;1;y\n',
    "wrong_widths": 'id;nome;cap;note\n1;Anna;00184\n2;Eva;1;y;z\n3;Ugo;2;w\n',
    "unterminated_quote": 'id;nome;cap;note\n1;"Anna;00184;x\n2;Eva;1;y\n',
}


@pytest.mark.parametrize("case", sorted(FAST_CASES))
@pytest.mark.parametrize("encoding", ["cp1252", "utf-8"])
def test_fast_and_python_csv_paths_agree(tmp_path, case, encoding):
    from tessera.ingest.formats import csv_record_lines, read_csv_python

    path = tmp_path / "c.csv"
    path.write_bytes(FAST_CASES[case].encode(encoding))
    src = csv_source(encoding=encoding)
    fast_rows, fast_res = read_all(read_csv, path, src)
    slow_rows, slow_res = read_all(read_csv_python, path, src)
    assert fast_rows == slow_rows
    assert (fast_res.records, fast_res.problems) == (slow_res.records, slow_res.problems)
    clean = case in ("clean_crlf_quoted_newlines", "wrong_widths")
    assert (csv_record_lines(path.read_bytes(), ";", '"') is not None) == (
        clean or case == "wrong_widths")
    if clean:
        from tessera.ingest.formats.csv import _fast_csv_plan

        assert _fast_csv_plan(path, src) is not None      # the pyarrow path was taken
    if case == "wrong_widths":
        assert [p.line for p in fast_res.problems] == [2, 3]
    if case == "clean_crlf_quoted_newlines":
        assert [r["_line"] for r in fast_rows] == [2, 4, 9, 10]
        assert fast_rows[1]["first_name"] == 'con "virgolette" e ; punto'
        assert fast_rows[1]["address"] == "a\nb\nc"


# --------------------------------------------------------------------------- #
# CSV: DuckDB's reader lands clean files with the same values and lines
# --------------------------------------------------------------------------- #
def land_rows(path: Path, source: Source):
    import duckdb

    from tessera.ingest.formats import open_csv_landing

    con = duckdb.connect()
    landing = open_csv_landing(con, path, source)
    if landing is None:
        return None, None
    cols = list(source.columns) + ["_line"]
    rows = [dict(zip(cols, r)) for r in con.execute(
        "SELECT " + ", ".join(f'"{c}"' for c in cols) + f" FROM {landing.relation} ORDER BY _rowid"
    ).fetchall()]
    landing.close()
    con.close()
    return rows, landing.result()


def _empty_as_none(rows):
    # DuckDB reads an empty field as NULL, the Python reader as ''; validation makes both NULL.
    return [{k: (None if v == "" else v) for k, v in r.items()} for r in rows]


@pytest.mark.parametrize("case", sorted(FAST_CASES))
@pytest.mark.parametrize("encoding", ["cp1252", "utf-8", "cp1250", "latin-1"])
def test_duckdb_landing_agrees_with_the_python_reader(tmp_path, case, encoding):
    path = tmp_path / "c.csv"
    text = FAST_CASES[case]
    if case == "clean_crlf_quoted_newlines" and encoding != "latin-1":
        text = text.replace("Zo\u00eb", "Zo\u00eb \u20ac")  # outside latin-1: re-encoded
    if encoding == "cp1250":
        text = text.replace("Niccol\u00f2", "\u0141\u00f3d\u017a").replace("Zo\u00eb", "\u017bak")
    path.write_bytes(text.encode(encoding))
    src = csv_source(encoding=encoding)
    rows, res = land_rows(path, src)
    if case in ("quote_inside_unquoted_field", "text_after_closing_quote", "unterminated_quote"):
        assert rows is None  # quote trouble: the exact readers take over
        return
    # Wrong widths and a whitespace-only line are cut out, the rest parsed by DuckDB.
    slow_rows, slow_res = read_all(read_csv_python_ref(), path, src)
    assert rows == _empty_as_none(slow_rows)
    assert (res.records, res.problems) == (slow_res.records, slow_res.problems)
    if case == "wrong_widths":
        assert [p.line for p in res.problems] == [2, 3] and [r["_line"] for r in rows] == [4]
        return
    path.write_bytes(text.replace("\r\n   \r\n", "\r\n").encode(encoding))  # empty lines only
    slow_rows, slow_res = read_all(read_csv_python_ref(), path, src)
    rows, res = land_rows(path, src)
    assert res.records == slow_res.records == 4 and not slow_res.problems
    assert rows == _empty_as_none(slow_rows)
    assert [r["_line"] for r in rows] == [2, 4, 8, 9]
    assert rows[2]["first_name"].startswith("\u017bak" if encoding == "cp1250" else "Zo\u00eb")


def read_csv_python_ref():
    from tessera.ingest.formats import read_csv_python

    return read_csv_python


def test_duckdb_landing_of_a_generated_file_matches_line_for_line(tmp_path):
    """Many records, quoted newlines every 7th, doubled quotes, a BOM: same as Python."""
    import random

    rnd = random.Random(7)
    out = ["id;nome;cap;note"]
    for i in range(3000):
        note = f'"riga {i}\r\nseconda ""{i}"""' if i % 7 == 0 else f"nota {rnd.randint(0, 99)}"
        nome = rnd.choice(["Anna", "  Eva ", "\u0141ucja", '"Ugo; il ""grande"""', ""])
        out.append(f"{i};{nome};{i % 1000:05d};{note}")
    path = tmp_path / "g.csv"
    path.write_bytes(("\ufeff" + "\r\n".join(out) + "\r\n").encode("utf-8"))
    src = csv_source(encoding="utf-8")
    slow_rows, slow_res = read_all(read_csv_python_ref(), path, src)
    rows, res = land_rows(path, src)
    assert res.records == slow_res.records == 3000
    assert rows == _empty_as_none(slow_rows)
    assert rows[7]["_line"] == 10 and rows[8]["_line"] == 12   # records 0 and 7 span 2 lines


@pytest.mark.parametrize("encoding", ["utf-8", "cp1250"])
def test_duckdb_landing_cuts_out_wrong_width_records_like_the_python_reader(tmp_path, encoding):
    """Bad records among many good ones (quoted newlines, doubled quotes, a BOM, a code
    page DuckDB cannot read): cut out by byte range, reported with their lines, the
    rest parsed by DuckDB with exact lines."""
    import random

    rnd = random.Random(11)
    out = ["id;nome;cap;note"]
    for i in range(3000):
        note = f'"riga {i}\r\nseconda ""{i}"""' if i % 7 == 0 else f"nota {rnd.randint(0, 99)}"
        nome = rnd.choice(["Anna", "\u0141ucja", '"Ugo; il ""grande"""', ""])
        row = f"{i};{nome};{i % 1000:05d};{note}"
        if i % 499 == 3:
            row += ";extra"
        elif i % 601 == 5:
            row = f"{i};{nome}"
        out.append(row)
    out.append("   ")  # whitespace only: no reader counts it
    bom = "\ufeff" if encoding == "utf-8" else ""
    path = tmp_path / "g.csv"
    path.write_bytes((bom + "\r\n".join(out) + "\r\n2999x;Eva;1;y").encode(encoding))
    src = csv_source(encoding=encoding)
    slow_rows, slow_res = read_all(read_csv_python_ref(), path, src)
    rows, res = land_rows(path, src)
    assert rows is not None
    assert len(slow_res.problems) == 7 + 5
    assert (res.records, res.problems) == (slow_res.records, slow_res.problems)
    assert rows == _empty_as_none(slow_rows)


def test_segmented_scan_equals_the_whole_file_scan(monkeypatch):
    """Files larger than a segment are scanned in pieces cut outside quoted fields: the
    records, lines, widths and byte offsets are those of one scan of the whole file."""
    import random

    import numpy as np

    from tessera.ingest.formats import csv as readers

    rnd = random.Random(5)
    alphabet = ["a", ";", '"', "\n", "\r\n", " ", '""', "\u00e9", '"x\ny"', ";b", "\n", "c"]
    compared = 0
    for size in (7, 16, 64):
        monkeypatch.setattr(readers, "SCAN_SEGMENT", size)
        for _ in range(400):
            data = ("\ufeff" * rnd.randint(0, 1) + "".join(
                rnd.choice(alphabet) for _ in range(rnd.randint(0, 60)))).encode()
            whole = readers.csv_records(data, ";", '"', widths=True)
            parts = readers.scan_csv(data, ";", '"', widths=True, edges=True)
            assert (whole is None) == (parts is None), data
            if whole is not None:
                for a, b in zip(whole, parts[:3]):
                    assert np.array_equal(a, b), data
                assert parts[3] == readers.has_edge_blanks(
                    np.frombuffer(data, np.uint8), ";", '"', True), data
                compared += 1
    assert compared > 80


def test_duckdb_landing_in_segments_matches_line_for_line(tmp_path, monkeypatch):
    from tessera.ingest.formats import csv as readers

    monkeypatch.setattr(readers, "SCAN_SEGMENT", 1000)
    out = ["id;nome;cap;note"]
    for i in range(2000):
        note = f'"riga {i}\r\nseconda"' if i % 5 == 0 else f"nota {i}"
        out.append(f"{i};{'Eva' if i % 3 else ''};{i:05d};{note}")
    path = tmp_path / "s.csv"
    path.write_bytes(("\r\n".join(out) + "\r\n").encode("utf-8"))
    src = csv_source(encoding="utf-8")
    slow_rows, slow_res = read_all(read_csv_python_ref(), path, src)
    rows, res = land_rows(path, src)
    assert res.records == slow_res.records == 2000
    assert rows == _empty_as_none(slow_rows)


def test_csv_scan_matches_a_line_by_line_reading_on_random_bytes():
    """The vectorised scan against a plain reading of small random CSV texts."""
    import random

    from tessera.ingest.formats import csv_record_lines

    def plain(data: bytes):
        # Record boundaries by quote parity, one line at a time (the reference).
        lines = data.split(b"\n")
        if lines and lines[-1] == b"":
            lines.pop()
        starts, i = [], 0
        while i < len(lines):
            quotes, j = lines[i].count(b'"'), i
            while quotes % 2:
                j += 1
                if j >= len(lines):
                    return None
                quotes += lines[j].count(b'"')
            starts.append(i + 1)
            i = j + 1
        return starts

    rnd = random.Random(3)
    alphabet = ["a", ";", '"', "\n", "\r\n", " ", '""', "\u00e9"]
    checked = 0
    for _ in range(3000):
        data = "".join(rnd.choice(alphabet) for _ in range(rnd.randint(0, 25))).encode()
        scan = csv_record_lines(data, ";", '"')
        ref = plain(data)
        if scan is None:
            continue   # refused: the Python reader takes the file
        assert ref is not None and list(scan[0]) == ref, data
        checked += 1
    assert checked > 500


@pytest.mark.parametrize("encoding", ["utf-8", "latin-1", "cp1252"])
def test_has_controls_counts_as_the_byte_table_says(encoding):
    """The count-based test agrees with the definition byte by byte: C0 but tab, LF and
    CR; DEL; C1 as latin-1 bytes or as UTF-8's 0xC2 0x80-0x9F; across 1 MiB slices."""
    import numpy as np

    from tessera.ingest.formats.common import _CHUNK, has_controls

    plain = np.frombuffer(b"ab\tc\r\nd\xc2\xa0e\n" * 10, dtype=np.uint8)
    assert has_controls(plain, encoding) is False
    for byte in [*range(0, 9), 0x0B, 0x0C, *range(0x0E, 0x20), 0x7F]:
        assert has_controls(np.append(plain, np.uint8(byte)), encoding), byte
    c1 = np.append(plain, np.uint8(0x85))
    assert has_controls(c1, encoding) is (encoding == "latin-1")
    # 0xC2 at the end of one slice, its C1 continuation at the start of the next
    big = np.full(_CHUNK + 1, ord("a"), dtype=np.uint8)
    big[_CHUNK - 1], big[_CHUNK] = 0xC2, 0x85
    assert has_controls(big, encoding) is (encoding != "cp1252")
    assert has_controls(plain, encoding, line_ends=30) is False  # 20 LFs and 10 CRs


# ---- large XML files read in parts by worker processes --------------------------------

def _many_records(n: int, comment_at: int | None = None, twice_at: int | None = None) -> str:
    """``n`` records of 8 lines (n = 10 000 passes lxml's 65 535-line limit)."""
    out = []
    for i in range(n):
        if i == comment_at:
            # a comment full of record start tags at the start of a line: a cut may land in it
            out.append("    <!-- an old export, kept for reference:\n"
                       + "".join(f"<utente>\n<idgestionale>X{k}</idgestionale>\n</utente>\n" for k in range(400))
                       + "    -->\n")
        nome = "<nome>a</nome><nome>b</nome>" if i == twice_at else f"<nome>N{i} &amp; co</nome>"
        out.append(f"    <utente>\n      <idgestionale>{i}</idgestionale>\n      {nome}\n"
                   f"      <![CDATA[ <utente> ]]>\n      <citta>C{i % 7}</citta>\n"
                   "      <ignorato>x</ignorato>\n      <!-- c -->\n    </utente>\n")
    return "".join(out)


def _both(path: Path, part_bytes: int):
    seq, par = ReadResult(), ReadResult()
    a = [r for b in read_xml(path, xml_source(), seq) for r in b.to_pylist()]
    b = [r for t in read_xml_parallel(path, xml_source(), par, 2, part_bytes) for r in t.to_pylist()]
    return a, seq, b, par


def test_xml_read_in_parts_gives_the_rows_lines_and_problems_of_one_read(tmp_path):
    path = tmp_path / "e.xml"
    path.write_bytes(sendero(_many_records(10_000, twice_at=9_500)).encode("utf-8"))
    a, seq, b, par = _both(path, 40_000)
    assert len(a) == 9_999 and a[-1]["_line"] > 65_535  # past lxml's line limit
    assert b == a
    assert (par.records, par.problems) == (seq.records, seq.problems)
    assert [p.line for p in seq.problems] == [7 + 9_500 * 8]  # record 0 starts on line 7


def test_xml_cut_inside_a_comment_is_refused_so_the_file_is_read_whole(tmp_path):
    from tessera.ingest.formats import SplitUnsafe

    path = tmp_path / "e.xml"
    path.write_bytes(sendero(_many_records(300, comment_at=150)).encode("utf-8"))
    with pytest.raises(SplitUnsafe):
        _both(path, 2_000)


def test_a_broken_xml_file_read_in_parts_is_refused_as_in_one_read(tmp_path):
    from tessera.ingest.formats import SplitUnsafe

    path = tmp_path / "e.xml"
    path.write_bytes(sendero(_many_records(2_000).replace("<citta>C3</citta>", "<citta>C3</city>", 1))
                     .encode("utf-8"))
    with pytest.raises(SplitUnsafe):
        list(read_xml_parallel(path, xml_source(), ReadResult(), 2, 20_000))
    with pytest.raises(FileRejected, match=r"line \d+: XML is not well-formed"):
        list(read_xml(path, xml_source(), ReadResult()))
