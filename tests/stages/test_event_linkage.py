"""Events linked by the identity graph (issue #20, item 1), through real files and Dagster.

The headline case: a person with two records under one address (the most common
duplicate) keeps their behaviour. Events also link by the contact id of their source,
by phone (any spelling, to E.164) and by a device id seen on that person's other events;
they follow merges and splits across days; an identifier held by two people links no one.
"""

from __future__ import annotations

import json

import pytest

from tests.stages.test_identity_golden import SOURCES_YAML, World

EVENT_SOURCE = """
  - name: web
    entity: event
    node: crm
    format: jsonl
    path: "web/*.jsonl"
    timestamp_format: "%Y-%m-%dT%H:%M:%S"
    customer_source: crm_people
    columns: {source_record_id: id, event_type: type, occurred_at: at, email: email,
              customer_ref: crm_id, mobile: phone, device_id: cookie}
"""

ERP = """id,first,last,email,mobile,updated
E1,Mario,Rossi,mario@x.it,3475550192,2026-01-01
E2,Anna,Bianchi,anna@x.it,,2026-01-01
E3,Carla,Neri,shared@x.it,,2026-01-01
E4,Dario,Neri,shared@x.it,,2026-01-01
"""
CRM = """id;first;last;email;mobile;consent;updated
C1;Mario;Rossi;MARIO@x.it;;1;2026-02-01
C2;Anna;Bianchi;anna.b@y.it;;1;2026-01-01
C3;Dario;Neri;dario@z.it;;1;2026-01-01
"""


def events(*rows: dict) -> str:
    return "".join(json.dumps({"at": "2026-10-01T10:00:00", "type": "page_view", **r}) + "\n" for r in rows)


@pytest.fixture()
def world(tmp_path) -> World:
    w = World(tmp_path)
    (w.config / "sources.yaml").write_text(SOURCES_YAML + EVENT_SOURCE)
    w.drop("erp/erp_1.csv", ERP)
    w.drop("crm/crm_1.csv", CRM, "cp1252")
    return w


def linked(w: World) -> dict[str, tuple]:
    return {eid: (cid, by) for eid, cid, by in w.query("SELECT event_id, customer_id, linked_by FROM core.events")}


def check(result, name="events_are_linked"):
    evals = [e for e in result.get_asset_check_evaluations() if e.check_name == name]
    assert len(evals) == 1
    return evals[0]


def test_two_records_under_one_address_keep_their_behaviour(world):
    world.drop("web/web_1.jsonl", events(
        {"id": "V1", "email": " Mario@X.it "},                 # two records (E1, C1) of one person
        {"id": "V2", "email": "nobody@x.it"},                  # no one's
        {"id": "V3", "crm_id": "C2"},                          # the CRM contact id of Anna
        {"id": "V4", "phone": "+39 347 555 0192"},             # Mario's mobile, another spelling
        {"id": "V5", "cookie": "ck-1", "email": "anna@x.it"},  # Anna's address and a cookie
        {"id": "V6", "cookie": "ck-1"},                        # the cookie alone
        {"id": "V7", "cookie": "ck-9"},                        # an unknown cookie
    ))
    result = world.materialize()
    ids = world.customer_of()
    assert ids["E1"] == ids["C1"] and ids["E2"] != ids["C2"]
    got = linked(world)
    assert got["V1"] == (ids["E1"], "email")
    assert got["V2"] == (None, None)
    assert got["V3"] == (ids["C2"], "customer_ref")
    assert got["V4"] == (ids["E1"], "phone")
    assert got["V5"] == (ids["E2"], "email")
    assert got["V6"] == (ids["E2"], "device")
    assert got["V7"] == (None, None)
    ev = check(result)
    assert ev.passed
    meta = {k: v.value for k, v in ev.metadata.items()}
    assert meta["events"] == 7 and meta["anonymous"] == 2 and meta["owned_but_unlinked"] == 0
    assert meta["anonymous_share"] == pytest.approx(2 / 7, abs=1e-4)


def test_an_address_of_two_people_links_no_one_and_the_check_still_passes(world):
    world.drop("web/web_1.jsonl", events({"id": "V1", "email": "shared@x.it"},
                                         {"id": "V2", "email": "shared@x.it", "crm_id": "C3"}))
    result = world.materialize()
    ids = world.customer_of()
    assert ids["E3"] != ids["E4"]  # two ERP ids under one address: never merged
    got = linked(world)
    assert got["V1"] == (None, None)                   # held by E3 and E4: no guess
    assert got["V2"] == (ids["C3"], "customer_ref")    # the contact id decides
    assert check(result).passed


def test_events_follow_merges_and_splits_across_days(world):
    world.drop("web/web_1.jsonl", events({"id": "V1", "crm_id": "C2"},
                                         {"id": "V2", "email": "anna@x.it"}))
    world.materialize()
    day1 = world.customer_of()
    assert linked(world)["V1"][0] == day1["C2"] and linked(world)["V2"][0] == day1["E2"]
    # day 2: C2 takes Anna's ERP address (a merge) and Mario's CRM record moves to
    # another address (a split). Every event, old or new, names the customer of now.
    world.drop("crm/crm_2.csv", "id;first;last;email;mobile;consent;updated\n"
                                "C1;Mario;Rossi;mario.new@z.it;;1;2026-08-01\n"
                                "C2;Anna;Bianchi;ANNA@x.it;;1;2026-08-01\n", "cp1252")
    world.drop("web/web_2.jsonl", events({"id": "V3", "email": "mario.new@z.it"},
                                         {"id": "V4", "email": "mario@x.it"}))
    result = world.materialize()
    day2 = world.customer_of()
    assert day2["E2"] == day2["C2"] == min(day1["E2"], day1["C2"])
    assert day2["C1"] != day2["E1"]
    got = linked(world)
    assert got["V1"][0] == got["V2"][0] == day2["E2"]  # the merged-away id is gone from events
    assert got["V3"][0] == day2["C1"] and got["V4"][0] == day2["E1"]
    known = {cid for (cid,) in world.query("SELECT customer_id FROM core.customers")}
    assert {cid for cid, _ in got.values() if cid is not None} <= known
    assert check(result).passed


def test_the_check_counts_each_kind_of_wrong_link(world):
    """The check is computed apart from the build: a link removed, a link moved to
    another person and a link to an id that is no customer each count once; an event
    whose identifiers name two people (a conflict the build settles by strength) is
    never counted as linked elsewhere, whichever of them it names."""
    from tessera.deployment import load_deployment
    from tessera.engine.warehouse import connect
    from tessera.identity.linkage import events_linkage

    world.drop("web/web_1.jsonl", events(
        {"id": "V1", "email": "mario@x.it"},
        {"id": "V2", "crm_id": "C2"},
        {"id": "V3", "email": "anna@x.it", "crm_id": "C1"},   # Anna's address, Mario's CRM id
        {"id": "V4", "email": "anna@x.it"},
        {"id": "V5", "email": "nobody@x.it"},
    ))
    assert check(world.materialize()).passed
    ids = world.customer_of()
    con = connect(world.warehouse)
    try:
        con.execute("UPDATE core.events SET customer_id = NULL WHERE event_id = 'V1'")
        con.execute("UPDATE core.events SET customer_id = ? WHERE event_id = 'V2'", [ids["E1"]])
        con.execute("UPDATE core.events SET customer_id = ? WHERE event_id = 'V3'", [ids["E2"]])
        con.execute("UPDATE core.events SET customer_id = -7 WHERE event_id = 'V4'")
        got = events_linkage(con, load_deployment(world.config))
    finally:
        con.close()
    assert got == {"events": 5, "anonymous": 2, "owned_but_unlinked": 1, "linked_elsewhere": 2,
                   "not_a_customer": 1}
