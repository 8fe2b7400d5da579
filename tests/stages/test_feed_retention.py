"""Retention: a feed's files, manifests and stored rows older than its ``retention.days``
go with the daily run, but never the last delivered day (the next diff's base); the
delivery log goes after ``delivery_log_days``, but never a pending batch."""

from __future__ import annotations

import datetime as dt

import pytest

from tessera.feeds.publish import build_feed
from tests.stages.feeds_world import D1, feed, make_world
from tests.stages.test_feed_delivery import SECRET, Receiver

FIELDS = ["customer_id", "first_name"]


def _day(n):
    return D1 + dt.timedelta(days=n)


def _at(day):
    return dt.datetime.combine(day, dt.time(6))


@pytest.fixture()
def world(tmp_path):
    con = make_world(tmp_path / "w.duckdb")
    yield con, tmp_path / "feeds"
    con.close()


def _kept(con, out, name):
    """The delivered days the stored state can still give, the files, the records."""
    days = [r[0] for r in con.execute(f"""
        SELECT DISTINCT d.as_of_date FROM exports.feed_deliveries d, exports.{name} s
        WHERE d.feed = ? AND s.as_of_date <= d.as_of_date
          AND (s.valid_to IS NULL OR s.valid_to > d.as_of_date) ORDER BY 1""", [name]).fetchall()]
    closed = con.execute(f"SELECT min(valid_to) FROM exports.{name}").fetchone()[0]
    first = min(days) if days else None
    assert closed is None or first is None or closed > first  # nothing only a dropped day used
    files = sorted(p.name for p in (out / name).iterdir())
    recorded = [r[0] for r in con.execute("SELECT as_of_date FROM exports.feed_deliveries "
                                          "WHERE feed = ? ORDER BY 1", [name]).fetchall()]
    return days, files, recorded


def test_days_older_than_the_retention_leave_files_state_and_records(world):
    con, out = world
    f = feed(name="r", mode="diff", format="csv", fields=FIELDS, retention={"days": 2})
    for n in range(5):
        con.execute("UPDATE marts.contact_cards SET first_name = ? WHERE customer_id = 1", [f"J{n}"])
        stats = build_feed(con, f, _day(n), out, _at(_day(n)))
    assert stats["retention_days_dropped"] == 1 and stats["retention_files_deleted"] == 4
    days, files, recorded = _kept(con, out, "r")
    assert days == recorded == [_day(2), _day(3), _day(4)]
    assert files == sorted(f"r_{d}.{k}" for d in days
                           for k in ("added.csv", "changed.csv", "removed.csv", "manifest.json"))
    # the next diff is still taken against the last delivered day
    con.execute("UPDATE marts.contact_cards SET first_name = 'Z' WHERE customer_id = 2")
    nxt = build_feed(con, f, _day(5), out, _at(_day(5)))
    assert nxt["previous_delivery"] == _day(4)
    assert {x["kind"]: x["rows"] for x in nxt["files"]} == {"added": 0, "changed": 1, "removed": 0}


def test_the_last_delivered_day_is_kept_however_old_so_no_removal_is_missed(world):
    con, out = world
    f = feed(name="w", mode="diff", fields=FIELDS, weekdays=["mon"], retention={"days": 1})
    build_feed(con, f, D1, out, _at(D1))  # a Monday
    con.execute("UPDATE marts.contact_cards SET email_consent = 'withdrawn' WHERE customer_id = 2")
    for n in range(1, 7):  # not delivery days: nothing delivered, nothing dropped
        assert build_feed(con, f, _day(n), out, _at(_day(n)))["skipped"]
    assert _kept(con, out, "w")[0] == [D1]
    monday = build_feed(con, f, _day(7), out, _at(_day(7)))
    assert monday["previous_delivery"] == D1
    assert {x["kind"]: x["rows"] for x in monday["files"]}["removed"] == 1
    # and now the older Monday goes
    assert monday["retention_days_dropped"] == 1 and _kept(con, out, "w")[0] == [_day(7)]


def test_no_retention_keeps_everything(world):
    con, out = world
    f = feed(name="k", fields=FIELDS)
    for n in range(4):
        stats = build_feed(con, f, _day(n), out, _at(_day(n)))
    assert stats["retention_days_dropped"] == 0
    assert _kept(con, out, "k")[2] == [_day(n) for n in range(4)]


def test_the_delivery_log_goes_but_never_a_pending_batch(world):
    con, out = world
    env = {"CRM_SECRET": SECRET}
    with Receiver() as up:
        dest = {"url": up.url, "secret_env": "CRM_SECRET", "batch_rows": 10, "max_attempts": 1,
                "timeout_s": 2}
        f = feed(name="h", fields=FIELDS, destination=dest, retention={"delivery_log_days": 3})
        build_feed(con, f, D1, out, _at(D1), environ=env)
    with Receiver([503]) as down:
        f = f.model_copy(update={"destination": f.destination.model_copy(update={"url": down.url})})
        con.execute("UPDATE marts.contact_cards SET first_name = 'X' WHERE customer_id = 1")
        build_feed(con, f, _day(1), out, _at(_day(1)), environ=env, sleep=lambda s: None)
    by_status = dict(con.execute("SELECT status, count(*) FROM exports.delivery_batches GROUP BY 1").fetchall())
    assert by_status == {"delivered": 1, "pending": 1}
    # a run a month later (the endpoint still down): the delivered batch and every attempt
    # older than 3 days go; the pending batch stays, with its body
    later = dt.datetime.now() + dt.timedelta(days=30)
    with Receiver([503]) as down:
        f = f.model_copy(update={"destination": f.destination.model_copy(update={"url": down.url})})
        stats = build_feed(con, f, _day(30), out, later, environ=env, sleep=lambda s: None)
    assert stats["retention_batches_dropped"] == 1 and stats["retention_attempts_dropped"] >= 2
    left = con.execute("SELECT as_of_date, status, body IS NOT NULL FROM exports.delivery_batches "
                       "ORDER BY queued_at").fetchall()
    assert left[0] == (_day(1), "pending", True)
    assert con.execute("SELECT count(*) FROM exports.delivery_attempts "
                       "WHERE started_at < ?", [later - dt.timedelta(days=3)]).fetchone()[0] == 0
