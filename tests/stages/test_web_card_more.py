"""The card's coupons and journeys tabs, the view selector and the per-field filters of the
search, over a small hand-made warehouse published as the page's snapshot (no daily run:
each table holds exactly the cases checked). Then the card at phone width in Chromium.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tessera.card.search import build_contact_search
from tessera.engine import as_engine
from tessera.web import queries
from tessera.web.snapshot import current, publish
from tests.conftest import serve_app
from tests.stages.small_world import table_cells

ACTIVATION_SQL = Path(__file__).parents[2] / "tessera" / "activation" / "sql" / "tables.sql"
DAY = "2026-11-01"  # the activation's last evaluated day: coupons expire against it


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """40 contacts; person 1 has coupons, journeys and outbox rows; a view node
    ``online`` holds persons 1-10 with other first names; Sendero fields on some."""
    from tessera.engine.warehouse import connect

    path = tmp_path_factory.mktemp("webworld") / "warehouse.duckdb"
    con = connect(path)
    for schema in ("marts", "core", "activation", "views", "ops"):
        con.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
    con.execute("""
        CREATE TABLE marts.contact_cards AS
        SELECT range AS customer_id, 'Name' || range AS first_name,
               CASE WHEN range % 2 = 0 THEN 'Bianchi' ELSE 'Rossi' END AS last_name,
               'p' || range || '@example.com' AS email, '+3933300' || lpad(CAST(range AS VARCHAR), 4, '0') AS mobile,
               CAST(NULL AS VARCHAR) AS phone,
               CASE WHEN range <= 10 THEN 'Milano' ELSE 'Roma' END AS city,
               DATE '1980-01-01' + CAST(range AS INTEGER) AS birth_date,
               CASE WHEN range % 3 = 0 THEN 'F' ELSE 'M' END AS gender,
               CAST(NULL AS VARCHAR) AS erp_id, CAST(NULL AS VARCHAR) AS tax_code, 'IT' AS country,
               CASE WHEN range % 4 = 0 THEN 'granted' ELSE 'withdrawn' END AS email_consent,
               'unknown' AS sms_consent, CAST(range % 3 AS BIGINT) AS order_number,
               CAST(range * 10 AS DECIMAL(18, 2)) AS order_summary,
               CAST(CASE WHEN range IN (1, 2, 5) THEN 3 END AS BIGINT) AS profession,
               CAST(CASE WHEN range = 4 THEN 7 END AS BIGINT) AS interest_macro_1,
               CAST(CASE WHEN range IN (3, 4) THEN 7 WHEN range = 6 THEN 8 END AS BIGINT) AS interest_macro_2,
               CAST(CASE WHEN range % 5 = 0 THEN 1 END AS BIGINT) AS source_macro_1
        FROM range(1, 41)""")
    build_contact_search(con)
    con.execute("""CREATE TABLE core.events (event_id VARCHAR, customer_id BIGINT, event_type VARCHAR,
                   occurred_at TIMESTAMP, properties VARCHAR)""")
    con.execute("""INSERT INTO core.events VALUES
        ('e1', 1, 'coupon_redeemed', TIMESTAMP '2026-10-25 11:00:00', '{"campaign": "milan", "storeCode": "Milan"}'),
        ('e2', 1, 'coupon_redeemed', TIMESTAMP '2026-10-26 11:00:00', '{"campaign": "spring", "code": "SOMEONEELS"}'),
        ('e3', 1, 'coupon_redeemed', TIMESTAMP '2026-10-30 09:00:00', '{"campaign": "autumn"}'),
        ('e4', 2, 'coupon_redeemed', TIMESTAMP '2026-10-25 11:00:00', '{"campaign": "milan"}'),
        ('c1', 3, 'email_click', TIMESTAMP '2026-10-05 09:00:00', '{"campaign_id": "CMP-A"}'),
        ('c2', 3, 'email_click', TIMESTAMP '2026-10-08 09:00:00', '{"campaign_id": "CMP-B"}'),
        ('c3', 4, 'email_click', TIMESTAMP '2026-10-01 09:00:00', '{"campaign_id": "CMP-A"}'),
        ('c4', 5, 'email_click', TIMESTAMP '2026-10-12 08:00:00', '{"campaign_id": "CMP-A"}'),
        ('c5', 5, 'email_open', TIMESTAMP '2026-10-12 07:00:00', '{"campaign_id": "CMP-C"}')""")
    # ROAS: person 3's order goes to the last campaign clicked (B), person 4's click is
    # 19 days old (no campaign), person 5 clicked A on the day of the order
    con.execute("""CREATE TABLE core.orders AS SELECT * FROM (VALUES
        ('O1', 3, DATE '2026-10-10', CAST(100 AS DECIMAL(18, 2)), 'ecommerce', 'web', NULL, 'shop'),
        ('O2', 4, DATE '2026-10-20', CAST(50 AS DECIMAL(18, 2)), 'ecommerce', 'web', NULL, 'shop'),
        ('O3', 5, DATE '2026-10-12', CAST(30 AS DECIMAL(18, 2)), 'store', 'milano', NULL, 'shop'))
        AS t(order_id, customer_id, order_date, amount, channel_macro, channel_micro, offer_id, source)""")
    con.execute("CREATE SCHEMA IF NOT EXISTS staging")
    con.execute("""CREATE TABLE staging.campaign_costs AS SELECT * FROM (VALUES
        ('campaign_costs', 'k1', 'CMP-A', 'email', DATE '2026-10-01', CAST(10 AS DECIMAL(18, 2))),
        ('campaign_costs', 'k2', 'CMP-A', 'social', DATE '2026-10-01', CAST(20 AS DECIMAL(18, 2))),
        ('campaign_costs', 'k3', 'CMP-B', 'email', DATE '2026-10-01', CAST(50 AS DECIMAL(18, 2))),
        ('campaign_costs', 'k4', 'CMP-C', 'social', DATE '2026-10-01', CAST(40 AS DECIMAL(18, 2))))
        AS t(source, source_record_id, campaign_id, channel, spend_date, cost)""")
    con.execute(ACTIVATION_SQL.read_text(encoding="utf-8"))
    # milan: redeemed by campaign in time (used); spring: the event names another code
    # (not used, still valid); autumn: expired before its redemption (expired)
    con.execute(f"""INSERT INTO activation.coupons VALUES
        ('AAAA000001', 'milan', 1, 'journey', 'milan_show', '2026-10-20', DATE '2026-10-20', DATE '2026-10-30', '15%', 'k1'),
        ('BBBB000002', 'spring', 1, 'automation', 'welcome', '2026-10-21', DATE '2026-10-21', DATE '2026-11-20', '10 EUR', 'k2'),
        ('CCCC000003', 'autumn', 1, 'journey', 'milan_show', '2026-10-01', DATE '2026-10-01', DATE '2026-10-11', '5%', 'k3')""")
    con.execute(f"INSERT INTO activation.evaluated_days VALUES (DATE '{DAY}', TIMESTAMP '{DAY} 06:00:00')")
    con.execute("""INSERT INTO activation.journey_state VALUES
        ('milan_show', 'v1', 1, DATE '2026-10-20', 'coupon_used', DATE '2026-10-21', NULL, 'active', DATE '2026-10-28'),
        ('welcome', 'v9', 1, DATE '2026-09-01', NULL, DATE '2026-09-05', NULL, 'done', DATE '2026-09-05')""")
    con.execute("""INSERT INTO activation.journey_history VALUES
        ('milan_show', 'v1', 1, DATE '2026-10-20', DATE '2026-10-20', 'issue_coupon', 'acted', 'sms_coupon', NULL),
        ('milan_show', 'v1', 1, DATE '2026-10-20', DATE '2026-10-21', 'sms_coupon', 'blocked', 'coupon_used', NULL)""")
    con.execute("""INSERT INTO activation.outbox VALUES
        ('k1', DATE '2026-10-20', 'journey', 'milan_show', 'issue_coupon', 1, '2026-10-20', 'coupon', 'none',
         'milan', NULL, 'sent', 1, NULL, TIMESTAMP '2026-10-20 06:00:00', TIMESTAMP '2026-10-20 06:00:01', NULL, 'v1'),
        ('k4', DATE '2026-10-22', 'automation', 'welcome', 'welcome', 1, 'e0', 'email', 'email',
         'p1@example.com', '{"first_name": "SECRET-PAYLOAD"}', 'pending', 0, NULL,
         TIMESTAMP '2026-10-22 06:00:00', NULL, NULL, NULL),
        ('k5', DATE '2026-10-23', 'automation', 'vip', 'tag', 1, 'e9', 'tag', 'none', 'vip', NULL, 'sent', 1,
         NULL, TIMESTAMP '2026-10-23 06:00:00', TIMESTAMP '2026-10-23 06:00:00', NULL, NULL)""")
    con.execute("INSERT INTO activation.outbox_subjects VALUES ('k4', 1, 'Benvenuta <Anna>')")
    # a view node: persons 1-10, first names from its own nodes, with their lineage
    con.execute("""CREATE TABLE views.online_contact_cards AS
        SELECT * REPLACE ('Online' || customer_id AS first_name) FROM marts.contact_cards
        WHERE customer_id <= 10""")
    con.execute("""CREATE TABLE views.online_field_lineage AS
        SELECT customer_id, 'first_name' AS field, 'shop' AS source, 'web_shop' AS node,
               'S' || customer_id AS source_record_id, TIMESTAMP '2026-10-01 00:00:00' AS source_updated_at,
               'tree_priority' AS rule
        FROM views.online_contact_cards""")
    con.execute("CHECKPOINT")
    publish(as_engine(con), path, [("profession", "3", "studente"), ("interest_macro", "7", "sport")])
    con.close()
    return path


@pytest.fixture(scope="module")
def client(world):
    from starlette.testclient import TestClient

    from tessera.web.app import create_app

    with TestClient(create_app(world)) as c:
        yield c


def _ids(html: str) -> list[int]:
    return [int(x) for x in re.findall(r'<td><a href="/card/(\d+)', html)]


def test_coupons_tab_shows_value_dates_and_use(client):
    rows = table_cells(client.get("/card/1", params={"tab": "coupons"}).text, "Coupons, newest first")
    got = {r[0]: r for r in rows}
    assert [r[0] for r in rows] == ["BBBB000002", "AAAA000001", "CCCC000003"]  # newest issued first
    code, campaign, value, issued, expires, used, used_at, status, by = got["AAAA000001"]
    assert (campaign, value, issued, expires, used, status) == (
        "milan", "15%", "2026-10-20", "2026-10-30", "yes", "used")
    assert used_at == "2026-10-25 11:00:00" and by == "journey milan_show"
    # the redemption names another code: not this coupon's use
    assert got["BBBB000002"][5:8] == ["no", "", "valid"]
    # redeemed after its expiry: expired, not used
    assert got["CCCC000003"][5:8] == ["no", "", "expired"]
    empty = client.get("/card/3", params={"tab": "coupons"}).text
    assert "No coupon issued to this person." in empty


def test_journeys_tab_lists_state_moves_and_actions_without_addresses(client, world):
    html = client.get("/card/1", params={"tab": "journeys"}).text
    state = table_cells(html, "Journeys")
    assert [r[:5] for r in state] == [["milan_show", "coupon_used", "active", "2026-10-21", "2026-10-20"],
                                      ["welcome", "", "done", "2026-09-05", "2026-09-01"]]
    moves = table_cells(html, "Journey moves, newest first")
    assert [(r[0], r[2], r[3]) for r in moves] == [("2026-10-21", "sms_coupon", "blocked"),
                                                    ("2026-10-20", "issue_coupon", "acted")]
    actions = table_cells(html, "Actions sent by automations and journeys")
    # the e-mail's subject as rendered when it was queued (text, escaped), never its address
    assert [(r[2], r[4], r[6], r[7], r[8]) for r in actions] == [
        ("vip", "tag", "vip", "", "sent"), ("welcome", "email", "", "Benvenuta <Anna>", "pending"),
        ("milan_show", "coupon", "milan", "", "sent")]
    assert "Benvenuta &lt;Anna&gt;" in html
    # neither the payload nor the address of a send leaves the warehouse for the snapshot
    assert "p1@example.com" not in "".join(str(r) for r in actions)
    published = (current(world) / "activation.outbox.parquet").read_bytes()
    assert b"SECRET-PAYLOAD" not in published and b"p1@example.com" not in published
    assert "In no journey." in client.get("/card/2", params={"tab": "journeys"}).text


def test_view_selector_opens_a_person_in_another_view(client):
    main = client.get("/card/2").text
    assert "Name2 Bianchi" in main and 'data-view="online"' in main
    page = client.get("/card/2", params={"view": "online"})
    assert page.status_code == 200
    html = page.text
    assert "Online2 Bianchi" in html
    lineage = {r[0]: r for r in table_cells(html, "Golden profile in the view online and the lineage of each field")}
    assert lineage["first_name"][1:5] == ["Online2", "shop", "web_shop", "S2"]
    # the tabs keep the view
    assert 'href="/card/2?tab=orders&amp;view=online"' in html
    # a person without a record under the view is not in it; an unknown view is the main one
    assert client.get("/card/20", params={"view": "online"}).status_code == 404
    assert "Name20" in client.get("/card/20", params={"view": "nosuch"}).text


def test_search_in_a_view_finds_its_golden_names_and_links_its_cards(client):
    assert _ids(client.get("/", params={"q": "online2"}).text) == []
    html = client.get("/", params={"q": "online2", "view": "online"}).text
    assert _ids(html) == [2] and 'href="/card/2?view=online"' in html
    # only the view's people, in registry order
    both = _ids(client.get("/", params={"q": "bianchi", "view": "online"}).text)
    assert both == [10, 2, 4, 6, 8]  # surname, then first name as text


def test_filters_keep_the_cards_holding_the_value_in_any_slot(client):
    assert _ids(client.get("/", params={"f_profession": "3"}).text) == [2, 1, 5]  # registry order
    assert sorted(_ids(client.get("/", params={"f_interest_macro": "7"}).text)) == [3, 4]
    # with a keyword and another filter: all must hold
    assert _ids(client.get("/", params={"q": "rossi", "f_profession": "3", "f_city": "Milano"}).text) == [1, 5]
    assert sorted(_ids(client.get("/", params={"f_email_consent": "granted", "f_city": "Milano"}).text)) == [4, 8]
    assert _ids(client.get("/", params={"f_source_macro": "1", "view": "online"}).text) == [10, 5]
    # the offered values and their counts; only the filters the cards have columns for
    html = client.get("/").text
    assert re.search(r'<option value="3">studente · 3 \(3\)</option>', html)
    assert re.search(r'<option value="7">sport · 7 \(2\)</option>', html.split('id="opt-interest_macro"')[1])
    assert re.search(r'<option value="8">8 \(1\)</option>', html)  # no label for it
    assert 'data-filter="education"' not in html and 'data-filter="profession"' in html
    # an unknown filter or one with a value nobody holds
    assert len(_ids(client.get("/", params={"f_nosuch": "x"}).text)) == 40
    assert _ids(client.get("/", params={"f_profession": "'; DROP TABLE x; --"}).text) == []
    # the initial-letter links keep the filters
    assert 'href="/?letter=B&amp;f_profession=3"' in client.get("/", params={"f_profession": "3"}).text


def test_roas_per_campaign_credits_each_order_to_its_last_clicked_campaign(client):
    html = client.get("/analytics").text
    rows = {r[0]: r for r in table_cells(html, "Sales and ROAS per campaign")}
    # campaign, channels, cost, orders, buyers, revenue, roas
    assert rows["CMP-A"][1:] == ["2", "30.00", "1", "1", "30.00", "1"]
    assert rows["CMP-B"][1:] == ["1", "50.00", "1", "1", "100.00", "2"]
    assert rows["CMP-C"][1:] == ["1", "40.00", "0", "0", "0.00", "0"]  # cost, no sale
    assert list(rows) == ["CMP-C", "CMP-B", "CMP-A"]
    costs = table_cells(html, "Campaign costs per channel")
    assert sum(float(r[4]) for r in costs) == 120.0 and len(costs) == 4


def test_analytics_are_computed_once_per_published_folder(world, tmp_path):
    """The counts are cached per snapshot folder: the same page until the next publication,
    the new numbers right after it."""
    import shutil

    from starlette.testclient import TestClient

    from tessera.engine.warehouse import connect
    from tessera.web.app import create_app

    copy = tmp_path / "warehouse.duckdb"
    shutil.copyfile(world, copy)
    con = connect(copy)
    try:
        publish(as_engine(con), copy)
        with TestClient(create_app(copy)) as c:
            def cost_a():
                rows = {r[0]: r for r in table_cells(c.get("/analytics").text, "Sales and ROAS per campaign")}
                return rows["CMP-A"][2]
            assert cost_a() == "30.00"
            con.execute("UPDATE staging.campaign_costs SET cost = cost * 2 WHERE campaign_id = 'CMP-A'")
            assert cost_a() == "30.00"  # not published yet: the page shows the run's numbers
            publish(as_engine(con), copy)
            assert cost_a() == "60.00"
    finally:
        con.close()


def test_new_steps_transpile_to_spark(client, world):
    from tessera.engine import recording
    from tessera.engine.portability import check
    from tessera.web.snapshot import reader

    with recording() as steps:
        with reader(world) as engine:  # the page caches them per snapshot: read them here
            queries.filter_options(engine, "online")
            queries.analytics(engine)
        client.get("/", params={"q": "rossi", "f_interest_macro": "7", "view": "online"})
        client.get("/", params={"q": "rossi", "f_profession": "3"})
        for tab in ("coupons", "journeys", "profile"):
            client.get("/card/1", params={"tab": tab, "view": "online"})
    names = {s.name for s in steps.values()}
    assert {"web.coupons", "web.journey_state", "web.outbox", "web.filter_options", "web.search",
            "web.roas", "web.campaign_costs"} <= names
    failures = {s.name: check(s).problems for s in steps.values() if not check(s).passes}
    assert failures == {}


# ------------------------------------------------------------------------- at phone width

@pytest.fixture(scope="module")
def server(world):
    yield from serve_app(world)


def test_the_card_at_phone_width_has_no_horizontal_scroll(server, browser):
    context = browser.new_context(viewport={"width": 390, "height": 844},
                                  device_scale_factor=2, is_mobile=True)
    try:
        page = context.new_page()
        for path in ("/card/1?tab=profile", "/card/1?tab=journeys", "/card/1?tab=coupons",
                     "/card/2?tab=profile&view=online", "/?f_profession=3"):
            page.goto(server + path)
            width = page.evaluate("document.documentElement.scrollWidth")
            assert width <= 390, (path, width)
            assert page.evaluate("document.documentElement.clientWidth") == 390
        # the card is there: the name, the tab bar wrapped within the screen, a table
        page.goto(server + "/card/1?tab=coupons")
        assert page.inner_text("h1.contact-name") == "Name1 Rossi"
        tabs = page.locator("nav.tabs a")
        assert tabs.count() == len(queries.TABS)
        assert all(tabs.nth(i).bounding_box()["x"] + tabs.nth(i).bounding_box()["width"] <= 390
                   for i in range(tabs.count()))
        assert page.locator('section[data-title="Coupons, newest first"] tbody tr').count() == 3
    finally:
        context.close()


def test_filter_labels_come_from_the_deployments_settings_tables(world, tmp_path):
    """The run publishes the labels of lookups.yaml for the filters (the page reads no
    configuration); a republish (erasure, soft delete) carries them over."""
    import shutil

    from tessera.deployment import load_deployment
    from tessera.engine.warehouse import connect
    from tessera.web.snapshot import LABELS, filter_labels, republish_if_published

    labels = filter_labels(load_deployment(Path(__file__).parents[2] / "examples" / "demo"))
    assert ("profession", "3", "studente") in labels
    assert {k for k, _, _ in labels} <= queries.FILTER_KEYS
    copy = tmp_path / "warehouse.duckdb"
    shutil.copyfile(world, copy)
    con = connect(copy)
    try:
        publish(as_engine(con), copy, labels)
        republish_if_published(as_engine(con), copy)
    finally:
        con.close()
    rows = json.loads((current(copy) / "manifest.json").read_text())["rows"]
    assert rows[LABELS] == len(labels)


def test_manifest_counts_the_activation_tables(world):
    rows = json.loads((current(world) / "manifest.json").read_text())["rows"]
    assert rows["activation.coupons"] == 3 and rows["activation.outbox"] == 3
    assert rows["views.online_contact_cards"] == 10


def test_a_view_nodes_search_index_is_published_and_searched(world, client):
    """The snapshot folds a view node's cards into its own keys and token index, so a
    search in the view is range scans of that index (no fold of the node's cards)."""
    from tessera.engine import read_snapshot

    rows = json.loads((current(world) / "manifest.json").read_text())["rows"]
    assert rows["views.online_contact_search"] == 10
    with read_snapshot(current(world)) as engine:
        step = queries.search_step(engine, "online2 bianchi", view="online")
        assert 'views."online_contact_search_tokens"' in step.sql and "WITH search_keys" not in step.sql
        tokens = {t for (t,) in engine.rows(queries.SqlStep(
            "t", 'SELECT token FROM views."online_contact_search_tokens" WHERE customer_id = 2'))}
    assert {"online2", "bianchi", "!2"} <= tokens and "name2" not in tokens  # the view's names
    assert _ids(client.get("/", params={"q": "onl bian", "view": "online"}).text) == [10, 2, 4, 6, 8]


def test_what_is_cached_per_folder_is_each_folders_own(world, tmp_path):
    """The tables and columns the page reads once per published folder: a new folder
    with another view node lists it, the previous folder still does not."""
    import shutil

    from tessera.engine import read_snapshot
    from tessera.engine.warehouse import connect

    copy = tmp_path / "warehouse.duckdb"
    shutil.copyfile(world, copy)
    con = connect(copy)
    try:
        publish(as_engine(con), copy)
        first = current(copy)
        with read_snapshot(first) as engine:
            assert queries.views(engine) == ["online"]
            assert "first_name" in queries._table_columns(engine, "marts", "contact_cards")
        con.execute("CREATE TABLE views.shop_contact_cards AS SELECT * FROM views.online_contact_cards "
                    "WHERE customer_id <= 3")
        publish(as_engine(con), copy)
    finally:
        con.close()
    assert current(copy) != first
    with read_snapshot(current(copy)) as engine:
        assert queries.views(engine) == ["online", "shop"]
        assert _ids_of(queries.search(engine, "bianchi", view="shop")) == [2]
    with read_snapshot(first) as engine:
        assert queries.views(engine) == ["online"]


def _ids_of(table) -> list[int]:
    return [int(r[0]) for r in table.rows]
