"""Erasure reaches what the feeds keep: after ``forget`` nothing of the person is left in
the kept feed files (every format), their diff state, the delivery tables, or a batch
that is retried later; everybody else's rows are exactly as they were."""

from __future__ import annotations

import datetime as dt
import json
from types import SimpleNamespace

import pytest

from tessera.feeds.erasure import scrub_feeds
from tessera.feeds.files import sha256_file
from tessera.feeds.publish import build_feed
from tessera.privacy import suppression as privacy_core
from tests.stages.feeds_world import D1, PEOPLE, feed, make_world
from tests.stages.test_feed_delivery import SECRET, Receiver

NOW = dt.datetime(2026, 11, 2, 6, 0)
FORMATS = ["csv", "jsonl", "parquet", "xlsx", "xml"]
KEY = "tests-only-suppression-key"
# what would identify person 1 in a file, in clear or as the text of a value
TRACES = [b"John", b"HYPERLINK", b"650", b"350.00"]


def _forget(con, *ids):
    deployment = SimpleNamespace(sources=[], sources_of=lambda entity: [])
    privacy_core.forget(con, deployment, KEY, customer_ids=ids, request_id=f"req-{ids}", now=NOW)


def _feeds(fmt):
    return [feed(name=f"full_{fmt}", format=fmt, for_spreadsheet=fmt in ("csv", "xlsx")),
            feed(name=f"diff_{fmt}", format=fmt, mode="diff",
                 fields=["customer_id", "first_name", "note", "order_summary", "birth_date",
                         {"field": "email", "name": "em", "hash": "email"}])]


@pytest.mark.parametrize("fmt", FORMATS)
def test_forget_rewrites_every_kept_file_without_the_person(tmp_path, fmt):
    con = make_world(tmp_path / "w.duckdb")
    out = tmp_path / "feeds"
    feeds = _feeds(fmt)
    for f in feeds:
        build_feed(con, f, D1, out, NOW)
    # day 2: person 1 opts out, so the diff's removed file carries their hashed e-mail
    con.execute("UPDATE marts.contact_cards SET email_consent = 'withdrawn' WHERE customer_id = 1")
    for f in feeds:
        build_feed(con, f, D1 + dt.timedelta(days=1), out, NOW)
    # the file a world without person 1 would have had on day 1
    clean = make_world(tmp_path / "clean.duckdb", [p for p in PEOPLE if p[0] != 1])
    build_feed(clean, feeds[0], D1, tmp_path / "clean", NOW)
    clean.close()

    _forget(con, 1)
    done = scrub_feeds(con, feeds, out, NOW)
    assert done["files_rewritten"] >= 2  # the full day 1, the diff's added and removed

    for f in feeds:
        for path in (out / f.name).iterdir():
            if path.suffix != ".json":
                data = path.read_bytes()
                if fmt == "xlsx":
                    import zipfile
                    with zipfile.ZipFile(path) as zf:
                        data = zf.read("xl/worksheets/sheet1.xml")
                for trace in TRACES:
                    assert trace not in data, (path.name, trace)
        for day, file, rows, sha in con.execute(
                "SELECT as_of_date, file, rows, sha256 FROM exports.feed_files WHERE feed = ?",
                [f.name]).fetchall():
            assert sha256_file(out / f.name / file) == sha
            manifest = json.loads((out / f.name / f"{f.name}_{day}.manifest.json").read_text())
            assert {x["file"]: (x["rows"], x["sha256"]) for x in manifest["files"]}[file] == (rows, sha)
        assert con.execute(f"SELECT count(*) FROM exports.{f.name} WHERE customer_id = 1").fetchone()[0] == 0
    # everybody else's rows exactly as the export writes them
    name = f"full_{fmt}_{D1}.{fmt}"
    if fmt != "parquet":  # Parquet: same rows and values, its metadata may differ
        assert (out / f"full_{fmt}" / name).read_bytes() == (tmp_path / "clean" / f"full_{fmt}" / name).read_bytes()
    # the removal of an erased person stays, as the id only (the receiver deletes by it)
    removed = con.execute(f"SELECT file, rows FROM exports.feed_files WHERE feed = 'diff_{fmt}' "
                          "AND kind = 'removed' AND as_of_date = ?", [D1 + dt.timedelta(days=1)]).fetchone()
    assert removed[1] == 1
    # a second scrub finds nothing left to do; the next day's delivery goes on
    assert scrub_feeds(con, feeds, out, NOW)["files_rewritten"] == 0
    for f in feeds:
        build_feed(con, f, D1 + dt.timedelta(days=2), out, NOW)
    con.close()


def test_a_pending_batch_is_retried_without_the_erased_person(tmp_path):
    con = make_world(tmp_path / "w.duckdb")
    env = {"CRM_SECRET": SECRET}
    with Receiver([503, 503]) as down:
        f = feed(name="crm", fields=["customer_id", "first_name", "email"], format="jsonl",
                 destination={"url": down.url, "secret_env": "CRM_SECRET", "batch_rows": 3,
                              "max_attempts": 2, "timeout_s": 2})
        first = build_feed(con, f, D1, tmp_path / "feeds", NOW, environ=env, sleep=lambda s: None)
    assert first["delivery"]["pending_batches"] == 2
    before = dict(con.execute("SELECT seq, batch_id FROM exports.delivery_batches").fetchall())

    _forget(con, 1)
    done = scrub_feeds(con, [f], tmp_path / "feeds", NOW)
    assert done["records_dropped"] == 1 and done["batches_scrubbed"] == 1
    bodies = " ".join(b or "" for (b,) in con.execute("SELECT body FROM exports.delivery_batches").fetchall())
    assert "John" not in bodies and "gmail" not in bodies
    assert con.execute("SELECT count(*) FROM exports.delivery_batch_subjects "
                       "WHERE subject_id = 1").fetchone()[0] == 0
    # the positions of the others moved up with their records
    assert con.execute("SELECT list(subject_id ORDER BY record) FROM exports.delivery_batch_subjects "
                       "WHERE batch_id = ?", [before[1]]).fetchone()[0] == [2, 3]

    with Receiver() as up:
        f2 = f.model_copy(update={"destination": f.destination.model_copy(update={"url": up.url})})
        build_feed(con, f2, D1 + dt.timedelta(days=1), tmp_path / "feeds", NOW, environ=env,
                   sleep=lambda s: None)
    assert up.bad_signatures == 0 and up.repeats == []
    day1 = [(mid, b) for mid, b in up.applied.items() if b["as_of_date"] == str(D1)]
    # the same batch ids (a receiver that got the first body still de-duplicates) ...
    assert [mid for mid, _ in day1] == [before[1], before[2]]
    # ... and the retried bodies no longer carry person 1
    assert [r["record"]["customer_id"] for _, b in day1 for r in b["records"]] == [2, 3, 4]
    assert "John" not in json.dumps(up.applied)
    con.close()


def test_an_xml_body_keeps_every_other_record_byte_for_byte(tmp_path):
    from tessera.engine import DuckDBEngine
    from tessera.feeds.delivery import enqueue, scrub_erased_batches, xml_batches

    con = make_world(tmp_path / "w.duckdb")
    engine = DuckDBEngine(con)
    records = [{"op": "upsert", "record": {"customer_id": i, "note": f'a<b & "c"\r{i}'}}
               for i in (1, 2, 3)]
    kw = dict(source="t", as_of=D1, batch_rows=10, envelope={"feed": "t"}, root="R", item="I")
    (batch,) = xml_batches("crm", records=records, subjects=[1, 2, 3], **kw)
    enqueue(engine, "crm", [batch], NOW)
    con.execute("INSERT INTO ops.erasures VALUES (2, 'r', 1, 1, 0, ?)", [NOW])
    assert scrub_erased_batches(engine)["records_dropped"] == 1
    (body,) = con.execute("SELECT body FROM exports.delivery_batches").fetchone()
    (expected,) = xml_batches("crm", records=[records[0], records[2]], **kw)
    # the same bytes xml_batches gives for the others (the batch keeps its id)
    assert body.encode() == expected.body
    con.close()


def test_a_batch_left_empty_by_an_erasure_is_never_sent(tmp_path):
    from tessera.engine import DuckDBEngine
    from tessera.feeds.delivery import enqueue, json_batches, scrub_erased_batches

    con = make_world(tmp_path / "w.duckdb")
    engine = DuckDBEngine(con)
    batches = json_batches("crm", source="t", as_of=D1, batch_rows=1, subjects=[7, None],
                           records=[{"id": 7, "name": "Seven"}, {"id": 7}])
    enqueue(engine, "crm", batches, NOW)
    con.execute("INSERT INTO ops.erasures VALUES (7, 'r', 1, 1, 0, ?)", [NOW])
    scrub_erased_batches(engine)
    rows = con.execute("SELECT seq, status, body FROM exports.delivery_batches ORDER BY seq").fetchall()
    assert rows[0] == (1, "erased", None)
    assert rows[1][1] == "pending" and json.loads(rows[1][2])["records"] == [{"id": 7}]
    con.close()



def test_forget_scrubs_the_files_and_batches_of_a_feed_no_longer_configured(tmp_path):
    con = make_world(tmp_path / "w.duckdb")
    out = tmp_path / "feeds"
    env = {"CRM_SECRET": SECRET}
    gone = [feed(name="gone_csv", for_spreadsheet=True),
            feed(name="gone_diff", format="parquet", mode="diff",
                 fields=["customer_id", "first_name", {"field": "email", "name": "em", "hash": "email"}])]
    with Receiver([503, 503]) as down:
        gone.append(feed(name="gone_crm", fields=["customer_id", "first_name", "email"],
                         format="jsonl", destination={
                             "url": down.url, "secret_env": "CRM_SECRET", "batch_rows": 3,
                             "max_attempts": 2, "timeout_s": 2}))
        for f in gone:
            build_feed(con, f, D1, out, NOW, environ=env, sleep=lambda s: None)
    assert con.execute("SELECT count(*) FROM exports.delivery_batches WHERE status = 'pending'"
                       ).fetchone()[0] == 2
    clean = make_world(tmp_path / "clean.duckdb", [p for p in PEOPLE if p[0] != 1])
    build_feed(clean, gone[0], D1, tmp_path / "clean", NOW)
    clean.close()

    # the three feeds leave feeds.yaml; one other feed is configured
    kept = feed(name="kept")
    build_feed(con, kept, D1, out, NOW)
    _forget(con, 1)
    done = scrub_feeds(con, [kept], out, NOW)
    assert done["unconfigured_feeds"] == 3 and done["unconfigured_without_definition"] == 0
    assert done["records_dropped"] == 1
    for f in [*gone, kept]:
        for path in (out / f.name).iterdir():
            if path.suffix != ".json":
                for trace in TRACES:
                    assert trace not in path.read_bytes(), (path.name, trace)
    # the old full file is the one a world without person 1 would have had
    name = f"gone_csv_{D1}.csv"
    assert (out / "gone_csv" / name).read_bytes() == (tmp_path / "clean" / "gone_csv" / name).read_bytes()
    for f in gone:  # checksums and manifests follow the rewritten files
        for day, file, sha in con.execute("SELECT as_of_date, file, sha256 FROM exports.feed_files "
                                          "WHERE feed = ?", [f.name]).fetchall():
            assert sha256_file(out / f.name / file) == sha
    bodies = " ".join(b or "" for (b,) in con.execute("SELECT body FROM exports.delivery_batches").fetchall())
    assert "John" not in bodies and "gmail" not in bodies
    for f in gone:  # and their stored state (forget's transaction)
        assert con.execute(f"SELECT count(*) FROM exports.{f.name} WHERE customer_id = 1").fetchone()[0] == 0
    # a second forget run has nothing left to do
    again = scrub_feeds(con, [kept], out, NOW)
    assert again["files_rewritten"] == 0 and again["records_dropped"] == 0
    con.close()
