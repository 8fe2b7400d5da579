"""The analyst's web page over a real daily run of the sample: search, every card tab and
the analytics counts checked against the warehouse; erased and soft-deleted people never
shown; customer data always text (a name holding ``<script>``); a run's write lock answered
with 503, not a wait. Then a few browser checks with Playwright driving Debian's Chromium.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from tessera.card.search import build_contact_search
from tessera.engine import WarehouseUnavailable, as_engine, read_only
from tessera.web import queries
from tessera.web.snapshot import current, publish, snapshot_root
from tests.conftest import serve_app
from tests.stages.small_world import table_cells

SCRIPT_NAME = "<script>window.__pwned=1</script>"


@pytest.fixture(scope="module")
def web_env(demo_env, demo_run):
    """The sample's warehouse, plus three people made for the page's tests: one named
    with a script tag and an accent, one soft-deleted after the run, one erased."""
    con = demo_env.connect()
    try:
        ids = [r[0] for r in con.execute(
            "SELECT customer_id FROM marts.contact_cards WHERE order_number > 0 AND event_count > 0 "
            "ORDER BY order_number DESC, customer_id LIMIT 3").fetchall()]
        xss, deleted, erased = ids
        for table in ("core.customers", "marts.contact_cards"):
            con.execute(f"UPDATE {table} SET first_name = ?, last_name = 'Rossì', "
                        "birth_date = DATE '1980-03-04' WHERE customer_id = ?", [SCRIPT_NAME, xss])
        con.execute("INSERT INTO ops.bulk_edits VALUES ('web-test', 'delete', ?, now(), 'test', NULL)",
                    [deleted])
        # erasure removes the person from every table (tessera forget); the card is what
        # the page reads, so its absence must be enough
        con.execute("DELETE FROM marts.contact_cards WHERE customer_id = ?", [erased])
        build_contact_search(con)  # as the next run would
        con.execute("CHECKPOINT")
        publish(as_engine(con), demo_env.warehouse)  # as tessera forget / bulk-edit do
    finally:
        con.close()
    return {"warehouse": demo_env.warehouse, "xss": xss, "deleted": deleted, "erased": erased}


@pytest.fixture(scope="module")
def client(web_env):
    from starlette.testclient import TestClient

    from tessera.web.app import create_app

    with TestClient(create_app(web_env["warehouse"])) as c:
        yield c


def warehouse_rows(web_env, sql, params=()):
    with read_only(web_env["warehouse"]) as engine:
        from tessera.engine import SqlStep

        return engine.rows(SqlStep("test.rows", sql, list(params)))


def result_ids(html: str) -> list[int]:
    return [int(x) for x in re.findall(r'<td><a href="/card/(\d+)">', html)]


def test_search_finds_by_accent_free_name_birth_year_email_phone_and_id(client, web_env):
    xss = web_env["xss"]
    for q in ("rossi", "ROSSÌ", "1980", str(xss)):
        assert xss in result_ids(client.get("/", params={"q": q}).text), q
    email, mobile = warehouse_rows(web_env, "SELECT email, mobile FROM marts.contact_cards "
                                            "WHERE customer_id = ?", [xss])[0]
    assert xss in result_ids(client.get("/", params={"q": email.upper()}).text)
    if mobile:
        assert xss in result_ids(client.get("/", params={"q": mobile[-7:]}).text)
    # every word must match: a surname and a wrong year finds nobody of that surname
    assert xss not in result_ids(client.get("/", params={"q": "rossi 1899"}).text)


def test_search_lists_in_registry_order_and_filters_by_initial(client, web_env):
    expected = [r[0] for r in warehouse_rows(web_env, """
        SELECT customer_id FROM marts.contact_cards
        WHERE starts_with(lower(strip_accents(coalesce(nullif(last_name, ''), email, ''))), 'b')
          AND customer_id NOT IN (SELECT customer_id FROM ops.bulk_edits WHERE action = 'delete')
        ORDER BY CASE WHEN coalesce(last_name, '') <> '' OR coalesce(first_name, '') <> '' THEN 0 ELSE 1 END,
                 lower(strip_accents(coalesce(nullif(last_name, ''), email, ''))),
                 lower(strip_accents(coalesce(first_name, ''))), coalesce(email, ''), customer_id
        LIMIT 50""")]
    assert expected, "the sample has surnames starting with B"
    assert result_ids(client.get("/", params={"letter": "B"}).text) == expected


def test_search_without_the_search_table_finds_the_same(client, web_env, tmp_path):
    """A warehouse built before ``marts.contact_search`` existed is searched by folding the
    cards inline: same people, same order."""
    import shutil

    from starlette.testclient import TestClient

    from tessera.engine.warehouse import connect
    from tessera.web.app import create_app

    copy = tmp_path / "w.duckdb"
    shutil.copyfile(web_env["warehouse"], copy)
    con = connect(copy)
    con.execute("DROP TABLE marts.contact_search")
    con.close()
    with TestClient(create_app(copy)) as old:
        for params in ({"q": "rossi"}, {"q": "1980"}, {"q": "m"}, {"letter": "c"}, {}):
            expected = result_ids(client.get("/", params=params).text)
            assert expected and result_ids(old.get("/", params=params).text) == expected, params


def test_erased_and_soft_deleted_people_are_never_shown(client, web_env):
    for who in ("deleted", "erased"):
        cid = web_env[who]
        assert client.get(f"/card/{cid}").status_code == 404
        assert cid not in result_ids(client.get("/", params={"q": str(cid)}).text)
    assert client.get("/card/999999999").status_code == 404


def test_customer_data_is_text_never_markup(client, web_env):
    xss = web_env["xss"]
    pages = [client.get("/", params={"q": "rossi"}), client.get(f"/card/{xss}"),
             client.get("/", params={"q": SCRIPT_NAME})]
    for page in pages:
        assert page.status_code == 200
        assert SCRIPT_NAME not in page.text
        assert "<script" not in page.text.lower()
        assert "script-src" not in page.headers["content-security-policy"]  # none allowed
        assert page.headers["content-security-policy"].startswith("default-src 'none'")
    assert "&lt;script&gt;window.__pwned=1&lt;/script&gt;" in pages[1].text


def test_card_tabs_show_the_warehouse_values(client, web_env):
    cid = web_env["xss"]
    pages = {key: client.get(f"/card/{cid}", params={"tab": key}) for key, _ in queries.TABS}
    assert all(p.status_code == 200 for p in pages.values())

    profile = {r[0]: r for r in table_cells(pages["profile"].text, "Golden profile and the lineage of each field")}
    email, city = warehouse_rows(web_env, "SELECT email, city FROM core.customers WHERE customer_id = ?", [cid])[0]
    assert profile["email"][1] == email and profile["city"][1] == (city or "")
    source, record = warehouse_rows(web_env, "SELECT source, source_record_id FROM "
                                             "core.customer_field_lineage WHERE customer_id = ? "
                                             "AND field = 'email'", [cid])[0]
    assert profile["email"][2:5][0] == source and profile["email"][4] == record
    totals = dict(r for r in table_cells(pages["profile"].text, "E-commerce and activity totals"))
    n, total = warehouse_rows(web_env, "SELECT count(*), sum(amount) FROM core.orders "
                                       "WHERE customer_id = ?", [cid])[0]
    assert totals["ORDER_NUMBER"] == str(n) and totals["ORDER_SUMMARY"] == f"{total:,.2f}"

    orders = table_cells(pages["orders"].text, "Orders, newest first")
    assert len(orders) == n
    assert sorted(r[0] for r in orders) == sorted(r[0] for r in warehouse_rows(
        web_env, "SELECT order_id FROM core.orders WHERE customer_id = ?", [cid]))

    records = table_cells(pages["identifiers"].text, "Source records merged into this person")
    assert sorted((r[0], r[1]) for r in records) == sorted(warehouse_rows(
        web_env, "SELECT source, source_record_id FROM core.customer_sources WHERE customer_id = ?", [cid]))

    states = {r[0]: r[1] for r in table_cells(pages["consents"].text, "State per channel")}
    assert states == dict(warehouse_rows(web_env, "SELECT channel, state FROM core.consents "
                                                  "WHERE customer_id = ?", [cid]))

    rfm = table_cells(pages["rfm"].text, "RFM, latest day first")
    assert rfm[0][1:3] == list(warehouse_rows(web_env, """
        SELECT rfm_group, rfm_score FROM marketing.rfm_scores WHERE customer_id = ?
        ORDER BY as_of_date DESC LIMIT 1""", [cid])[0])

    segments = sorted(r[0] for r in table_cells(pages["segments"].text, "Segments, with entered and left dates"))
    assert segments == sorted(r[0] for r in warehouse_rows(
        web_env, "SELECT segment FROM marketing.segment_history WHERE customer_id = ?", [cid]))

    scores = {r[0]: r[1] for r in table_cells(pages["scores"].text, "Scores on the latest day")}
    assert scores == {t: f"{s:,.2f}" for t, s in warehouse_rows(web_env, """
        SELECT score_type, score FROM marketing.scores WHERE customer_id = ?
        AND as_of_date = (SELECT max(as_of_date) FROM marketing.scores)""", [cid])}

    stage = table_cells(pages["stages"].text, "Stage on the latest day")
    expected_stage = warehouse_rows(web_env, """
        SELECT stage FROM marketing.stages WHERE customer_id = ?
        AND as_of_date = (SELECT max(as_of_date) FROM marketing.stages)""", [cid])
    assert [r[0] for r in stage] == [r[0] for r in expected_stage]

    timeline = table_cells(pages["timeline"].text, f"Timeline (newest {queries.LIST_LIMIT})")
    events = warehouse_rows(web_env, "SELECT count(*) FROM core.events WHERE customer_id = ?", [cid])[0][0]
    assert sum(1 for r in timeline if r[1] == "event") == min(events, queries.LIST_LIMIT) or \
        len(timeline) == queries.LIST_LIMIT
    assert sum(1 for r in timeline if r[1] == "order") == n or len(timeline) == queries.LIST_LIMIT
    assert [r[0] for r in timeline] == sorted((r[0] for r in timeline), reverse=True)

    devices = {r[0]: int(r[1]) for r in table_cells(pages["visits"].text, "Most used devices")}
    assert devices == dict(warehouse_rows(web_env, """
        SELECT json_extract_string(properties, '$.device'), count(*) FROM core.events
        WHERE customer_id = ? AND json_extract_string(properties, '$.device') <> ''
        GROUP BY 1""", [cid]))

    # the tabs other stages fill show their tables once the stage has run, and say so until then
    for key in ("predictions", "recommendations"):
        published = warehouse_rows(web_env, """
            SELECT count(*) FROM information_schema.columns
            WHERE table_schema = ? AND column_name = 'customer_id'""", [key])[0][0]
        assert (f"No {key} yet" in pages[key].text) == (published == 0), key


def test_messages_tab_counts_opens_clicks_and_bounces_per_campaign(client, web_env):
    cid, = warehouse_rows(web_env, """
        SELECT b.customer_id FROM core.bounce_status b
        JOIN marts.contact_cards c USING (customer_id)
        WHERE c.customer_id IN (SELECT customer_id FROM core.events WHERE event_type = 'email_open')
          AND c.customer_id NOT IN (SELECT customer_id FROM ops.bulk_edits)
        ORDER BY b.customer_id LIMIT 1""")[0]
    rows = table_cells(client.get(f"/card/{cid}", params={"tab": "messages"}).text, "E-mail campaigns, latest first")
    got = {r[0]: (int(r[3]), int(r[4])) for r in rows}
    want = dict(((c, (o, k)) for c, o, k in warehouse_rows(web_env, """
        SELECT json_extract_string(properties, '$.campaign_id'),
               count(*) FILTER (WHERE event_type = 'email_open'),
               count(*) FILTER (WHERE event_type = 'email_click')
        FROM core.events WHERE customer_id = ? AND event_type IN ('email_open', 'email_click')
        GROUP BY 1""", [cid])))
    bounced = {c for (c,) in warehouse_rows(web_env, """
        SELECT campaign_id FROM staging.bounces WHERE email_key IN (
            SELECT email_key FROM core.bounce_status WHERE customer_id = ?)""", [cid])}
    assert want and bounced
    assert {c: v for c, v in got.items() if c in want} == want
    assert set(got) == set(want) | bounced
    assert all(r[6].startswith("bounced") for r in rows if r[0] in bounced)


def test_public_notes_are_shown_and_private_ones_only_counted(client, web_env):
    rows = warehouse_rows(web_env, """
        SELECT customer_id, count(*) FILTER (WHERE visibility <> 'public'),
               list(body ORDER BY created_at DESC) FILTER (WHERE visibility = 'public'),
               list(body) FILTER (WHERE visibility <> 'public')
        FROM core.notes WHERE customer_id IN (SELECT customer_id FROM marts.contact_cards)
          AND customer_id NOT IN (SELECT customer_id FROM ops.bulk_edits)
        GROUP BY customer_id HAVING count(*) FILTER (WHERE visibility = 'public') > 0
        ORDER BY count(*) FILTER (WHERE visibility <> 'public') DESC, customer_id LIMIT 1""")
    assert rows, "the sample has public notes"
    cid, private, public, hidden = rows[0]
    html = client.get(f"/card/{cid}", params={"tab": "notes"}).text
    shown = [r[2] for r in table_cells(html, "Public notes")]
    assert shown == [queries.show(b) for b in public]
    assert f"{private} private note(s) not shown" in html
    for body in hidden or []:
        assert body not in shown


def test_discovered_tabs_show_a_stage_table_once_it_exists(web_env, tmp_path):
    """A predictions table published by its stage appears on the card, latest day only."""
    import shutil

    from starlette.testclient import TestClient

    from tessera.engine.warehouse import connect
    from tessera.web.app import create_app

    copy = tmp_path / "w.duckdb"
    shutil.copyfile(web_env["warehouse"], copy)
    cid = web_env["xss"]
    con = connect(copy)
    con.execute("CREATE SCHEMA IF NOT EXISTS predictions")
    con.execute("CREATE TABLE predictions.churn (as_of_date DATE, customer_id BIGINT, churn_risk VARCHAR)")
    con.execute("INSERT INTO predictions.churn VALUES (DATE '2026-10-31', ?, 'low'), "
                "(DATE '2026-11-01', ?, 'high'), (DATE '2026-11-01', ?, 'medium')", [cid, cid, cid + 1])
    con.close()
    with TestClient(create_app(copy)) as c:
        rows = table_cells(c.get(f"/card/{cid}", params={"tab": "predictions"}).text, "churn")
    assert [r[1:] for r in rows] == [[str(cid), "high"]]


def test_companies_registry_and_company_page(client, web_env):
    html = client.get("/companies", params={"letter": "M"}).text
    shown = [int(x) for x in re.findall(r'<td><a href="/company/(\d+)">', html)]
    assert shown and shown == [r[0] for r in warehouse_rows(web_env, """
        SELECT company_id FROM core.companies
        WHERE starts_with(lower(strip_accents(coalesce(legal_name, ''))), 'm')
        ORDER BY lower(strip_accents(coalesce(legal_name, ''))), company_id LIMIT 50""")]
    company_id, vat = warehouse_rows(web_env, """
        SELECT k.company_id, k.vat_number FROM core.companies k
        JOIN core.company_contacts p USING (company_id)
        GROUP BY ALL ORDER BY count(*) DESC, k.company_id LIMIT 1""")[0]
    assert company_id in [int(x) for x in re.findall(
        r'<td><a href="/company/(\d+)">', client.get("/companies", params={"q": vat.lower()}).text)]
    page = client.get(f"/company/{company_id}").text
    fields = {r[0]: r for r in table_cells(page, "Golden company and the lineage of each field")}
    assert fields["vat_number"][1] == vat
    people = sorted(int(r[0]) for r in table_cells(page, "People of this company"))
    assert people == sorted(r[0] for r in warehouse_rows(web_env, """
        SELECT customer_id FROM core.company_contacts WHERE company_id = ?
        AND customer_id IN (SELECT customer_id FROM marts.contact_cards)
        AND customer_id NOT IN (SELECT customer_id FROM ops.bulk_edits WHERE action = 'delete')""",
        [company_id]))
    assert client.get("/company/999999999").status_code == 404


def test_company_users_and_potential_companies_registries(client, web_env):
    html = client.get("/company-users").text
    assert result_ids(html) == [r[0] for r in warehouse_rows(web_env, """
        SELECT c.customer_id FROM core.company_contacts p
        JOIN marts.contact_cards c ON c.customer_id = p.customer_id
        JOIN core.companies k ON k.company_id = p.company_id
        WHERE c.customer_id NOT IN (SELECT customer_id FROM ops.bulk_edits WHERE action = 'delete')
        ORDER BY lower(strip_accents(coalesce(c.last_name, c.email, ''))),
                 lower(strip_accents(coalesce(c.first_name, ''))), c.customer_id, k.company_id
        LIMIT 50""")]
    company, role = warehouse_rows(web_env, """
        SELECT k.legal_name, p.role FROM core.company_contacts p JOIN core.companies k USING (company_id)
        WHERE p.role IS NOT NULL ORDER BY k.company_id, p.customer_id LIMIT 1""")[0]
    found = table_cells(client.get("/company-users", params={"q": f"{company} {role}"}).text, "Company users")
    assert found and all(r[4] == company and r[6] == role for r in found)
    counts = dict(warehouse_rows(web_env, "SELECT status, count(*) FROM core.potential_companies GROUP BY ALL"))
    for status, n in counts.items():
        rows = table_cells(client.get("/potential-companies", params={"q": status}).text, "Potential companies")
        assert len(rows) == min(n, queries.SEARCH_LIMIT) and {r[7] for r in rows} == {status}
    m = table_cells(client.get("/potential-companies", params={"letter": "m"}).text, "Potential companies")
    assert [r[1] for r in m] == [r[0] for r in warehouse_rows(web_env, """
        SELECT legal_name FROM core.potential_companies
        WHERE starts_with(lower(strip_accents(legal_name)), 'm')
        ORDER BY lower(strip_accents(legal_name)), source, source_record_id LIMIT 50""")]


def test_the_daily_report_is_the_analytics_page_as_a_file(client, web_env):
    """The run wrote the day's report next to the warehouse: self-contained (style
    inlined, no script, no link back to the server), with the page's totals."""
    from tessera.web.report import report_folder

    files = sorted(report_folder(web_env["warehouse"]).glob("analytics-*.html"))
    assert [f.name for f in files] == ["analytics-2026-11-01.html"]
    report = files[0].read_text(encoding="utf-8")
    assert "<script" not in report.lower()
    assert "<style>" in report and 'href="/' not in report
    charts = dict(re.findall(r'data-title="([^"]+)" data-total="(\d+)"', report))
    assert int(charts["RFM groups (latest day)"]) == warehouse_rows(web_env, """
        SELECT count(*) FROM marketing.rfm_scores
        WHERE as_of_date = (SELECT max(as_of_date) FROM marketing.rfm_scores)""")[0][0]
    # built after every stage: the segments of the day are in it
    assert "No segment built yet" not in report
    assert [int(v) > 0 for k, v in charts.items() if k.startswith("Segment sizes (each")] == [True]


def test_analytics_counts_match_the_warehouse(client, web_env):
    html = client.get("/analytics").text
    changes = table_cells(html, "New, updated and deleted contacts per day")
    # the sample's first (only) day: every card is new, against no earlier day
    assert [r[:5] for r in changes] == [["2026-11-01", str(n), "0", "0", str(n)] for (n,) in
                                        warehouse_rows(web_env, "SELECT contacts FROM marts.contact_changes")]
    sales = table_cells(html, "Sales per channel")
    assert sum(int(r[2]) for r in sales) == warehouse_rows(web_env, "SELECT count(*) FROM core.orders")[0][0]
    charts = dict(re.findall(r'data-title="([^"]+)" data-total="(\d+)"', html))
    assert int(charts["RFM groups (latest day)"]) == warehouse_rows(web_env, """
        SELECT count(*) FROM marketing.rfm_scores
        WHERE as_of_date = (SELECT max(as_of_date) FROM marketing.rfm_scores)""")[0][0]
    members = dict(warehouse_rows(web_env, """
        SELECT segment, count(*) FROM marketing.segment_members m
        WHERE as_of_date = (SELECT max(as_of_date) FROM marketing.segment_members x WHERE x.segment = m.segment)
        GROUP BY segment"""))
    seg_html = html.split('data-title="Segment sizes', 1)[1].split("</figure>", 1)[0]
    shown = {k: int(v) for k, v in re.findall(r'data-label="([^"]+)" data-value="(\d+)"', seg_html)}
    # every configured segment is drawn, an empty one as 0
    assert {k: v for k, v in shown.items() if v} == members
    assert set(shown) == {r[0] for r in warehouse_rows(web_env, "SELECT DISTINCT segment FROM ops.segment_runs")}
    assert int(charts["Funnel: contacts per stage (latest day)"]) == warehouse_rows(web_env, """
        SELECT sum(contacts) FROM marketing.funnel_daily
        WHERE as_of_date = (SELECT max(as_of_date) FROM marketing.funnel_daily)""")[0][0]
    cards = warehouse_rows(web_env, "SELECT count(*) FROM marts.contact_cards")[0][0]
    assert int(charts["Contacts by gender"]) == cards - 1  # the soft-deleted person is not counted
    assert int(charts["Contacts by age band"]) == cards - 1
    assert int(charts["Records rejected at import, by field and reason"]) == warehouse_rows(
        web_env, "SELECT sum(records) FROM ops.import_reject_reasons")[0][0]
    offers = {r[0]: int(r[4]) for r in table_cells(html, "Offers report")}
    assert offers and sum(offers.values()) == warehouse_rows(web_env, """
        SELECT count(*) FROM core.orders WHERE offer_id IN (SELECT source_record_id FROM staging.offers)""")[0][0]
    health = table_cells(html, "Import health per day")
    assert sum(int(r[3]) for r in health) == warehouse_rows(
        web_env, "SELECT sum(records) FROM ops.import_report")[0][0]


def _hold_writer(path):
    """A process holding DuckDB's writer lock on ``path``, as a running daily job does."""
    import subprocess
    import sys

    holder = subprocess.Popen([sys.executable, "-c", (
        "import duckdb, sys, time; c = duckdb.connect(sys.argv[1]); print('ready', flush=True); "
        "time.sleep(60)"), str(path)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "ready"
    return holder


def test_the_page_answers_from_the_snapshot_while_a_run_writes(client, web_env):
    """The run published its snapshot: while a writer holds the warehouse, the search,
    a card and the analytics are served from it, with the same content as before."""
    before = {u: client.get(u).text for u in (
        "/?q=rossi", f"/card/{web_env['xss']}?tab=orders", "/analytics", "/companies")}
    holder = _hold_writer(web_env["warehouse"])
    try:
        with pytest.raises(WarehouseUnavailable, match="a run is writing"):
            with read_only(web_env["warehouse"]):
                pass
        for url, html in before.items():
            page = client.get(url)
            assert page.status_code == 200 and page.text == html, url
        assert web_env["xss"] in result_ids(before["/?q=rossi"])
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()


def test_publishing_switches_atomically_and_keeps_the_previous_folder(web_env, tmp_path):
    """A reader that opened a snapshot keeps reading it while a newer one is published;
    two folders are kept; an erased person is gone from the page once republished."""
    import shutil

    from starlette.testclient import TestClient

    from tessera.engine import read_snapshot
    from tessera.engine.warehouse import connect
    from tessera.web.app import create_app

    copy = tmp_path / "w.duckdb"
    shutil.copyfile(web_env["warehouse"], copy)
    con = connect(copy)
    try:
        first = publish(as_engine(con), copy)
        assert Path(first["folder"]) == current(copy)
        assert first["tables"] >= 20 and first["rows"] > 0
        cid = con.execute("SELECT min(customer_id) FROM marts.contact_cards").fetchone()[0]
        with TestClient(create_app(copy)) as c:
            assert c.get(f"/card/{cid}").status_code == 200
            with read_snapshot(first["folder"]) as old:
                con.execute("DELETE FROM marts.contact_cards WHERE customer_id = ?", [cid])
                second = publish(as_engine(con), copy)
                assert current(copy) == Path(second["folder"]) != Path(first["folder"])
                # the reader on the first folder still sees the person
                assert old.scalar(queries.SqlStep("t", "SELECT count(*) FROM marts.contact_cards "
                                                       "WHERE customer_id = $id", {"id": cid})) == 1
            assert c.get(f"/card/{cid}").status_code == 404
            third = publish(as_engine(con), copy)
    finally:
        con.close()
    folders = sorted(p.name for p in snapshot_root(copy).iterdir() if p.is_dir())
    assert folders == sorted([Path(second["folder"]).name, Path(third["folder"]).name])


def test_two_publishes_in_one_second_keep_the_newest_folder(web_env, tmp_path, monkeypatch):
    """Folders are pruned by the pointer, not by name: two publishes in the same second
    whose random suffixes sort backwards (the CI flake of stop 29) keep the new one current
    and the one it replaced."""
    import datetime as real_dt
    import shutil
    import uuid as real_uuid

    from tessera.engine.warehouse import connect
    from tessera.web import snapshot

    class FrozenDatetime(real_dt.datetime):
        @classmethod
        def now(cls, tz=None):
            return real_dt.datetime(2026, 12, 7, 6, 0, 0, tzinfo=tz)

    class FrozenModule:
        datetime = FrozenDatetime
        timezone = real_dt.timezone

    suffixes = iter(["f" * 32, "8" * 32, "0" * 32])
    monkeypatch.setattr(snapshot, "dt", FrozenModule)
    monkeypatch.setattr(snapshot.uuid, "uuid4", lambda: real_uuid.UUID(next(suffixes)))
    copy = tmp_path / "w.duckdb"
    shutil.copyfile(web_env["warehouse"], copy)
    con = connect(copy)
    try:
        names = [Path(publish(as_engine(con), copy)["folder"]).name for _ in range(3)]
    finally:
        con.close()
    assert names == sorted(names, reverse=True)     # every name sorts below the one before
    assert current(copy) == snapshot_root(copy) / names[2]
    assert sorted(p.name for p in snapshot_root(copy).iterdir() if p.is_dir()) == sorted(names[1:])


def test_a_soft_delete_leaves_the_published_page_at_once(web_env, tmp_path, monkeypatch):
    """`tessera bulk-edit delete` publishes the snapshot again: the person is gone from the
    page before the next run."""
    import shutil

    from starlette.testclient import TestClient

    from tessera.cli.app import main
    from tessera.engine.warehouse import connect
    from tessera.web.app import create_app

    copy = tmp_path / "warehouse.duckdb"
    shutil.copyfile(web_env["warehouse"], copy)
    con = connect(copy)
    try:
        publish(as_engine(con), copy)
        cid = con.execute("SELECT min(customer_id) FROM marts.contact_cards").fetchone()[0]
    finally:
        con.close()
    for var, value in (("TESSERA_HOME", tmp_path), ("TESSERA_WAREHOUSE", copy),
                       ("DAGSTER_HOME", tmp_path / "dagster_home"), ("TESSERA_CONFIG", os.environ.get(
                           "TESSERA_CONFIG", str(Path(__file__).parents[2] / "examples" / "demo")))):
        monkeypatch.setenv(var, str(value))
    with TestClient(create_app(copy)) as c:
        assert c.get(f"/card/{cid}").status_code == 200
        assert main(["bulk-edit", "delete", "--customer-id", str(cid), "--yes"]) == 0
        assert c.get(f"/card/{cid}").status_code == 404
        assert cid not in result_ids(c.get("/", params={"q": str(cid)}).text)


def test_a_writing_run_gets_503_not_a_wait(web_env, tmp_path):
    """Where no snapshot was published yet, the page reads the warehouse: a writer in
    another process holds DuckDB's lock, and the page says so at once."""
    from starlette.testclient import TestClient

    from tessera.web.app import create_app

    copy = tmp_path / "w.duckdb"
    copy.write_bytes(Path(web_env["warehouse"]).read_bytes())
    holder = _hold_writer(copy)
    try:
        with pytest.raises(WarehouseUnavailable, match="a run is writing"):
            with read_only(copy):
                pass
        with TestClient(create_app(copy)) as c:
            page = c.get("/")
        assert page.status_code == 503 and "a run is writing" in page.text
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()
    with TestClient(create_app(tmp_path / "missing.duckdb")) as c:
        assert c.get("/analytics").status_code == 503


def test_a_failing_page_logs_the_error_kind_only(web_env, monkeypatch, caplog):
    from starlette.testclient import TestClient

    from tessera.web import app as web_app

    def broken(engine):
        raise RuntimeError("Conversion Error: 'mario.rossi@example.it' is not a date")

    monkeypatch.setattr(web_app.queries, "analytics", broken)
    with caplog.at_level("INFO"), TestClient(web_app.create_app(web_env["warehouse"])) as c:
        page = c.get("/analytics")
        assert c.get("/card/99999999999999999999").status_code == 404
    assert page.status_code == 500 and "rossi" not in page.text
    assert "RuntimeError" in caplog.text and "rossi" not in caplog.text


def test_a_token_is_required_off_loopback_and_checked(web_env):
    from starlette.testclient import TestClient

    from tessera.web.app import create_app, serve

    with pytest.raises(ValueError, match="token"):
        serve(web_env["warehouse"], host="0.0.0.0", port=1)
    with TestClient(create_app(web_env["warehouse"], token="s3cret")) as c:
        assert c.get("/analytics").status_code == 401
        assert c.get("/analytics", auth=("anyone", "wrong")).status_code == 401
        assert c.get("/analytics", auth=("anyone", "s3cret")).status_code == 200


def test_every_step_the_page_runs_transpiles_to_spark(client, web_env):
    """The page's reads stay on the engine seam's portable SQL, like the stages' steps."""
    from tessera.engine import recording
    from tessera.engine.portability import check

    with recording() as steps:
        client.get("/", params={"q": "rossi 1980 3669"})
        client.get("/", params={"letter": "b"})
        for key, _ in queries.TABS:
            client.get(f"/card/{web_env['xss']}", params={"tab": key})
        client.get("/analytics")
    assert len(steps) >= 25
    failures = {s.name: check(s).problems for s in steps.values() if not check(s).passes}
    assert failures == {}


def test_search_and_card_commands(web_env, monkeypatch, capsys):
    from tessera.cli.app import main

    home = Path(web_env["warehouse"]).parent
    for var, value in (("TESSERA_HOME", home), ("TESSERA_WAREHOUSE", web_env["warehouse"]),
                       ("DAGSTER_HOME", home / "dagster_home"), ("TESSERA_CONFIG", os.environ.get(
                           "TESSERA_CONFIG", str(Path(__file__).parents[2] / "examples" / "demo")))):
        monkeypatch.setenv(var, str(value))
    monkeypatch.delenv("TESSERA_WEB_TOKEN", raising=False)
    xss = web_env["xss"]
    assert main(["search", "rossi", "1980"]) == 0
    out = capsys.readouterr().out
    assert re.search(rf"^  {xss} +\| Rossì", out, re.M)
    email = warehouse_rows(web_env, "SELECT email FROM marts.contact_cards WHERE customer_id = ?", [xss])[0][0]
    assert main(["card", email, "--tab", "orders"]) == 0
    out = capsys.readouterr().out
    n = warehouse_rows(web_env, "SELECT count(*) FROM core.orders WHERE customer_id = ?", [xss])[0][0]
    assert out.startswith(f"contact {xss}: ") and f"ORDER_NUMBER  | {n}" in out
    assert main(["card", str(web_env["deleted"])]) == 1  # soft-deleted: not shown
    assert main(["web", "--host", "0.0.0.0"]) == 2  # no token: refused before serving


# ------------------------------------------------------------------------- in a real browser

@pytest.fixture(scope="module")
def server(web_env):
    """The app served by uvicorn on a free loopback port, in a thread of this process."""
    yield from serve_app(web_env["warehouse"])


@pytest.fixture()
def page(browser):
    context = browser.new_context()
    p = context.new_page()
    yield p
    context.close()


def test_browser_search_open_card_and_tabs(page, server, web_env):
    xss = web_env["xss"]
    page.goto(server + "/")
    page.fill("input[name=q]", "Rossi 1980")
    page.click("button[type=submit]")
    page.click(f'a[href="/card/{xss}"] >> nth=0')
    page.wait_for_url(f"**/card/{xss}")
    # the script-tag name is shown as text, and no script ran
    assert page.inner_text("h1.contact-name") == f"{SCRIPT_NAME} Rossì"
    assert page.evaluate("window.__pwned") is None
    n = warehouse_rows(web_env, "SELECT count(*) FROM core.orders WHERE customer_id = ?", [xss])[0][0]
    page.click('nav.tabs a[data-tab="orders"]')
    page.wait_for_url("**tab=orders")
    assert page.locator('section[data-title="Orders, newest first"] tbody tr').count() == n
    # every tab opens from the tab bar and shows its own tables
    for key, label in queries.TABS:
        page.click(f'nav.tabs a[data-tab="{key}"]')
        page.wait_for_url(f"**tab={key}")
        assert page.get_attribute("nav.tabs a.on", "data-tab") == key
        assert page.locator("div.tab section h2").count() >= 1, label
    assert page.evaluate("window.__pwned") is None


def test_browser_analytics_charts_render(page, server, web_env):
    page.goto(server + "/analytics")
    chart = page.locator('figure.chart[data-title="RFM groups (latest day)"]')
    bars = chart.locator("rect.bar")
    groups = warehouse_rows(web_env, """
        SELECT count(DISTINCT rfm_group) FROM marketing.rfm_scores
        WHERE as_of_date = (SELECT max(as_of_date) FROM marketing.rfm_scores)""")[0][0]
    assert bars.count() == groups
    widths = [bars.nth(i).bounding_box()["width"] for i in range(bars.count())]
    assert max(widths) > 100 and all(w >= 0 for w in widths)  # drawn, the largest group longest
    assert widths[0] == max(widths)
    total = int(chart.get_attribute("data-total"))
    assert total == sum(int(g.get_attribute("data-value")) for g in chart.locator("g.row").all())
    assert total == warehouse_rows(web_env, """
        SELECT count(*) FROM marketing.rfm_scores
        WHERE as_of_date = (SELECT max(as_of_date) FROM marketing.rfm_scores)""")[0][0]
    assert f"total {total:,}" in chart.locator("figcaption").inner_text()
