"""Incremental staging (issue 19 item 2): a warehouse built day by day incrementally holds
the same staging tables, and after identity the same customers, as one rebuilt in full
from the same raw data every day; the changed keys are the ones that changed.

Three days of the demo's sample (generated small): day 1 the full load; day 2 a CRM file
with inserts, updates, a record taking another's e-mail (a merge) and one leaving a
shared e-mail (a split), plus new web events; day 3 an erased record (its raw rows
deleted, as ``tessera forget`` does), a re-sent unchanged record and a configuration
change (a junk e-mail), each of which must make staging full, not wrong.
"""
from __future__ import annotations

import csv
import datetime as dt
import io
import json
from pathlib import Path

import pytest

from tessera.deployment import load_deployment
from tessera.engine import recording
from tessera.engine.portability import report
from tessera.engine.warehouse import connect, ensure_warehouse
from tessera.identity.resolve import resolve
from tessera.ingest.changed_keys import ChangeRun
from tessera.ingest.load import ingest_source
from tessera.ingest.staging import build_contacts, build_entity
from tessera.sampledata.generator import generate
from tessera.vocabulary import ENTITY_TABLES

DEMO = Path(__file__).resolve().parents[2] / "examples" / "demo"
DAY1 = dt.date(2026, 11, 1)


def _stage_all(con, dep, changes: ChangeRun | None) -> dict:
    out = {}
    for entity in ENTITY_TABLES:
        if not dep.sources_of(entity) and entity != "contact":
            continue
        out[entity] = (build_contacts(con, dep, changes) if entity == "contact"
                       else build_entity(con, dep, entity, changes))
    return out


def _day(cons, dep, landing, day: dt.date, dep_inc=None) -> dict:
    now = dt.datetime.combine(day, dt.time(6, 0))
    for con in cons.values():
        for src in dep.sources:
            ingest_source(con, dep, src, landing, f"b-{day}", now)
    _stage_all(cons["full"], dep, None)
    return _stage_all(cons["inc"], dep_inc or dep, ChangeRun(f"run-{day}", now))


def _tables(con, schema: str) -> list[str]:
    return [r[0] for r in con.execute(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = ? ORDER BY 1", [schema]).fetchall()]


def _assert_same(cons, tmp_path, schema: str, tables: list[str] | None = None, leave_out=()) -> None:
    inc = cons["inc"]
    for t in tables or _tables(cons["full"], schema):
        cols = [c for c, in cons["full"].execute(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = ? AND table_name = ? "
            "ORDER BY ordinal_position", [schema, t]).fetchall() if c not in leave_out]
        sel = ", ".join(f'"{c}"' for c in cols)
        a = sorted(cons["full"].execute(f"SELECT {sel} FROM {schema}.{t}").fetchall(), key=repr)
        b = sorted(inc.execute(f"SELECT {sel} FROM {schema}.{t}").fetchall(), key=repr)
        assert a == b, f"{schema}.{t} differs between the full and the incremental warehouse"


def _crm_file(landing: Path, day: dt.date, edit) -> None:
    src = sorted((landing / "crm").glob("crm_contacts_*.csv"))[0]
    rows = list(csv.reader(io.StringIO(src.read_text(encoding="cp1252")), delimiter=";"))
    header, body = rows[0], [r for r in rows[1:] if len(r) == len(rows[0]) and r[0]]
    out = edit(header, body)
    buf = io.StringIO()
    csv.writer(buf, delimiter=";", lineterminator="\r\n").writerows([header, *out])
    (landing / "crm" / f"crm_contacts_{day:%Y%m%d}.csv").write_bytes(buf.getvalue().encode("cp1252", "replace"))


def _web_file(landing: Path, day: dt.date, n: int) -> None:
    src = sorted((landing / "web").glob("web_events_*.jsonl"))[0]
    with open(src, encoding="utf-8") as fh, \
            open(landing / "web" / f"web_events_{day:%Y%m%d}.jsonl", "w", encoding="utf-8") as dst:
        for i, line in enumerate(fh):
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            if i % 20:
                continue
            ev["event_id"] = f"D-{day}-{ev.get('event_id')}"
            ev["occurred_at"] = f"{day:%Y-%m-%d}T10:00:00Z"
            dst.write(json.dumps(ev) + "\n")
            n -= 1
            if not n:
                break


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("incr")
    landing = tmp / "landing"
    generate(landing, contacts=120, seed=7, as_of=DAY1)
    dep = load_deployment(DEMO)
    cons = {k: connect(tmp / f"{k}.duckdb") for k in ("full", "inc")}
    for con in cons.values():
        ensure_warehouse(con)
    yield dep, cons, landing, tmp
    for con in cons.values():
        con.close()


def _resolve_both(cons, dep, day):
    now = dt.datetime.combine(day, dt.time(7, 0))
    for con in cons.values():
        resolve(con, now, f"r-{day}", dep.identity)


def test_three_days_incremental_equal_full_and_name_the_changed_keys(world):
    dep, cons, landing, tmp = world
    d1 = _day(cons, dep, landing, DAY1)
    # the first day has nothing stored: full, every key new
    assert d1["contact"]["staging_mode"] == "full" and d1["contact"]["keys_new"] > 100
    assert d1["contact"]["keys_changed"] == d1["contact"]["keys_deleted"] == 0
    # ... which the state says without a row per key
    assert cons["inc"].execute("SELECT count(*) FROM ops.changed_keys").fetchone()[0] == 0
    _assert_same(cons, tmp, "staging")
    _resolve_both(cons, dep, DAY1)
    _assert_same(cons, tmp, "core", ["customer_sources"])

    # day 2: 2 new CRM records, 3 updated, one takes another's e-mail, one leaves its e-mail
    day2 = DAY1 + dt.timedelta(days=1)
    picked = {}

    def edit2(header, body):
        i_id, i_mail, i_mob, i_mod = (header.index(c) for c in ("crm_id", "email", "cellulare", "data_modifica"))
        with_mail = [r for r in body if r[i_mail]]
        a, b, c, d, e, f = with_mail[:6]
        rows = []
        for n, r in enumerate((a, b, c)):
            r = list(r)
            r[i_mob] = f"+39 347 55500{n:02d}"
            rows.append(r)
        merge = list(d)
        merge[i_mail] = e[i_mail]                       # d now shares e's address
        split = list(f)
        split[i_mail] = "left.shared@example.org"
        rows += [merge, split]
        for n in range(2):
            new = list(a)
            new[i_id] = f"CRM-NEW-{n}"
            new[i_mail] = f"new.person{n}@example.org"
            rows.append(new)
        for r in rows:
            r[i_mod] = f"{day2:%d/%m/%Y} 09:00"
        picked.update(changed={a[i_id], b[i_id], c[i_id], d[i_id], f[i_id]},
                      new={"CRM-NEW-0", "CRM-NEW-1"}, unchanged=e[i_id])
        return rows

    _crm_file(landing, day2, edit2)
    _web_file(landing, day2, 15)
    with recording() as log:
        d2 = _day(cons, dep, landing, day2)
    # every step of the incremental path has a Spark translation (the engine seam's rule)
    verdicts, text = report([v for (name, _sql), v in log.items() if name.startswith("staging.incremental")])
    assert len(verdicts) >= 8 and all(v.passes for v in verdicts), text
    assert d2["contact"]["staging_mode"] == "incremental", d2["contact"]
    assert d2["event"]["staging_mode"] == "incremental" and d2["event"]["keys_new"] == 15
    # untouched entities recompute nothing
    assert d2["order"]["staging_mode"] == "incremental" and d2["order"]["keys_recomputed"] == 0
    got = dict(cons["inc"].execute("""
        SELECT change, list(source_record_id ORDER BY source_record_id) FROM ops.changed_keys
        WHERE run_id = ? AND entity = 'contact' GROUP BY ALL""", [f"run-{day2}"]).fetchall())
    assert set(got["new"]) == picked["new"]
    assert set(got["changed"]) == picked["changed"]
    assert "deleted" not in got
    _assert_same(cons, tmp, "staging")
    _resolve_both(cons, dep, day2)
    _assert_same(cons, tmp, "core", ["customer_sources", "merge_log"], leave_out={"merged_at"})

    # day 3: one record erased from raw (what forget does), one re-sent unchanged
    day3 = day2 + dt.timedelta(days=1)
    gone = sorted(picked["changed"])[0]
    for con in cons.values():
        con.execute("DELETE FROM raw.crm_contacts WHERE source_record_id = ?", [gone])
    _crm_file(landing, day3, lambda header, body: [r for r in body if r[0] == picked["unchanged"]])
    d3 = _day(cons, dep, landing, day3)
    # rows vanished from raw: staging cannot trust its watermark and rebuilds in full
    assert d3["contact"]["staging_mode"] == "full"
    assert "lost or gained" in d3["contact"]["staging_full_reason"]
    assert cons["inc"].execute("""
        SELECT list(source_record_id) FROM ops.changed_keys
        WHERE run_id = ? AND entity = 'contact' AND change = 'deleted'""", [f"run-{day3}"]).fetchone()[0] == [gone]
    assert d3["event"]["staging_mode"] == "incremental" and d3["event"]["keys_recomputed"] == 0
    _assert_same(cons, tmp, "staging")
    _resolve_both(cons, dep, day3)
    _assert_same(cons, tmp, "core", ["customer_sources"])
    # the erased record is nowhere in staging: an erasure is never undone by a build
    assert cons["inc"].execute("SELECT count(*) FROM staging.contacts WHERE source_record_id = ?",
                               [gone]).fetchone()[0] == 0

    # day 4: nothing arrives, but the configuration changes: full, and a quiet day after
    day4 = day3 + dt.timedelta(days=1)
    ident = dep.identity.model_copy(update={"junk_emails": [*dep.identity.junk_emails, "x@example.org"]})
    dep4 = dep.model_copy(update={"identity": ident})
    d4 = _day(cons, dep4, landing, day4, dep_inc=dep4)
    assert d4["contact"]["staging_mode"] == "full" and "statement changed" in d4["contact"]["staging_full_reason"]
    assert d4["event"]["staging_mode"] == "incremental"
    _assert_same(cons, tmp, "staging")
    d5 = _day(cons, dep4, landing, day4 + dt.timedelta(days=1), dep_inc=dep4)
    assert d5["contact"]["staging_mode"] == "incremental" and d5["contact"]["keys_recomputed"] == 0
    assert d5["contact"]["keys_new"] == d5["contact"]["keys_changed"] == 0
    _assert_same(cons, tmp, "staging")


def test_a_pending_soft_delete_makes_contacts_full(world):
    dep, cons, landing, tmp = world
    con = cons["inc"]
    con.execute("""CREATE TABLE IF NOT EXISTS ops.bulk_edits (edit_id VARCHAR NOT NULL, action VARCHAR NOT NULL,
        customer_id BIGINT NOT NULL, requested_at TIMESTAMP NOT NULL, requested_by VARCHAR, applied_at TIMESTAMP)""")
    build_contacts(con, dep, ChangeRun("run-before", dt.datetime(2026, 11, 8, 9, 0)))
    cid = con.execute("SELECT min(customer_id) FROM core.customer_sources").fetchone()[0]
    con.execute("INSERT INTO ops.bulk_edits VALUES ('e1', 'delete', ?, TIMESTAMP '2026-11-09 08:00', 't', NULL)", [cid])
    out = build_contacts(con, dep, ChangeRun("run-soft", dt.datetime(2026, 11, 9, 9, 0)))
    assert out["staging_mode"] == "full" and "soft delete" in out["staging_full_reason"]


def test_run_full_drops_the_recorded_state_so_staging_is_built_in_full(tmp_path, monkeypatch):
    from tessera.cli import main
    from tessera.ingest.changed_keys import STATE_DDL

    home = tmp_path / "home"
    home.mkdir()
    con = connect(home / "warehouse.duckdb")
    ensure_warehouse(con)
    con.execute(STATE_DDL)
    con.execute("INSERT INTO ops.staging_state VALUES ('staging.contacts', 'crm_contacts', 'x', 1, 1, "
                "TIMESTAMP '2026-11-01 06:00', 'full', 'first', 'run-1')")
    con.close()
    for var in ("TESSERA_CONFIG", "TESSERA_HOME", "DAGSTER_HOME"):
        monkeypatch.setenv(var, str(tmp_path / var))  # restored after the test
    ran = []
    monkeypatch.setattr("tessera.cli.run._run_day", lambda ctx, day: ran.append(day) or 0)
    assert main(["--config", str(DEMO), "--home", str(home), "run", "--full", "--date", "2026-11-02"]) == 0
    assert ran == [dt.date(2026, 11, 2)]
    con = connect(home / "warehouse.duckdb")
    try:
        assert con.execute("SELECT count(*) FROM information_schema.tables "
                           "WHERE table_schema = 'ops' AND table_name = 'staging_state'").fetchone()[0] == 0
    finally:
        con.close()
