"""Issue 14: a diff day selects only the contacts whose card changed since the base day
(the recorded versions of ``history/days``), and its files are byte for byte those of
the full comparison: over changes, opt-outs, hard bounces, soft deletes, new contacts,
skipped days, an erasure and a re-run."""

from __future__ import annotations

import datetime as dt
import json
from types import SimpleNamespace

import pytest

from tessera.engine import as_engine
from tessera.feeds.publish import build_feed
from tessera.history import record_day
from tessera.privacy import suppression as privacy_core
from tests.stages.feeds_world import D1, feed, make_world

NOW = dt.datetime(2026, 11, 2, 6, 0)
KEY = "tests-only-suppression-key"
FIELDS = ["customer_id", "first_name", "mobile", "order_summary",
          {"field": "email", "name": "em", "hash": "email"}]


def _day(n):
    return D1 + dt.timedelta(days=n - 1)


@pytest.fixture()
def world(tmp_path):
    con = make_world(tmp_path / "w.duckdb")
    yield con, tmp_path / "feeds"
    con.close()


def _both(con, out, day):
    """The same diff feed twice: once on the changed contacts, once compared in full."""
    record_day(as_engine(con), day, f"run-{day}", NOW)
    inc = build_feed(con, feed(name="inc", mode="diff", fields=FIELDS), day, out, NOW)
    ref = build_feed(con, feed(name="ref", mode="diff", fields=FIELDS), day, out, NOW,
                     incremental=False)
    assert ref["diff_path"] == "incremental off"
    for kind in ("added", "changed", "removed"):
        a = (out / "inc" / f"inc_{day}.{kind}.csv").read_bytes()
        b = (out / "ref" / f"ref_{day}.{kind}.csv").read_bytes()
        assert a == b, (day, kind)
    ma, mb = (json.loads((out / n / f"{n}_{day}.manifest.json").read_text()) for n in ("inc", "ref"))
    assert [(f["kind"], f["rows"], f["sha256"]) for f in ma["files"]] == \
        [(f["kind"], f["rows"], f["sha256"]) for f in mb["files"]]
    assert ma["previous_delivery"] == mb["previous_delivery"]
    # the warehouse's record of the day and the stored state are the same too
    rows = con.execute("SELECT feed, rows FROM exports.feed_deliveries WHERE as_of_date = ? "
                       "ORDER BY feed", [day]).fetchall()
    assert rows[0][1] == rows[1][1] == inc["rows"] == ref["rows"]
    state = [con.execute(f"SELECT * EXCLUDE (as_of_date) FROM exports.{n} ORDER BY ALL").fetchall()
             for n in ("inc", "ref")]
    assert state[0] == state[1]
    return inc, {k["kind"]: k["rows"] for k in inc["files"]}


def test_a_diff_day_on_the_changed_contacts_gives_the_full_comparisons_files(world):
    con, out = world
    inc, counts = _both(con, out, _day(1))
    assert inc["diff_path"] == "first delivery" and counts["added"] == 4

    # day 2: 1 changes, 2 opts out, 3 hard-bounces, 4 is soft-deleted, 6 arrives
    con.execute("UPDATE marts.contact_cards SET first_name = 'Johnny' WHERE customer_id = 1")
    con.execute("UPDATE marts.contact_cards SET email_consent = 'withdrawn' WHERE customer_id = 2")
    con.execute("UPDATE marts.contact_cards SET email_hard_bounced = TRUE WHERE customer_id = 3")
    con.execute("DELETE FROM marts.contact_cards WHERE customer_id = 4")
    con.execute("INSERT INTO marts.contact_cards VALUES (6, 'f@x.it', '+39 347 7654321', 'Fede', "
                "'new', 4.5, NULL, 'granted', 'granted', FALSE)")
    inc, counts = _both(con, out, _day(2))
    assert inc["diff_path"] == "incremental"
    # the five whose card changed are looked at; 1 and 6 pass the filters
    assert (inc["diff_candidates"], inc["diff_selected"]) == (5, 2)
    assert counts == {"added": 1, "changed": 1, "removed": 3}

    # day 3 is recorded but not delivered (5 gives consent); day 4 (3's bounce is lifted)
    # is compared with day 2 over the gap
    con.execute("UPDATE marts.contact_cards SET email_consent = 'granted' WHERE customer_id = 5")
    record_day(as_engine(con), _day(3), "run-3", NOW)
    con.execute("UPDATE marts.contact_cards SET email_hard_bounced = FALSE WHERE customer_id = 3")
    inc, counts = _both(con, out, _day(4))
    assert inc["diff_path"] == "incremental" and inc["manifest"]["previous_delivery"] == str(_day(2))
    assert counts == {"added": 2, "changed": 0, "removed": 0}

    # day 5: person 1 is erased (a new suppression: the day is compared in full, and the
    # removal is the id alone)
    privacy_core.forget(con, SimpleNamespace(sources=[], sources_of=lambda entity: []), KEY,
                        emails=("John_Smith@gmail.com",), customer_ids=(1,), request_id="req-1",
                        now=NOW)
    inc, counts = _both(con, out, _day(5))
    assert inc["diff_path"] == "suppressions changed"
    assert counts == {"added": 0, "changed": 0, "removed": 1}

    # day 6: 6 changes its mobile; the erasure is not announced again; a re-run of the
    # day gives the same files
    con.execute("UPDATE marts.contact_cards SET mobile = '+39 347 0000000' WHERE customer_id = 6")
    inc, counts = _both(con, out, _day(6))
    assert inc["diff_path"] == "incremental" and inc["diff_candidates"] == 1
    assert counts == {"added": 0, "changed": 1, "removed": 0}
    inc, counts = _both(con, out, _day(6))
    assert inc["diff_path"] == "incremental"
    assert counts == {"added": 0, "changed": 1, "removed": 0}


def test_a_changed_selection_or_an_unrecorded_day_is_compared_in_full(world):
    con, out = world
    record_day(as_engine(con), _day(1), "run-1", NOW)
    build_feed(con, feed(name="inc", mode="diff", fields=FIELDS), _day(1), out, NOW)
    # a day the versions do not cover (the card moved on without history/days)
    con.execute("UPDATE marts.contact_cards SET first_name = 'Johnny' WHERE customer_id = 1")
    stats = build_feed(con, feed(name="inc", mode="diff", fields=FIELDS), _day(2), out, NOW)
    assert stats["diff_path"] == "day or base not recorded"
    # the same feed on another channel: its day-2 rows were selected otherwise
    record_day(as_engine(con), _day(3), "run-3", NOW)
    stats = build_feed(con, feed(name="inc", mode="diff", channel="sms", fields=FIELDS),
                       _day(3), out, NOW)
    assert stats["diff_path"] == "selection changed"
    # a field beyond the card (the day's RFM) has no versions
    for n in (4, 5):
        con.execute("INSERT INTO marketing.rfm_scores SELECT customer_id, ?, 'loyal' "
                    "FROM marts.contact_cards", [_day(n)])
        record_day(as_engine(con), _day(n), f"run-{n}", NOW)
        stats = build_feed(con, feed(name="rfm", mode="diff", fields=[*FIELDS, "rfm_group"]),
                           _day(n), out, NOW)
    assert stats["diff_path"] == "fields beyond the card"
