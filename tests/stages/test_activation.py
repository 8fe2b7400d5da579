"""Automations and journeys against real local servers (SMTP by aiosmtpd, HTTP by the
standard library on 127.0.0.1), over a small hand-made warehouse, day by day.

The Milan journey of the demo (examples/demo/journeys.yaml) is walked over 14 days by
eight contacts that take every branch; re-runs, a backfill, a crash between sending
and recording, a failing receiver, a withdrawn consent and an erasure are checked on
the outbox and on what the servers received."""

from __future__ import annotations

import datetime as dt
import email
import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import duckdb
import pytest

from tessera.activation import send as send_mod
from tessera.activation.journeys import version_of
from tessera.activation.outbox import duplicate_actions, unconsented_sends, uses_recommendations
from tessera.activation.run import run_activation, step_counts
from tessera.deployment import load_deployment
from tessera.feeds.delivery import verify
from tessera.privacy import suppression as privacy
from tessera.settings.activation import ActivationSettings, QuietHours, SmtpSettings
from tessera.settings.feeds import HttpDestinationDef

aiosmtpd = pytest.importorskip("aiosmtpd.controller")

DEMO = Path(__file__).resolve().parents[2] / "examples" / "demo"
D0 = dt.date(2026, 11, 2)
NOON = dt.time(12, 0)
SECRETS = {"TESSERA_SMS_SECRET": "sms-secret", "TESSERA_CRM_SECRET": "crm-secret"}
KEY = "test-suppression-key"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Sink:
    def __init__(self):
        self.messages: list[email.message.Message] = []

    async def handle_DATA(self, server, session, envelope):
        self.messages.append(email.message_from_bytes(envelope.content))
        return "250 OK"


@pytest.fixture
def smtp():
    sink = _Sink()
    ctl = aiosmtpd.Controller(sink, hostname="127.0.0.1", port=_free_port())
    ctl.start()
    yield ctl, sink
    ctl.stop()


class _Receiver(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        srv = self.server
        srv.requests.append((self.path, dict(self.headers), body))
        status = 503 if srv.fail_next > 0 else 200
        srv.fail_next -= 1
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def http():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    srv.requests, srv.fail_next = [], 0
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield srv
    srv.shutdown()


def _deployment(smtp_port: int, http_port: int, **over):
    base = load_deployment(DEMO)
    url = f"http://127.0.0.1:{http_port}"
    settings = ActivationSettings(
        send=True, smtp=SmtpSettings(host="127.0.0.1", port=smtp_port, sender="news@tessera.example",
                                     connections=2),
        destinations={
            "sms_gateway": HttpDestinationDef(url=url + "/sms", secret_env="TESSERA_SMS_SECRET",
                                              max_attempts=2, backoff_s=0),
            "crm_webhook": HttpDestinationDef(url=url + "/crm", secret_env="TESSERA_CRM_SECRET",
                                              body="xml", max_attempts=2, backoff_s=0)},
        **over)
    return base.model_copy(update={"activation": settings})


# customer_id, first name, gender, e-mail consent, sms consent, tier
PEOPLE = [
    (1, "Anna", "F", "granted", "granted", "gold"),      # Milan, top spender, attends: thank you
    (2, "Marco", "M", "granted", "granted", None),       # Milan, top spender, does not attend
    (3, "Carla", "F", "granted", "granted", None),       # Milan, small purchase: no invitation
    (4, "Luca", "M", "granted", "granted", None),        # coupon used in Rome: no invitation
    (5, "Sara", "F", "granted", "granted", None),        # coupon never used: ends at the check
    (6, "Paolo", "M", "granted", "denied", None),        # no SMS consent: SMS blocked, invited
    (7, "Giulia", "F", "granted", "granted", None),      # withdraws e-mail consent mid-journey
    (8, "Elena", "F", "granted", "granted", None),       # erased on day 2
]


def _event(con, eid, cid, kind, day, props):
    con.execute("INSERT INTO core.events VALUES (?, ?, ?, ?, ?, 'web_events', 'email')",
                [eid, cid, kind, dt.datetime.combine(day, dt.time(9, 30)), json.dumps(props)])


def _warehouse(path) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect(str(path))
    for s in ("marts", "core", "ops"):
        con.execute(f"CREATE SCHEMA IF NOT EXISTS {s}")
    con.execute("""CREATE TABLE marts.contact_cards (customer_id BIGINT, first_name VARCHAR,
        last_name VARCHAR, gender VARCHAR, email VARCHAR, mobile VARCHAR, country VARCHAR,
        loyalty_tier VARCHAR, email_consent VARCHAR, sms_consent VARCHAR, email_hard_bounced BOOLEAN)""")
    con.execute("""CREATE TABLE core.events (event_id VARCHAR, customer_id BIGINT, event_type VARCHAR,
        occurred_at TIMESTAMP, properties VARCHAR, source VARCHAR, linked_by VARCHAR)""")
    for cid, name, g, ec, sc, tier in PEOPLE:
        con.execute("INSERT INTO marts.contact_cards VALUES (?, ?, 'Rossi', ?, ?, ?, 'IT', ?, ?, ?, FALSE)",
                    [cid, name, g, f"{name.lower()}@example.it", f"+39333000000{cid}", tier, ec, sc])
    con.execute("CREATE TABLE ops.rejects (source VARCHAR, source_record_id VARCHAR)")
    privacy.ensure_tables(con)
    privacy.install_hmac(con, KEY)
    n = 0
    for cid, *_ in PEOPLE:
        n += 1
        _event(con, f"P{n}", cid, "purchase", D0, {"channel": "ecommerce", "amount": 120 if cid == 3 else 500})
    for cid, store in ((1, "Milan"), (2, "Milan"), (3, "Milan"), (4, "Roma"), (6, "Milan"), (7, "Milan")):
        _event(con, f"C{cid}", cid, "coupon_redeemed", D0 + dt.timedelta(days=3),
               {"campaign": "milan_store_discount", "storeCode": store})
    for cid in (1, 7):
        _event(con, f"S{cid}", cid, "show_attended", D0 + dt.timedelta(days=9), {"show": "women"})
    # automations: a download (welcome e-mail), a quote request (XML webhook), a gold cart
    _event(con, "W1", 2, "download", D0 + dt.timedelta(days=1), {"url": "/it/download/x"})
    _event(con, "Q1", 3, "form_fill", D0 + dt.timedelta(days=1), {"form": "preventivo"})
    _event(con, "K1", 1, "cart", D0 + dt.timedelta(days=1), {"product_id": 7})
    return con


def _run(con, deployment, day, **kw):
    return run_activation(con, deployment, day, dt.datetime.combine(day, NOON), environ=SECRETS,
                          sleep=lambda s: None, **kw)


def _walk(con, deployment, days=range(14), before_day=None):
    for i in days:
        day = D0 + dt.timedelta(days=i)
        if before_day:
            before_day(i)
        _run(con, deployment, day)


def _by_subject(sink):
    out: dict[str, list[str]] = {}
    for m in sink.messages:
        out.setdefault(m["Subject"], []).append(m["To"])
    return {k: sorted(v) for k, v in out.items()}


def _sms(http):
    return [r for p, h, b in http.requests if p == "/sms" for r in json.loads(b)["records"]]


def test_milan_journey_takes_every_branch_once(tmp_path, smtp, http):
    (ctl, sink) = smtp
    dep = _deployment(ctl.port, http.server_address[1])
    con = _warehouse(tmp_path / "w.duckdb")

    def events_of_day(i):
        if i == 5:   # Giulia withdraws e-mail consent before her invitation
            con.execute("UPDATE marts.contact_cards SET email_consent = 'withdrawn' WHERE customer_id = 7")
        if i == 2:   # Elena is erased while she waits for the check
            privacy.forget(con, dep, KEY, customer_ids=[8], request_id="r8")
    _walk(con, dep, before_day=events_of_day)

    subjects = _by_subject(sink)
    assert subjects["Sfilata donna a Milano: sei invitata"] == ["anna@example.it"]
    assert subjects["Sfilata uomo a Milano: sei invitato"] == ["marco@example.it", "paolo@example.it"]
    assert subjects["Grazie per essere venuto/a"] == ["anna@example.it"]
    assert subjects["Grazie Marco!"] == ["marco@example.it"]                  # welcome_download
    assert subjects["Gold customer cart"] == ["sales@tessera.example"]       # internal notification
    assert len(sink.messages) == 6
    # the subject recorded when each e-mail was queued is the one it was sent with
    recorded = dict(con.execute("""
        SELECT s.action_key, s.subject FROM activation.outbox_subjects s
        JOIN activation.outbox o USING (action_key) WHERE o.status = 'sent'""").fetchall())
    assert recorded == {m["Message-ID"].strip("<>").removesuffix("@tessera"): m["Subject"]
                        for m in sink.messages}
    # the SMS: everybody who bought except Paolo (no SMS consent), each with their coupon
    sms = _sms(http)
    assert sorted(r["to"] for r in sms) == [f"+39333000000{c}" for c in (1, 2, 3, 4, 5, 7, 8)]
    codes = dict(con.execute("SELECT customer_id, code FROM activation.coupons").fetchall())
    for r in sms:
        cid = int(r["to"][-1])
        if cid != 8:
            assert codes[cid] in r["text"]
    assert 8 not in codes and 6 in codes    # coupons issued without a channel; Elena erased
    # the branches, from the state
    final = dict(con.execute("""SELECT customer_id, string_agg(outcome || ':' || step, ' ' ORDER BY as_of_date, step)
        FROM activation.journey_history GROUP BY 1""").fetchall())
    state = dict(con.execute("SELECT customer_id, branch FROM activation.journey_state").fetchall())
    assert state == {1: "women", 2: "men", 3: "otherwise", 4: "otherwise", 5: None, 6: "men", 7: "women"}
    assert "checked_no:coupon_used" in final[5]
    assert "blocked:sms_coupon" in final[6]
    assert "blocked:invite_women" in final[7] and "blocked:thank_you" in final[7]
    assert "checked_no:after_show" in final[2]
    assert con.execute("SELECT count(*) FROM activation.journey_state WHERE status <> 'done'").fetchone()[0] == 0
    # the erased contact left no trace in the activation tables
    for t in ("outbox", "outbox_attempts", "journey_state", "journey_history", "coupons"):
        assert con.execute(f"SELECT count(*) FROM activation.{t} WHERE customer_id = 8").fetchone()[0] == 0
    # the quote request went to the CRM as signed XML
    crm = [(h, b) for p, h, b in http.requests if p == "/crm"]
    assert len(crm) == 1
    assert verify("crm-secret", crm[0][0], crm[0][1])
    assert b"<first_name>Carla</first_name>" in crm[0][1] and crm[0][1].startswith(b"<?xml")
    assert unconsented_sends(con) == 0 and duplicate_actions(con) == 0
    steps = {(j, s): rest for j, s, *rest in step_counts(con, [D0 + dt.timedelta(days=i) for i in range(14)])}
    entered, moved, waited, branched, acted, blocked, failed, held, gave_up = steps[("milan_fashion_show", "invite")]
    assert branched == 6 and failed == held == gave_up == 0       # 1, 2, 3, 4, 6, 7 reached the branch
    assert steps[("milan_fashion_show", "issue_coupon")][0] == 7   # entered (Elena's rows erased)

    # re-running the last day and backfilling a past one send nothing again
    n_mail, n_http = len(sink.messages), len(http.requests)
    outbox = con.execute("SELECT count(*) FROM activation.outbox").fetchone()[0]
    _run(con, dep, D0 + dt.timedelta(days=13))
    _run(con, dep, D0 + dt.timedelta(days=3))
    assert (len(sink.messages), len(http.requests)) == (n_mail, n_http)
    assert con.execute("SELECT count(*) FROM activation.outbox").fetchone()[0] == outbox


def test_a_crash_between_sending_and_recording_resends_with_the_same_message_id(tmp_path, smtp, http, monkeypatch):
    ctl, sink = smtp
    dep = _deployment(ctl.port, http.server_address[1])
    con = _warehouse(tmp_path / "w.duckdb")
    real = send_mod.record_sent

    def crash(*a, **k):
        raise SystemExit("killed after the SMTP hand-over")
    monkeypatch.setattr(send_mod, "record_sent", crash)
    with pytest.raises(SystemExit):
        _run(con, dep, D0 + dt.timedelta(days=1))
    assert con.execute("SELECT status FROM activation.outbox WHERE kind = 'email'").fetchall() == [("sending",), ("sending",)]
    monkeypatch.setattr(send_mod, "record_sent", real)
    _run(con, dep, D0 + dt.timedelta(days=1))
    ids = [m["Message-ID"] for m in sink.messages]
    assert len(ids) == 4 and len(set(ids)) == 2          # each e-mail twice, same Message-ID
    assert con.execute("SELECT status, attempts FROM activation.outbox WHERE kind = 'email'").fetchall() == [("sent", 2)] * 2
    _run(con, dep, D0 + dt.timedelta(days=1))
    assert len(sink.messages) == 4


def test_a_failing_receiver_gets_the_same_batch_until_it_recovers(tmp_path, smtp, http):
    ctl, sink = smtp
    dep = _deployment(ctl.port, http.server_address[1])
    con = _warehouse(tmp_path / "w.duckdb")
    http.fail_next = 3     # two attempts this run, one more failure next run, then 200
    _run(con, dep, D0 + dt.timedelta(days=1))
    row = con.execute("SELECT status, attempts, last_error FROM activation.outbox WHERE kind = 'webhook'").fetchone()
    assert row == ("sending", 2, "not acknowledged yet")
    _run(con, dep, D0 + dt.timedelta(days=2))
    assert con.execute("SELECT status, attempts FROM activation.outbox WHERE kind = 'webhook'").fetchone() == ("sent", 4)
    crm = [h["webhook-id"] for p, h, b in http.requests if p == "/crm"]
    assert len(crm) == 4 and len(set(crm)) == 1


def test_quiet_hours_hold_messages_and_the_daily_cap_is_kept(tmp_path, smtp, http):
    ctl, sink = smtp
    dep = _deployment(ctl.port, http.server_address[1], quiet_hours=QuietHours(start=22, end=8), daily_cap=1)
    con = _warehouse(tmp_path / "w.duckdb")
    for i in range(3):   # Marco downloads three brochures on day 1: one e-mail only
        _event(con, f"W{i + 10}", 2, "download", D0 + dt.timedelta(days=1), {"url": f"/d/{i}"})
    day = D0 + dt.timedelta(days=1)
    out = run_activation(con, dep, day, dt.datetime.combine(day, dt.time(23, 0)), environ=SECRETS,
                         sleep=lambda s: None)
    assert out["send"].held > 0 and not sink.messages and not http.requests
    statuses = dict(con.execute("""SELECT status, count(*) FROM activation.outbox
        WHERE name = 'welcome_download' GROUP BY 1""").fetchall())
    assert statuses == {"pending": 1, "capped": 3}
    run_activation(con, dep, day, dt.datetime.combine(day, dt.time(9, 0)), environ=SECRETS, sleep=lambda s: None)
    assert [m["To"] for m in sink.messages if m["Subject"].startswith("Grazie")] == ["marco@example.it"]


def test_an_edited_journey_lets_contacts_finish_the_version_they_started(tmp_path, smtp, http):
    ctl, sink = smtp
    dep = _deployment(ctl.port, http.server_address[1])
    con = _warehouse(tmp_path / "w.duckdb")
    _walk(con, dep, range(3))
    j = dep.journeys[0]
    steps = [s if s.name != "invite_women" else s.model_copy(update={"action": s.action.model_copy(
        update={"email": s.action.email.model_copy(update={"subject": "Nuovo invito"})})}) for s in j.steps]
    edited = dep.model_copy(update={"journeys": [j.model_copy(update={"steps": steps})]})
    # Sara ends at the check on day 7 and buys again on day 8: she re-enters, in the new version
    _event(con, "P99", 5, "purchase", D0 + dt.timedelta(days=8), {"channel": "ecommerce", "amount": 50})
    _walk(con, edited, range(3, 14))
    assert con.execute("SELECT count(DISTINCT version) FROM activation.journey_versions").fetchone()[0] == 2
    rows = con.execute("""SELECT customer_id, entered_on, version = ?, status FROM activation.journey_state
        WHERE customer_id IN (1, 5) ORDER BY 1, 2""", [version_of(edited.journeys[0])]).fetchall()
    assert rows == [(1, D0, False, "done"), (5, D0, False, "done"),
                    (5, D0 + dt.timedelta(days=8), True, "active")]
    # Anna entered under the first version: its subject, not the edited one
    assert [m["Subject"] for m in sink.messages if m["To"] == "anna@example.it" and "donna" in m["Subject"]]
    assert not [m for m in sink.messages if m["Subject"] == "Nuovo invito"]


def test_every_activation_step_transpiles_to_spark(tmp_path, smtp, http):
    from tessera.engine import recording
    from tessera.engine.portability import report

    ctl, sink = smtp
    dep = _deployment(ctl.port, http.server_address[1])
    con = _warehouse(tmp_path / "w.duckdb")
    with recording() as log:
        _walk(con, dep, range(0, 14, 1))
    verdicts, text = report([s for s in log.values() if s.name.startswith("activation.")])
    assert len(verdicts) > 20
    assert all(v.passes for v in verdicts), text


def test_score_threshold_notifications_are_sent_once_through_the_outbox(tmp_path, smtp, http):
    from tessera.activation.run import ensure_tables

    ctl, sink = smtp
    dep = _deployment(ctl.port, http.server_address[1])
    con = _warehouse(tmp_path / "w.duckdb")
    ensure_tables(con)
    day = D0 + dt.timedelta(days=1)
    con.execute("INSERT INTO marketing.score_actions VALUES (?, 'engagement', 100, 2, 'notify', "
                "'sales@tessera.example', 120, 90), (?, 'engagement', 100, 2, 'tag', 'hot_lead', 120, 90)",
                [day, day])
    _run(con, dep, day)
    _run(con, dep, day + dt.timedelta(days=1))
    notes = [m for m in sink.messages if m["Subject"] == "engagement >= 100"]
    assert [m["To"] for m in notes] == ["sales@tessera.example"]
    assert "Contact 2 reached engagement" in notes[0].get_payload(decode=True).decode()


def test_date_and_segment_triggers_wait_until_and_reentry_never(tmp_path, smtp, http):
    from tessera.activation.run import ensure_tables
    from tessera.settings.activation import JourneyDef

    ctl, sink = smtp
    base = _deployment(ctl.port, http.server_address[1])
    on_date = JourneyDef.model_validate({
        "name": "christmas", "reentry": "never",
        "trigger": {"date": D0 + dt.timedelta(days=1), "conditions": {"field": "gender", "op": "=", "value": "F"}},
        "steps": [{"name": "hold", "until": D0 + dt.timedelta(days=4), "next": "tag"},
                  {"name": "tag", "action": {"tag": {"tag": "xmas", "property": "season", "value": "winter"}},
                   "next": "end"},
                  {"name": "end", "end": True}]})
    on_segment = JourneyDef.model_validate({
        "name": "welcome_vip", "trigger": {"segment": "top_spenders"},
        "steps": [{"name": "wait", "wait": 2, "next": "mail"},
                  {"name": "mail", "action": {"email": {"subject": "Benvenuto VIP",
                                                        "template": "download_thanks.html"}}, "next": "end"},
                  {"name": "end", "end": True}]})
    dep = base.model_copy(update={"automations": [], "journeys": [on_date, on_segment]})
    con = _warehouse(tmp_path / "w.duckdb")
    ensure_tables(con)
    con.execute("INSERT INTO marketing.segment_history VALUES ('top_spenders', 2, ?, NULL)",
                [D0 + dt.timedelta(days=1)])
    _walk(con, dep, range(6))
    tags = con.execute("SELECT customer_id, tag FROM marketing.contact_tags ORDER BY 1, 2").fetchall()
    women = [c for c, _n, g, *_ in PEOPLE if g == "F"]
    assert tags == [(c, "xmas") for c in women]      # the property is a property, not a tag
    assert con.execute("SELECT DISTINCT property, value FROM activation.contact_properties").fetchall() == [
        ("season", "winter")]
    hist = con.execute("""SELECT DISTINCT as_of_date FROM activation.journey_history
        WHERE journey = 'christmas' AND step = 'tag'""").fetchall()
    assert hist == [(D0 + dt.timedelta(days=4),)]           # held until the date
    assert [(m["To"], m["Subject"]) for m in sink.messages] == [("marco@example.it", "Benvenuto VIP")]
    mail_day = con.execute("""SELECT as_of_date FROM activation.outbox WHERE name = 'welcome_vip'""").fetchone()[0]
    assert mail_day == D0 + dt.timedelta(days=3)              # entered day 1, waited 2 days
    # one entry per woman (reentry: never)
    assert con.execute("SELECT count(*) FROM activation.journey_state WHERE journey = 'christmas'").fetchone()[0] == len(women)


def test_an_email_platform_over_http_gets_the_message_rendered_and_escaped(tmp_path, smtp, http):
    ctl, sink = smtp
    base = _deployment(ctl.port, http.server_address[1])
    welcome = [a for a in base.automations if a.name == "welcome_download"][0]
    email_def = welcome.action.email.model_copy(update={"destination": "sms_gateway"})
    platform = welcome.model_copy(update={"action": welcome.action.model_copy(update={"email": email_def})})
    dep = base.model_copy(update={"automations": [platform], "journeys": []})
    con = _warehouse(tmp_path / "w.duckdb")
    con.execute("UPDATE marts.contact_cards SET first_name = 'Marco <b>' WHERE customer_id = 2")
    _run(con, dep, D0 + dt.timedelta(days=1))
    assert not sink.messages
    (rec,) = _sms(http)
    assert rec["to"] == "marco@example.it" and rec["subject"] == "Grazie Marco <b>!"
    assert "Ciao Marco &lt;b&gt;" in rec["html"]
    # the outbox kept only what the templates read, and drops it once sent
    assert con.execute("SELECT status, payload FROM activation.outbox").fetchall() == [("sent", None)]


def _journey_only(ctl, http, **over):
    base = _deployment(ctl.port, http.server_address[1], max_attempts=2, **over)
    # the automations that send over HTTP or SMTP are left out; the tag the journey reads stays
    return base.model_copy(update={"automations": [a for a in base.automations if a.action.kind == "tag"]})


def test_a_failed_journey_action_holds_the_contact_then_the_retry_moves_it_on(tmp_path, smtp, http):
    ctl, sink = smtp
    dep = _journey_only(ctl, http, journey_retries=2)
    con = _warehouse(tmp_path / "w.duckdb")
    http.fail_next = 2          # the SMS gateway fails both attempts of day 0: out of attempts
    from tessera.engine import recording
    from tessera.engine.portability import report
    with recording() as log:
        out = _run(con, dep, D0)
    verdicts, text = report([s for s in log.values() if s.name.startswith(("activation.journey_f",
                                                                           "activation.journey_hold",
                                                                           "activation.http_give_up"))])
    assert len(verdicts) == 4 and all(v.passes for v in verdicts), text
    assert out["held"] == {"held": 7, "gave_up": 0}
    assert con.execute("""SELECT DISTINCT status, step FROM activation.journey_state
                          WHERE customer_id <> 6""").fetchall() == [("failed", "sms_coupon")]
    assert con.execute("SELECT status FROM activation.delivery_batches".replace("activation", "exports")
                       ).fetchall() == [("gave_up",)]
    assert con.execute("SELECT DISTINCT status, last_error FROM activation.outbox WHERE kind = 'sms'").fetchall() == [
        ("failed", "no acknowledgement, gave up")]
    steps = {(j, s): rest for j, s, *rest in step_counts(con, [D0])}
    assert steps[("milan_fashion_show", "sms_coupon")][7:] == [7, 0]      # held, gave up
    # day 1: the receiver is back; the held contacts get the SMS (a new key, same coupon)
    _run(con, dep, D0 + dt.timedelta(days=1))
    sent = con.execute("""SELECT ref, status FROM activation.outbox WHERE kind = 'sms' AND status = 'sent'
                          ORDER BY customer_id""").fetchall()
    assert sent == [(f"{D0}/retry-1", "sent")] * 7
    texts = _sms(http)[-7:]
    codes = dict(con.execute("SELECT customer_id, code FROM activation.coupons").fetchall())
    assert all(codes[int(r["to"][-1])] in r["text"] for r in texts)
    assert con.execute("""SELECT DISTINCT status, step FROM activation.journey_state
                          WHERE customer_id <> 6""").fetchall() == [("active", "coupon_used")]
    hist = [r[0] for r in con.execute("""SELECT outcome FROM activation.journey_history WHERE customer_id = 1
        AND step = 'sms_coupon' ORDER BY as_of_date, outcome""").fetchall()]
    assert hist == ["acted", "failed", "acted", "retried"]
    # the rest of the journey goes on as usual: Anna is invited and thanked, once
    _walk(con, dep, range(2, 14))
    assert [m["Subject"] for m in sink.messages if m["To"] == "anna@example.it"] == [
        "Sfilata donna a Milano: sei invitata", "Grazie per essere venuto/a"]
    assert duplicate_actions(con) == 0


def test_a_journey_action_failing_after_the_retries_exits_the_contact(tmp_path, smtp, http):
    ctl, sink = smtp
    dep = _journey_only(ctl, http, journey_retries=1)
    con = _warehouse(tmp_path / "w.duckdb")
    http.fail_next = 10**6      # the gateway never recovers
    _walk(con, dep, range(4))
    state = con.execute("""SELECT DISTINCT status, step FROM activation.journey_state
                           WHERE customer_id <> 6""").fetchall()
    assert state == [("exited", "sms_coupon")]
    hist = [r[0] for r in con.execute("""SELECT outcome FROM activation.journey_history WHERE customer_id = 1
        ORDER BY as_of_date, outcome""").fetchall()]
    assert hist == ["acted", "acted", "entered", "failed", "acted", "gave_up", "retried"]
    # two tries (day 0 and the retry on day 1), two attempts each, then nothing more
    assert len([r for r in http.requests if r[0] == "/sms"]) == 4
    assert con.execute("SELECT count(*) FROM activation.outbox WHERE kind = 'sms' AND status = 'failed'"
                       ).fetchone()[0] == 14
    steps = {(j, s): rest for j, s, *rest in step_counts(con, [D0 + dt.timedelta(days=i) for i in range(4)])}
    assert steps[("milan_fashion_show", "sms_coupon")][7:] == [0, 7]
    # Paolo (no SMS consent) was blocked, not failed: he went on
    assert con.execute("SELECT step FROM activation.journey_state WHERE customer_id = 6").fetchone()[0] != "sms_coupon"


def test_consent_withdrawn_after_the_batch_was_queued_drops_the_person_before_sending(tmp_path, smtp, http):
    ctl, sink = smtp
    dep = _deployment(ctl.port, http.server_address[1])
    dep = dep.model_copy(update={"automations": []})
    con = _warehouse(tmp_path / "w.duckdb")
    http.fail_next = 2          # day 0: the SMS batch is queued, both attempts fail
    _run(con, dep, D0)
    assert con.execute("SELECT status, records FROM exports.delivery_batches").fetchall() == [("pending", 7)]
    first = [h["webhook-id"] for p, h, b in http.requests if p == "/sms"]
    # Carla withdraws SMS consent before the retry
    con.execute("UPDATE marts.contact_cards SET sms_consent = 'withdrawn' WHERE customer_id = 3")
    assert unconsented_sends(con) == 1
    from tessera.engine import recording
    from tessera.engine.portability import report
    with recording() as log:
        out = _run(con, dep, D0 + dt.timedelta(days=1))
    verdicts, text = report([s for s in log.values() if s.name.startswith(("activation.unconsented_in",
                                                                           "activation.withdraw_batched",
                                                                           "delivery.scrub", "delivery.erased"))])
    assert len(verdicts) >= 4 and all(v.passes for v in verdicts), text
    assert out["send"].withdrawn == 1
    (path, headers, body), = [r for r in http.requests[len(first):] if r[0] == "/sms"]
    assert headers["webhook-id"] == first[0]                 # the same batch, scrubbed
    assert verify("sms-secret", headers, body)
    assert sorted(r["to"][-1] for r in json.loads(body)["records"]) == ["1", "2", "4", "5", "7", "8"]
    rows = dict(con.execute("SELECT customer_id, status FROM activation.outbox WHERE kind = 'sms'").fetchall())
    assert rows[3] == "withdrawn" and sorted(c for c, st in rows.items() if st == "sent") == [1, 2, 4, 5, 7, 8]
    assert con.execute("SELECT status, records FROM exports.delivery_batches").fetchall() == [("delivered", 6)]
    assert con.execute("""SELECT count(*) FROM exports.delivery_batch_subjects""").fetchone()[0] in (0, 6)
    assert unconsented_sends(con) == 0
def test_a_template_can_list_the_contacts_recommended_products(tmp_path, smtp, http):
    ctl, sink = smtp
    base = _deployment(ctl.port, http.server_address[1])
    welcome = [a for a in base.automations if a.name == "welcome_download"][0]
    email_def = welcome.action.email.model_copy(
        update={"subject": "Per te: {{ recommended_products | join(', ') }}"})
    auto = welcome.model_copy(update={"action": welcome.action.model_copy(update={"email": email_def})})
    dep = base.model_copy(update={"automations": [auto], "journeys": []})
    assert uses_recommendations(dep) and not uses_recommendations(base.model_copy(update={"journeys": []}))
    con = _warehouse(tmp_path / "w.duckdb")
    con.execute("""CREATE SCHEMA recommendations;
        CREATE TABLE recommendations.contact_products (as_of_date DATE, kind VARCHAR,
            customer_id BIGINT, rank INTEGER, product_id VARCHAR, score DOUBLE)""")
    day = D0 + dt.timedelta(days=1)
    con.executemany("INSERT INTO recommendations.contact_products VALUES (?, ?, 2, ?, ?, 1.0)", [
        (day - dt.timedelta(days=1), "combined", 1, "OLD"),   # an older day: not used
        (day, "combined", 2, "P2"), (day, "combined", 1, "P1"),
        (day, "popular", 1, "BEST"),                          # another kind: not used
        (day + dt.timedelta(days=1), "combined", 1, "NEWER")])  # a later day: not used
    _run(con, dep, day)
    # Marco downloaded: the run's day's combination, best first (a backfilled day: the
    # table already holds a later day's lists)
    assert _by_subject(sink) == {"Per te: P1, P2": ["marco@example.it"]}


def test_the_milan_journey_on_generated_events_takes_every_branch_as_the_events_say(tmp_path, smtp, http):
    """The demo generator's Milan events (tessera.sampledata.journeys) for 60 people, walked
    day by day over the two weeks: every branch is taken, and who got which message
    follows from each person's own events and profile."""
    import polars as pl

    from tessera.sampledata.journeys import journey_event_lines

    ctl, sink = smtp
    dep = _deployment(ctl.port, http.server_address[1])
    as_of = D0 + dt.timedelta(days=13)
    n = 60
    people = pl.DataFrame({"email": [f"p{i}@example.it" for i in range(1, n + 1)],
                           "gender": ["F" if i % 2 else "M" for i in range(1, n + 1)]})
    con = duckdb.connect(str(tmp_path / "w.duckdb"))
    for s in ("marts", "core", "ops"):
        con.execute(f"CREATE SCHEMA {s}")
    con.execute("""CREATE TABLE marts.contact_cards AS SELECT i AS customer_id, 'Nome' || i AS first_name,
        'Rossi' AS last_name, CASE WHEN i % 2 = 1 THEN 'F' ELSE 'M' END AS gender, 'p' || i || '@example.it' AS email,
        '+39333' || i AS mobile, 'IT' AS country, CAST(NULL AS VARCHAR) AS loyalty_tier,
        'granted' AS email_consent, 'granted' AS sms_consent, FALSE AS email_hard_bounced
        FROM range(1, ?) t(i)""", [n + 1])
    con.execute("""CREATE TABLE core.events (event_id VARCHAR, customer_id BIGINT, event_type VARCHAR,
        occurred_at TIMESTAMP, properties VARCHAR, source VARCHAR, linked_by VARCHAR)""")
    con.execute("CREATE TABLE ops.rejects (source VARCHAR, source_record_id VARCHAR)")
    privacy.ensure_tables(con)
    privacy.install_hmac(con, KEY)
    lines = [json.loads(x) for x in journey_event_lines(people, as_of, seed=7, n=n)]
    for e in lines:
        cid = int(e["email"][1:].split("@")[0])
        at = dt.datetime.strptime(e["occurred_at"], "%Y-%m-%dT%H:%M:%SZ")
        con.execute("INSERT INTO core.events VALUES (?, ?, ?, ?, ?, 'web_events', 'email')",
                    [e["event_id"], cid, e["type"], at, json.dumps(e["properties"])])
    assert min(e["occurred_at"] for e in lines)[:10] == str(D0)
    _walk(con, dep, range(14))

    # what each person's events and profile say
    def who(kind, **props):
        return {int(e["email"][1:].split("@")[0]) for e in lines
                if e["type"] == kind and all(e["properties"].get(k) == v for k, v in props.items())}
    top = who("purchase") - {int(e["email"][1:].split("@")[0]) for e in lines
                             if e["type"] == "purchase" and e["properties"]["amount"] < 300}
    used, milan, attended = who("coupon_redeemed"), who("coupon_redeemed", storeCode="Milan"), who("show_attended")
    women = {c for c in milan & top if c % 2 == 1}
    men = {c for c in milan & top if c % 2 == 0}
    subjects = {k: {int(a[1:].split("@")[0]) for a in v} for k, v in _by_subject(sink).items()}
    assert subjects["Sfilata donna a Milano: sei invitata"] == women
    assert subjects["Sfilata uomo a Milano: sei invitato"] == men
    assert subjects["Grazie per essere venuto/a"] == (women | men) & attended
    assert sum(len(v) for v in _by_subject(sink).values()) == len(sink.messages)    # nobody twice
    assert len(_sms(http)) == n                                   # every buyer: one SMS
    branch = dict(con.execute("SELECT customer_id, branch FROM activation.journey_state").fetchall())
    outcomes = dict(con.execute("""SELECT customer_id, list(outcome || ':' || step ORDER BY as_of_date, step)
        FROM activation.journey_history GROUP BY 1""").fetchall())
    # every way through the journey was taken by someone
    assert {c for c, b in branch.items() if b == "women"} == women and women
    assert {c for c, b in branch.items() if b == "men"} == men and men
    assert {c for c, b in branch.items() if b == "otherwise"} == used - women - men
    assert used - women - men                                                  # Rome, or not top
    assert {c for c, h in outcomes.items() if "checked_no:coupon_used" in h} == set(range(1, n + 1)) - used
    assert set(range(1, n + 1)) - used
    assert {c for c, h in outcomes.items() if "checked_no:after_show" in h} == (women | men) - attended
    assert (women | men) - attended and (women | men) & attended
    assert con.execute("SELECT DISTINCT status FROM activation.journey_state").fetchall() == [("done",)]
    assert unconsented_sends(con) == 0 and duplicate_actions(con) == 0


def test_replaying_evaluated_days_from_scratch_sends_nothing_again(tmp_path, smtp, http):
    """A backfill that really re-evaluates past days (their record in evaluated_days
    removed, as a repair would): the action keys, not the day bookkeeping, keep every
    SMS, e-mail, webhook and coupon from being decided or sent a second time."""
    ctl, sink = smtp
    dep = _deployment(ctl.port, http.server_address[1])
    con = _warehouse(tmp_path / "w.duckdb")
    _walk(con, dep, range(10))
    n_mail, n_http = len(sink.messages), len(http.requests)
    assert n_mail and n_http
    outbox = con.execute("SELECT count(*) FROM activation.outbox").fetchone()[0]
    coupons = con.execute("SELECT count(*) FROM activation.coupons").fetchone()[0]
    con.execute("DELETE FROM activation.evaluated_days WHERE as_of_date >= ?", [D0])
    _walk(con, dep, range(10))          # every day evaluated again, from day 0
    assert (len(sink.messages), len(http.requests)) == (n_mail, n_http)
    assert con.execute("SELECT count(*) FROM activation.outbox").fetchone()[0] == outbox
    assert con.execute("SELECT count(*) FROM activation.coupons").fetchone()[0] == coupons
    assert duplicate_actions(con) == 0


def test_a_crash_after_the_http_post_before_recording_resends_the_same_batch_id(tmp_path, smtp, http, monkeypatch):
    """A JSON webhook (an automation on carts) delivered, then the process dies before the
    acknowledgement is recorded: the next run posts the same batch (same webhook-id,
    same signed body), the outbox ends ``sent`` once, and a third run posts nothing."""
    from tessera.feeds import delivery
    from tessera.settings.activation import Action, AutomationDef, EventFilter

    ctl, sink = smtp
    base = _deployment(ctl.port, http.server_address[1])
    hook = AutomationDef(name="cart_to_crm", trigger=EventFilter(event="cart"),
                         action=Action(webhook={"destination": "crm_webhook", "body": "json",
                                                "fields": ["customer_id", "first_name"]}))
    dep = base.model_copy(update={"automations": [hook], "journeys": []})
    con = _warehouse(tmp_path / "w.duckdb")
    real = delivery._log

    def crash(engine, dest, batch, attempt, started, result, outcome, wait):
        if outcome == "delivered":
            raise SystemExit("killed after the POST, before the acknowledgement was recorded")
        return real(engine, dest, batch, attempt, started, result, outcome, wait)
    monkeypatch.setattr(delivery, "_log", crash)
    day = D0 + dt.timedelta(days=1)
    with pytest.raises(SystemExit):
        _run(con, dep, day)
    assert con.execute("SELECT status FROM activation.outbox").fetchall() == [("sending",)]
    monkeypatch.setattr(delivery, "_log", real)
    _run(con, dep, day)
    _run(con, dep, day + dt.timedelta(days=1))
    posts = [(h, b) for p, h, b in http.requests if p == "/crm"]
    assert len(posts) == 2 and posts[0][0]["webhook-id"] == posts[1][0]["webhook-id"]
    assert posts[0][1] == posts[1][1] and all(verify("crm-secret", h, b) for h, b in posts)
    doc = json.loads(posts[1][1])
    (rec,) = doc["records"]
    assert rec["first_name"] == "Anna" and rec["event"]["event_type"] == "cart"
    assert json.loads(rec["event"]["properties"]) == {"product_id": 7}     # the event's text, as stored
    assert con.execute("SELECT status, payload FROM activation.outbox").fetchall() == [("sent", None)]
    assert duplicate_actions(con) == 0


def test_an_event_reloaded_with_a_corrected_time_on_a_later_day_is_not_acted_on_again(tmp_path, smtp, http):
    """The welcome e-mail of Marco's download went out on day 1; the source then
    re-delivers the same event id with its time corrected to day 2: the action key is
    the event's, so day 2 decides nothing and sends nothing for it."""
    ctl, sink = smtp
    base = _deployment(ctl.port, http.server_address[1])
    dep = base.model_copy(update={"automations": [a for a in base.automations if a.name == "welcome_download"],
                                  "journeys": []})
    con = _warehouse(tmp_path / "w.duckdb")
    _run(con, dep, D0 + dt.timedelta(days=1))
    assert [m["To"] for m in sink.messages] == ["marco@example.it"]
    con.execute("UPDATE core.events SET occurred_at = occurred_at + INTERVAL 1 DAY WHERE event_id = 'W1'")
    out = _run(con, dep, D0 + dt.timedelta(days=2))
    assert out["evaluated"][D0 + dt.timedelta(days=2)]["automations"]["welcome_download"]["already"] == 1
    assert len(sink.messages) == 1
    assert con.execute("SELECT count(*) FROM activation.outbox").fetchone()[0] == 1


class _SlowSink(_Sink):
    """Holds each message a moment and counts the messages being received at once."""

    def __init__(self):
        super().__init__()
        self.now = self.most = 0

    async def handle_DATA(self, server, session, envelope):
        import asyncio
        self.now += 1
        self.most = max(self.most, self.now)
        try:
            await asyncio.sleep(0.1)
            return await super().handle_DATA(server, session, envelope)
        finally:
            self.now -= 1


def test_sending_is_concurrent_within_the_configured_limits(tmp_path, http):
    """``smtp.connections`` SMTP sessions and a destination's ``concurrency`` HTTP batches
    at once, never more; every message delivered once."""
    from tessera.settings.activation import Action, AutomationDef, EventFilter

    sink = _SlowSink()
    ctl = aiosmtpd.Controller(sink, hostname="127.0.0.1", port=_free_port())
    ctl.start()
    try:
        base = _deployment(ctl.port, http.server_address[1])
        settings = base.activation.model_copy(update={
            "smtp": base.activation.smtp.model_copy(update={"connections": 3}),
            "destinations": {"crm_webhook": base.activation.destinations["crm_webhook"].model_copy(
                update={"body": "json", "batch_rows": 1, "concurrency": 2})}})
        mail = AutomationDef(name="views_mail", trigger=EventFilter(event="page_view"), action=Action(
            email={"subject": "Ciao {{ first_name }}", "template": "download_thanks.html"}))
        hook = AutomationDef(name="views_hook", trigger=EventFilter(event="page_view"), action=Action(
            webhook={"destination": "crm_webhook", "fields": ["customer_id"]}))
        dep = base.model_copy(update={"activation": settings, "automations": [mail, hook], "journeys": []})
        con = _warehouse(tmp_path / "w.duckdb")
        for cid, *_ in PEOPLE:
            _event(con, f"V{cid}", cid, "page_view", D0, {})
        out = _run(con, dep, D0)
        out_again = _run(con, dep, D0)
    finally:
        ctl.stop()
    assert out["send"].sent == 16 and out_again["send"].sent == 0
    assert sorted(m["To"] for m in sink.messages) == sorted(f"{p[1].lower()}@example.it" for p in PEOPLE)
    assert 1 < sink.most <= 3
    posts = [json.loads(b)["records"][0]["customer_id"] for p, h, b in http.requests if p == "/crm"]
    assert sorted(posts) == [p[0] for p in PEOPLE]
    assert con.execute("SELECT count(*) FROM activation.outbox WHERE status = 'sent'").fetchone() == (16,)
