"""Issue 14 item 6: a feed is an asset whose materialization carries its row counts per
file, the manifest and how its diff day was computed (counts only), with its checks:
consent, no erased person, and a row-count drop against the previous delivery as a WARN."""

from __future__ import annotations

import datetime as dt
from types import SimpleNamespace

import dagster as dg

from assets.exports import _feed_asset
from pipelines.definitions import build_resources
from tessera.engine import as_engine
from tessera.history import record_day
from tessera.engine.warehouse import connect
from tests.stages.feeds_world import D1, feed, make_world

KEY = "tests-only-suppression-key"


def _materialize(asset, checks, wh, tmp_path, day):
    result = dg.materialize([asset, *checks], partition_key=day.isoformat(),
                            resources=build_resources(wh, tmp_path / "landing", tmp_path / "feeds"))
    assert result.success
    meta = result.get_asset_materialization_events()[0].event_specific_data.materialization.metadata
    return meta, {e.asset_check_key.name: e for e in result.get_asset_check_evaluations()}


def test_the_feed_asset_reports_its_files_diff_path_and_checks(tmp_path, monkeypatch):
    monkeypatch.setenv("TESSERA_SUPPRESSION_KEY", KEY)
    wh = tmp_path / "wh.duckdb"
    make_world(wh).close()
    f = feed(name="crm", mode="diff",
             fields=["customer_id", "first_name", {"field": "email", "name": "em", "hash": "email"}])
    asset, checks = _feed_asset(SimpleNamespace(scores=[]), f)

    def record(day):  # what history/days does before every feed of the daily job
        con = connect(wh)
        record_day(as_engine(con), day, f"run-{day}", dt.datetime(2026, 11, 2, 5))
        con.close()

    record(D1)
    meta, found = _materialize(asset, checks, wh, tmp_path, D1)
    assert (meta["rows_added"].value, meta["rows_changed"].value, meta["rows_removed"].value) == (4, 0, 0)
    assert meta["dagster/row_count"].value == 4 and meta["diff_path"].value == "first delivery"
    assert meta["manifest"].value["mode"] == "diff" and meta["manifest"].value["previous_delivery"] is None
    assert all(found[n].passed for n in ("no_export_without_consent", "no_erased_person_exported",
                                         "row_count_holds_against_previous_delivery"))

    # day 2: three of the four opt out: removed, and the delivery drops to a quarter
    con = connect(wh)
    con.execute("UPDATE marts.contact_cards SET email_consent = 'withdrawn' WHERE customer_id IN (2, 3, 4)")
    con.close()
    day2 = D1 + dt.timedelta(days=1)
    record(day2)
    meta, found = _materialize(asset, checks, wh, tmp_path, day2)
    assert (meta["rows_added"].value, meta["rows_changed"].value, meta["rows_removed"].value) == (0, 0, 3)
    assert meta["dagster/row_count"].value == 1
    assert meta["diff_path"].value == "incremental" and meta["diff_candidates"].value == 3
    assert meta["manifest"].value["previous_delivery"] == str(D1)
    assert found["no_export_without_consent"].passed and found["no_erased_person_exported"].passed
    drop = found["row_count_holds_against_previous_delivery"]
    assert not drop.passed and drop.severity == dg.AssetCheckSeverity.WARN
    assert drop.metadata["rows"].value == 1 and drop.metadata["previous_rows"].value == 4
