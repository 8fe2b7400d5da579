"""The day's analytics as one static HTML file, for analysts who do not run the server.

Why a file: the Dagster UI links it from the asset's metadata, and it can be mailed or
archived; it is the analytics page itself (same reads, same SVG charts, style inlined),
so the page and the report never disagree. Built from the published snapshot, after it.
It holds counts only (no person is named in the analytics), like the metadata.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

from tessera.engine import Engine
from tessera.web import queries


def report_folder(warehouse: str | Path) -> Path:
    warehouse = Path(warehouse)
    return warehouse.with_name(warehouse.stem + ".reports")


def write_report(engine: Engine, folder: str | Path, day: dt.date) -> dict:
    """Write ``analytics-<day>.html`` into ``folder`` (atomically); returns its path and
    the headline numbers, for the asset's metadata."""
    from tessera.web.app import render_report

    data = queries.analytics(engine)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"analytics-{day.isoformat()}.html"
    work = folder / f".{path.name}.tmp"
    work.write_text(render_report({**data, "day": day}), encoding="utf-8")
    os.replace(work, path)
    return {"path": str(path.resolve()), "bytes": path.stat().st_size,
            "headline": {label: float(value) for label, value in data["headline"]},
            "charts": len(data["charts"]), "tables": len(data["tables"])}
