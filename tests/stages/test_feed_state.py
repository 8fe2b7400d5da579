"""The diff state as versions: a day writes only what changed; a re-run of the last day
undoes its own versions first; a backfill leaves the state to the last day; a table of
the earlier layout (every day in full) is taken over without resending every row."""

from __future__ import annotations

import datetime as dt

import pytest

from tessera.feeds.publish import build_feed
from tests.stages.feeds_world import D1, feed, make_world

NOW = dt.datetime(2026, 11, 2, 6, 0)
FIELDS = ["customer_id", "first_name", {"field": "email", "name": "em", "hash": "email"}]


def _day(n):
    return D1 + dt.timedelta(days=n)


def _kinds(stats):
    return {x["kind"]: x["rows"] for x in stats["files"]}


@pytest.fixture()
def world(tmp_path):
    con = make_world(tmp_path / "w.duckdb")
    yield con, tmp_path / "feeds"
    con.close()


def _versions(con, name="s"):
    return con.execute(f"SELECT customer_id, as_of_date, valid_to, first_name FROM exports.{name} "
                       "ORDER BY customer_id, as_of_date").fetchall()


def test_a_day_stores_only_what_changed(world):
    con, out = world
    f = feed(name="s", mode="diff", fields=FIELDS)
    build_feed(con, f, D1, out, NOW)
    assert len(_versions(con)) == 4
    con.execute("UPDATE marts.contact_cards SET first_name = 'Johnny' WHERE customer_id = 1")
    con.execute("UPDATE marts.contact_cards SET email_consent = 'withdrawn' WHERE customer_id = 2")
    build_feed(con, f, _day(1), out, NOW)
    assert _versions(con) == [
        (1, D1, _day(1), "John"), (1, _day(1), None, "Johnny"),  # closed, and its successor
        (2, D1, _day(1), "Łucja"),                                # removed: closed
        (3, D1, None, "Città"), (4, D1, None, "Zoë")]             # unchanged: untouched
    # a day with no change writes nothing
    build_feed(con, f, _day(2), out, NOW)
    assert len(_versions(con)) == 5


def test_a_rerun_of_the_last_day_gives_the_same_files_and_state(world):
    con, out = world
    f = feed(name="s", mode="diff", fields=FIELDS)
    build_feed(con, f, D1, out, NOW)
    con.execute("UPDATE marts.contact_cards SET first_name = 'Johnny' WHERE customer_id = 1")
    first = build_feed(con, f, _day(1), out, NOW)
    state = _versions(con)
    # the card changes again before the re-run: the re-run diffs against D1 still
    con.execute("UPDATE marts.contact_cards SET first_name = 'Jo' WHERE customer_id = 1")
    again = build_feed(con, f, _day(1), out, NOW)
    assert _kinds(again) == _kinds(first) == {"added": 0, "changed": 1, "removed": 0}
    assert _versions(con) == [v if v[3] != "Johnny" else (1, _day(1), None, "Jo") for v in state]


def test_a_backfill_of_an_older_day_leaves_the_state_to_the_last_day(world):
    con, out = world
    f = feed(name="s", mode="diff", fields=FIELDS)
    build_feed(con, f, D1, out, NOW)
    con.execute("UPDATE marts.contact_cards SET email_consent = 'withdrawn' WHERE customer_id = 2")
    build_feed(con, f, _day(3), out, NOW)
    state = _versions(con)
    back = build_feed(con, f, _day(1), out, NOW)  # a day between, delivered late
    assert back["previous_delivery"] == D1 and _kinds(back)["removed"] == 1
    assert _versions(con) == state
    con.execute("UPDATE marts.contact_cards SET email_consent = 'granted' WHERE customer_id = 2")
    nxt = build_feed(con, f, _day(4), out, NOW)
    assert nxt["previous_delivery"] == _day(3) and _kinds(nxt) == {"added": 1, "changed": 0, "removed": 0}


def test_a_table_of_the_earlier_layout_becomes_the_last_days_versions(world):
    con, out = world
    f = feed(name="s", mode="diff", fields=FIELDS)
    build_feed(con, f, D1, out, NOW)
    # the earlier layout: every delivered day in full, no versions
    con.execute("CREATE OR REPLACE TABLE exports.s AS SELECT as_of_date, customer_id, first_name, email "
                "FROM exports.s")
    con.execute("INSERT INTO exports.s SELECT as_of_date - 1, customer_id, 'old', email FROM exports.s")
    con.execute("UPDATE marts.contact_cards SET first_name = 'Johnny' WHERE customer_id = 1")
    stats = build_feed(con, f, _day(1), out, NOW)
    assert _kinds(stats) == {"added": 0, "changed": 1, "removed": 0}
