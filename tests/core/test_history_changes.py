"""The history of a logged table (``core.events``) from its builds' change log
(tessera.history.changes): only the logged keys compared, and a write no build logged
(an insert, a delete) caught by the counts, the version then found in full."""
from __future__ import annotations

import datetime as dt

import duckdb

from tessera.engine import as_engine
from tessera.history import changes
from tessera.history.versions import record_day, version_mismatches

D1 = dt.date(2026, 11, 1)


def _warehouse():
    con = duckdb.connect()
    con.execute("CREATE SCHEMA core; CREATE SCHEMA ops")
    con.execute("""CREATE TABLE core.events AS SELECT * FROM (VALUES
        ('e1', 1, TIMESTAMP '2026-11-01 10:00', 'web'), ('e2', 2, TIMESTAMP '2026-11-01 11:00', 'web'))
        AS t(event_id, customer_id, occurred_at, source)""")
    return con, as_engine(con)


def _day(engine, n: int) -> dict:
    day = D1 + dt.timedelta(days=n - 1)
    return record_day(engine, day, f"run-{n}", dt.datetime.combine(day, dt.time(6)))["tables"]["core.events"]


def test_logged_changes_and_an_unlogged_write():
    con, engine = _warehouse()
    # nothing logged yet: no mark, so day 2 compares every row even though a log appears
    assert _day(engine, 1) == {"opened": 2, "closed": 0, "by_change_log": False}
    changes.log_everything(engine, "core.events")
    con.execute("UPDATE core.events SET customer_id = 3 WHERE event_id = 'e1'")
    assert _day(engine, 2) == {"opened": 1, "closed": 1, "by_change_log": False}
    # day 3: a build that relinked e2 and appended e3, both logged
    con.execute("UPDATE core.events SET customer_id = 1 WHERE event_id = 'e2'")
    con.execute("INSERT INTO core.events VALUES ('e3', 2, TIMESTAMP '2026-11-03 09:00', 'web')")
    changes.log_keys(engine, "core.events", "SELECT 'web', 'e2' UNION ALL SELECT 'web', 'e3'")
    assert _day(engine, 3) == {"opened": 2, "closed": 1, "by_change_log": True}
    assert version_mismatches(engine)["core.events"] == 0
    # day 4: a row inserted that no build logged: the counts do not add up, found in full
    con.execute("INSERT INTO core.events VALUES ('e4', 2, TIMESTAMP '2026-11-04 09:00', 'web')")
    assert _day(engine, 4) == {"opened": 1, "closed": 0, "by_change_log": False}
    assert version_mismatches(engine)["core.events"] == 0
    # day 5: a re-run of day 4's version after another logged change is found from the log
    con.execute("DELETE FROM core.events WHERE event_id = 'e1'")
    changes.log_keys(engine, "core.events", "SELECT 'web', 'e1'")
    assert _day(engine, 5) == {"opened": 0, "closed": 1, "by_change_log": True}
    assert version_mismatches(engine)["core.events"] == 0
    # the log keeps only what the newest version's previous one does not hold
    assert con.execute("SELECT count(*) FROM ops.events_changes").fetchone()[0] == 1
