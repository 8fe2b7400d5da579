"""A full file system is named: which path, how much is free, what was needed; nothing is
left half-written, and the previous file stays. Real tmpfs mounts (skipped if not allowed)."""

from __future__ import annotations

import errno

import pytest

from tessera.engine.space import OutOfSpace, is_out_of_space, naming_space
from tessera.feeds.publish import publish_csv, write_manifest
from tessera.ingest.api import publish_jsonl
from tests.conftest import fill


def test_naming_space_keeps_the_first_error_as_cause(tmp_path):
    first = OSError(errno.ENOSPC, "No space left on device")
    with pytest.raises(OutOfSpace) as info:
        with naming_space("the feed folder", tmp_path / "f.csv", needed=2048):
            raise first
    assert info.value.__cause__ is first
    msg = str(info.value)
    assert "no space left on device for the feed folder at" in msg and str(tmp_path / "f.csv") in msg
    assert " free" in msg and "at least 2.0 KiB needed" in msg
    with pytest.raises(ValueError):
        with naming_space("x", tmp_path):
            raise ValueError("not about space")
    assert is_out_of_space(RuntimeError("IO Error: Could not write file \"w.wal\": No space left on device"))


def test_full_feed_folder_is_named_and_keeps_the_previous_feed(small_fs):
    fs = small_fs("256k")
    feed = fs / "newsletter" / "newsletter_2026-11-01.csv"
    publish_csv(feed, ["customer_id"], [(1,), (2,)], False)
    write_manifest(feed.with_suffix(".manifest.json"), {"rows": 2})
    before = feed.read_bytes(), feed.with_suffix(".manifest.json").read_bytes()
    fill(fs)
    with pytest.raises(OutOfSpace) as info:
        publish_csv(feed, ["customer_id", "note"], [(i, "x" * 100) for i in range(5000)], False)
    assert "for the feed folder at" in str(info.value) and str(feed) in str(info.value)
    with pytest.raises(OutOfSpace):
        write_manifest(feed.with_suffix(".manifest.json"), {"rows": 5000, "pad": "y" * 10000})
    assert (feed.read_bytes(), feed.with_suffix(".manifest.json").read_bytes()) == before
    assert sorted(p.name for p in feed.parent.iterdir()) == sorted(
        [feed.name, feed.with_suffix(".manifest.json").name])
    (fs / "filler").unlink()  # space freed: the same export now succeeds
    publish_csv(feed, ["customer_id", "note"], [(i, "x" * 100) for i in range(500)], False)


def test_full_landing_archive_is_named(small_fs):
    fs = small_fs("128k")
    fill(fs)
    final = fs / "crm_20261101.jsonl"
    with pytest.raises(OutOfSpace) as info:
        publish_jsonl([{"id": i, "note": "z" * 200} for i in range(2000)], final)
    assert "for the landing archive at" in str(info.value)
    assert [p.name for p in fs.iterdir()] == ["filler"]


def test_full_warehouse_and_temp_directory_are_named(small_fs):
    from resources.warehouse import TesseraWarehouse, WarehouseError

    fs = small_fs("2m", "wh")
    db = fs / "w.duckdb"
    wh = TesseraWarehouse(database=str(db))
    with wh.get_connection() as con:
        con.execute("CREATE TABLE t (s VARCHAR)")
    with pytest.raises(WarehouseError) as info:
        with wh.get_connection() as con:
            con.execute("INSERT INTO t SELECT md5(range::VARCHAR) FROM range(300000)")
    msg = str(info.value)
    assert "no space left on device for the warehouse" in msg and str(fs) in msg, msg
    assert "free" in msg and "first error:" in msg
    with wh.get_connection() as con:  # nothing half-written: the table is as it was
        assert con.execute("SELECT count(*) FROM t").fetchone()[0] == 0

    tmp_fs = small_fs("1m", "spill")
    spill = TesseraWarehouse(database=str(tmp_fs.parent / "big.duckdb"), connection_config={
        "temp_directory": str(tmp_fs / "duckdb_tmp"), "memory_limit": "40MB", "threads": 1,
        "preserve_insertion_order": False})
    with pytest.raises(WarehouseError) as info:
        with spill.get_connection() as con:
            con.execute("SELECT count(DISTINCT s) FROM (SELECT md5(range::VARCHAR) || repeat('x', 40) "
                        "AS s FROM range(4000000))").fetchall()
    assert "for the warehouse's temp directory at" in str(info.value), str(info.value)
