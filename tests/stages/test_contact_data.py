"""The contact card's entities (messages, app events / mobile profile, details): each
contract stores a good row and rejects a bad one with its line, field and reason; rows
link to golden customers through the identity graph; erasure removes them everywhere;
the card (web page and ``tessera card``) shows the values the warehouse holds."""
from __future__ import annotations

import os
from pathlib import Path


from tessera.engine import as_engine
from tessera.engine.warehouse import connect
from tessera.ingest.scrub import scrub_landing_files
from tessera.privacy import suppression as privacy
from tests.stages.small_world import SmallWorld, crm_people, table_cells

TESSERA_YAML = """
deployment: test
nodes: [{name: crm}, {name: esp}]
tree: {priority: [crm, esp]}
"""
SOURCES_YAML = """
sources:
""" + crm_people("source_record_id: id, first_name: first, email: email, mobile: mobile",
                 "crm/people*.csv") + """\
  - name: esp_messages
    entity: message
    node: esp
    format: csv
    path: "esp/messages*.csv"
    csv: {delimiter: ",", encoding: utf-8}
    timestamp_format: "%Y-%m-%d %H:%M"
    default_country: IT
    columns: {source_record_id: id, channel: channel, email: email, mobile: mobile, campaign_id: campaign,
              name: name, sender: sender, sent_via: via, status: status, created_at: created,
              sent_at: sent, opened_at: opened, clicked_at: clicked}
  - name: app_events
    entity: app_event
    node: esp
    format: csv
    path: "esp/app*.csv"
    csv: {delimiter: ",", encoding: utf-8}
    timestamp_format: "%Y-%m-%d %H:%M"
    columns: {source_record_id: id, event_type: type, occurred_at: at, app: app, app_version: v,
              language: lang, os: os, os_version: osv, location: loc, session_seconds: secs,
              email: email, device_id: device}
  - name: crm_details
    entity: detail
    node: crm
    format: csv
    path: "crm/details*.csv"
    csv: {delimiter: ";", encoding: utf-8}
    customer_source: crm_people
    timestamp_format: "%Y-%m-%d %H:%M"
    columns: {source_record_id: id, customer_ref: contact, kind: kind, name: key, value: value,
              updated_at: at}
"""
PEOPLE = ("id;first;email;mobile\n"
          "P1;Anna;anna@example.it;\n"
          "P2;Bruno;bruno@example.it;+39 347 111 2222\n"
          "P3;Anna;ANNA@example.it ;\n")
MESSAGES = ("id,channel,email,mobile,campaign,name,sender,via,status,created,sent,opened,clicked\n"
            "M1,email,anna@example.it,,CMP-1,Newsletter ottobre,news@shop.it,mailing,,2026-10-01 09:00,"
            "2026-10-01 09:01,2026-10-01 12:00,2026-10-02 08:00\n"
            "M2,email,Anna@Example.it,,CMP-2,Newsletter novembre,news@shop.it,rule,HF,2026-10-20 09:00,"
            "2026-10-20 09:01,,\n"
            "M3,sms,,347 111 2222,,Saldi,SHOP,mailing,WFS,2026-10-21 10:00,,,\n"
            "M4,web_push,nobody@example.it,,,Nuovi arrivi,shop.it,rule,,2026-10-22 10:00,2026-10-22 10:00,,\n"
            "M5,email,anna@example.it,,CMP-3,Rotta,news@shop.it,mailing,XX,2026-10-23 10:00,,,\n")
APP = ("id,type,at,app,v,lang,os,osv,loc,secs,email,device\n"
       "A1,install,2026-09-01 10:00,it.shop.app,3.0.0,it,Android,13,,,anna@example.it,D1\n"
       "A2,launch,2026-09-10 08:00,it.shop.app,3.0.0,it,Android,13,,,,D1\n"
       "A3,session_end,2026-09-10 08:05,it.shop.app,3.0.0,it,Android,13,,300,,D1\n"
       "A4,location,2026-09-10 08:01,it.shop.app,3.0.0,it,Android,13,\"Milano, IT\",,anna@example.it,D1\n"
       "A5,launch,2026-10-01 19:00,it.shop.app,3.1.0,pl,Android,14,,,anna@example.it,D1\n"
       "A6,session_end,2026-10-01 19:02,it.shop.app,3.1.0,pl,Android,14,,120,anna@example.it,D1\n"
       "A7,crash,2026-10-02 19:00,it.shop.app,3.1.0,pl,Android,14,,,anna@example.it,D1\n")
DETAILS = ("id;contact;kind;key;value;at\n"
           "D1;P1;standard;shoe_size;38;2026-01-01 10:00\n"
           "D2;P3;standard;shoe_size;39;2026-05-01 10:00\n"
           "D3;P2;dictionary;loyalty_points;120;2026-06-01 10:00\n"
           "D4;P1;secret;x;1;2026-06-01 10:00\n"
           "D5;P9;standard;shoe_size;40;2026-06-01 10:00\n")


def _world(tmp_path: Path):
    return SmallWorld(tmp_path, {"tessera.yaml": TESSERA_YAML, "sources.yaml": SOURCES_YAML},
                      {"crm/people.csv": PEOPLE, "esp/messages.csv": MESSAGES, "esp/app.csv": APP,
                       "crm/details.csv": DETAILS}).materialize_card()


def _outbox(con, anna: int) -> None:
    """Two messages of Tessera's own automations: one sent, one withdrawn (consent lost)."""
    sql = (Path(__file__).parents[2] / "tessera" / "activation" / "sql" / "tables.sql").read_text()
    con.execute("CREATE SCHEMA IF NOT EXISTS activation")
    con.execute(sql)
    con.execute(f"""INSERT INTO activation.outbox VALUES
        ('k1', DATE '2026-10-25', 'automation', 'welcome', 'send', {anna}, 'e1', 'email', 'email',
         'anna@example.it', NULL, 'sent', 1, NULL, TIMESTAMP '2026-10-25 06:00:00',
         TIMESTAMP '2026-10-25 06:01:00', NULL, NULL),
        ('k2', DATE '2026-10-26', 'journey', 'milan', 'sms', {anna}, 'e2', 'sms', 'sms',
         '+393470000000', NULL, 'withdrawn', 0, NULL, TIMESTAMP '2026-10-26 06:00:00', NULL, NULL, NULL)""")
    con.execute(f"INSERT INTO activation.outbox_subjects VALUES ('k1', {anna}, 'Benvenuta Anna')")


def test_card_entities_are_ingested_linked_shown_and_erased(tmp_path, monkeypatch, capsys):
    dep, con = _world(tmp_path)
    try:
        anna, bruno = (con.execute("SELECT customer_id FROM core.customer_sources WHERE source_record_id = ?",
                                   [r]).fetchone()[0] for r in ("P1", "P2"))
        # contracts: the good rows are stored, each bad row rejected with its line, field and reason
        rejects = con.execute("SELECT source, line, field, reason FROM ops.rejects ORDER BY source").fetchall()
        assert [r[:3] for r in rejects] == [("app_events", 8, "event_type"), ("crm_details", 5, "kind"),
                                            ("esp_messages", 6, "status")]
        assert all(r[3] for r in rejects)
        # messages: linked by e-mail (case aside) and by the SMS's phone; a stranger's stays unlinked
        msgs = con.execute("SELECT message_id, customer_id, channel, status, linked_by FROM core.messages "
                           "ORDER BY message_id").fetchall()
        assert msgs == [("M1", anna, "email", None, "email"), ("M2", anna, "email", "HF", "email"),
                        ("M3", bruno, "sms", "WFS", "phone"), ("M4", None, "web_push", None, None)]
        assert "email" not in {r[0] for r in con.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'messages' "
            "AND table_schema = 'core'").fetchall()}
        # app events: the launch carrying only the device follows the device's other events
        assert con.execute("SELECT count(*), count(DISTINCT customer_id) FROM core.app_events "
                           "WHERE customer_id = ?", [anna]).fetchone() == (6, 1)
        assert con.execute("SELECT linked_by FROM core.app_events WHERE event_id = 'A2'").fetchone()[0] == "device"
        profile = con.execute("""SELECT app, app_version, language, os, os_version, last_location,
                                        first_launch_at, last_launch_at, launches, time_in_app_seconds
                                 FROM core.mobile_profiles WHERE customer_id = ?""", [anna]).fetchall()
        assert [tuple(str(v) for v in r) for r in profile] == [(
            "it.shop.app", "3.1.0", "pl", "Android", "14", "Milano, IT", "2026-09-01 10:00:00",
            "2026-10-01 19:00:00", "2", "420")]
        # details: through the CRM record; P1 and P3 are Anna, the later shoe size wins
        details = con.execute("SELECT customer_id, kind, name, value FROM core.contact_details "
                              "WHERE customer_id IS NOT NULL ORDER BY customer_id, name").fetchall()
        assert sorted(details) == sorted([(anna, "standard", "shoe_size", "39"),
                                          (bruno, "dictionary", "loyalty_points", "120")])

        # the card: the web page over the published snapshot, values as stored
        _outbox(con, anna)
        con.execute("CHECKPOINT")
        from starlette.testclient import TestClient

        from tessera.web.app import create_app
        from tessera.web.snapshot import publish

        publish(as_engine(con), tmp_path / "wh.duckdb")
        with TestClient(create_app(tmp_path / "wh.duckdb")) as client:
            page = client.get(f"/card/{anna}", params={"tab": "messages"}).text
            rows = table_cells(page, "Messages sent (e-mail, SMS, web push), newest first")
            by_name = {r[2]: r for r in rows}
            assert set(by_name) == {"Newsletter ottobre", "Newsletter novembre", "Benvenuta Anna",
                                    "milan / sms"}
            assert by_name["Newsletter novembre"][5:7] == ["HF", "hard bounce"]
            assert by_name["Newsletter ottobre"][5:9] == ["", "sent", "2026-10-01 12:00:00", "2026-10-02 08:00:00"]
            assert by_name["Benvenuta Anna"][4:7] == ["tessera automation welcome", "", "sent"]
            assert by_name["milan / sms"][5:7] == ["OO", "opted out between queueing and sending"]
            page = client.get(f"/card/{bruno}", params={"tab": "messages"}).text
            sms = table_cells(page, "Messages sent (e-mail, SMS, web push), newest first")
            assert [r[1:2] + r[5:7] for r in sms] == [["sms", "WFS", "queued, no attempt to send yet"]]
            page = client.get(f"/card/{anna}", params={"tab": "mobile"}).text
            mobile = table_cells(page, "Mobile profile (per app)")
            assert mobile == [["it.shop.app", "pl", "Android", "14", "3.1.0", "Milano, IT",
                               "2026-09-01 10:00:00", "2026-10-01 19:00:00", "2", "420"]]
            assert len(table_cells(page, "App events, newest first")) == 6
            page = client.get(f"/card/{anna}", params={"tab": "profile"}).text
            assert [r[:3] for r in table_cells(page, "Standard and dictionary details")] == [
                ["standard", "shoe_size", "39"]]
        con.close()
        # tessera card prints the same (a terminal reads the published snapshot too)
        from tessera.cli.app import main

        for var, value in (("TESSERA_HOME", tmp_path), ("TESSERA_WAREHOUSE", tmp_path / "wh.duckdb"),
                           ("DAGSTER_HOME", tmp_path / "dagster_home"), ("TESSERA_CONFIG", tmp_path / "config")):
            monkeypatch.setenv(var, str(value))
        assert main(["card", str(anna), "--tab", "mobile", "--tab", "messages", "--tab", "profile"]) == 0
        out = capsys.readouterr().out
        assert "Milano, IT" in out and "hard bounce" in out and "shoe_size" in out
        con = connect(tmp_path / "wh.duckdb")

        # Forget Anna: her messages, app events, profile and details go from every table and
        # from the landing files; Bruno's stay.
        key = os.environ["TESSERA_SUPPRESSION_KEY"]
        out = privacy.forget(con, dep, key, emails=["anna@example.it"], request_id="r1")
        scrub_landing_files(con, dep, tmp_path / "landing", key, "r1", out["records"], out["orders"])
        for table in ("core.messages", "core.app_events", "core.mobile_profiles", "core.contact_details"):
            assert con.execute(f"SELECT count(*) FROM {table} WHERE customer_id = ?", [anna]).fetchone()[0] == 0
        assert con.execute("SELECT count(*) FROM raw.esp_messages WHERE lower(email) = 'anna@example.it'"
                           ).fetchone()[0] == 0
        assert con.execute("SELECT count(*) FROM staging.messages WHERE email_key = 'anna@example.it'"
                           ).fetchone()[0] == 0
        assert con.execute("SELECT count(*) FROM staging.contact_details WHERE customer_ref IN ('P1', 'P3')"
                           ).fetchone()[0] == 0
        assert con.execute("SELECT count(*) FROM staging.app_events WHERE email_key = 'anna@example.it'"
                           ).fetchone()[0] == 0
        assert con.execute("SELECT count(*) FROM core.messages WHERE customer_id = ?", [bruno]).fetchone()[0] == 1
        messages_file = (tmp_path / "landing" / "esp" / "messages.csv").read_text()
        assert "M1," not in messages_file and "M2," not in messages_file and "M3," in messages_file
        details_file = (tmp_path / "landing" / "crm" / "details.csv").read_text()
        assert "D1;" not in details_file and "D2;" not in details_file and "D3;P2" in details_file
        assert "anna@example.it" not in (tmp_path / "landing" / "esp" / "app.csv").read_text()
    finally:
        con.close()
