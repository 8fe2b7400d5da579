"""Tests for tessera.feeds: atomic CSV publication, formula neutralisation, manifests."""
from __future__ import annotations

import csv
import datetime as dt
import decimal
import hashlib
import json
from pathlib import Path

import pytest

from tessera.feeds.publish import publish_csv, write_manifest
from tessera.feeds.selection import consent_filter

COLUMNS = ["customer_id", "email", "mobile", "note", "order_summary", "birth_date"]
ROWS = [
    (1, "a@x.it", "+39 333 1234567", "=HYPERLINK(\"http://evil\")", decimal.Decimal("350.00"),
     dt.date(1980, 2, 14)),
    (2, "b@x.it", "-5", "@SUM(A1)", decimal.Decimal("-12.50"), None),
    (3, "c@x.it", None, "\tTab;\"quoted\",comma\nnewline", 0, dt.date(2000, 1, 1)),
    (4, "Citt\u00e0@x.it", "3331234567", "plain", 1, None),
]


def read_back(path: Path) -> list[list[str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.reader(fh))


def test_publish_csv_is_atomic_and_returns_sha(tmp_path):
    path = tmp_path / "feeds" / "newsletter" / "newsletter_2026-11-01.csv"
    sha = publish_csv(path, COLUMNS, ROWS, for_spreadsheet=False)
    assert path.is_file()
    assert sha == hashlib.sha256(path.read_bytes()).hexdigest()
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]  # no temp file left
    data = path.read_bytes()
    assert b"\r" not in data  # lines end with \n only
    assert data.startswith(b"customer_id,email,mobile,note,order_summary,birth_date\n")


def test_without_spreadsheet_values_are_written_as_they_are(tmp_path):
    path = tmp_path / "f.csv"
    publish_csv(path, COLUMNS, ROWS, for_spreadsheet=False)
    got = read_back(path)
    assert got[0] == COLUMNS
    assert got[1] == ["1", "a@x.it", "+39 333 1234567", "=HYPERLINK(\"http://evil\")", "350.00",
                      "1980-02-14"]
    assert got[2] == ["2", "b@x.it", "-5", "@SUM(A1)", "-12.50", ""]
    assert got[3] == ["3", "c@x.it", "", "\tTab;\"quoted\",comma\nnewline", "0", "2000-01-01"]
    assert got[4][1] == "Citt\u00e0@x.it"
    assert len(got) == 5


def test_for_spreadsheet_neutralises_formula_looking_text(tmp_path):
    path = tmp_path / "f.csv"
    publish_csv(path, COLUMNS, ROWS, for_spreadsheet=True)
    got = read_back(path)
    assert got[0] == COLUMNS  # the header is never touched
    assert got[1][2] == "'+39 333 1234567"
    assert got[1][3] == "'=HYPERLINK(\"http://evil\")"
    assert got[2][2] == "'-5"
    assert got[2][3] == "'@SUM(A1)"
    assert got[3][3] == "'\tTab;\"quoted\",comma\nnewline"
    # Numbers (not text) and harmless text are left alone.
    assert got[2][4] == "-12.50"
    assert got[1][1] == "a@x.it" and got[4][2] == "3331234567" and got[4][3] == "plain"


def test_publish_replaces_previous_file(tmp_path):
    path = tmp_path / "f.csv"
    sha1 = publish_csv(path, ["a"], [(1,), (2,)], for_spreadsheet=False)
    sha2 = publish_csv(path, ["a"], [(3,)], for_spreadsheet=False)
    assert sha1 != sha2
    assert read_back(path) == [["a"], ["3"]]
    assert sha2 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert [p.name for p in tmp_path.iterdir()] == ["f.csv"]


def test_publish_failure_leaves_old_file_and_no_temp(tmp_path):
    path = tmp_path / "f.csv"
    publish_csv(path, ["a"], [(1,)], for_spreadsheet=False)
    before = path.read_bytes()

    class Boom:
        def __str__(self):
            raise RuntimeError("cannot render")

    with pytest.raises(RuntimeError, match="cannot render"):
        publish_csv(path, ["a"], [(2,), (Boom(),)], for_spreadsheet=False)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["f.csv"]


def test_empty_feed_has_header_only(tmp_path):
    path = tmp_path / "f.csv"
    sha = publish_csv(path, ["customer_id", "email"], [], for_spreadsheet=True)
    assert path.read_bytes() == b"customer_id,email\n"
    assert sha == hashlib.sha256(b"customer_id,email\n").hexdigest()


def test_write_manifest_writes_valid_json(tmp_path):
    path = tmp_path / "f.manifest.json"
    manifest = {"feed": "newsletter", "rows": 4, "sha256": "ab" * 32, "columns": COLUMNS,
                "segment": None, "note": "Citt\u00e0 \"quoted\""}
    write_manifest(path, manifest)
    assert json.loads(path.read_text(encoding="utf-8")) == manifest
    assert [p.name for p in tmp_path.iterdir()] == ["f.manifest.json"]
    write_manifest(path, {"rows": 0})
    assert json.loads(path.read_text(encoding="utf-8")) == {"rows": 0}
    assert [p.name for p in tmp_path.iterdir()] == ["f.manifest.json"]


@pytest.mark.parametrize("channel,needle", [
    ("email", "email_consent = 'granted'"),
    ("sms", "sms_consent = 'granted'"),
    ("none", "TRUE"),
])
def test_consent_filter(channel, needle):
    assert needle in consent_filter(channel)


@pytest.mark.parametrize("channel,expected", [("email", [1]), ("sms", [1, 4]), ("none", [1, 2, 3, 4, 5])])
def test_consent_filter_runs(channel, expected):
    import duckdb

    con = duckdb.connect()
    con.execute("""CREATE TABLE c AS SELECT * FROM (VALUES
        (1, 'a@x.it', 'granted', FALSE, '+39 1', 'granted'),
        (2, 'b@x.it', 'granted', TRUE,  NULL,    'granted'),
        (3, 'c@x.it', 'denied',  NULL,  '+39 3', 'denied'),
        (4, NULL,     'granted', NULL,  '+39 4', 'granted'),
        (5, 'e@x.it', NULL,      NULL,  NULL,    NULL))
        t(customer_id, email, email_consent, email_hard_bounced, mobile, sms_consent)""")
    got = [r[0] for r in con.execute(
        f"SELECT customer_id FROM c WHERE {consent_filter(channel)} ORDER BY 1").fetchall()]
    assert got == expected


def test_sweep_removes_only_its_own_stale_temps(tmp_path):
    import os
    import subprocess
    import sys
    import time

    from tessera.feeds.publish import sweep_stale_temps, temp_path

    folder = tmp_path / "feed"
    folder.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = folder / f".feed_2026-11-01.csv.tmp-{dead.pid}"
    stale.write_bytes(b"x" * 10)
    stale_manifest = folder / f".feed_2026-11-01.manifest.json.tmp-{dead.pid}"
    stale_manifest.write_bytes(b"{}")
    others = [folder / "feed_2026-11-01.csv",              # a published file
              folder / ".feed.csv.tmp-abc",               # not the pattern
              folder / f".feed.csv.tmp-{os.getppid()}",   # its writer is alive
              folder / "notes.tmp-1"]                     # not hidden
    for p in others:
        p.write_bytes(b"keep")
    (folder / "sub").mkdir()
    nested = folder / "sub" / f".x.csv.tmp-{dead.pid}"     # another folder: not ours
    nested.write_bytes(b"keep")
    old = time.time() - 3600
    for p in [stale, stale_manifest, *others, nested]:
        os.utime(p, (old, old))
    fresh = folder / f".feed_2026-11-02.csv.tmp-{dead.pid}"  # younger than the running export
    fresh.write_bytes(b"keep")
    started = time.time() - 60
    os.utime(fresh, (started + 30, started + 30))

    assert sweep_stale_temps(folder, started) == {"files": 2, "bytes": 12}
    assert not stale.exists() and not stale_manifest.exists()
    assert all(p.exists() for p in [*others, nested, fresh])
    assert temp_path(folder / "f.csv").name == f".f.csv.tmp-{os.getpid()}"
    assert sweep_stale_temps(tmp_path / "missing", started) == {"files": 0, "bytes": 0}
