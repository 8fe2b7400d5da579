"""Versions of the day's inputs (tessera.history): each recorded day reads back exactly as
it was, re-recording the newest day replaces it, an earlier day records nothing, and the
overlay engine hands a stage the day's tables without changing its SQL."""

from __future__ import annotations

import datetime as dt

import pytest

from tessera.engine import DuckDBEngine, SqlStep
from tessera.engine.warehouse import connect
from tessera.history import NotRecorded, day_engine, record_day, recorded_days
from tessera.history.summary import day_summary, days_summary

D1, D2, D3 = (dt.date(2026, 11, d) for d in (1, 2, 3))
NOW = dt.datetime(2026, 11, 4, 2, 0)


def _set_day(con, cards: list[tuple], orders: list[tuple]) -> None:
    con.execute("CREATE OR REPLACE TABLE marts.contact_cards (customer_id BIGINT, city VARCHAR, "
                "tags VARCHAR[], golden_built_at TIMESTAMP)")
    if cards:
        con.executemany("INSERT INTO marts.contact_cards VALUES (?, ?, ?, now())", cards)
    con.execute("CREATE OR REPLACE TABLE core.orders (order_id VARCHAR, customer_id BIGINT, amount DECIMAL(18,2))")
    if orders:
        con.executemany("INSERT INTO core.orders VALUES (?, ?, ?)", orders)


DAYS = {
    D1: ([(1, "Milano", ["a"]), (2, "Torino", None)], [("o1", 1, 10), ("o1", 1, 10)]),
    D2: ([(1, "Milano", ["a"]), (2, "Roma", None), (3, None, [])], [("o1", 1, 10)]),
    D3: ([(2, "Roma", None), (3, "Bari", [])], [("o1", 1, 10), ("o2", 3, 5), ("o2", 3, 5)]),
}


@pytest.fixture()
def warehouse(tmp_path):
    con = connect(tmp_path / "wh.duckdb")
    for schema in ("marts", "core", "ops"):
        con.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
    yield con
    con.close()


def _read(engine, sql: str) -> list[tuple]:
    return sorted(engine.rows(SqlStep("t.read", sql)), key=repr)


def _record_all(con):
    engine = DuckDBEngine(con)
    for day, (cards, orders) in DAYS.items():
        _set_day(con, cards, orders)
        out = record_day(engine, day, f"run-{day}", NOW)
        assert out["recorded"] and not out["backfill"]
    return engine


def test_each_recorded_day_reads_back_as_it_was(warehouse):
    engine = _record_all(warehouse)
    assert recorded_days(engine) == [D1, D2, D3]
    for day, (cards, orders) in DAYS.items():
        past = day_engine(engine, day)
        got_cards = _read(past, "SELECT customer_id, city, tags FROM marts.contact_cards")
        got_orders = _read(past, "SELECT order_id, customer_id, CAST(amount AS INTEGER) FROM core.orders")
        assert got_cards == sorted([(c, city, tags) for c, city, tags in cards], key=repr), day
        # identical rows keep their multiplicity
        assert got_orders == sorted(orders, key=repr), day
    # the newest day reads the tables themselves
    assert day_engine(engine, D3) is engine
    # only changes are stored: day 3 opened Bari (3) and the second o2 rows, closed 1 and one o1
    opened = warehouse.execute("SELECT count(*) FROM history.marts__contact_cards WHERE _from = ?",
                               [D3]).fetchone()[0]
    assert opened == 1


def test_rerecording_the_newest_day_replaces_it_and_an_earlier_day_records_nothing(warehouse):
    engine = _record_all(warehouse)
    before = warehouse.execute("SELECT count(*) FROM history.marts__contact_cards").fetchone()[0]
    out = record_day(engine, D3, "run-again", NOW)  # same tables: same version
    assert out["recorded"]
    assert warehouse.execute("SELECT count(*) FROM history.marts__contact_cards").fetchone()[0] == before
    _set_day(warehouse, [(9, "Como", None)], [])
    out = record_day(engine, D2, "backfill-run", NOW)
    assert out == {"recorded": False, "backfill": True, "latest_recorded": D3, "version_of": D2, "tables": {}}
    assert _read(day_engine(engine, D3), "SELECT customer_id FROM marts.contact_cards") == [(9,)]
    assert _read(day_engine(engine, D2), "SELECT customer_id FROM marts.contact_cards") == [(1,), (2,), (3,)]
    runs = warehouse.execute("SELECT run_id, backfill FROM history.runs ORDER BY started_at, run_id").fetchall()
    assert ("backfill-run", True) in runs and ("run-again", False) in runs


def test_a_day_before_the_first_recorded_one_is_refused(warehouse):
    engine = _record_all(warehouse)
    with pytest.raises(NotRecorded, match="before the first recorded day"):
        day_engine(engine, dt.date(2026, 10, 31))
    # a day between recorded days (no run) reads the version before it
    assert _read(day_engine(engine, dt.date(2026, 11, 2)), "SELECT count(*) FROM marts.contact_cards") == [(3,)]


def test_overlay_leaves_writes_and_other_names_alone(warehouse):
    engine = _record_all(warehouse)
    warehouse.execute("CREATE TABLE marts.contact_cards_extra AS SELECT 42 AS x")
    past = day_engine(engine, D1)
    step = SqlStep("t", "SELECT count(*) FROM marts.contact_cards c JOIN core.orders o USING (customer_id) "
                        "WHERE c.customer_id IN (SELECT x FROM marts.contact_cards_extra)")
    assert "marts.contact_cards_extra" in past.rewrite(step).sql
    assert "asof__marts__contact_cards " in past.rewrite(step).sql
    warehouse.execute("CREATE TABLE core.out (n BIGINT)")
    past.append("core.out", SqlStep("t", "SELECT count(*) FROM marts.contact_cards"))
    assert warehouse.execute("SELECT n FROM core.out").fetchall() == [(2,)]


def test_a_new_column_reads_null_in_earlier_versions(warehouse):
    engine = _record_all(warehouse)
    warehouse.execute("ALTER TABLE marts.contact_cards ADD COLUMN tier VARCHAR")
    warehouse.execute("UPDATE marts.contact_cards SET tier = 'gold'")
    record_day(engine, dt.date(2026, 11, 4), "run-4", NOW)
    assert _read(day_engine(engine, D2), "SELECT DISTINCT tier FROM marts.contact_cards") == [(None,)]
    assert _read(day_engine(engine, D3), "SELECT customer_id, city FROM marts.contact_cards") == [(2, "Roma"), (3, "Bari")]


def test_run_history_counts_customers_new_and_updated(warehouse):
    warehouse.execute("""CREATE TABLE ops.import_report (source VARCHAR, file VARCHAR, batch_id VARCHAR,
        status VARCHAR, records BIGINT, new BIGINT, updated BIGINT, unchanged BIGINT, rejected BIGINT,
        sha256 VARCHAR, message VARCHAR, loaded_at TIMESTAMP)""")
    warehouse.execute("""CREATE TABLE ops.erasures (customer_id BIGINT, request_id VARCHAR,
        identifiers BIGINT, rows_deleted BIGINT, files_rewritten BIGINT, erased_at TIMESTAMP)""")
    warehouse.execute("CREATE SCHEMA exports")
    warehouse.execute("CREATE TABLE exports.feed_deliveries (feed VARCHAR, as_of_date DATE, file VARCHAR, "
                      "rows BIGINT, sha256 VARCHAR, written_at TIMESTAMP)")
    engine = DuckDBEngine(warehouse)
    customers = {D1: [(1, "a"), (2, "b")], D2: [(1, "a"), (2, "B"), (3, "c")], D3: [(2, "B"), (3, "c")]}
    for i, (day, rows) in enumerate(customers.items()):
        warehouse.execute("CREATE OR REPLACE TABLE core.customers (customer_id BIGINT, name VARCHAR, "
                          "golden_built_at TIMESTAMP)")
        warehouse.executemany("INSERT INTO core.customers VALUES (?, ?, now())", rows)
        warehouse.execute("INSERT INTO ops.import_report VALUES ('crm', ?, ?, 'loaded', 5, 3, 1, 0, 1, '', "
                          "NULL, now())", [f"f{i}.csv", f"run-{day}"])
        warehouse.execute("INSERT INTO exports.feed_deliveries VALUES ('news', ?, 'x.csv', ?, '', now())",
                          [day, 10 + i])
        record_day(engine, day, f"run-{day}", NOW + dt.timedelta(days=i))
    by_day = {r["as_of_date"]: r for r in days_summary(engine)}
    assert [(by_day[d]["customers"], by_day[d]["customers_new"], by_day[d]["customers_updated"])
            for d in (D1, D2, D3)] == [(2, 2, 0), (3, 1, 1), (2, 0, 0)]
    assert (by_day[D2]["files_read"], by_day[D2]["rows_loaded"], by_day[D2]["rows_rejected"]) == (1, 4, 1)
    one = day_summary(engine, D2)
    assert one["feed_list"] == [("news", "x.csv", 11)]  # only the summarised day's feeds
    assert one["feed_rows"] == 11 and one["runs"] == [f"run-{D2}"]


def test_every_history_step_transpiles_to_spark(warehouse):
    from tessera.engine import recording
    from tessera.engine.portability import report

    with recording() as log:
        engine = _record_all(warehouse)
        past = day_engine(engine, D1)
        _read(past, "SELECT count(*) FROM marts.contact_cards")
        warehouse.execute("CREATE TABLE ops.import_report (batch_id VARCHAR, status VARCHAR, new BIGINT, "
                          "updated BIGINT, unchanged BIGINT, rejected BIGINT)")
        warehouse.execute("CREATE TABLE ops.erasures (customer_id BIGINT, erased_at TIMESTAMP)")
        days_summary(engine)
    steps = [s for s in log.values() if s.name.startswith(("history.", "overlay."))]
    assert {"history.opened", "history.closed", "overlay.view", "history.days_summary"} <= {s.name for s in steps}
    verdicts, text = report(steps)
    assert all(v.passes for v in verdicts), text


def test_the_newest_version_reads_back_and_a_change_is_seen(warehouse):
    from tessera.history.versions import version_mismatches

    engine = _record_all(warehouse)
    assert version_mismatches(engine) == {"marts.contact_cards": 0, "core.orders": 0}
    warehouse.execute("UPDATE marts.contact_cards SET city = 'Pisa' WHERE customer_id = 2")
    assert version_mismatches(engine)["marts.contact_cards"] == 2  # one row gone, one new
    warehouse.execute("DELETE FROM marts.contact_cards WHERE customer_id = 2")
    assert version_mismatches(engine, exact=False) == {"marts.contact_cards": 1, "core.orders": 0}


def test_more_than_a_row_group_records_only_the_change(warehouse):
    """Regression: DuckDB 2.0.0 lost every row of a table created and filled (more than one
    row group, 122,880 rows) in one transaction, so a second day stored everything again."""
    warehouse.execute("CREATE TABLE marts.contact_cards AS SELECT range AS customer_id, range % 7 AS n "
                      "FROM range(130000)")
    engine = DuckDBEngine(warehouse)
    record_day(engine, D1, "r1", NOW)
    warehouse.execute("UPDATE marts.contact_cards SET n = n + 1 WHERE customer_id % 100 = 0")
    out = record_day(engine, D2, "r2", NOW)
    assert out["tables"]["marts.contact_cards"] == {"opened": 1300, "closed": 1300}
    assert _read(day_engine(engine, D1), "SELECT sum(n) FROM marts.contact_cards") == [
        warehouse.execute("SELECT sum(n) - 1300 FROM marts.contact_cards").fetchone()]


def test_a_table_emptied_and_filled_again_reads_back_each_day(warehouse):
    # nothing in force before day 1 and before day 3: every row opens, copies of one row
    # keep their multiplicity, and a re-record of such a day replaces it
    days = {D1: [(1, "Milano", None), (1, "Milano", None)], D2: [], D3: [(1, "Milano", None), (2, "Roma", ["x"])]}
    engine = DuckDBEngine(warehouse)
    for day, cards in days.items():
        _set_day(warehouse, cards, [])
        out = record_day(engine, day, f"r-{day}", NOW)
    assert out["tables"]["marts.contact_cards"] == {"opened": 2, "closed": 0}
    record_day(engine, D3, "again", NOW)
    for day, cards in days.items():
        assert _read(day_engine(engine, day), "SELECT customer_id, city, tags FROM marts.contact_cards") == \
            sorted(cards, key=repr), day
    from tessera.history.versions import version_mismatches
    assert version_mismatches(engine) == {"marts.contact_cards": 0, "core.orders": 0}
