"""The demo generator's CRM contact export, read and rewritten for a later day: what the
incremental tests feed their days with (a changed person is a new CRM file)."""

from __future__ import annotations

import csv
import datetime as dt
import io
from pathlib import Path


def crm_rows(landing: Path) -> tuple[list[str], list[list[str]]]:
    """The first CRM export's header and its well-formed rows (the planted bad ones left out)."""
    src = sorted((landing / "crm").glob("crm_contacts_*.csv"))[0]
    rows = list(csv.reader(io.StringIO(src.read_text(encoding="cp1252")), delimiter=";"))
    return rows[0], [r for r in rows[1:] if len(r) == len(rows[0]) and r[0]]


def crm_file(landing: Path, day: dt.date, rows) -> None:
    """The day's CRM export: these rows, each stamped as modified that morning."""
    header, _ = crm_rows(landing)
    i_mod = header.index("data_modifica")
    rows = [[*r[:i_mod], f"{day:%d/%m/%Y} 09:00", *r[i_mod + 1:]] for r in rows]
    buf = io.StringIO()
    csv.writer(buf, delimiter=";", lineterminator="\r\n").writerows([header, *rows])
    (landing / "crm" / f"crm_contacts_{day:%Y%m%d}.csv").write_bytes(buf.getvalue().encode("cp1252", "replace"))
