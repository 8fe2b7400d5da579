"""Sample CRM annotations: notes and tasks on the CRM's contacts (``tessera generate``).

Written next to the CRM export (``crm/crm_notes_YYYYMMDD.csv`` and
``crm/crm_tasks_YYYYMMDD.csv``, UTF-8, ``;``), each row naming its contact by CRM id, as
the CRM's own annotation exports do. About one CRM contact in five has notes (some of
them private to their author) and one in eight has a task; one planted bad row in each
file (a note without its date, a task with an unknown status) is listed in the truth.
"""

from __future__ import annotations

import csv
import io
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

AUTHORS = ["g.rossi", "m.bianchi", "a.kowalska", "l.ferrari"]
NOTE_TEXTS = [
    "Chiamato: interessato al catalogo autunno", "Chiede preventivo per ordine multiplo",
    "Preferisce essere contattato il mattino", "Reclamo per consegna in ritardo, risolto",
    "Visto in negozio a Milano, chiede novità", "Rozmowa telefoniczna: prosi o ofertę",
]
TASK_TITLES = ["Richiamare per preventivo", "Inviare catalogo", "Follow-up reclamo",
               "Proporre rinnovo fedeltà", "Zadzwonić w sprawie oferty"]


def write_csv(root: Path, rel: str, header: list[str], rows: list[list[str]], sep: str = ";") -> int:
    """One landing CSV (UTF-8, ``sep``-separated, header first); returns its row count."""
    buf = io.StringIO(newline="")
    w = csv.writer(buf, delimiter=sep, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buf.getvalue().encode("utf-8"))
    return len(rows)


def generate_annotations(root: Path, crm_ids: list[str], seed: int, ymd: str, as_of_s: int,
                         bad_rows: list) -> tuple[list[str], dict[str, int]]:
    rng = np.random.default_rng([seed, 7])
    fmt = "%d/%m/%Y %H:%M"
    ts = lambda s: datetime.fromtimestamp(int(s), tz=timezone.utc).strftime(fmt)  # noqa: E731
    notes, tasks = [], []
    for rid in crm_ids:
        if rng.random() < 0.20:
            for _ in range(int(rng.integers(1, 4))):
                notes.append([f"N{len(notes) + 1:07d}", rid, NOTE_TEXTS[int(rng.integers(0, len(NOTE_TEXTS)))],
                              "private" if rng.random() < 0.2 else "public",
                              AUTHORS[int(rng.integers(0, len(AUTHORS)))],
                              ts(as_of_s - int(rng.integers(3600, 400 * 86400)))])
        if rng.random() < 0.125:
            created = as_of_s - int(rng.integers(86400, 60 * 86400))
            status = "done" if rng.random() < 0.4 else "open"
            due = created + int(rng.integers(1, 45)) * 86400
            tasks.append([f"T{len(tasks) + 1:07d}", rid, TASK_TITLES[int(rng.integers(0, len(TASK_TITLES)))],
                          AUTHORS[int(rng.integers(0, len(AUTHORS)))], ts(due), ts(due - 86400), status,
                          ts(created), ts(due) if status == "done" else ""])
    nrel, trel = f"crm/crm_notes_{ymd}.csv", f"crm/crm_tasks_{ymd}.csv"
    if notes:
        k = int(rng.integers(0, len(notes)))
        notes.insert(k, [f"N9{k:06d}", notes[k][1], "Nota senza data", "public", AUTHORS[0], ""])
        bad_rows.append((nrel, k + 2, "created_at", "missing_required"))
    if tasks:
        k = int(rng.integers(0, len(tasks)))
        tasks.insert(k, [f"T9{k:06d}", tasks[k][1], "Compito", AUTHORS[0], "", "", "maybe",
                         ts(as_of_s - 86400), ""])
        bad_rows.append((trel, k + 2, "status", "not_allowed"))
    counts = {
        "crm_notes": write_csv(root, nrel, ["id_nota", "id_contatto", "testo", "visibilita", "autore", "data"], notes),
        "crm_tasks": write_csv(root, trel, ["id_attivita", "id_contatto", "titolo", "assegnatario", "scadenza",
                                         "promemoria", "stato", "creata", "completata"], tasks),
    }
    return [nrel, trel], counts
