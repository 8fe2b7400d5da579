"""As-of backfills (issue 19, item 1): a past day rebuilt later gives what its own run gave.

Three days of deliveries land one day at a time (the same people, re-delivered with the
dates of each day, so profiles, orders and events change every day); each day runs the
daily job. Day 2's outputs and feed files are kept, day 3 runs, then day 2 is run
again (a backfill): every partitioned output of day 2 and every data file of its feeds
must be the same. Then a person of day 2 is erased and day 2 rebuilt once more: the person
is in none of its outputs nor in any recorded version.
"""

from __future__ import annotations

import datetime as dt
import shutil

import pytest

from tests.conftest import PipelineEnv

# three days keep the module to five runs of the whole job (the slowest e2e module)
DAYS = [dt.date(2026, 11, d) for d in range(1, 4)]
DAY3 = DAYS[1]  # the past day rebuilt: inputs changed after it

# per-day outputs: table -> columns that say when a row was written, not what it says
DAY_TABLES = {
    "marketing.rfm_scores": (), "marketing.scores": (), "marketing.score_actions": (),
    "marketing.stages": (), "marketing.funnel_daily": (), "marketing.segment_members": (),
    "predictions.customer_predictions": (), "predictions.accuracy": (),
    "predictions.model_parameters": (), "recommendations.contact_products": (),
    "recommendations.evaluation": (), "exports.feed_deliveries": ("written_at",),
    "exports.feed_files": (), "exports.potential_companies": (), "ops.segment_runs": ("built_at",),
}


def _feed_tables(con) -> list[str]:
    return [f"exports.{r[0]}" for r in con.execute(
        "SELECT DISTINCT feed FROM exports.feed_deliveries ORDER BY 1").fetchall()]


def _day_rows(env: PipelineEnv, day: dt.date) -> dict[str, list]:
    con = env.connect()
    try:
        out = {}
        for table, volatile in {**DAY_TABLES, **{t: () for t in _feed_tables(con)}}.items():
            schema, name = table.split(".")
            if not con.execute("SELECT count(*) FROM information_schema.tables WHERE table_schema = ? "
                               "AND table_name = ?", [schema, name]).fetchone()[0]:
                continue
            cols = [r[0] for r in con.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_schema = ? AND "
                "table_name = ? ORDER BY ordinal_position", [schema, name]).fetchall()
                if r[0] not in volatile]
            select = ", ".join(f'"{c}"' for c in cols)
            out[table] = con.execute(f"SELECT {select} FROM {table} WHERE as_of_date = ? ORDER BY ALL",
                                     [day]).fetchall()
        return out
    finally:
        con.close()


def _failures(result) -> list[str]:
    """Why a run failed: each failed step's error and each failed blocking check."""
    out = [f"{e.step_key}: {e.event_specific_data.error.message.strip()[:400]}"
           for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    out += [f"check {e.event_specific_data.asset_key.to_user_string()}:{e.event_specific_data.check_name}"
            for e in result.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"
            and not e.event_specific_data.passed and e.event_specific_data.severity.value == "ERROR"]
    return out


def _backfill_partitioned(env: PipelineEnv, day: dt.date):
    """A backfill as the UI launches it for the partitioned assets alone: history/days and
    every daily-partitioned asset of the day, nothing of the unpartitioned chain."""
    import dagster as dg

    defs = env.definitions()
    keys = [n.key for n in defs.resolve_asset_graph().asset_nodes if n.partitions_def is not None]
    instance = dg.DagsterInstance.from_config(str(env.dagster_home))
    return defs.resolve_job_def("daily_job").execute_in_process(
        partition_key=day.isoformat(), instance=instance, asset_selection=keys, raise_on_error=False)


def _feed_files(env: PipelineEnv, day: dt.date) -> dict[str, bytes]:
    """Every data file of the day's feeds (manifests say when they were written: left out)."""
    return {str(p.relative_to(env.feeds)): p.read_bytes() for p in sorted(env.feeds.rglob(f"*{day.isoformat()}*"))
            if p.is_file() and not p.name.endswith(".manifest.json")}


@pytest.fixture(scope="module")
def five_days(tmp_path_factory):
    from tessera.sampledata.generator import generate

    root = tmp_path_factory.mktemp("asof")
    env = PipelineEnv(root / "env")
    kept = {}
    for day in DAYS:
        # the day's delivery: the same sources re-sent with the day's dates (new file names)
        delivery = root / f"delivery_{day:%Y%m%d}"
        generate(delivery, contacts=40, seed=11, as_of=day)
        shutil.copytree(delivery, env.landing, dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns("_truth"))
        result = env.run_daily(day)
        assert result.success, f"the daily job failed on {day}: {_failures(result)}"
        if day == DAY3:
            kept = {"rows": _day_rows(env, day), "files": _feed_files(env, day)}
    return env, kept


def test_a_backfilled_day_gives_what_its_run_gave(five_days):
    env, kept = five_days
    con = env.connect()
    try:
        recorded = [r[0] for r in con.execute("SELECT as_of_date FROM history.days ORDER BY 1").fetchall()]
        # the inputs changed after day 3: today's card is not day 3's
        changed = con.execute("SELECT count(*) FROM history.marts__contact_cards WHERE _from > ?",
                              [DAY3]).fetchone()[0]
    finally:
        con.close()
    assert recorded == DAYS
    assert changed > 0
    assert kept["files"], "day 3 wrote no feed files"
    assert sum(len(v) for v in kept["rows"].values()) > 0

    result = env.run_daily(DAY3)  # the backfill
    assert result.success, _failures(result)
    mats = {tuple(m.asset_key.path): m for m in result.get_asset_materialization_events()
            for m in [m.event_specific_data.materialization]}
    assert mats[("history", "days")].metadata["backfill"].value is True

    again = _day_rows(env, DAY3)
    assert set(again) == set(kept["rows"])
    for table, rows in kept["rows"].items():
        assert again[table] == rows, f"{table} differs after the backfill of {DAY3}"
    files = _feed_files(env, DAY3)
    assert sorted(files) == sorted(kept["files"])
    for name, data in kept["files"].items():
        assert files[name] == data, f"{name} is not byte-identical after the backfill"

    con = env.connect()
    try:  # a backfill records nothing: day 5 stays the newest version
        assert con.execute("SELECT max(as_of_date), count(*) FROM history.days").fetchone() == (DAYS[-1], len(DAYS))
    finally:
        con.close()


def test_an_erasure_holds_in_a_rebuilt_past_day(five_days):
    from tessera.deployment import load_deployment
    from tessera.privacy.suppression import forget

    env, kept = five_days
    con = env.connect()
    try:
        # someone on day 3's feeds and cards, with an e-mail
        cid, email = con.execute("""
            SELECT c.customer_id, c.email FROM history.marts__contact_cards c
            JOIN marketing.rfm_scores r ON r.customer_id = c.customer_id AND r.as_of_date = ?
            WHERE c.email IS NOT NULL AND c.customer_id IN (SELECT customer_id FROM marts.contact_cards)
            ORDER BY r.monetary DESC, c.customer_id LIMIT 1""", [DAY3]).fetchone()
        forget(con, load_deployment(env.config), "tests-only-suppression-key", emails=[email],
               request_id="asof-test")
    finally:
        con.close()

    result = _backfill_partitioned(env, DAY3)
    assert result.success, _failures(result)
    con = env.connect()
    try:
        for table in (*DAY_TABLES, *_feed_tables(con)):
            schema, name = table.split(".")
            cols = {r[0] for r in con.execute("SELECT column_name FROM information_schema.columns "
                                              "WHERE table_schema = ? AND table_name = ?", [schema, name]).fetchall()}
            if "customer_id" in cols:
                n = con.execute(f"SELECT count(*) FROM {table} WHERE customer_id = ?", [cid]).fetchone()[0]
                assert n == 0, f"the erased person is back in {table}"
        for (table,) in con.execute("SELECT table_name FROM information_schema.columns WHERE "
                                    "table_schema = 'history' AND column_name = 'customer_id'").fetchall():
            n = con.execute(f"SELECT count(*) FROM history.{table} WHERE customer_id = ?", [cid]).fetchone()[0]
            assert n == 0, f"history.{table} still holds the erased person"
        erased_rows = con.execute("SELECT count(*) FROM marketing.rfm_scores WHERE as_of_date = ?",
                                  [DAY3]).fetchone()[0]
    finally:
        con.close()
    assert erased_rows == len(kept["rows"]["marketing.rfm_scores"]) - 1
    files = _feed_files(env, DAY3)
    assert not any(email.encode() in data for data in files.values())
