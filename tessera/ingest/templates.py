"""The pre-set import workbook of each registry ([Sendero] "file .xls pre-impostato").

``tessera template REGISTRY --out FILE.xlsx`` writes:

- ``file_importazione``: the import sheet. Row 1 holds the headers; each header carries a
  comment with its type, whether it is required, its format and where its values come
  from. Every column is formatted as Text, so that postcodes and phones typed into it
  keep their leading zeros.
- ``id_paese``, ``id_regione``, ``id_provincia``: ISO 3166-1 countries and ISO 3166-2
  subdivisions (pycountry), with the Italian province sigle. Tessera's ids *are* these
  codes, and ingestion also accepts the names (see ``tessera.ingest.lookups``), so nobody has to
  look ids up as Sendero's users did.
- ``valori``: the deployment's lookup values (allowed values of the contract's fields,
  yes/no words, extended properties).
- ``istruzioni``: how to fill in and load the workbook.

Every cell is written as a string, never as a formula (RELIABILITY.md rule 8: openpyxl
writes any text starting with ``=`` as a formula).

Every registry can be imported: ``b2c_users`` maps onto the ``contact`` entity,
``b2b_companies`` onto ``company``, ``b2b_company_users`` onto ``company_user`` and
``potential_companies`` onto ``potential_company`` (Sendero's field lists, plus a record
id, the city and the VAT number). Load companies before their users.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tessera.settings import PREDEFINED_MACROS, Deployment, Source, XlsxLayout
from tessera.contracts import FieldSpec, entity_contracts
from tessera.ingest.lookups import countries, subdivisions

IMPORT_SHEET = "file_importazione"
_TYPE_WORDS = {
    "string": "Alphanumeric (text)", "integer": "Numeric (whole number)",
    "decimal": "Numeric (decimal number, . or ,)", "date": "Date", "timestamp": "Date and time",
    "boolean": "Yes/no (si/no, yes/no, 1/0, true/false)",
}


@dataclass(frozen=True)
class TemplateColumn:
    header: str
    field: str | None  # canonical field of the registry's entity
    type: str = "string"
    required: bool = False
    note: str = ""


# B2C users: header (Sendero's names) -> contact field.
_B2C = [
    ("codice", "source_record_id", "your id of this person (any text, unique in your file)"),
    ("idgestionale", "erp_id", "the id in your ERP: the first sync key, then the e-mail"),
    ("nome", "first_name", ""), ("cognome", "last_name", ""),
    ("email", "email", "e.g. name@example.it"),
    ("telefonocellulare", "mobile", "with or without +39; no letters"),
    ("telefonofisso", "phone", ""),
    ("indirizzo", "address", ""), ("cap", "postcode", "kept as text: leading zeros stay"),
    ("citta", "city", ""),
    ("provincia", "province", "sigla (MI), name (Milano) or ISO code (IT-MI): see id_provincia"),
    ("paese", "country", "ISO code (IT), name (Italia, Italy) or ISO number: see id_paese"),
    ("datanascita", "birth_date", ""), ("sesso", "gender", "see valori"),
    ("codicefiscale", "tax_code", ""),
    ("consensoemail", "consent_email", ""), ("consensosms", "consent_sms", ""),
    ("datamodifica", "updated_at", "when the record last changed"),
    # Sendero's B2C settings fields (web service setSenderoAnagraficaB2C): id or label
    ("professione", "profession", "id or label of profession.macro: see valori"),
    ("statocivile", "marital_status", "id or label of marital_status.macro: see valori"),
    ("titolodistudio", "education", "id or label of education.macro: see valori"),
    ("tipologia", "user_type", "id or label of user_type.macro: see valori"),
    *[pair for i in range(1, 11) for pair in (
        (f"intmacro{i}", f"interest_macro_{i}", "id or label of interest.macro: see valori"),
        (f"intmicro{i}", f"interest_micro_{i}", f"id or label of interest.micro, under intmacro{i}"))],
    *[pair for i in range(1, 6) for pair in (
        (f"fontemacro{i}", f"source_macro_{i}", "id or label of a predefined source.macro: see valori"),
        (f"fontemicro{i}", f"source_micro_{i}", f"id or label of source.micro, under fontemacro{i}"))],
    ("tipologiafonteformpermanente", "permanent_form_source_type",
     "id or label of permanent_form_source_type.macro: see valori"),
    ("dettaglioregistrazione", "registration_detail",
     "id or label of registration_detail.macro: see valori"),
]

# B2B registries: Sendero's field lists (plus codice, citta and the VAT number, which
# Tessera needs to tell records and companies apart): header -> field, note.
_B2B = {
    "b2b_companies": ("company", [
        ("codice", "source_record_id", "your id of this company (any text, unique in your file)"),
        ("ragionesociale", "legal_name", "legal name, e.g. Rossi Costruzioni S.r.l."),
        ("partitaiva", "vat_number", "partita IVA, 11 digits (IT prefix allowed): the check digit is verified"),
        ("idgestionale", "erp_id", ""), ("email", "email", ""),
        ("indirizzo", "address", ""), ("cap", "postcode", "kept as text: leading zeros stay"),
        ("citta", "city", ""),
        ("paese", "country", "ISO code (IT) or name: see id_paese"),
        ("regione", "region", "ISO code (IT-25): see id_regione"),
        ("provincia", "province", "sigla (MI), name or ISO code: see id_provincia"),
        ("settoremacro", "sector_macro", "id or label of sector.macro: see valori"),
        ("settoremicro", "sector_micro", "id or label of sector.micro: see valori"),
        ("fontemacro", "source_macro", "id or label of a predefined source.macro: see valori"),
        ("fontemicro", "source_micro", "id or label of source.micro, under fontemacro: see valori"),
        ("tipologia", "company_type", ""), ("fatturato", "revenue", "numeric"),
        ("dipendenti", "employees", "numeric"),
        ("datamodifica", "updated_at", "when the record last changed"),
    ]),
    "b2b_company_users": ("company_user", [
        ("codice", "source_record_id", "your id of this person (any text, unique in your file)"),
        ("nome", "first_name", ""), ("cognome", "last_name", ""),
        ("azienda", "company_name", "the ragionesociale of the company, loaded first "
                                    "(case, punctuation and legal forms such as S.r.l. do not matter)"),
        ("partitaivaazienda", "company_vat", "the company's partita IVA, if known: it links first"),
        ("email", "email", ""), ("telefonocellulare", "mobile", ""),
        ("idgestionale", "erp_id", ""), ("ruolo", "role", ""),
        ("titolodistudio", "education", "id or label of education.macro: see valori"),
        ("settoremacro", "sector_macro", "id or label of sector.macro: see valori"),
        ("settoremicro", "sector_micro", "id or label of sector.micro: see valori"),
        ("consensoemail", "consent_email", ""), ("consensosms", "consent_sms", ""),
        ("datamodifica", "updated_at", "when the record last changed"),
    ]),
    "potential_companies": ("potential_company", [
        ("codice", "source_record_id", "the list's id of this company"),
        ("ragionesociale", "legal_name", ""),
        ("partitaiva", "vat_number", "partita IVA: the check digit is verified"),
        ("paese", "country", "ISO code (IT) or name: see id_paese"),
        ("regione", "region", "ISO code (IT-25): see id_regione"),
        ("provincia", "province", "sigla (MI), name or ISO code: see id_provincia"),
        ("citta", "city", ""),
        ("settoremacro", "sector_macro", "id or label of sector.macro: see valori"),
        ("settoremicro", "sector_micro", "id or label of sector.micro: see valori"),
        ("fontemacro", "source_macro", "id or label of a predefined source.macro: see valori"),
        ("fontemicro", "source_micro", "id or label of source.micro, under fontemacro: see valori"),
        ("email", "email", ""),
    ]),
}

REGISTRIES = ("b2c_users", "b2b_companies", "b2b_company_users", "potential_companies")
REGISTRY_ENTITY = {"b2c_users": "contact", **{r: e for r, (e, _) in _B2B.items()}}


def registry_columns(deployment: Deployment, registry: str) -> list[TemplateColumn]:
    if registry not in REGISTRY_ENTITY:
        raise ValueError(f"unknown registry '{registry}' (one of {', '.join(REGISTRIES)})")
    entity = REGISTRY_ENTITY[registry]
    fields = entity_contracts()[entity].fields
    rows = _B2C if registry == "b2c_users" else _B2B[registry][1]
    cols = []
    off = deployment.switched_off_of(entity)
    for header, field, note in rows:
        if field in off:  # switched off: not in the template, the import or the export
            continue
        spec: FieldSpec = fields[field]
        cols.append(TemplateColumn(header, field, spec.type, spec.required, note or spec.description))
    for prop in deployment.properties_of(entity):
        note = prop.description or "extended property"
        if prop.table:
            note += f" (id or label of {prop.table}.macro: see valori)"
        cols.append(TemplateColumn(prop.name, prop.name, prop.field_type, prop.required, note))
    return cols


def template_source(deployment: Deployment, registry: str, name: str, node: str,
                    path: str) -> Source:
    """The xlsx source that loads filled-in templates of ``registry``."""
    cols = registry_columns(deployment, registry)
    return Source(name=name, entity=REGISTRY_ENTITY[registry], node=node, format="xlsx", path=path,
                  xlsx=XlsxLayout(sheet=IMPORT_SHEET, header_row=1),
                  date_format="%d/%m/%Y", timestamp_format="%d/%m/%Y %H:%M",
                  columns={c.field: c.header for c in cols if c.field})


def _comment(col: TemplateColumn, date_format: str, ts_format: str) -> str:
    kind = _TYPE_WORDS[col.type]
    if col.type == "date":
        kind += f" (a date cell, or text as {date_format})"
    elif col.type == "timestamp":
        kind += f" (a date cell, or text as {ts_format})"
    lines = [kind, "REQUIRED" if col.required else "optional"]
    if col.note:
        lines.append(col.note)
    if col.field is None:
        lines.append("(this registry cannot be imported by Tessera yet)")
    return "\n".join(lines)


def _put(ws, row: int, col: int, value) -> None:
    """A string cell, never a formula, whatever the text starts with."""
    cell = ws.cell(row=row, column=col)
    cell.value = "" if value is None else str(value)
    cell.data_type = "s"


def _sheet(wb, title: str, header: list[str], rows) -> None:
    from openpyxl.styles import Font

    ws = wb.create_sheet(title)
    for j, h in enumerate(header, start=1):
        _put(ws, 1, j, h)
        ws.cell(row=1, column=j).font = Font(bold=True)
    for i, r in enumerate(rows, start=2):
        for j, v in enumerate(r, start=1):
            _put(ws, i, j, v)
    ws.freeze_panes = "A2"


def write_template(deployment: Deployment, registry: str, out: Path) -> Path:
    """Write the pre-set import workbook of ``registry`` to ``out`` (atomically)."""
    import os
    import tempfile

    from openpyxl import Workbook
    from openpyxl.comments import Comment
    from openpyxl.styles import Font
    from openpyxl.utils import get_column_letter

    cols = registry_columns(deployment, registry)
    date_format, ts_format = "%d/%m/%Y", "%d/%m/%Y %H:%M"
    wb = Workbook()
    ws = wb.active
    ws.title = IMPORT_SHEET
    for j, col in enumerate(cols, start=1):
        _put(ws, 1, j, col.header)
        cell = ws.cell(row=1, column=j)
        cell.font = Font(bold=True)
        comment = Comment(_comment(col, date_format, ts_format), "Tessera")
        comment.width, comment.height = 300, 120
        cell.comment = comment
        letter = get_column_letter(j)
        ws.column_dimensions[letter].width = max(12, len(col.header) + 2)
        # Text format: what people type stays text (00184 keeps its zero).
        ws.column_dimensions[letter].number_format = "@"
    ws.freeze_panes = "A2"

    _sheet(wb, "id_paese", ["id", "alpha3", "numeric", "name", "nome"],
           ([c["alpha2"], c["alpha3"], c["numeric"], c["name"], c["name_it"]] for c in countries()))
    subs = subdivisions()
    _sheet(wb, "id_regione", ["id", "paese", "name", "type"],
           ([s["code"], s["country"], s["name"], s["type"]] for s in subs if not s["parent"]))
    _sheet(wb, "id_provincia", ["id", "sigla", "paese", "regione", "name", "type"],
           ([s["code"], s["sigla"], s["country"], s["parent"], s["name"], s["type"]]
            for s in subs if s["parent"] or s["sigla"]))
    values = []
    contract = entity_contracts()[REGISTRY_ENTITY[registry]]
    for col in cols:
        spec = contract.fields.get(col.field or "")
        if spec is not None and spec.allowed:
            values += [[col.header, v] for v in spec.allowed]
        if col.type == "boolean":
            values += [[col.header, v] for v in ("si", "no")]
    # The deployment's settings tables (lookups.yaml), the predefined sales-channel and
    # source macros included: an id or its label may be typed.
    names = sorted(set(deployment.lookups) | set(PREDEFINED_MACROS))
    for name in names:
        table = deployment.lookup_table(name)
        values += [[f"{name}.macro", v.id, v.label] for v in table.macro]
        values += [[f"{name}.micro", v.id, v.label, v.macro] for v in table.micro]
    _sheet(wb, "valori", ["campo", "valore", "etichetta", "macro"], values)
    _sheet(wb, "istruzioni", ["istruzioni"], [[t] for t in (
        f"Registry: {registry} (deployment {deployment.deployment}).",
        f"Fill in the sheet {IMPORT_SHEET}: one record per row, from row 2; keep row 1 as it is.",
        "Each header has a comment with its type and whether it is required.",
        "Type values, do not paste formulas: a formula cell is rejected (formulas are never evaluated).",
        "Countries, regions and provinces: the ISO code or the name (see the id_ sheets).",
        "Dates: a date cell, or text in the format given in the header comment.",
        "Commas, semicolons, quotes and brackets are allowed; there is no size limit.",
        "Save as .xlsx into the landing folder of the xlsx source printed by `tessera template`.",
        *(("B2B: load the companies workbook before the users workbook; a user whose company "
           "is not found is reported (ops.unlinked_company_users), never dropped.",)
          if registry.startswith("b2b") else ()),
    )])
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
    os.close(fd)
    try:
        wb.save(tmp)
        os.chmod(tmp, 0o644)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return out


def source_yaml(source: Source) -> str:
    """The sources.yaml entry for ``source``, to paste into a configuration."""
    lines = [f"  - name: {source.name}", f"    entity: {source.entity}", f"    node: {source.node}",
             "    format: xlsx", f'    path: "{source.path}"',
             f"    xlsx: {{sheet: {source.xlsx.sheet}, header_row: {source.xlsx.header_row}}}",
             f'    date_format: "{source.date_format}"',
             f'    timestamp_format: "{source.timestamp_format}"', "    columns:"]
    lines += [f"      {k}: {v}" for k, v in source.columns.items()]
    return "\n".join(lines) + "\n"
