"""Tests for tessera.ingest.load.ingest_source: real landing files into a real DuckDB file,
with the demo configuration (and a copy of it with an extra typed property)."""
from __future__ import annotations

import csv
import datetime as dt
import decimal
import io
import shutil
from pathlib import Path

import pytest

from tessera.deployment import load_deployment
from tessera.ingest.load import ingest_source
from tessera.engine.warehouse import connect, ensure_warehouse

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


def write_crm(landing: Path, name: str, rows: list[dict], dep, encoding="cp1252") -> Path:
    """Write a CRM export with the demo's header (source columns) in ``encoding`` bytes."""
    src = dep.source("crm_contacts")
    buf = io.StringIO(newline="")
    writer = csv.writer(buf, delimiter=";", lineterminator="\r\n")
    writer.writerow(list(src.columns.values()))
    for r in rows:
        writer.writerow([r.get(canon, "") for canon in src.columns])
    path = landing / "crm" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buf.getvalue().encode(encoding))
    return path


def ingest(con, dep, landing, source="crm_contacts", batch="b1"):
    return ingest_source(con, dep, dep.source(source), landing, batch, now=NOW)


def rows(con, sql, params=None):
    return con.execute(sql, params or []).fetchall()


def report(con, source="crm_contacts"):
    return rows(con, "SELECT file, status, records, new, updated, unchanged, rejected, message "
                     "FROM ops.import_report WHERE source = ? ORDER BY loaded_at, file", [source])


def rejects(con, source="crm_contacts"):
    return rows(con, "SELECT file, line, field, reason, source_record_id FROM ops.rejects "
                     "WHERE source = ? ORDER BY file, line, field", [source])


def n_raw(con, table="crm_contacts"):
    return con.execute(f"SELECT count(*) FROM raw.{table}").fetchone()[0]


# --------------------------------------------------------------------------- #
def test_clean_file_loads_typed_values(con, demo, landing):
    write_crm(landing, "crm_contacts_20261101.csv", [
        crm_row(),
        crm_row(source_record_id="C002", first_name="Universit\u00e0", email="\tanna@example.it ",
                postcode="00100", gender="F", consent_email="no", loyalty_tier="",
                address='Piazza "Duomo"\r\nscala B'),
    ], demo)
    out = ingest(con, demo, landing)
    assert [(f.file, f.status, f.records, f.new, f.rejected) for f in out.files] == [
        ("crm/crm_contacts_20261101.csv", "loaded", 2, 2, 0)]
    got = rows(con, "SELECT source_record_id, first_name, email, postcode, birth_date, consent_email, "
                    "updated_at, loyalty_tier, address, _file, _line, _batch_id, _loaded_at "
                    "FROM raw.crm_contacts ORDER BY source_record_id")
    assert got == [
        ("C001", "Niccol\u00f2", "niccolo.damato@example.it", "00184", dt.date(1980, 2, 14), True,
         dt.datetime(2026, 10, 1, 10, 30), "gold", "Via Garibaldi 1",
         "crm/crm_contacts_20261101.csv", 2, "b1", NOW),
        ("C002", "Universit\u00e0", "anna@example.it", "00100", dt.date(1980, 2, 14), False,
         dt.datetime(2026, 10, 1, 10, 30), None, 'Piazza "Duomo"\r\nscala B',
         "crm/crm_contacts_20261101.csv", 3, "b1", NOW),
    ]
    assert report(con) == [("crm/crm_contacts_20261101.csv", "loaded", 2, 2, 0, 0, 0, None)]
    assert rejects(con) == []
    ledger = rows(con, "SELECT source, file, status, file_seq FROM ops.file_ledger")
    assert ledger == [("crm_contacts", "crm/crm_contacts_20261101.csv", "loaded", 1)]


def test_extended_property_lands_typed(con, demo, landing):
    write_crm(landing, "crm_contacts_20261101.csv", [crm_row(loyalty_tier="silver")], demo)
    ingest(con, demo, landing)
    types = dict(rows(con, "SELECT column_name, data_type FROM information_schema.columns "
                           "WHERE table_schema = 'raw' AND table_name = 'crm_contacts'"))
    assert types["loyalty_tier"] == "VARCHAR"
    assert types["birth_date"] == "DATE" and types["consent_email"] == "BOOLEAN"
    assert types["updated_at"] == "TIMESTAMP"
    assert rows(con, "SELECT loyalty_tier FROM raw.crm_contacts") == [("silver",)]


def test_extended_integer_property_typed_and_validated(tmp_path, con, landing):
    cfg = tmp_path / "config"
    shutil.copytree(DEMO, cfg)
    main = cfg / "tessera.yaml"
    main.write_text(main.read_text().replace(
        '    - {name: loyalty_tier, type: string, description: "loyalty programme tier (bronze/silver/gold)"}',
        '    - {name: loyalty_tier, type: string}\n    - {name: loyalty_points, type: integer}\n'
        '    - {name: spend, type: decimal}'))
    srcs = cfg / "sources.yaml"
    srcs.write_text(srcs.read_text().replace(
        "      loyalty_tier: livello_fedelta\n",
        "      loyalty_tier: livello_fedelta\n      loyalty_points: punti\n      spend: spesa\n"))
    dep = load_deployment(cfg)
    write_crm(landing, "crm_contacts_20261101.csv", [
        crm_row(loyalty_points="1250", spend="99.90"),
        crm_row(source_record_id="C002", loyalty_points="molti", spend="10"),
    ], dep)
    out = ingest(con, dep, landing)
    assert (out.files[0].new, out.files[0].rejected) == (1, 1)
    types = dict(rows(con, "SELECT column_name, data_type FROM information_schema.columns "
                           "WHERE table_schema = 'raw' AND table_name = 'crm_contacts'"))
    assert types["loyalty_points"] == "BIGINT" and types["spend"] == "DECIMAL(18,2)"
    assert rows(con, "SELECT source_record_id, loyalty_points, spend FROM raw.crm_contacts") == [
        ("C001", 1250, decimal.Decimal("99.90"))]
    assert rejects(con) == [("crm/crm_contacts_20261101.csv", 3, "loyalty_points",
                             "not an integer", "C002")]


def test_rejects_name_file_line_field_reason_never_the_value(con, demo, landing):
    bad = {
        "C002": dict(email="mario.rossi@@esempio"),
        "C003": dict(birth_date="31/02/1980", gender="X"),
        "C004": dict(mobile="chiamami", country="Atlantide"),
        "C005": dict(updated_at="2026-10-01T10:30", consent_email="forse"),
        "": dict(),
    }
    rs = [crm_row(source_record_id="C001")]
    rs += [crm_row(source_record_id=k, **v) for k, v in bad.items()]
    path = write_crm(landing, "crm_contacts_20261101.csv", rs, demo)
    # one record with the wrong number of fields (line 7)
    with open(path, "ab") as fh:
        fh.write("C006;Solo;Tre\r\n".encode("cp1252"))
    out = ingest(con, demo, landing)
    f = out.files[0]
    assert (f.status, f.records, f.new, f.rejected) == ("loaded", 7, 1, 6)
    got = rejects(con)
    file = "crm/crm_contacts_20261101.csv"
    assert got == [
        (file, 3, "email", "not a valid e-mail address", "C002"),
        (file, 4, "birth_date", "not a date in format %d/%m/%Y", "C003"),
        (file, 4, "gender", "value not allowed (allowed: M, F)", "C003"),
        (file, 5, "country", "not an ISO 3166-1 alpha-2 country code", "C004"),
        (file, 5, "mobile", "not a valid phone number", "C004"),
        (file, 6, "consent_email", "not a yes/no value", "C005"),
        (file, 6, "updated_at", "not a timestamp in format %d/%m/%Y %H:%M", "C005"),
        (file, 7, "source_record_id", "required field is empty", None),
        (file, 8, "*", "expected 17 fields, found 3", None),
    ]
    # The refused values never reach ops.rejects (they may be personal data).
    everything = " | ".join(str(v) for r in rows(con, "SELECT * FROM ops.rejects") for v in r)
    for value in ("mario.rossi@@esempio", "31/02/1980", "chiamami", "Atlantide", "forse",
                  "2026-10-01T10:30", "Solo", "Tre"):
        assert value not in everything
    (rep,) = report(con)
    _, status, records, new, updated, unchanged, rejected, _ = rep
    assert new + updated + unchanged + rejected == records == 7
    assert rejected == 6
    assert rows(con, "SELECT source_record_id FROM raw.crm_contacts") == [("C001",)]


def test_same_file_loaded_again_is_skipped(con, demo, landing):
    write_crm(landing, "crm_contacts_20261101.csv", [crm_row(), crm_row(source_record_id="C002")], demo)
    ingest(con, demo, landing, batch="b1")
    before = {t: con.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
              for t in ("raw.crm_contacts", "ops.import_report", "ops.file_ledger", "ops.rejects")}
    out = ingest(con, demo, landing, batch="b2")
    assert [(f.file, f.status, f.records, f.new) for f in out.files] == [
        ("crm/crm_contacts_20261101.csv", "already_loaded", 0, 0)]
    after = {t: con.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in before}
    assert after == before


def test_a_file_seen_before_is_not_read_again_unless_its_bytes_changed(con, demo, landing, monkeypatch):
    """The stat of a loaded file is kept with its sha256: the next run does not read it
    again (a 15 GB event file cost 14 s a day); bytes changed in place (same size, the
    modification time set back) are read again and load as an update."""
    import os

    import tessera.ingest.load as load

    path = write_crm(landing, "crm_contacts_20261101.csv", [crm_row(city="Roma")], demo)
    ingest(con, demo, landing, batch="b1")
    reads = []
    real = load.fingerprint
    monkeypatch.setattr(load, "fingerprint", lambda p: reads.append(p.name) or real(p))
    assert [f.status for f in ingest(con, demo, landing, batch="b2").files] == ["already_loaded"]
    assert reads == []
    st = path.stat()
    data = path.read_bytes()
    path.write_bytes(data.replace(b"Roma", b"Pisa"))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert path.stat().st_size == st.st_size and path.stat().st_mtime_ns == st.st_mtime_ns
    out = ingest(con, demo, landing, batch="b3")
    assert reads == ["crm_contacts_20261101.csv"]
    assert [(f.status, f.updated) for f in out.files] == [("loaded", 1)]
    assert rows(con, "SELECT count(*) FROM ops.file_stats") == [(1,)]


def test_same_bytes_under_another_name_is_a_duplicate(con, demo, landing):
    first = write_crm(landing, "crm_contacts_20261101.csv", [crm_row()], demo)
    ingest(con, demo, landing, batch="b1")
    shutil.copyfile(first, landing / "crm" / "crm_contacts_20261102.csv")
    out = ingest(con, demo, landing, batch="b2")
    assert [(f.file, f.status) for f in out.files] == [
        ("crm/crm_contacts_20261101.csv", "already_loaded"),
        ("crm/crm_contacts_20261102.csv", "duplicate_file"),
    ]
    assert n_raw(con) == 1
    assert report(con)[1] == ("crm/crm_contacts_20261102.csv", "duplicate_file", 0, 0, 0, 0, 0,
                              "same content as crm/crm_contacts_20261101.csv, delivered 2026-11-01; "
                              "nothing changed")
    assert rows(con, "SELECT file, status FROM ops.file_ledger ORDER BY file_seq") == [
        ("crm/crm_contacts_20261101.csv", "loaded"),
        ("crm/crm_contacts_20261102.csv", "duplicate_file"),
    ]


def test_duplicate_file_seen_again_changes_nothing(con, demo, landing):
    first = write_crm(landing, "crm_contacts_20261101.csv", [crm_row()], demo)
    ingest_source(con, demo, demo.source("crm_contacts"), landing, "b1", now=NOW)
    shutil.copyfile(first, landing / "crm" / "crm_contacts_20261102.csv")
    ingest_source(con, demo, demo.source("crm_contacts"), landing, "b2",
                  now=NOW + dt.timedelta(days=1))
    counts = [con.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
              for t in ("raw.crm_contacts", "ops.import_report", "ops.file_ledger")]
    out = ingest_source(con, demo, demo.source("crm_contacts"), landing, "b3",
                        now=NOW + dt.timedelta(days=2))
    assert [f.status for f in out.files] == ["already_loaded", "already_loaded"]
    assert [con.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
            for t in ("raw.crm_contacts", "ops.import_report", "ops.file_ledger")] == counts


def test_changed_and_unchanged_records_in_a_second_file(con, demo, landing):
    write_crm(landing, "crm_contacts_20261101.csv",
              [crm_row(source_record_id="A"), crm_row(source_record_id="B", city="Roma")], demo)
    ingest(con, demo, landing, batch="b1")
    write_crm(landing, "crm_contacts_20261102.csv",
              [crm_row(source_record_id="A"), crm_row(source_record_id="B", city="Milano"),
               crm_row(source_record_id="C")], demo)
    out = ingest(con, demo, landing, batch="b2")
    f = out.files[1]
    assert (f.file, f.status, f.records, f.new, f.updated, f.unchanged, f.rejected) == (
        "crm/crm_contacts_20261102.csv", "loaded", 3, 1, 1, 1, 0)
    assert report(con)[1][1:7] == ("loaded", 3, 1, 1, 1, 0)
    got = rows(con, "SELECT source_record_id, city, _file, _file_seq, _batch_id FROM raw.crm_contacts "
                    "ORDER BY source_record_id, _file_seq")
    assert got == [
        ("A", "Roma", "crm/crm_contacts_20261101.csv", 1, "b1"),
        ("B", "Roma", "crm/crm_contacts_20261101.csv", 1, "b1"),
        ("B", "Milano", "crm/crm_contacts_20261102.csv", 2, "b2"),
        ("C", "Roma", "crm/crm_contacts_20261102.csv", 2, "b2"),
    ]
    # Changing B back is again an update against its latest version.
    write_crm(landing, "crm_contacts_20261103.csv", [crm_row(source_record_id="B", city="Roma")], demo)
    f = ingest(con, demo, landing, batch="b3").files[2]
    assert (f.new, f.updated, f.unchanged) == (0, 1, 0)
    assert n_raw(con) == 5


def test_whitespace_only_change_is_unchanged(con, demo, landing):
    write_crm(landing, "crm_contacts_20261101.csv", [crm_row(city="Roma")], demo)
    ingest(con, demo, landing)
    write_crm(landing, "crm_contacts_20261102.csv", [crm_row(city=" Roma\t")], demo)
    f = ingest(con, demo, landing, batch="b2").files[1]
    assert (f.new, f.updated, f.unchanged) == (0, 0, 1)
    assert n_raw(con) == 1


def test_record_hash_is_recomputable_from_raw(con, demo, landing):
    # Soft-dropped values included: the stored hash covers the values as stored.
    from tessera.ingest.load import record_hash_sql
    from tessera.vocabulary import source_fields

    write_crm(landing, "crm_contacts_20261101.csv",
              [crm_row(source_record_id="A"), crm_row(source_record_id="B", birth_date="31/02/1980")],
              demo)
    src = demo.source("crm_contacts").model_copy(update={"invalid_values": "drop_value"})
    f = ingest_source(con, demo, src, landing, "b1", NOW).files[0]
    assert (f.new, f.rejected) == (2, 0)
    assert rows(con, "SELECT birth_date FROM raw.crm_contacts WHERE source_record_id = 'B'") == [(None,)]
    expr = record_hash_sql(list(source_fields(demo, src)))
    got = rows(con, f"SELECT source_record_id, _record_hash = {expr} FROM raw.crm_contacts ORDER BY 1")
    assert got == [("A", True), ("B", True)]


@pytest.mark.parametrize("how", ["md5_text", "other_hash"])
def test_stored_hashes_made_another_way_are_recomputed_not_reloaded(con, demo, landing, how):
    """A warehouse from before the 64-bit hash, or after a DuckDB upgrade changed hash():
    the next delivery of the same records must find them unchanged, not store them again."""
    write_crm(landing, "crm_contacts_20261101.csv",
              [crm_row(source_record_id="A"), crm_row(source_record_id="B")], demo)
    ingest(con, demo, landing)
    if how == "md5_text":
        con.execute("ALTER TABLE raw.crm_contacts ALTER _record_hash TYPE VARCHAR "
                    "USING md5(source_record_id)")
        con.execute("DELETE FROM ops.warehouse_info")
    else:
        con.execute("UPDATE raw.crm_contacts SET _record_hash = _record_hash + 1")
        con.execute("UPDATE ops.warehouse_info SET value = 'another DuckDB'")
    write_crm(landing, "crm_contacts_20261102.csv",
              [crm_row(source_record_id="A"), crm_row(source_record_id="B", city="Milano")], demo)
    f = ingest(con, demo, landing, batch="b2").files[1]
    assert (f.new, f.updated, f.unchanged) == (0, 1, 1)
    assert n_raw(con) == 3
    assert rows(con, "SELECT data_type FROM information_schema.columns WHERE table_schema = 'raw' "
                     "AND table_name = 'crm_contacts' AND column_name = '_record_hash'") == [("UBIGINT",)]


def test_same_id_twice_in_one_file_later_wins(con, demo, landing):
    write_crm(landing, "crm_contacts_20261101.csv", [
        crm_row(source_record_id="A", city="Roma"),
        crm_row(source_record_id="B"),
        crm_row(source_record_id="A", city="Napoli"),
    ], demo)
    f = ingest(con, demo, landing).files[0]
    assert (f.records, f.new, f.rejected) == (3, 2, 1)
    assert rows(con, "SELECT source_record_id, city, _line FROM raw.crm_contacts ORDER BY 1") == [
        ("A", "Napoli", 4), ("B", "Roma", 3)]
    assert rejects(con) == [(
        "crm/crm_contacts_20261101.csv", 2, "source_record_id",
        "superseded by a later record with the same id in this file (line 4)", "A")]
    (rep,) = report(con)
    assert rep[2:7] == (3, 2, 0, 0, 1)


def test_file_in_wrong_encoding_is_failed_whole(con, demo, landing):
    write_crm(landing, "crm_contacts_20261101.csv", [crm_row()], demo)
    ingest(con, demo, landing, batch="b1")
    raw_before = rows(con, "SELECT * FROM raw.crm_contacts")
    # UTF-8 bytes in a source declared cp1252
    write_crm(landing, "crm_contacts_20261102.csv",
              [crm_row(first_name="Citt\u00e0 Nuova", city="Forl\u00ec")], demo, encoding="utf-8")
    out = ingest(con, demo, landing, batch="b2")
    f = out.files[1]
    assert (f.file, f.status, f.new, f.updated) == ("crm/crm_contacts_20261102.csv", "failed", 0, 0)
    assert "UTF-8" in f.message and "cp1252" in f.message
    assert rows(con, "SELECT * FROM raw.crm_contacts") == raw_before
    (rep,) = [r for r in report(con) if r[0].endswith("1102.csv")]
    assert rep[1] == "failed" and rep[3:6] == (0, 0, 0)
    assert "crm_contacts_20261102.csv" in rep[7] and "declares cp1252" in rep[7]
    assert rejects(con) == [("crm/crm_contacts_20261102.csv", None, "*", rep[7], None)]
    # Not in the ledger: the file is tried again (and fails again) on the next run.
    assert rows(con, "SELECT count(*) FROM ops.file_ledger WHERE file LIKE '%1102%'") == [(0,)]
    out = ingest(con, demo, landing, batch="b3")
    assert [f.status for f in out.files] == ["already_loaded", "failed"]
    # The rejects of a failed file are replaced, not piled up.
    assert len(rejects(con)) == 1
    # Re-delivered in the declared encoding, it loads and its old failure rejects go away.
    write_crm(landing, "crm_contacts_20261102.csv",
              [crm_row(first_name="Citt\u00e0 Nuova", city="Forl\u00ec")], demo, encoding="cp1252")
    f = ingest(con, demo, landing, batch="b4").files[1]
    assert (f.status, f.updated) == ("loaded", 1)
    assert rejects(con) == []
    assert rows(con, "SELECT first_name, city FROM raw.crm_contacts ORDER BY _file_seq DESC LIMIT 1") == [
        ("Citt\u00e0 Nuova", "Forl\u00ec")]


def test_missing_header_column_fails_file_and_leaves_raw_untouched(con, demo, landing):
    path = landing / "crm" / "crm_contacts_20261101.csv"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"crm_id;nome\r\nC1;Anna\r\n")
    f = ingest(con, demo, landing).files[0]
    assert f.status == "failed" and "header lacks column" in f.message
    assert n_raw(con) == 0
    assert report(con)[0][1] == "failed"
    assert rows(con, "SELECT count(*) FROM ops.file_ledger") == [(0,)]


def xml_orders(records: list[tuple[str, str, str, str]], table="ordini") -> str:
    body = "".join(
        f"<ordine><idOrdine>{i}</idOrdine><idCliente>{c}</idCliente><data>{d}</data>"
        f"<importo>{a}</importo><idCanaleMacro>1</idCanaleMacro></ordine>\n"
        for i, c, d, a in records)
    return ('<?xml version="1.0" encoding="UTF-8"?>\n<sincronizza>\n<commons><table>'
            f"{table}</table></commons>\n<ordini>\n{body}</ordini>\n</sincronizza>\n")


def test_xml_orders_load_and_broken_xml_is_failed_whole(con, demo, landing):
    d = landing / "ecommerce"
    d.mkdir()
    (d / "ordini_20261101.xml").write_text(xml_orders([
        ("O1", "00042", "15/10/2026", "120.50"),
        ("O2", "00043", "2026-10-15", "10"),
    ]), encoding="utf-8")
    f = ingest(con, demo, landing, source="shop_orders").files[0]
    assert (f.status, f.records, f.new, f.rejected) == ("loaded", 2, 1, 1)
    assert rows(con, "SELECT source_record_id, customer_ref, order_date, amount, channel_macro, _line "
                     "FROM raw.shop_orders") == [
        ("O1", "00042", dt.date(2026, 10, 15), decimal.Decimal("120.50"), 1, 5)]
    assert rejects(con, "shop_orders") == [
        ("ecommerce/ordini_20261101.xml", 6, "order_date", "not a date in format %d/%m/%Y", "O2")]

    text = xml_orders([("O3", "00044", "16/10/2026", "5")])
    (d / "ordini_20261102.xml").write_text(text[: len(text) - 30], encoding="utf-8")
    (d / "ordini_20261103.xml").write_text(xml_orders([("O4", "1", "16/10/2026", "5")], table="prodotti"),
                                           encoding="utf-8")
    out = ingest(con, demo, landing, source="shop_orders", batch="b2")
    assert [(f.file, f.status) for f in out.files] == [
        ("ecommerce/ordini_20261101.xml", "already_loaded"),
        ("ecommerce/ordini_20261102.xml", "failed"),
        ("ecommerce/ordini_20261103.xml", "failed"),
    ]
    assert "not well-formed" in out.files[1].message
    assert "expected 'ordini'" in out.files[2].message
    assert n_raw(con, "shop_orders") == 1


@pytest.mark.parametrize("kind", ["clean", "comment at a cut", "broken", "another table"])
def test_xml_read_by_worker_processes_loads_what_one_process_loads(con, demo, landing, tmp_path,
                                                                   monkeypatch, kind):
    """A large XML file is parsed in parts by worker processes; the rows, lines and rejects
    are those of the one-process read. A part that does not parse alone (a cut inside a
    comment) or a broken file starts the read again in one process: nothing is loaded
    twice, and the broken file fails whole with the one-process message."""
    import tessera.ingest.formats.xml as xml
    import tessera.ingest.load as load

    used = []

    def spy(*args, **kwargs):
        try:
            yield from xml.read_xml_parallel(*args, **kwargs)
        except xml.SplitUnsafe:
            used.append("one process again")
            raise
        used.append("parts")

    records = [(f"O{i}", f"{i:05d}", "15/10/2026" if i % 50 else "2026-10-15", "1.50") for i in range(3_000)]
    text = xml_orders(records, table="prodotti" if kind == "another table" else "ordini")
    if kind == "comment at a cut":
        at = text.index("<ordine><idOrdine>O1500<")
        text = (text[:at] + "<!-- old:\n" + "<ordine><idOrdine>X</idOrdine></ordine>\n" * 2_000
                + "-->\n" + text[at:])
    if kind == "broken":
        text = text.replace("<importo>1.50</importo>", "<importo>1.50</amount>", 1)
    results = {}
    for mode in ("one process", "parts"):
        (landing / "ecommerce").mkdir(exist_ok=True)
        (landing / "ecommerce" / "ordini_20261101.xml").write_text(text, encoding="utf-8")
        if mode == "parts":
            monkeypatch.setattr(load, "read_xml_parallel", spy)
            monkeypatch.setattr(xml, "PARALLEL_MIN_BYTES", 0)
            monkeypatch.setattr(xml, "PART_BYTES", 8_000)
            monkeypatch.setenv("TESSERA_XML_WORKERS", "2")
        c = connect(tmp_path / mode / "warehouse.duckdb")
        ensure_warehouse(c)
        try:
            f = ingest(c, demo, landing, source="shop_orders").files[0]
            results[mode] = ((f.status, f.records, f.new, f.rejected, f.message),
                             rows(c, "SELECT source_record_id, order_date, _line FROM raw.shop_orders ORDER BY ALL"),
                             rejects(c, "shop_orders"))
        finally:
            c.close()
    assert used == (["parts"] if kind == "clean" else ["one process again"])
    assert results["parts"] == results["one process"]
    status = results["parts"][0][0]
    assert status == ("failed" if kind in ("broken", "another table") else "loaded")
    if status == "loaded":
        assert len(results["parts"][1]) == 2_940 and len(results["parts"][2]) == 60


def test_jsonl_events_with_bad_line(con, demo, landing):
    d = landing / "web"
    d.mkdir()
    (d / "web_events_20261101.jsonl").write_text(
        '{"event_id": "e1", "type": "page_view", "occurred_at": "2026-10-30T08:00:00Z", '
        '"email": "a@example.it", "properties": {"url": "/it"}}\n'
        "{not json\n"
        '{"event_id": "e3", "type": "open", "occurred_at": "2026-10-30 08:00"}\n',
        encoding="utf-8")
    f = ingest(con, demo, landing, source="web_events").files[0]
    assert (f.records, f.new, f.rejected) == (3, 1, 2)
    assert rows(con, "SELECT source_record_id, occurred_at, properties FROM raw.web_events") == [
        ("e1", dt.datetime(2026, 10, 30, 8, 0), '{"url":"/it"}')]
    got = rejects(con, "web_events")
    assert [(r[1], r[2]) for r in got] == [(2, "*"), (3, "occurred_at")]
    assert got[0][3].startswith("not valid JSON")


def test_clean_jsonl_lands_through_duckdb_like_the_python_reader(con, demo, landing, tmp_path):
    """The DuckDB path (clean files) and the exact reader (any bad line) store the same
    values, lines and hashes: a record re-delivered through the other path is unchanged."""
    from tessera.ingest.formats import ReadResult, open_jsonl_landing, read_jsonl

    good = [
        '{"event_id": "e1", "type": "page_view", "occurred_at": "2026-10-30T08:00:00Z", '
        '"email": "a@example.it", "properties": {"url": "/it/caf\u00e9", "n": 2, "x": [1, 2.5, true]}}',
        "",
        "   ",
        '{"event_id": "e2", "type": "open", "occurred_at": "2026-10-30T09:00:00Z", '
        '"email": null, "properties": "plain"}',
        '{"event_id": "e3", "type": "click", "occurred_at": "2026-10-30T10:00:00Z", "extra": 1}',
    ]
    d = landing / "web"
    d.mkdir()
    clean = d / "web_events_20261101.jsonl"
    clean.write_text("\n".join(good) + "\n", encoding="utf-8")
    src = demo.source("web_events")
    landing_ = open_jsonl_landing(con, clean, src)
    assert landing_ is not None and landing_.records == 3
    fast = rows(con, f"SELECT * EXCLUDE (_rowid, _object, _dupkeys, _numbers), _numbers "
                     f"FROM {landing_.relation} ORDER BY _line")
    landing_.close()
    slow = []
    for batch in read_jsonl(clean, src, ReadResult()):
        slow += [tuple(r.values()) for r in batch.to_pylist()]
    assert fast == slow
    assert [r[-2] for r in fast] == [1, 4, 5]
    f = ingest(con, demo, landing, source="web_events").files[0]
    assert (f.records, f.new, f.rejected) == (3, 3, 0)
    # The same records again, now in a file the exact reader must take (a bad line).
    (d / "web_events_20261102.jsonl").write_text(
        "\n".join(good) + "\n{not json\n", encoding="utf-8")
    f = ingest(con, demo, landing, source="web_events", batch="b2").files[1]
    assert (f.records, f.new, f.updated, f.unchanged, f.rejected) == (4, 0, 0, 3, 1)


def test_bad_jsonl_lines_are_rejected_on_the_duckdb_path_as_the_exact_reader_words_them(
        con, demo, tmp_path):
    from tessera.ingest.formats import ReadResult, open_jsonl_landing, read_jsonl

    src = demo.source("web_events")
    path = tmp_path / "w.jsonl"
    path.write_text('{"event_id": "e1"}\n{not json\n\n[1, 2]\nnull\n{"event_id": "e6", "x": {"y": 1}\n'
                    '{"event_id": "e7"}\n', encoding="utf-8")
    exact = ReadResult()
    slow = [r["source_record_id"] for b in read_jsonl(path, src, exact) for r in b.to_pylist()]
    landing = open_jsonl_landing(con, path, src)
    assert landing is not None
    got = landing.result()
    fast = [r[0] for r in con.execute(
        f"SELECT source_record_id, _line FROM {landing.relation} ORDER BY _line").fetchall()]
    landing.close()
    assert fast == slow == ["e1", "e7"]
    assert (got.records, got.problems) == (exact.records, exact.problems)
    assert [p.line for p in got.problems] == [2, 4, 5, 6]


@pytest.mark.parametrize("block", [64, 1 << 20])
def test_jsonl_scan_in_small_blocks_gives_the_exact_readers_records_and_lines(
        con, demo, tmp_path, monkeypatch, block):
    """The landing scans the file in blocks of whole lines: lines longer than a block,
    CRLF endings, blank lines and a last line without its newline land as the exact
    reader reads them, and NaN or a control escape in any block is seen."""
    from tessera.ingest.formats import ReadResult, jsonl, open_jsonl_landing, read_jsonl

    monkeypatch.setattr(jsonl, "_BLOCK", block)
    src = demo.source("web_events")
    long_url = "/it/" + "x" * 300
    lines = ['{"event_id": "e1", "properties": {"url": "%s"}}' % long_url, "", "  ",
             '{"event_id": "e2"}', "{not json", '{"event_id": "e4", "email": "a@b.it"}']
    path = tmp_path / "w.jsonl"
    path.write_bytes(("\r\n".join(lines[:3]) + "\n" + "\n".join(lines[3:])).encode("utf-8"))
    exact = ReadResult()
    slow = [(r["source_record_id"], r["_line"]) for b in read_jsonl(path, src, exact)
            for r in b.to_pylist()]
    landing = open_jsonl_landing(con, path, src)
    assert landing is not None
    got = landing.result()
    fast = con.execute(f"SELECT source_record_id, _line FROM {landing.relation} ORDER BY _line").fetchall()
    landing.close()
    assert fast == slow == [("e1", 1), ("e2", 4), ("e4", 6)]
    assert (got.records, got.problems) == (exact.records, exact.problems) and got.records == 4
    assert got.controls is False
    for name, extra, expect in (("nan", '{"event_id": "e9", "n": NaN}', None),
                                ("inf", '{"event_id": "e9", "n": -Infinity}', None),
                                ("escape", '{"event_id": "e9", "t": "a\\u0007"}', True)):
        other = tmp_path / f"{name}.jsonl"
        other.write_text("\n".join(lines[3:4] * 20 + [extra] + lines[3:4] * 20) + "\n", encoding="utf-8")
        landing = open_jsonl_landing(con, other, src)
        if expect is None:
            assert landing is None, name
        else:
            assert landing is not None and landing.result().controls is True, name
            landing.close()


def test_jsonl_that_duckdb_cannot_vouch_for_takes_the_exact_reader(con, demo, tmp_path):
    from tessera.ingest.formats import open_jsonl_landing

    src = demo.source("web_events")
    for name, text in {"bom": "\ufeff{\"event_id\": \"e1\"}\n",
                       "lone_cr": '{"event_id": "e1"}\r{"event_id": "e2"}\n',
                       "nbsp": '{"event_id": "e1"}\n\u00a0\n'}.items():
        path = tmp_path / f"{name}.jsonl"
        path.write_text(text, encoding="utf-8")
        assert open_jsonl_landing(con, path, src) is None, name


def test_source_without_natural_id_uses_content_hash(con, demo, landing):
    d = landing / "email"
    d.mkdir()
    (d / "bounces_20261101.csv").write_text(
        "campaign_id,email,bounce_type,bounced_at\n"
        "K1,a@example.it,hard,2026-10-30T08:00:00\n"
        "K1,b@example.it,soft,2026-10-30T08:00:00\n"
        "K1,a@example.it,hard,2026-10-30T08:00:00\n",
        encoding="utf-8")
    f = ingest(con, demo, landing, source="email_bounces").files[0]
    # The identical third line has the same content-id as the first: it supersedes it.
    assert (f.records, f.new, f.rejected) == (3, 2, 1)
    ids = rows(con, "SELECT source_record_id, email FROM raw.email_bounces ORDER BY email")
    assert len({i for i, _ in ids}) == 2 and all(len(i) == 32 for i, _ in ids)


def test_country_and_province_labels_become_codes(con, demo, landing):
    write_crm(landing, "crm_contacts_20261101.csv", [
        crm_row(source_record_id="C1", country="Italia", province="Milano"),
        crm_row(source_record_id="C2", country=" italy ", province="it-rm"),
        crm_row(source_record_id="C3", country="POL", province="mi"),
        crm_row(source_record_id="C4", country="380", province="Valdarno"),
    ], demo)
    ingest(con, demo, landing)
    assert rows(con, "SELECT source_record_id, country, province FROM raw.crm_contacts "
                     "ORDER BY 1") == [
        ("C1", "IT", "MI"), ("C2", "IT", "RM"), ("C3", "PL", "MI"), ("C4", "IT", "Valdarno")]
    assert rejects(con) == []


def test_import_report_counts_rejected_by_reason(con, demo, landing):
    write_crm(landing, "crm_contacts_20261101.csv", [
        crm_row(source_record_id="C1"),
        crm_row(source_record_id="C2", email="bad@", gender="X"),
        crm_row(source_record_id="C3", email="also-bad"),
        crm_row(source_record_id="C4", birth_date="99/99/1999"),
        crm_row(source_record_id="C5"), crm_row(source_record_id="C5"),   # superseded
        crm_row(source_record_id="C6"), crm_row(source_record_id="C6"),
    ], demo)
    ingest(con, demo, landing)
    got = rows(con, "SELECT field, reason, records FROM ops.import_reject_reasons "
                    "WHERE batch_id = 'b1' ORDER BY field, reason")
    assert got == [
        ("birth_date", "not a date in format %d/%m/%Y", 1),
        ("email", "not a valid e-mail address", 2),
        ("gender", "value not allowed (allowed: M, F)", 1),
        ("source_record_id", "superseded by a later record with the same id in this file", 2),
    ]
    from tessera.ingest.load import rejected_by_reason

    by_reason = rejected_by_reason(con, "crm_contacts", "b1")
    assert by_reason["email: not a valid e-mail address"] == 2
    assert list(by_reason)[0] in ("email: not a valid e-mail address",
                                  "source_record_id: superseded by a later record with the "
                                  "same id in this file")


# --------------------------------------------------------------------------- #
# Product lines: a micro belongs to a loaded macro, a product names loaded lines
# --------------------------------------------------------------------------- #
def sendero(table: str, tag: str, records: list[dict]) -> str:
    """A Sendero <sincronizza> file; each record starts on line 6 + 1 + (fields + 2) * i."""
    out = ['<?xml version="1.0" encoding="UTF-8"?>', "<sincronizza>", "<commons>",
           f"<table>{table}</table>", "</commons>", "<righe>"]
    for r in records:
        out += [f"<{tag}>"] + [f"<{k}>{v}</{k}>" for k, v in r.items()] + [f"</{tag}>"]
    return "\n".join(out + ["</righe>", "</sincronizza>"]) + "\n"


def drop(landing: Path, rel: str, text: str) -> None:
    (landing / rel).parent.mkdir(parents=True, exist_ok=True)
    (landing / rel).write_text(text, encoding="utf-8")


def test_product_line_references_are_checked_across_files(con, demo, landing):
    drop(landing, "ecommerce/linee-prodotti-macro_20261101.xml", sendero(
        "linee-prodotti-macro", "linea",
        [{"idLineaProdottoMacro": "3", "descrizione": "Telefonia"},
         {"idLineaProdottoMacro": "4", "descrizione": "Casa"}]))
    drop(landing, "ecommerce/linee-prodotti-micro_20261101.xml", sendero(
        "linee-prodotti-micro", "linea",
        [{"idLineaProdottoMicro": "13", "idLineaProdottoMacro": "3", "descrizione": "Smartphone"},
         {"idLineaProdottoMicro": "14", "idLineaProdottoMacro": "9", "descrizione": "Orfana"},
         {"idLineaProdottoMicro": "15", "idLineaProdottoMacro": "4", "descrizione": "Cucina"}]))
    drop(landing, "ecommerce/prodotti_20261101.xml", sendero("prodotti", "prodotto", [
        {"idProdotto": "345", "descrizione": "IPHONE6", "idLineaProdottoMacro": "3",
         "idLineaProdottoMicro": "13"},
        {"idProdotto": "346", "descrizione": "Pentola", "idLineaProdottoMacro": "3",
         "idLineaProdottoMicro": "15"},                       # 15 belongs to macro 4
        {"idProdotto": "347", "descrizione": "Lampada", "idLineaProdottoMacro": "7",
         "idLineaProdottoMicro": ""},                         # no macro 7
        {"idProdotto": "348", "descrizione": "Cavo", "idLineaProdottoMacro": "",
         "idLineaProdottoMicro": "14"},                       # 14 was refused: unknown
        {"idProdotto": "349", "descrizione": "Senza linea", "idLineaProdottoMacro": "",
         "idLineaProdottoMicro": ""}]))
    for s in ("shop_product_lines_macro", "shop_product_lines_micro", "shop_products"):
        ingest(con, demo, landing, source=s)
    assert rejects(con, "shop_product_lines_micro") == [
        ("ecommerce/linee-prodotti-micro_20261101.xml", 12, "macro_id",
         "not a known macro product line (no such macro line loaded)", "14")]
    assert rejects(con, "shop_products") == [
        ("ecommerce/prodotti_20261101.xml", 13, "line_micro_id",
         "micro product line does not belong to the record's line_macro_id", "346"),
        ("ecommerce/prodotti_20261101.xml", 19, "line_macro_id",
         "not a known macro product line (no such macro line loaded)", "347"),
        ("ecommerce/prodotti_20261101.xml", 25, "line_micro_id",
         "not a known micro product line (no such micro line loaded)", "348")]
    assert rows(con, "SELECT source_record_id FROM raw.shop_products ORDER BY 1") == [("345",), ("349",)]
    assert rows(con, "SELECT source_record_id FROM raw.shop_product_lines_micro ORDER BY 1") == [
        ("13",), ("15",)]
    assert [(r[2], r[3], r[6]) for r in report(con, "shop_products")] == [(5, 2, 3)]


def test_service_line_references_are_checked_like_product_lines(con, demo, landing):
    drop(landing, "ecommerce/linee-servizi-macro_20261101.xml", sendero(
        "linee-servizi-macro", "linea", [{"idLineaServizioMacro": "1", "descrizione": "Logistica"}]))
    drop(landing, "ecommerce/linee-servizi-micro_20261101.xml", sendero(
        "linee-servizi-micro", "linea",
        [{"idLineaServizioMicro": "10", "idLineaServizioMacro": "1", "descrizione": "Consegna"},
         {"idLineaServizioMicro": "11", "idLineaServizioMacro": "2", "descrizione": "Orfana"}]))
    drop(landing, "ecommerce/servizi_20261101.xml", sendero("servizi", "servizio", [
        {"idServizio": "501", "descrizione": "EXPRESS", "idLineaServizioMacro": "1",
         "idLineaServizioMicro": "10"},
        {"idServizio": "502", "descrizione": "??", "idLineaServizioMacro": "1",
         "idLineaServizioMicro": "11"}]))                     # 11 was refused: unknown
    for s in ("shop_service_lines_macro", "shop_service_lines_micro", "shop_services"):
        ingest(con, demo, landing, source=s)
    assert [r[2:4] for r in rejects(con, "shop_service_lines_micro")] == [
        ("macro_id", "not a known macro service line (no such macro line loaded)")]
    assert [r[2:] for r in rejects(con, "shop_services")] == [
        ("line_micro_id", "not a known micro service line (no such micro line loaded)", "502")]
    assert rows(con, "SELECT source_record_id FROM raw.shop_services") == [("501",)]


def test_records_sharing_one_line_are_all_kept(con, demo, landing):
    """A minified XML file has every record on one line: records are told apart by their
    position, not their line (an unchanged or suppressed neighbour must not take the
    others with it, and a duplicate id on the same line is still one record)."""
    def products(recs):
        return sendero("prodotti", "prodotto", recs).replace("\n<prodotto>", "<prodotto>").replace(
            "\n<", "<").replace(">\n", ">", 6)

    first = [{"idProdotto": "1", "descrizione": "A"}, {"idProdotto": "2", "descrizione": "B"}]
    drop(landing, "ecommerce/prodotti_20261101.xml", products(first))
    ingest(con, demo, landing, source="shop_products")
    assert rows(con, "SELECT source_record_id FROM raw.shop_products ORDER BY 1") == [("1",), ("2",)]
    # Re-delivered: 1 unchanged, 2 updated, 3 new, 4 twice (the later one wins), all on one line.
    second = [{"idProdotto": "1", "descrizione": "A"}, {"idProdotto": "2", "descrizione": "B2"},
              {"idProdotto": "3", "descrizione": "C"}, {"idProdotto": "4", "descrizione": "D"},
              {"idProdotto": "4", "descrizione": "D2"}]
    drop(landing, "ecommerce/prodotti_20261102.xml", products(second))
    out = ingest(con, demo, landing, source="shop_products", batch="b2")
    f = [x for x in out.files if x.file.endswith("20261102.xml")][0]
    assert (f.records, f.new, f.updated, f.unchanged, f.rejected) == (5, 2, 1, 1, 1)
    assert rows(con, "SELECT source_record_id, description FROM raw.shop_products "
                     "WHERE _file LIKE '%20261102%' ORDER BY 1") == [("2", "B2"), ("3", "C"), ("4", "D2")]
    assert len({r[0] for r in rows(con, "SELECT _line FROM raw.shop_products WHERE _file LIKE '%20261102%'")}) == 1
