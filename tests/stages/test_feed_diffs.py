"""Issue 14 item 4: diffs against the last delivered day, over skipped days; erased,
soft-deleted and opted-out people leave every feed, with no reason in the file; chosen
weekdays; the manifest names the previous delivery."""

from __future__ import annotations

import csv
import datetime as dt
import json

import pytest

from tessera.feeds.publish import build_feed
from tests.stages.feeds_world import D1, feed, make_world

NOW = dt.datetime(2026, 11, 2, 6, 0)
FIELDS = ["customer_id", "first_name", {"field": "email", "name": "em", "hash": "email"}]


def _read(folder, name):
    with open(folder / name, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture()
def world(tmp_path):
    con = make_world(tmp_path / "w.duckdb")
    yield con, tmp_path / "feeds"
    con.close()


def _day(n):
    return D1 + dt.timedelta(days=n)


def test_first_delivery_is_all_added(world):
    con, out = world
    f = feed(name="d", mode="diff", fields=FIELDS)
    stats = build_feed(con, f, D1, out, NOW)
    assert {x["kind"]: x["rows"] for x in stats["files"]} == {"added": 4, "changed": 0, "removed": 0}
    assert [r["customer_id"] for r in _read(out / "d", f"d_{D1}.added.csv")] == ["1", "2", "3", "4"]
    assert stats["manifest"]["previous_delivery"] is None


def test_diff_over_skipped_days_never_misses_a_removal(world):
    con, out = world
    f = feed(name="d", mode="diff", fields=FIELDS)
    build_feed(con, f, D1, out, NOW)
    # day 2 is not delivered; on it, 2 opts out, 4 is soft-deleted (leaves the cards),
    # 1 changes and 5 gives consent
    con.execute("UPDATE marts.contact_cards SET email_consent = 'withdrawn' WHERE customer_id = 2")
    con.execute("DELETE FROM marts.contact_cards WHERE customer_id = 4")
    con.execute("UPDATE marts.contact_cards SET first_name = 'Johnny' WHERE customer_id = 1")
    con.execute("UPDATE marts.contact_cards SET email_consent = 'granted' WHERE customer_id = 5")
    # day 3: a change nobody delivered on day 2 must not hide anything
    stats = build_feed(con, f, _day(3), out, NOW)
    folder = out / "d"
    assert stats["manifest"]["previous_delivery"] == str(D1)
    added = _read(folder, f"d_{_day(3)}.added.csv")
    changed = _read(folder, f"d_{_day(3)}.changed.csv")
    removed = _read(folder, f"d_{_day(3)}.removed.csv")
    assert [r["customer_id"] for r in added] == ["5"]
    assert [(r["customer_id"], r["first_name"]) for r in changed] == [("1", "Johnny")]
    assert [r["customer_id"] for r in removed] == ["2", "4"]
    assert list(removed[0]) == ["customer_id", "em"]  # the id and the hash: no reason, no name
    assert removed[0]["em"] and len(removed[0]["em"]) == 64
    # the next day without changes: empty diff; removals are not sent again
    stats = build_feed(con, f, _day(4), out, NOW)
    assert {x["kind"]: x["rows"] for x in stats["files"]} == {"added": 0, "changed": 0, "removed": 0}


def test_a_rerun_of_a_day_gives_the_same_diff(world):
    con, out = world
    f = feed(name="d", mode="diff", fields=FIELDS)
    build_feed(con, f, D1, out, NOW)
    con.execute("UPDATE marts.contact_cards SET email_consent = 'denied' WHERE customer_id = 3")
    build_feed(con, f, _day(1), out, NOW)
    first = {p.name: p.read_bytes() for p in (out / "d").glob(f"*{_day(1)}*") if "manifest" not in p.name}
    build_feed(con, f, _day(1), out, NOW)
    second = {p.name: p.read_bytes() for p in (out / "d").glob(f"*{_day(1)}*") if "manifest" not in p.name}
    assert first == second
    assert [r["customer_id"] for r in _read(out / "d", f"d_{_day(1)}.removed.csv")] == ["3"]


def test_an_erased_person_is_removed_once_by_id_only(world):
    con, out = world
    f = feed(name="d", mode="diff", fields=FIELDS)
    full = feed(name="f", fields=FIELDS)
    for x in (f, full):
        build_feed(con, x, D1, out, NOW)
    # what `tessera forget` does to the warehouse: every row of the person goes
    con.execute("DELETE FROM marts.contact_cards WHERE customer_id = 1")
    for t in ("exports.d", "exports.f"):
        con.execute(f"DELETE FROM {t} WHERE customer_id = 1")
    con.execute("INSERT INTO ops.erasures VALUES (1, 'req-1', 2, 5, 0, ?)", [NOW])
    for x in (f, full):
        build_feed(con, x, _day(1), out, NOW)
    removed = _read(out / "d", f"d_{_day(1)}.removed.csv")
    assert removed == [{"customer_id": "1", "em": ""}]
    assert _read(out / "f", f"f_{_day(1)}.deletions.csv") == [{"customer_id": "1"}]
    assert "1" not in [r["customer_id"] for r in _read(out / "f", f"f_{_day(1)}.csv")]
    # announced once: not again the day after
    for x in (f, full):
        build_feed(con, x, _day(2), out, NOW)
    assert _read(out / "d", f"d_{_day(2)}.removed.csv") == []
    assert _read(out / "f", f"f_{_day(2)}.deletions.csv") == []


def test_chosen_weekdays_skip_the_others_and_the_next_diff_covers_them(world):
    con, out = world
    f = feed(name="w", mode="diff", weekdays=["mon", "thu"], fields=FIELDS)
    assert build_feed(con, f, D1, out, NOW)["skipped"] is False  # Monday
    con.execute("UPDATE marts.contact_cards SET email_consent = 'withdrawn' WHERE customer_id = 2")
    tue = build_feed(con, f, _day(1), out, NOW)
    assert tue["skipped"] is True and not list((out / "w").glob(f"*{_day(1)}*"))
    thu = build_feed(con, f, _day(3), out, NOW)
    assert thu["manifest"]["previous_delivery"] == str(D1)
    assert [r["customer_id"] for r in _read(out / "w", f"w_{_day(3)}.removed.csv")] == ["2"]


def test_manifest_lists_files_schema_and_mode(world):
    con, out = world
    f = feed(name="m", mode="diff", format="parquet", fields=FIELDS)
    build_feed(con, f, D1, out, NOW)
    m = json.loads((out / "m" / f"m_{D1}.manifest.json").read_text())
    assert m["mode"] == "diff" and m["format"] == "parquet"
    assert [x["kind"] for x in m["files"]] == ["added", "changed", "removed"]
    assert [c["name"] for c in m["schema"]] == ["customer_id", "first_name", "em"]
    assert all(len(x["sha256"]) == 64 for x in m["files"])
    rows = con.execute("SELECT kind, rows FROM exports.feed_files WHERE feed = 'm' ORDER BY kind").fetchall()
    assert rows == [("added", 4), ("changed", 0), ("removed", 0)]


def test_a_day_that_fails_half_way_changes_no_state(world, monkeypatch):
    import tessera.feeds.publish as publish

    con, out = world
    f = feed(name="d", mode="diff", fields=FIELDS)
    build_feed(con, f, D1, out, NOW)
    con.execute("UPDATE marts.contact_cards SET first_name = 'Johnny' WHERE customer_id = 1")
    real = publish.write_feed_file

    def broken(engine, step, path, *a, **kw):
        if ".changed." in path.name:
            raise OSError("disk gone")
        return real(engine, step, path, *a, **kw)

    monkeypatch.setattr(publish, "write_feed_file", broken)
    with pytest.raises(OSError):
        build_feed(con, f, _day(1), out, NOW)
    assert con.execute("SELECT count(*) FROM exports.d WHERE as_of_date = ?", [_day(1)]).fetchone() == (0,)
    assert con.execute("SELECT max(as_of_date) FROM exports.feed_deliveries").fetchone() == (D1,)
    monkeypatch.setattr(publish, "write_feed_file", real)
    stats = build_feed(con, f, _day(1), out, NOW)
    assert {x["kind"]: x["rows"] for x in stats["files"]} == {"added": 0, "changed": 1, "removed": 0}
