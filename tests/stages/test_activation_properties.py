"""A tag action's ``property: value`` is a real contact property: on the card, in a
segment rule and in a feed, from the day it is set on, kept across card rebuilds.

A small world materialised with Dagster, two days: day 1's big purchase sets
``spender_level = top`` (the card shows it the same run, the segments ran before);
day 2's card, segment and feed have it."""
from __future__ import annotations

import csv
from pathlib import Path

import dagster as dg
import pytest

from tessera.deployment import load_deployment
from tessera.engine.warehouse import connect
from tessera.yamlfile import ConfigError
from tests.stages.small_world import SmallWorld, crm_people

TESSERA_YAML = """
deployment: setprops
nodes: [{name: crm}, {name: web}]
tree:
  priority: [crm, web]
properties:
  contact:
    - {name: spender_level, type: string, allowed: [top, regular]}
"""

SOURCES_YAML = """
sources:
""" + crm_people("source_record_id: id, first_name: nome, last_name: cognome, email: email, consent_email: consenso") + """\
  - name: web_events
    entity: event
    node: web
    format: jsonl
    path: "web/events_*.jsonl"
    timestamp_format: "%Y-%m-%dT%H:%M:%SZ"
    columns: {source_record_id: event_id, event_type: type, occurred_at: occurred_at,
              email: email, properties: properties}
"""

SEGMENTS_YAML = """
segments:
  - name: top_spenders
    description: Set by the automation
    rule: {field: spender_level, op: "=", value: top}
"""

FEEDS_YAML = """
feeds:
  - name: top_people
    segment: top_spenders
    channel: none
    format: csv
    fields: [customer_id, email, spender_level]
"""

AUTOMATIONS_YAML = """
activation:
  send: false
automations:
  - name: tag_top
    trigger:
      event: purchase
      where: [{property: amount, op: ">=", value: 300}]
    action: {tag: {tag: top_spender, property: spender_level, value: top}}
"""

PEOPLE = """\
id;nome;cognome;email;consenso
P1;Mario;Rossi;mario@x.it;si
P2;Sara;Gialli;sara@y.it;si
P3;Ugo;Verdi;ugo@z.it;no
"""

EVENTS = """\
{"event_id": "E1", "type": "purchase", "occurred_at": "2026-11-01T10:00:00Z", "email": "mario@x.it", "properties": {"amount": 500}}
{"event_id": "E2", "type": "purchase", "occurred_at": "2026-11-01T11:00:00Z", "email": "sara@y.it", "properties": {"amount": 20}}
"""


class World(SmallWorld):
    def __init__(self, root: Path):
        super().__init__(root, {"tessera.yaml": TESSERA_YAML, "sources.yaml": SOURCES_YAML,
                                "segments.yaml": SEGMENTS_YAML, "feeds.yaml": FEEDS_YAML,
                                "automations.yaml": AUTOMATIONS_YAML},
                         {"crm/people_1.csv": PEOPLE, "web/events_1.jsonl": EVENTS})


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> World:
    w = World(tmp_path_factory.mktemp("setprops"))
    w.instance = dg.DagsterInstance.ephemeral()
    w.materialize("2026-11-01")
    w.day1 = {"cards": w.query("SELECT email, spender_level FROM marts.contact_cards ORDER BY 1"),
              "members": w.query("SELECT count(*) FROM marketing.segment_members WHERE segment = 'top_spenders'")}
    w.materialize("2026-11-02")
    return w


def test_the_property_is_on_the_card_the_same_run_and_after_a_rebuild(world):
    # day 1: written on the card by the action (the card was built before it)
    assert world.day1["cards"] == [("mario@x.it", "top"), ("sara@y.it", None), ("ugo@z.it", None)]
    # day 2: the card was rebuilt from the golden records, the action's value overlaid
    assert world.query("SELECT email, spender_level FROM marts.contact_cards ORDER BY 1") == [
        ("mario@x.it", "top"), ("sara@y.it", None), ("ugo@z.it", None)]
    # a real property, not a "name=value" tag; the tag itself is there
    assert world.query("SELECT tag FROM marketing.contact_tags ORDER BY 1") == [("top_spender",)]
    assert world.query("SELECT property, value, set_on FROM activation.contact_properties") == [
        ("spender_level", "top", __import__("datetime").date(2026, 11, 1))]


def test_the_property_selects_the_segment_and_reaches_the_feed(world):
    # the segments ran before the action on day 1, and see it on day 2
    assert world.day1["members"] == [(0,)]
    members = world.query("""SELECT c.email FROM marketing.segment_members m JOIN marts.contact_cards c
                             USING (customer_id) WHERE m.segment = 'top_spenders' ORDER BY 1""")
    assert members == [("mario@x.it",)]
    with open(world.feeds / "top_people" / "top_people_2026-11-02.csv", encoding="utf-8") as fh:
        rows = [(r["email"], r["spender_level"]) for r in csv.DictReader(fh)]
    assert rows == [("mario@x.it", "top")]


def test_forget_removes_the_property(world, tmp_path):
    import shutil

    from tessera.privacy import suppression as privacy

    copy = tmp_path / "wh.duckdb"
    shutil.copy(world.warehouse, copy)
    con = connect(copy)
    try:
        (cid,) = con.execute("SELECT customer_id FROM marts.contact_cards WHERE email = 'mario@x.it'").fetchone()
        privacy.ensure_tables(con)
        privacy.forget(con, load_deployment(world.config), "k", customer_ids=[cid], request_id="r1")
        assert con.execute("SELECT count(*) FROM activation.contact_properties").fetchone() == (0,)
    finally:
        con.close()


@pytest.mark.parametrize("old,new,message", [
    ("property: spender_level, value: top", "property: level, value: top",
     "'level' is not an extended contact property"),
    ("property: spender_level, value: top", "property: spender_level, value: huge",
     "'huge' is not an allowed value"),
    ("property: spender_level, value: top", "property: spender_level", "needs a value"),
])
def test_a_property_the_deployment_does_not_declare_is_a_config_error(tmp_path, old, new, message):
    w = World(tmp_path)
    path = w.config / "automations.yaml"
    path.write_text(path.read_text().replace(old, new))
    with pytest.raises(ConfigError, match=message):
        load_deployment(w.config)
