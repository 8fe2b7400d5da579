"""Trees of nodes with view nodes ([Contacthub]): each declared view merges the nodes under
it with per-level priority, then recency, then completeness, with per-field overrides,
into golden records of its own; the main view (``tree.priority``) stays ``core.customers``.

Two views over the same sources give different golden values by design; a person with no
record under a view has no golden record in it. Materialised with Dagster over small files."""
from __future__ import annotations

import textwrap
from pathlib import Path

import dagster as dg
import pytest

from pipelines.definitions import build_assets, build_resources
from tessera.deployment import load_deployment
from tessera.engine.warehouse import connect
from tessera.settings.sources import View
from tessera.yamlfile import ConfigError

TESSERA_YAML = """
deployment: views
nodes: [{name: erp}, {name: crm_it}, {name: crm_pl}, {name: shop}]
tree:
  priority: [erp, crm_it, crm_pl, shop]
  views:
    # the brand's view: its CRMs first (Italy before Poland), then the ERP; no shop data
    - name: brand
      children:
        - {children: [crm_it, crm_pl]}
        - erp
    # the country view: the ERP and the Italian CRM at one level (the newer record wins),
    # the shop below them; the city always from the newest record
    - name: italy
      children:
        - {equal: true, children: [erp, crm_it]}
        - shop
      field_rules: {city: most_recent}
"""

SOURCES_YAML = """
sources:
  - name: erp_people
    entity: contact
    node: erp
    format: csv
    path: "erp/people_*.csv"
    csv: {delimiter: ";", encoding: utf-8}
    timestamp_format: "%Y-%m-%d"
    columns: {source_record_id: id, first_name: nome, last_name: cognome, email: email, city: citta, updated_at: agg}
  - name: crm_it_people
    entity: contact
    node: crm_it
    format: csv
    path: "crm_it/people_*.csv"
    csv: {delimiter: ";", encoding: utf-8}
    timestamp_format: "%Y-%m-%d"
    columns: {source_record_id: id, first_name: nome, last_name: cognome, email: email, city: citta, updated_at: agg}
  - name: crm_pl_people
    entity: contact
    node: crm_pl
    format: csv
    path: "crm_pl/people_*.csv"
    csv: {delimiter: ";", encoding: utf-8}
    timestamp_format: "%Y-%m-%d"
    columns: {source_record_id: id, first_name: nome, last_name: cognome, email: email, city: citta, updated_at: agg}
  - name: shop_people
    entity: contact
    node: shop
    format: csv
    path: "shop/people_*.csv"
    csv: {delimiter: ";", encoding: utf-8}
    timestamp_format: "%Y-%m-%d"
    columns: {source_record_id: id, first_name: nome, last_name: cognome, email: email, city: citta, updated_at: agg}
"""

FEEDS_YAML = """
feeds:
  - {name: brand_people, view: brand, channel: none, format: csv, fields: [customer_id, first_name, city]}
  - {name: main_people, channel: none, format: csv, fields: [customer_id, first_name, city]}
"""

SEGMENTS_YAML = """
segments:
  - {name: brand_annalisas, view: brand, rule: {field: first_name, op: "=", value: Annalisa}}
  - {name: main_annalisas, rule: {field: first_name, op: "=", value: Annalisa}}
"""

FILES = {
    # Anna: the ERP is older, the Italian CRM newer, with another spelling and city
    "erp/people_1.csv": """\
id;nome;cognome;email;citta;agg
E1;Anna;Rossi;anna@x.it;Milano;2026-01-01
E2;Bruno;Verdi;bruno@x.it;;2026-05-01
""",
    "crm_it/people_1.csv": """\
id;nome;cognome;email;citta;agg
C1;Annalisa;Rossi;anna@x.it;Monza;2026-06-01
C2;Brunetto;Verdi;bruno@x.it;Torino;2026-02-01
""",
    "crm_pl/people_1.csv": """\
id;nome;cognome;email;citta;agg
P1;Anka;Rossi;anna@x.it;Kraków;2026-09-01
""",
    # Carla is only in the shop: not in the brand's view
    "shop/people_1.csv": """\
id;nome;cognome;email;citta;agg
S1;Carla;Neri;carla@x.it;Roma;2026-03-01
S2;Bruna;Verdi;bruno@x.it;Napoli;2026-10-01
""",
}


class World:
    def __init__(self, root: Path):
        self.root = root
        self.config = root / "config"
        self.config.mkdir()
        (self.config / "tessera.yaml").write_text(TESSERA_YAML)
        (self.config / "sources.yaml").write_text(SOURCES_YAML)
        (self.config / "feeds.yaml").write_text(FEEDS_YAML)
        (self.config / "segments.yaml").write_text(SEGMENTS_YAML)
        self.landing = root / "landing"
        self.warehouse = root / "wh.duckdb"
        for rel, text in FILES.items():
            path = self.landing / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(textwrap.dedent(text), encoding="utf-8")

    def materialize(self):
        assets, checks = build_assets(load_deployment(self.config))
        result = dg.materialize([*assets, *checks], partition_key="2026-11-01",
                                resources=build_resources(self.warehouse, self.landing, self.root / "feeds"),
                                instance=dg.DagsterInstance.ephemeral())
        assert result.success
        return result

    def golden(self, table: str) -> dict[str, tuple]:
        con = connect(self.warehouse)
        try:
            return {r[0]: r[1:] for r in con.execute(
                f"SELECT email, first_name, city, source_count FROM {table} ORDER BY email").fetchall()}
        finally:
            con.close()

    def lineage(self, table: str, field: str, email: str) -> tuple:
        con = connect(self.warehouse)
        try:
            return con.execute(
                f"SELECT l.node, l.source_record_id, l.rule FROM {table} l JOIN core.customers c "
                "USING (customer_id) WHERE l.field = ? AND c.email = ?", [field, email]).fetchone()
        finally:
            con.close()


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> World:
    w = World(tmp_path_factory.mktemp("views"))
    w.result = w.materialize()
    return w


def test_per_level_ranks():
    v = View.model_validate({"name": "v", "children": [
        "crm", {"equal": True, "children": ["erp", "web"]}, {"children": ["a", "b"]}, "z"]})
    # crm; then erp and web at one level; then the group (a before b); then z
    assert v.node_rank() == {"crm": 1, "erp": 2, "web": 2, "a": 3, "b": 4, "z": 5}
    with pytest.raises(ValueError, match="children of an equal level are nodes"):
        View.model_validate({"name": "v", "equal": True, "children": ["a", {"children": ["b"]}]})


def test_the_main_view_is_the_flat_tree(world):
    assert world.golden("core.customers") == {
        "anna@x.it": ("Anna", "Milano", 3),
        "bruno@x.it": ("Bruno", "Torino", 3),
        "carla@x.it": ("Carla", "Roma", 1),
    }


def test_two_views_give_different_golden_values_by_design(world):
    brand = world.golden("views.brand_customers")
    italy = world.golden("views.italy_customers")
    # the brand's CRMs outrank the ERP; Carla (shop only) is not in the brand's view
    assert brand == {"anna@x.it": ("Annalisa", "Monza", 3), "bruno@x.it": ("Brunetto", "Torino", 2)}
    # Italy: ERP and Italian CRM on one level, so the newer record wins (Anna's CRM record,
    # Bruno's ERP record); the Polish CRM is not under the view; the shop ranks below, but
    # the city always comes from the newest record (Bruno's shop record)
    assert italy == {"anna@x.it": ("Annalisa", "Monza", 2), "bruno@x.it": ("Bruno", "Napoli", 3),
                     "carla@x.it": ("Carla", "Roma", 1)}
    assert world.lineage("views.italy_field_lineage", "first_name", "anna@x.it") == ("crm_it", "C1", "recency")
    assert world.lineage("views.brand_field_lineage", "first_name", "anna@x.it") == ("crm_it", "C1", "tree_priority")
    assert world.lineage("views.italy_field_lineage", "city", "bruno@x.it") == ("shop", "S2", "most_recent")
    # the same customer ids in every view
    con = connect(world.warehouse)
    try:
        stray = con.execute("SELECT count(*) FROM views.italy_customers WHERE customer_id NOT IN "
                            "(SELECT customer_id FROM core.customers)").fetchone()[0]
    finally:
        con.close()
    assert stray == 0
    mats = {e.event_specific_data.materialization.asset_key.to_user_string()
            for e in world.result.get_asset_materialization_events()}
    assert {"views/brand_customers", "views/italy_field_lineage"} <= mats


def test_a_feed_chooses_its_view(world):
    import csv

    def rows(feed):
        with open(world.root / "feeds" / feed / f"{feed}_2026-11-01.csv", encoding="utf-8") as fh:
            return sorted((r["first_name"], r["city"]) for r in csv.DictReader(fh))

    # the brand's golden names and cities, and only the people the brand's view has
    assert rows("brand_people") == [("Annalisa", "Monza"), ("Brunetto", "Torino")]
    assert rows("main_people") == [("Anna", "Milano"), ("Bruno", "Torino"), ("Carla", "Roma")]


def test_a_segment_chooses_its_view(world):
    con = connect(world.warehouse)
    try:
        got = dict(con.execute("SELECT segment, list(c.email ORDER BY c.email) FROM marketing.segment_members m "
                               "JOIN core.customers c USING (customer_id) GROUP BY segment").fetchall())
    finally:
        con.close()
    # Anna is Annalisa in the brand's view only
    assert got == {"brand_annalisas": ["anna@x.it"]}


@pytest.mark.parametrize("old,new,message", [
    ("- shop\n      field_rules", "- nowhere\n      field_rules", "unknown node 'nowhere'"),
    ("- erp\n    # the country", "- crm_it\n    # the country", "appears twice"),
    ("field_rules: {city: most_recent}", "field_rules: {email_consent: most_recent}", "not a golden field"),
    ("view: brand,", "view: nowhere,", "unknown view 'nowhere'"),
    ("view: brand, rule", "view: nowhere, rule", "unknown view 'nowhere'"),
])
def test_bad_views_fail_at_load(tmp_path, old, new, message):
    w = World(tmp_path)
    path = next(w.config / f for f in ("tessera.yaml", "feeds.yaml", "segments.yaml")
                if old in (w.config / f).read_text())
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))
    with pytest.raises(ConfigError, match=message):
        load_deployment(w.config)
