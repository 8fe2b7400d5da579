"""Incremental event linkage and the card's behaviour (issue 19 item 2): ``core.events``
relinked day by day over the events a change can move, and ``marts.contact_cards`` with
the behaviour aggregated only for the customers whose events moved, hold the same rows
as those rebuilt in full every day.

The demo's sample (120 persons, identity by the rules), web events carrying a device id,
three warehouses: one built in full every day, one incrementally, and a control built
incrementally without the device closure and with the card blind to the events' touched
customers, which must differ. Six days: the first load;
new events (some on a device whose other event names a person) and a CRM file with a
merge and a new person the events name; a quiet day; a person's only address changed
(the identifier loses its owner: its events and the device's go anonymous); an event
re-sent changed (full, reason named); an incremental day after it.
"""
from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from tessera.deployment import load_deployment
from tessera.engine import SqlStep, as_engine, recording
from tessera.engine.portability import report
from tessera.engine.warehouse import connect, ensure_warehouse
from tessera.card import incremental as card_incremental
from tessera.card.marts import build_contact_cards
from tessera.history import changes, versions
from tessera.identity import events_incremental
from tessera.identity.golden import build_customers
from tessera.identity.linkage import build_events, events_linkage
from tessera.identity.resolve import resolve
from tessera.ingest.changed_keys import ChangeRun
from tessera.ingest.load import ingest_source
from tessera.ingest.staging import build_contacts, build_entity
from tessera.sampledata.generator import generate
from tests.stages.demo_crm import crm_file, crm_rows

DEMO = Path(__file__).resolve().parents[2] / "examples" / "demo"
DAY1 = dt.date(2026, 11, 1)
ENTITIES = ("contact", "event")


def _web_file(landing: Path, day: dt.date, events: list[dict]) -> None:
    with open(landing / "web" / f"web_events_{day:%Y%m%d}.jsonl", "w", encoding="utf-8") as fh:
        for ev in events:
            fh.write(json.dumps({"type": "page_view", "occurred_at": f"{day:%Y-%m-%d}T10:00:00Z",
                                 "properties": {"url": "/it"}, **ev}) + "\n")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("incr_events")
    landing = tmp / "landing"
    generate(landing, contacts=120, seed=11, as_of=DAY1)
    base = load_deployment(DEMO)
    ident = base.identity.model_copy(update={
        "probabilistic": base.identity.probabilistic.model_copy(update={"enabled": False})})
    # the web events carry a device id too (device linkage)
    sources = [s.model_copy(update={"columns": {**s.columns, "device_id": "device_id"}})
               if s.name == "web_events" else s for s in base.sources]
    dep = base.model_copy(update={"identity": ident, "sources": sources})
    cons = {k: connect(tmp / f"{k}.duckdb") for k in ("full", "inc", "broken")}
    for con in cons.values():
        ensure_warehouse(con)
    yield dep, cons, landing
    for con in cons.values():
        con.close()


def _no_device_closure(original):
    """The control: the events a change moves, without the other events of their devices."""
    def affected(engine, *args, **kwargs):
        out = original(engine, *args, **kwargs)
        engine.run(SqlStep("test.no_device_closure", """
            CREATE OR REPLACE TEMP TABLE _ev_r AS SELECT * FROM staging.events e
            WHERE EXISTS (SELECT 1 FROM _ev_a a WHERE a.source = e.source AND a.source_record_id = e.source_record_id)"""))
        return out
    return affected


def _blind_card(original):
    """The control's card: only customers without a stored card are recounted."""
    def carried(engine, state):
        return original(engine, {**state, "use_touched": False})
    return carried


def _day(cons, dep, landing, day: dt.date, monkeypatch) -> dict:
    now = dt.datetime.combine(day, dt.time(6, 0))
    run_at = dt.datetime.combine(day, dt.time(7, 0))
    out = {}
    for kind, con in cons.items():
        inc = kind != "full"
        changes = ChangeRun(f"run-{day}", now) if inc else None
        for src in dep.sources:
            if src.entity in ENTITIES:
                ingest_source(con, dep, src, landing, f"b-{day}", now)
        build_contacts(con, dep, changes)
        build_entity(con, dep, "event", changes)
        resolve(con, run_at, f"r-{day}", dep.identity, incremental=inc)
        with monkeypatch.context() as mp:
            if kind == "broken":
                mp.setattr(events_incremental, "affected_events",
                           _no_device_closure(events_incremental.affected_events))
                mp.setattr(card_incremental, "carried_events", _blind_card(card_incremental.carried_events))
            out[kind] = build_events(con, dep, incremental=inc, run_at=run_at)
            # the card reads golden records (built in full: their incremental path has its test)
            for ddl in ("core.consents (customer_id BIGINT, channel VARCHAR, state VARCHAR)",
                        "core.orders (order_id VARCHAR, customer_id BIGINT, order_date DATE, amount DECIMAL(18,2))",
                        "staging.unsubscribes (email_key VARCHAR, channel VARCHAR)",
                        "staging.bounces (email_key VARCHAR, bounce_type VARCHAR)"):
                con.execute(f"CREATE TABLE IF NOT EXISTS {ddl}")
            build_customers(con, dep, run_at)
            out[kind]["card"] = build_contact_cards(con, deployment=dep, incremental=inc, run_at=run_at)
        if kind != "broken":  # the day's version of the events: from the change log when incremental
            out[kind]["history"] = versions.record_day(as_engine(con), day, f"run-{day}", now)["tables"]["core.events"]
            # the linkage check: incremental in "inc" (what moved since its last passing check)
            out[kind]["check"] = events_linkage(as_engine(con), dep, incremental=inc, now=run_at)
    return out


def _rows(con):
    return sorted(con.execute("SELECT * FROM core.events").fetchall(), key=repr)


def _cards(con):
    cols = [c for c, in con.execute("SELECT column_name FROM information_schema.columns WHERE table_schema = "
                                    "'marts' AND table_name = 'contact_cards' ORDER BY ordinal_position").fetchall()
            if c != "golden_built_at"]
    return sorted(con.execute(f"SELECT {', '.join(cols)} FROM marts.contact_cards").fetchall(), key=repr)


def _versions(con):
    return sorted(con.execute("SELECT * FROM history.core__events").fetchall(), key=repr), \
        sorted(con.execute("SELECT * FROM history.core__events__closed").fetchall(), key=repr)


def _checked(d: dict, mode: str = "incremental") -> None:
    """Both checks pass and count alike; the incremental warehouse's checked in ``mode``."""
    counts = {k: v for k, v in d["inc"]["check"].items() if not k.startswith("check_")}
    assert counts == d["full"]["check"], (counts, d["full"]["check"])
    assert counts["owned_but_unlinked"] + counts["linked_elsewhere"] + counts["not_a_customer"] == 0, counts
    assert d["inc"]["check"]["check_mode"] == mode, d["inc"]["check"]["check_full_reason"]


def _same(cons, control_too: bool = True) -> None:
    full = _rows(cons["full"])
    assert full and _rows(cons["inc"]) == full, "core.events differs between full and incremental"
    # the versions found from the change log are those found by comparing every row
    assert _versions(cons["inc"]) == _versions(cons["full"])
    assert versions.version_mismatches(as_engine(cons["inc"]))["core.events"] == 0
    assert _cards(cons["inc"]) == _cards(cons["full"]), "the cards differ between full and incremental"
    if control_too:
        assert _rows(cons["broken"]) == full


def test_incremental_event_linkage_equals_full_and_needs_the_device_closure(world, monkeypatch):
    dep, cons, landing = world
    d1 = _day(cons, dep, landing, DAY1, monkeypatch)
    assert d1["inc"]["events_mode"] == "full" and d1["inc"]["events_full_reason"]
    assert d1["inc"]["card"]["card_mode"] == "full"
    _checked(d1, "full")
    _same(cons)
    assert _cards(cons["broken"]) == _cards(cons["full"])
    total = d1["full"]["events"]

    # day 2: a merge, a new person whose address old events carry, new events (two on a
    # device, one of which names a person with one record and an address of their own)
    day2 = DAY1 + dt.timedelta(days=1)
    header, body = crm_rows(landing)
    i_id, i_mail = header.index("crm_id"), header.index("email")
    full = cons["full"]
    single = {r[0] for r in full.execute("""
        SELECT s.source_record_id FROM staging.contacts s JOIN core.customer_sources cs USING (source, source_record_id)
        WHERE s.source = 'crm_contacts' AND s.email_key IS NOT NULL
          AND cs.customer_id IN (SELECT customer_id FROM core.customer_sources GROUP BY 1 HAVING count(*) = 1)
          AND s.email_key IN (SELECT email_key FROM staging.contacts GROUP BY 1 HAVING count(*) = 1)
          AND s.email_key IN (SELECT email_key FROM staging.events)""").fetchall()}
    with_mail = [list(r) for r in body if r[i_mail]]
    p = next(r for r in with_mail if r[i_id] in single)
    d, e = [r for r in with_mail if r[i_id] != p[i_id]][:2]
    d[i_mail] = e[i_mail]                                     # d joins e: a merge
    anon = full.execute("""SELECT email_key FROM staging.events WHERE email_key IS NOT NULL
                           AND email_key NOT IN (SELECT email_key FROM staging.contacts WHERE email_key IS NOT NULL)
                           ORDER BY 1 LIMIT 1""").fetchone()
    rows = [d]
    if anon:
        new = list(e)
        new[i_id], new[i_mail] = "CRM-NEW-1", anon[0]
        rows.append(new)
    crm_file(landing, day2, rows)
    _web_file(landing, day2, [
        {"event_id": "D2-1", "email": p[i_mail], "device_id": "dev-1"},
        {"event_id": "D2-2", "device_id": "dev-1"},
        {"event_id": "D2-3", "email": e[i_mail]},
        {"event_id": "D2-4", "email": "nobody@example.org"}])
    with recording() as log:
        d2 = _day(cons, dep, landing, day2, monkeypatch)
    inc = d2["inc"]
    assert inc["events_mode"] == "incremental", inc["events_full_reason"]
    assert inc["owners_moved"] >= 1
    assert 4 <= inc["events_relinked"] < total / 2
    assert inc["history"]["by_change_log"] and not d2["full"]["history"]["by_change_log"]
    assert inc["history"]["opened"] >= 4
    _checked(d2)
    assert inc["card"]["card_mode"] == "incremental", inc["card"]["card_full_reason"]
    assert 0 < inc["card"]["behaviour_recounted"] < inc["card"]["cards"] / 2
    _same(cons)
    # the control's card keeps the stale behaviour of the customers whose events moved
    assert _cards(cons["broken"]) != _cards(cons["full"])
    linked = dict(cons["inc"].execute("SELECT event_id, customer_id FROM core.events "
                                      "WHERE event_id IN ('D2-1', 'D2-2')").fetchall())
    assert linked["D2-1"] is not None and linked["D2-2"] == linked["D2-1"]  # by the device
    if anon:
        assert cons["inc"].execute("SELECT count(*) FROM core.events WHERE customer_id IS NOT NULL "
                                   "AND event_id IN (SELECT source_record_id FROM staging.events "
                                   "WHERE email_key = ?)", [anon[0]]).fetchone()[0] >= 1
    verdicts, text = report([v for (name, _sql), v in log.items()
                             if name.startswith(("identity.events_incremental", "card.incremental",
                                                 "card.contact_cards"))])
    assert len(verdicts) >= 6 and all(v.passes for v in verdicts), text

    # day 3: nothing arrives: incremental, nothing relinked
    day3 = day2 + dt.timedelta(days=1)
    d3 = _day(cons, dep, landing, day3, monkeypatch)
    assert d3["inc"]["events_mode"] == "incremental" and d3["inc"]["events_relinked"] == 0
    assert d3["inc"]["history"] == {"opened": 0, "closed": 0, "by_change_log": True}
    _checked(d3)
    assert d3["inc"]["card"]["card_mode"] == "incremental" and d3["inc"]["card"]["behaviour_recounted"] == 0
    _same(cons)

    # day 4: the person's only address changes: it has no owner any more, so their events
    # by it and the device's other event go anonymous (the control misses the device's)
    day4 = day3 + dt.timedelta(days=1)
    p[i_mail] = "p.moved@example.org"
    crm_file(landing, day4, [p])
    d4 = _day(cons, dep, landing, day4, monkeypatch)
    assert d4["inc"]["events_mode"] == "incremental" and d4["inc"]["owners_lost"] >= 1
    assert d4["inc"]["history"]["by_change_log"] and d4["inc"]["history"]["closed"] >= 2
    _checked(d4)
    _same(cons, control_too=False)
    assert cons["inc"].execute("SELECT count(*) FROM core.events WHERE event_id IN ('D2-1', 'D2-2') "
                               "AND customer_id IS NULL").fetchone()[0] == 2
    assert _rows(cons["broken"]) != _rows(cons["full"]), "the control should miss the device's event"

    # day 5: an event re-sent with another type: full, reason named
    day5 = day4 + dt.timedelta(days=1)
    _web_file(landing, day5, [{"event_id": "D2-4", "email": "nobody@example.org", "type": "download"}])
    d5 = _day(cons, dep, landing, day5, monkeypatch)
    assert d5["inc"]["events_mode"] == "full" and "event changed" in d5["inc"]["events_full_reason"]
    assert not d5["inc"]["history"]["by_change_log"]
    _checked(d5, "full")
    assert "rebuilt in full" in d5["inc"]["check"]["check_full_reason"]
    assert d5["inc"]["card"]["card_mode"] == "full" and "in full" in d5["inc"]["card"]["card_full_reason"]
    _same(cons, control_too=False)

    # day 6: incremental again
    day6 = day5 + dt.timedelta(days=1)
    _web_file(landing, day6, [{"event_id": "D6-1", "email": e[i_mail]}])
    d6 = _day(cons, dep, landing, day6, monkeypatch)
    assert d6["inc"]["events_mode"] == "incremental" and d6["inc"]["events_relinked"] == 1
    assert d6["inc"]["history"] == {"opened": 1, "closed": 0, "by_change_log": True}
    _checked(d6)
    # the incremental check sees a wrong link among the events a build rewrote (here a
    # build that unlinked an event it logged); a row changed outside any build is seen by
    # the full check only (weekly, or after a failure); after a failed check, the next
    # one pairs every event again
    con, at = cons["inc"], dt.datetime.combine(day6, dt.time(8, 0))
    linked = con.execute("SELECT customer_id FROM core.events WHERE event_id = 'D6-1'").fetchone()[0]
    assert linked is not None
    con.execute("UPDATE core.events SET customer_id = NULL WHERE event_id = 'D6-1'")
    unseen = events_linkage(as_engine(con), dep, incremental=True, now=at)
    assert unseen["check_mode"] == "incremental" and unseen["owned_but_unlinked"] == 0, unseen
    assert events_linkage(as_engine(con), dep)["owned_but_unlinked"] == 1
    changes.log_keys(as_engine(con), "core.events", "SELECT 'web_events', 'D6-1'")
    wrong = events_linkage(as_engine(con), dep, incremental=True, now=at + dt.timedelta(minutes=1))
    assert wrong["check_mode"] == "incremental" and wrong["owned_but_unlinked"] == 1, wrong
    con.execute("UPDATE core.events SET customer_id = ? WHERE event_id = 'D6-1'", [linked])
    again = events_linkage(as_engine(con), dep, incremental=True, now=at + dt.timedelta(minutes=2))
    assert again["check_mode"] == "full" and again["check_full_reason"] == "the last check failed", again
    assert again["owned_but_unlinked"] == 0
    assert d6["inc"]["card"]["card_mode"] == "incremental"
    _same(cons, control_too=False)

    # day 7: the new day's events name their product, by URL or property; then the URL
    # pattern changes: every stored product id may change, so the build is full
    day7 = day6 + dt.timedelta(days=1)
    _web_file(landing, day7, [{"event_id": "D7-1", "email": e[i_mail], "properties": {"url": "/it/prodotti/P-7"}},
                              {"event_id": "D7-2", "email": e[i_mail], "properties": {"product_id": "P-8"}}])
    d7 = _day(cons, dep, landing, day7, monkeypatch)
    assert d7["inc"]["events_mode"] == "incremental"
    _checked(d7)
    _same(cons, control_too=False)
    products = "SELECT event_id, product_id FROM core.events WHERE event_id LIKE 'D7-%' ORDER BY 1"
    assert cons["inc"].execute(products).fetchall() == [("D7-1", "P-7"), ("D7-2", "P-8")]
    other = dep.model_copy(update={"recommendations": dep.recommendations.model_copy(
        update={"product_url_pattern": r"/prodotti/P-([0-9]+)"})})
    day8 = day7 + dt.timedelta(days=1)
    d8 = _day(cons, other, landing, day8, monkeypatch)
    assert d8["inc"]["events_mode"] == "full" and "linking settings" in d8["inc"]["events_full_reason"]
    assert cons["inc"].execute(products).fetchall() == [("D7-1", "7"), ("D7-2", "P-8")]
    _same(cons, control_too=False)
