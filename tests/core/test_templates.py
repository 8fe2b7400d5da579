"""The pre-set import workbook: typed, commented headers, ISO id sheets, strings only,
and a filled-in copy (with labels instead of ids) importing cleanly into DuckDB."""
from __future__ import annotations

import datetime as dt
import zipfile
from pathlib import Path

import openpyxl
import pytest

from tessera.cli import main
from tessera.deployment import load_deployment
from tessera.ingest.load import ingest_source
from tessera.ingest.templates import IMPORT_SHEET, REGISTRIES, template_source, write_template
from tessera.engine.warehouse import connect, ensure_warehouse

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
        assert headers[0] == "codice" and "REQUIRED" in required["codice"]
        name = "azienda" if registry == "b2b_company_users" else "ragionesociale"
        assert "REQUIRED" in required[name]
        if registry != "b2b_company_users":
            assert "check digit" in required["partitaiva"]
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
    from tessera.ingest.templates import _put

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
             email="n.damato@example.it", telefonocellulare="3471234567", cap="00184",
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


def test_filled_b2b_templates_import_with_vat_checked(tmp_path, demo):
    """The three B2B registries round-trip: template -> filled workbook -> raw, with the
    partita IVA checked (a wrong check digit is a reject naming file, line and field)."""
    landing = tmp_path / "landing"
    rows = {
        "b2b_companies": [
            dict(codice="C1", ragionesociale="Rossi Costruzioni S.r.l.", partitaiva="IT 12345678903",
                 paese="Italia", provincia="Torino", citta="Torino", fatturato="1200000,50",
                 dipendenti=42, datamodifica="01/10/2026 10:30"),
            dict(codice="C2", ragionesociale="Bianchi SpA", partitaiva="12345678904", paese="IT"),
            dict(codice="C3", partitaiva="DE123456789", paese="DE"),
        ],
        "b2b_company_users": [
            dict(codice="U1", nome="Anna", cognome="Neri", azienda="ROSSI COSTRUZIONI SRL",
                 email="anna.neri@rossi.example.it", ruolo="acquisti", consensoemail="si"),
            dict(codice="U2", nome="Piotr", cognome="Nowak", azienda="Kowalski Sp. z o.o.",
                 partitaivaazienda="PL5260250995"),
        ],
        "potential_companies": [
            dict(codice="P1", ragionesociale="Verdi Impianti S.a.s.", paese="Italia",
                 partitaiva="01234567897", email="info@verdi.example.it"),
        ],
    }
    got = {}
    for registry, people in rows.items():
        out = landing / registry / "file.xlsx"
        write_template(demo, registry, out)
        wb = openpyxl.load_workbook(out)
        ws = wb[IMPORT_SHEET]
        headers = [c.value for c in ws[1]]
        for i, p in enumerate(people, start=2):
            for j, h in enumerate(headers, start=1):
                if h in p:
                    ws.cell(row=i, column=j, value=p[h])
        wb.save(out)
        src = template_source(demo, registry, registry, "crm", f"{registry}/*.xlsx")
        src = src.model_copy(update={"decimal_separator": ","})
        con = connect(tmp_path / "wh.duckdb")
        ensure_warehouse(con)
        f = ingest_source(con, demo, src, landing, "b1").files[0]
        got[registry] = (f.records, f.new, f.rejected)
        if registry == "b2b_companies":
            assert con.execute("SELECT source_record_id, legal_name, vat_number, country, province, "
                               "revenue, employees FROM raw.b2b_companies").fetchall() == [
                ("C1", "Rossi Costruzioni S.r.l.", "IT 12345678903", "IT", "TO",
                 __import__("decimal").Decimal("1200000.50"), 42)]
            assert con.execute("SELECT file, line, field, reason FROM ops.rejects "
                               "WHERE source = 'b2b_companies' ORDER BY line, field").fetchall() == [
                ("b2b_companies/file.xlsx", 3, "vat_number",
                 "not a valid Italian VAT number (check digit)"),
                ("b2b_companies/file.xlsx", 4, "legal_name", "required field is empty"),
            ]
        if registry == "b2b_company_users":
            assert con.execute("SELECT source_record_id, company_name, company_vat, email, role, "
                               "consent_email FROM raw.b2b_company_users ORDER BY 1").fetchall() == [
                ("U1", "ROSSI COSTRUZIONI SRL", None, "anna.neri@rossi.example.it", "acquisti", True),
                ("U2", "Kowalski Sp. z o.o.", "PL5260250995", None, None, None)]
        con.close()
    assert got == {"b2b_companies": (3, 1, 2), "b2b_company_users": (2, 2, 0),
                   "potential_companies": (1, 1, 0)}
