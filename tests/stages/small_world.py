"""A small deployment written into a temporary folder and run through the real assets.

Many stage tests need the same thing: a few YAML files, a few landing files, one
``dg.materialize`` of the real assets over a throw-away warehouse, and SQL to read what it
wrote. They differ only in the YAML and the files, so that is all a test writes."""

from __future__ import annotations

import html as html_lib
import re
import textwrap
from pathlib import Path

import dagster as dg

from pipelines.definitions import build_assets, build_resources
from tessera.deployment import load_deployment
from tessera.engine.warehouse import connect


def crm_people(columns: str, path: str = "crm/people_*.csv") -> str:
    """The YAML of the usual CRM contact source (semicolon CSV, UTF-8) with these columns,
    as one item of a ``sources:`` list."""
    return (f"  - name: crm_people\n    entity: contact\n    node: crm\n    format: csv\n"
            f"    path: \"{path}\"\n    csv: {{delimiter: \";\", encoding: utf-8}}\n"
            f"    columns: {{{columns}}}\n")


CARD_GROUPS = ("ingestion", "staging", "identity", "consent", "golden", "marts")


def table_cells(html: str, title: str) -> list[list[str]]:
    """The rows of the web page's table titled ``title``, as the texts of their cells."""
    section = html.split(f'data-title="{title}"', 1)[1].split("</section>", 1)[0]
    body = section.split("<tbody>", 1)[1] if "<tbody>" in section else ""
    return [[html_lib.unescape(re.sub(r"<[^>]+>", "", c).strip())
             for c in re.findall(r"<td>(.*?)</td>", row, re.S)]
            for row in re.findall(r"<tr>(.*?)</tr>", body, re.S)]


class SmallWorld:
    """``config`` maps a file name (``tessera.yaml``) to its text; ``files`` maps a landing
    path (``crm/people_1.csv``) to its text, dedented."""

    def __init__(self, root: Path, config: dict[str, str], files: dict[str, str] | None = None):
        self.root, self.config = root, root / "config"
        self.config.mkdir()
        for name, text in config.items():
            (self.config / name).write_text(text)
        self.landing, self.warehouse, self.feeds = root / "landing", root / "wh.duckdb", root / "feeds"
        self.instance = dg.DagsterInstance.ephemeral()
        for rel, text in (files or {}).items():
            self.drop(rel, text)

    def drop(self, rel: str, text: str, encoding: str = "utf-8") -> None:
        path = self.landing / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(textwrap.dedent(text).encode(encoding))

    def materialize(self, day: str | None = None, groups: tuple[str, ...] | None = None,
                    without: tuple[dg.AssetKey, ...] = ()):
        """One run of the real assets (all of them, or these groups less ``without``), for a
        partition day when given; fails the test when the run fails."""
        self.deployment = load_deployment(self.config)
        assets, checks = build_assets(self.deployment)
        selection = dg.AssetSelection.groups(*groups) if groups else None
        if without:
            selection = (selection or dg.AssetSelection.all()) - dg.AssetSelection.assets(*without)
        result = dg.materialize(
            [*assets, *checks], partition_key=day, selection=selection,
            resources=build_resources(self.warehouse, self.landing, self.feeds,
                                      deployment=self.deployment),
            instance=self.instance)
        assert result.success
        return result

    def materialize_card(self):
        """Everything up to the contact card, unpartitioned (the day's contact changes are a
        daily partition, so they are left out); returns the deployment and an open connection."""
        self.materialize(groups=CARD_GROUPS, without=(dg.AssetKey(["marts", "contact_changes"]),))
        return self.deployment, connect(self.warehouse)

    def query(self, sql: str, params=None):
        con = connect(self.warehouse)
        try:
            return con.execute(sql, params or []).fetchall()
        finally:
            con.close()

    def columns(self, table: str) -> list[str]:
        schema, name = table.split(".")
        return [r[0] for r in self.query(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = ? "
            "AND table_name = ? ORDER BY ordinal_position", [schema, name])]
