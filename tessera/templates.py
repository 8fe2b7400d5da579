"""The pre-set import workbook of each registry ([Sendero] "file .xls pre-impostato").

``tessera template REGISTRY --out FILE.xlsx`` writes:

- ``file_importazione``: the import sheet. Row 1 holds the headers; each header carries a
  comment with its type, whether it is required, its format and where its values come
  from. Every column is formatted as Text, so that postcodes and phones typed into it
  keep their leading zeros.
- ``id_paese``, ``id_regione``, ``id_provincia``: ISO 3166-1 countries and ISO 3166-2
  subdivisions (pycountry), with the Italian province sigle. Tessera's ids *are* these
  codes, and ingestion also accepts the names (see ``tessera.lookups``), so nobody has to
  look ids up as Sendero's users did.
- ``valori``: the deployment's lookup values (allowed values of the contract's fields,
  yes/no words, extended properties).
- ``istruzioni``: how to fill in and load the workbook.

Every cell is written as a string, never as a formula (RELIABILITY.md rule 8: openpyxl
writes any text starting with ``=`` as a formula).

Only the ``b2c_users`` registry can be imported today: it maps onto the ``contact``
entity. The three B2B registries are generated from the Sendero field lists, so that
their files can be prepared, but their entities (company, company user, potential
company) are not built yet.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tessera.config import Deployment, Source, XlsxLayout
from tessera.contracts import FieldSpec, entity_contracts
from tessera.lookups import countries, subdivisions

IMPORT_SHEET = "file_importazione"
_TYPE_WORDS = {
    "string": "Alphanumeric (text)", "integer": "Numeric (whole number)",
    "decimal": "Numeric (decimal number, . or ,)", "date": "Date", "timestamp": "Date and time",
    "boolean": "Yes/no (si/no, yes/no, 1/0, true/false)",
}


@dataclass(frozen=True)
class TemplateColumn:
    header: str
    field: str | None  # canonical field of the registry's entity; None: not importable yet
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
]

# B2B registries: Sendero's field lists; not importable until their entities exist.
_B2B = {
    "b2b_companies": [
        ("ragionesociale", True), ("idgestionale", False), ("email", False), ("paese", True),
        ("regione", False), ("provincia", False), ("settoremacro", False),
        ("settoremicro", False), ("fontemacro", False), ("fontemicro", False),
        ("tipologia", False), ("fatturato", False), ("dipendenti", False),
    ],
    "b2b_company_users": [
        ("nome", True), ("cognome", True), ("azienda", True), ("email", False),
        ("idgestionale", False), ("ruolo", False), ("titolodistudio", False),
        ("settoremacro", False), ("settoremicro", False),
    ],
    "potential_companies": [
        ("ragionesociale", True), ("paese", True), ("regione", False), ("provincia", False),
        ("settoremacro", False), ("settoremicro", False), ("fontemacro", False),
        ("fontemicro", False), ("email", False),
    ],
}
_B2B_NOTES = {
    "azienda": "must equal the ragionesociale of the company, loaded first",
    "paese": "ISO code (IT) or name: see id_paese", "regione": "ISO code (IT-25): see id_regione",
    "provincia": "sigla (MI), name or ISO code: see id_provincia",
    "fatturato": "numeric", "dipendenti": "numeric",
}

REGISTRIES = ("b2c_users", "b2b_companies", "b2b_company_users", "potential_companies")


def registry_columns(deployment: Deployment, registry: str) -> list[TemplateColumn]:
    if registry == "b2c_users":
        fields = entity_contracts()["contact"].fields
        cols = []
        for header, field, note in _B2C:
            spec: FieldSpec = fields[field]
            cols.append(TemplateColumn(header, field, spec.type, spec.required,
                                       note or spec.description))
        for prop in deployment.properties_of("contact"):
            cols.append(TemplateColumn(prop.name, prop.name, prop.type, False,
                                       prop.description or "extended property"))
        return cols
    if registry in _B2B:
        return [TemplateColumn(h, None, "integer" if h in ("fatturato", "dipendenti") else "string",
                               req, _B2B_NOTES.get(h, "")) for h, req in _B2B[registry]]
    raise ValueError(f"unknown registry '{registry}' (one of {', '.join(REGISTRIES)})")


def template_source(deployment: Deployment, registry: str, name: str, node: str,
                    path: str) -> Source:
    """The xlsx source that loads filled-in templates of ``registry``."""
    if registry != "b2c_users":
        raise ValueError(f"registry '{registry}' cannot be imported yet (no entity)")
    cols = registry_columns(deployment, registry)
    return Source(name=name, entity="contact", node=node, format="xlsx", path=path,
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
    if registry == "b2c_users":
        for col in cols:
            spec = entity_contracts()["contact"].fields.get(col.field or "")
            if spec is not None and spec.allowed:
                values += [[col.header, v] for v in spec.allowed]
            if col.type == "boolean":
                values += [[col.header, v] for v in ("si", "no")]
    # The deployment's settings tables (lookups.yaml), sales-channel macros included:
    # an id or its label may be typed.
    names = sorted(set(deployment.lookups) | {"sales_channel"})
    for name in names:
        table = deployment.lookup_table(name)
        values += [[f"{name}.macro", v.id, v.label] for v in table.macro]
        values += [[f"{name}.micro", v.id, v.label, v.macro] for v in table.micro]
    _sheet(wb, "valori", ["campo", "valore", "etichetta", "macro"], values)
    importable = registry == "b2c_users"
    _sheet(wb, "istruzioni", ["istruzioni"], [[t] for t in (
        f"Registry: {registry} (deployment {deployment.deployment}).",
        f"Fill in the sheet {IMPORT_SHEET}: one person per row, from row 2; keep row 1 as it is.",
        "Each header has a comment with its type and whether it is required.",
        "Type values, do not paste formulas: a formula cell is rejected (formulas are never evaluated).",
        "Countries, regions and provinces: the ISO code or the name (see the id_ sheets).",
        "Dates: a date cell, or text in the format given in the header comment.",
        "Commas, semicolons, quotes and brackets are allowed; there is no size limit.",
        ("Save as .xlsx into the landing folder of the xlsx source printed by "
         "`tessera template`." if importable else
         "This registry cannot be imported by Tessera yet (no B2B entities)."),
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
