"""The pre-set import workbook: typed, commented headers, ISO id sheets, strings only,
and a filled-in copy (with labels instead of ids) importing cleanly into DuckDB."""
from __future__ import annotations

import datetime as dt
import zipfile
from pathlib import Path

import openpyxl
import pytest

from tessera.cli import main
from tessera.config import load_deployment
from tessera.ingest.load import ingest_source
from tessera.templates import IMPORT_SHEET, REGISTRIES, template_source, write_template
from tessera.warehouse import connect, ensure_warehouse

DEMO = Path(__file__).resolve().parents[2] / "examples" / "demo"


@pytest.fixture(scope="module")
def demo():
    return load_deployment(DEMO)


@pytest.mark.parametrize("registry", REGISTRIES)
def test_template_sheets_headers_comments_and_no_formulas(tmp_path, demo, registry):
    path = write_template(demo, registry, tmp_path / f"{registry}.xlsx")
    wb = openpyxl.load_workbook(path)  # full mode: comments are loaded
    assert wb.sheetnames == [IMPORT_SHEET, "id_paese", "id_regione", "id_provincia", "valori",
                             "istruzioni"]
    ws = wb[IMPORT_SHEET]
    headers = [c.value for c in ws[1]]
    assert all(headers) and all(c.comment is not None for c in ws[1])
    required = {c.value: c.comment.text for c in ws[1]}
    if registry == "b2c_users":
        assert headers[:3] == ["codice", "idgestionale", "nome"]
        assert "loyalty_tier" in headers                      # extended property of the demo
        assert required["codice"].startswith("Alphanumeric") and "REQUIRED" in required["codice"]
        assert required["datanascita"].startswith("Date") and "%d/%m/%Y" in required["datanascita"]
        assert "id_paese" in required["paese"]
    else:
        assert "cannot be imported" in next(iter(required.values()))
    paesi = {r[0]: r for r in wb["id_paese"].iter_rows(min_row=2, values_only=True)}
    assert paesi["IT"][1:] == ("ITA", "380", "Italy", "Italia")
    prov = {r[1]: r for r in wb["id_provincia"].iter_rows(min_row=2, values_only=True) if r[1]}
    assert prov["MI"][0] == "IT-MI" and prov["MI"][3] == "IT-25" and len(prov) >= 100
    regioni = {r[0]: r[2] for r in wb["id_regione"].iter_rows(min_row=2, values_only=True)}
    assert regioni["IT-25"] == "Lombardia"
    # Every cell is a string: no formula, number or date anywhere in the workbook.
    for sheet in wb.worksheets:
        for row in sheet.iter_rows():
            for cell in row:
                assert cell.value is None or cell.data_type == "s", (sheet.title, cell.coordinate)
    with zipfile.ZipFile(path) as zf:
        assert not any(b"<f>" in zf.read(n) for n in zf.namelist() if n.endswith(".xml"))


def test_cells_starting_with_equals_are_written_as_text(tmp_path):
    from tessera.templates import _put

    wb = openpyxl.Workbook()
    _put(wb.active, 1, 1, "=HYPERLINK(\"http://x\")")
    wb.save(tmp_path / "x.xlsx")
    cell = openpyxl.load_workbook(tmp_path / "x.xlsx").active["A1"]
    assert cell.data_type == "s" and cell.value.startswith("=")


def test_filled_template_with_labels_imports_cleanly(tmp_path, demo, capsys):
    out = tmp_path / "landing" / "xlsx_import" / "clienti.xlsx"
    assert main(["--config", str(DEMO), "template", "b2c_users", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "format: xlsx" in printed and "source_record_id: codice" in printed
    wb = openpyxl.load_workbook(out)
    ws = wb[IMPORT_SHEET]
    headers = [c.value for c in ws[1]]
    people = [
        dict(codice="B1", idgestionale="E-9", nome="Niccol\u00f2", cognome="D'Amato, jr. (II)",
             email="n.damato@example.it", telefonocellulare=3471234567, cap="00184",
             citta="Roma", provincia="Roma", paese="Italia", datanascita=dt.datetime(1980, 2, 14),
             sesso="M", consensoemail="si", datamodifica="01/10/2026 10:30", loyalty_tier="gold"),
        dict(codice="B2", nome="Ewa", cognome="W\u00f3jcik", email="ewa@example.pl",
             cap="30-001", citta="Krak\u00f3w", paese="Polonia", datanascita="03/05/1975",
             sesso="F", consensoemail="no"),
        dict(codice="B3", nome="Anna", email="anna@example.it", provincia="IT-MI", paese="ITA"),
    ]
    for i, p in enumerate(people, start=2):
        for j, h in enumerate(headers, start=1):
            if h in p:
                ws.cell(row=i, column=j, value=p[h])
    wb.save(out)

    src = template_source(demo, "b2c_users", "xlsx_import", "crm", "xlsx_import/*.xlsx")
    con = connect(tmp_path / "wh.duckdb")
    ensure_warehouse(con)
    outcome = ingest_source(con, demo, src, tmp_path / "landing", "b1")
    f = outcome.files[0]
    assert (f.status, f.records, f.new, f.rejected) == ("loaded", 3, 3, 0)
    got = con.execute("SELECT source_record_id, erp_id, last_name, mobile, postcode, province, "
                      "country, birth_date, consent_email, loyalty_tier, _line "
                      "FROM raw.xlsx_import ORDER BY _line").fetchall()
    assert got == [
        ("B1", "E-9", "D'Amato, jr. (II)", "3471234567", "00184", "RM", "IT",
         dt.date(1980, 2, 14), True, "gold", 2),
        ("B2", None, "W\u00f3jcik", None, "30-001", None, "PL", dt.date(1975, 5, 3), False, None, 3),
        ("B3", None, None, None, None, "MI", "IT", None, None, None, 4),
    ]
    con.close()
