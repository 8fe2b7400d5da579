"""Issue 14 item 5: HTTP delivery against a real server on 127.0.0.1 that fails, times
out, throttles and then accepts: nothing lost, nothing duplicated, every signature
verified, every attempt in the delivery log. And the receiver's verifier."""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import duckdb
import pytest
from lxml import etree

from tessera.cli import main
from tessera.engine import DuckDBEngine, SqlStep
from tessera.engine.warehouse import ensure_warehouse
from tessera.feeds.delivery import (HttpDestination, SignatureError, backoff_s, deliver_pending,
                                    delivery_summary, enqueue, json_batches, retry_after_seconds,
                                    secret_bytes, sign, verify, xml_batches)
from tessera.feeds.publish import build_feed
from tests.stages.feeds_world import D1, feed, make_world

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
NOW = dt.datetime(2026, 11, 2, 6, 0)


class Receiver:
    """A receiver that verifies each request, applies a message id once (answering 200
    to a repeat, as the Standard Webhooks receivers do) and follows a script of
    misbehaviour: ``500``, ``"timeout"`` (apply, then answer too late), ``(429, "2")``
    (a status with a Retry-After)."""

    def __init__(self, script=()):
        self.script = list(script)
        self.applied: dict[str, dict] = {}  # message id -> body
        self.requests: list[str] = []
        self.repeats: list[str] = []
        self.bad_signatures = 0
        self.lock = threading.Lock()
        self.delay = 0.0            # seconds each request is held (to see requests overlap)
        self.in_flight = self.max_in_flight = 0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                try:
                    msg_id = verify(SECRET, dict(self.headers.items()), body)
                except SignatureError:
                    with receiver.lock:
                        receiver.bad_signatures += 1
                    return self._answer(401)
                assert self.headers["Idempotency-Key"] == msg_id
                with receiver.lock:
                    receiver.requests.append(msg_id)
                    step = receiver.script.pop(0) if receiver.script else 200
                    receiver.in_flight += 1
                    receiver.max_in_flight = max(receiver.max_in_flight, receiver.in_flight)
                try:
                    time.sleep(receiver.delay)
                    self._handle(step, msg_id, body)
                finally:
                    with receiver.lock:
                        receiver.in_flight -= 1

            def _handle(self, step, msg_id, body):
                if step == "timeout":
                    receiver._apply(msg_id, body)
                    time.sleep(0.8)  # the sender has given up by now
                    return self._answer(200)
                if isinstance(step, tuple):
                    return self._answer(step[0], {"Retry-After": step[1]})
                if step != 200:
                    return self._answer(step)
                receiver._apply(msg_id, body)
                self._answer(200)

            def _answer(self, status, headers=None):
                try:
                    self.send_response(status)
                    for k, v in (headers or {}).items():
                        self.send_header(k, v)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def _apply(self, msg_id, body):
        with self.lock:
            if msg_id in self.applied:
                self.repeats.append(msg_id)
            else:
                self.applied[msg_id] = etree.fromstring(body) if body.startswith(b"<?xml") \
                    else json.loads(body)

    @property
    def url(self):
        return f"http://127.0.0.1:{self.server.server_address[1]}/hooks/tessera"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture()
def engine():
    con = duckdb.connect()
    ensure_warehouse(con)
    yield DuckDBEngine(con)
    con.close()


def _dest(url, **kw):
    return HttpDestination(name="crm", url=url, secret=secret_bytes(SECRET),
                           timeout_s=kw.pop("timeout_s", 0.4), backoff_s=1.0, max_backoff_s=8.0,
                           **kw)


def _batches(n=3, day=D1):
    records = [{"op": "upsert", "record": {"customer_id": i, "email": f"p{i}@x.it"}}
               for i in range(1, 2 * n + 1)]
    return json_batches("crm", source="test", as_of=day, records=records, batch_rows=2,
                        envelope={"feed": "test"})


def _log(engine):
    return engine.rows(SqlStep(
        "t.log", "SELECT batch_id, attempt, http_status, outcome, error, wait_s "
                 "FROM exports.delivery_attempts ORDER BY started_at, attempt"))


def test_fails_times_out_throttles_then_delivers_everything_once(engine):
    batches = _batches(3)
    waits = []
    with Receiver([500, "timeout", (429, "2")]) as rx:
        assert enqueue(engine, "crm", batches, NOW) == 3
        report = deliver_pending(engine, _dest(rx.url), sleep=waits.append, rng=lambda: 0.5)
    assert report.delivered == 3 and report.pending == 0 and report.stopped is None
    assert report.attempts == 6 and report.retries == 3
    # nothing lost, nothing applied twice, in order, every signature good
    assert list(rx.applied) == [b.batch_id for b in batches]
    assert [r["customer_id"] for b in rx.applied.values() for r in
            (x["record"] for x in b["records"])] == [1, 2, 3, 4, 5, 6]
    assert rx.bad_signatures == 0
    # the timed-out request reached the receiver and was retried with the same id
    first = batches[0].batch_id
    assert rx.requests[:4] == [first] * 4 and rx.repeats == [first]
    # back-off with jitter (rng 0.5: three quarters of 1 s, then of 2 s), then Retry-After
    assert waits == [0.75, 1.5, 2.0]
    log = _log(engine)
    assert [(r[1], r[2], r[3], r[4]) for r in log[:4]] == [
        (1, 500, "retry", None), (2, None, "retry", "timeout"), (3, 429, "retry", None),
        (4, 200, "delivered", None)]
    assert [r[5] for r in log[:3]] == [0.75, 1.5, 2.0]
    assert delivery_summary(engine, "crm") == {"delivered": 3}
    # the bodies are gone once acknowledged
    assert engine.scalar(SqlStep(
        "t.bodies", "SELECT count(body) FROM exports.delivery_batches")) == 0


def test_a_receiver_of_independent_messages_gets_batches_concurrently_within_the_limit(engine):
    """``concurrency``: up to that many batches in flight at once (never more), each
    delivered once, a failing one retried with its own id, every attempt logged."""
    batches = _batches(12)
    enqueue(engine, "crm", batches, NOW)
    with Receiver([503]) as rx:
        rx.delay = 0.2
        report = deliver_pending(engine, _dest(rx.url, concurrency=4, timeout_s=5),
                                 sleep=lambda s: None)
    assert report.delivered == 12 and report.pending == 0 and report.stopped is None
    assert report.attempts == 13 and report.retries == 1
    assert sorted(rx.applied) == sorted(b.batch_id for b in batches) and rx.repeats == []
    assert 1 < rx.max_in_flight <= 4 and rx.bad_signatures == 0
    assert sorted(r[3] for r in _log(engine)) == ["delivered"] * 12 + ["retry"]
    assert delivery_summary(engine, "crm") == {"delivered": 12}


def test_concurrent_delivery_stops_after_the_window_when_a_batch_gets_no_answer(engine):
    batches = _batches(6)
    enqueue(engine, "crm", batches, NOW)
    with Receiver([503]) as rx:
        report = deliver_pending(engine, _dest(rx.url, concurrency=3, max_attempts=1),
                                 sleep=lambda s: None)
    # the window's other batches went through; the one out of attempts and the next
    # window wait for the next run, still pending
    assert report.delivered == 2 and report.pending == 4 and "1 attempts" in report.stopped
    assert delivery_summary(engine, "crm") == {"delivered": 2, "pending": 4}
    assert len(rx.requests) == 3


def test_an_endpoint_down_loses_nothing_and_the_next_run_delivers_once(engine):
    batches = _batches(2)
    enqueue(engine, "crm", batches, NOW)
    with Receiver([503] * 3) as rx:
        report = deliver_pending(engine, _dest(rx.url, max_attempts=3), sleep=lambda s: None)
        assert report.delivered == 0 and report.pending == 2 and "3 attempts" in report.stopped
        assert rx.requests == [batches[0].batch_id] * 3  # order kept: the second never overtook
        assert delivery_summary(engine, "crm") == {"pending": 2}
        # the next run (the same day re-run: the same batches) queues nothing new ...
        assert enqueue(engine, "crm", _batches(2), NOW) == 0
        report = deliver_pending(engine, _dest(rx.url), sleep=lambda s: None)
        assert report.delivered == 2
        # ... and a third run sends nothing at all
        assert enqueue(engine, "crm", _batches(2), NOW) == 0
        sent = len(rx.requests)
        assert deliver_pending(engine, _dest(rx.url), sleep=lambda s: None).attempts == 0
        assert len(rx.requests) == sent
    assert list(rx.applied) == [b.batch_id for b in batches] and rx.repeats == []


def test_a_long_retry_after_defers_to_the_next_run(engine):
    enqueue(engine, "crm", _batches(1), NOW)
    waits = []
    with Receiver([(429, "3600")]) as rx:
        report = deliver_pending(engine, _dest(rx.url), sleep=waits.append)
    assert waits == [] and report.pending == 1 and "3600" in report.stopped
    assert _log(engine)[0][3] == "deferred" and _log(engine)[0][5] == 3600.0


def test_a_refused_batch_is_marked_and_the_next_goes_on(engine):
    batches = _batches(2)
    enqueue(engine, "crm", batches, NOW)
    with Receiver([400]) as rx:
        report = deliver_pending(engine, _dest(rx.url), sleep=lambda s: None)
    assert report.rejected == 1 and report.delivered == 1
    assert list(rx.applied) == [batches[1].batch_id]
    assert delivery_summary(engine, "crm") == {"delivered": 1, "rejected": 1}


def test_a_changed_rerun_supersedes_what_was_still_pending(engine):
    enqueue(engine, "crm", _batches(2), NOW)
    changed = json_batches("crm", source="test", as_of=D1, batch_rows=2, envelope={"feed": "test"},
                           records=[{"op": "delete", "record": {"customer_id": 9}}])
    assert enqueue(engine, "crm", changed, NOW) == 1
    assert delivery_summary(engine, "crm") == {"pending": 1, "superseded": 2}


def test_backoff_grows_is_capped_and_jittered():
    d = HttpDestination(name="x", url="http://127.0.0.1:1/", secret=b"k", backoff_s=1, max_backoff_s=10)
    assert [backoff_s(d, n, rng=lambda: 1.0) for n in range(6)] == [1, 2, 4, 8, 10, 10]
    assert [backoff_s(d, n, rng=lambda: 0.0) for n in range(3)] == [0.5, 1, 2]
    assert retry_after_seconds("7") == 7.0
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470) == 10.0
    assert retry_after_seconds("soon") is None


def test_verify_rejects_bad_signature_old_timestamp_and_reserialised_body():
    body = b'{"records":[{"customer_id":1,"email":"a@x.it"}],"batch":1}'
    now = 1_790_000_000
    headers = sign(SECRET, "msg_1", body, timestamp=now)
    assert verify(SECRET, headers, body, now=now + 10) == "msg_1"
    with pytest.raises(SignatureError, match="no signature matches"):
        verify("whsec_" + "QUFBQUFBQUFBQUFB", headers, body, now=now)
    with pytest.raises(SignatureError, match="away from now"):
        verify(SECRET, headers, body, now=now + 301)
    reserialised = json.dumps(json.loads(body)).encode()  # same JSON, other bytes
    with pytest.raises(SignatureError, match="no signature matches"):
        verify(SECRET, headers, reserialised, now=now)
    with pytest.raises(SignatureError, match="missing"):
        verify(SECRET, {"webhook-id": "msg_1"}, body, now=now)


def test_verify_cli(tmp_path, monkeypatch, capsys):
    body = b'{"batch":1}'
    path = tmp_path / "body.json"
    path.write_bytes(body)
    h = sign(SECRET, "msg_9", body)
    monkeypatch.setenv("RX_SECRET", SECRET)
    args = ["feeds", "verify", str(path), "--id", "msg_9", "--timestamp", h["webhook-timestamp"],
            "--signature", h["webhook-signature"], "--secret-env", "RX_SECRET"]
    assert main(args) == 0 and "verified msg_9" in capsys.readouterr().out
    path.write_bytes(b'{"batch": 1}')
    assert main(args) == 1 and "no signature matches" in capsys.readouterr().err


def test_a_diff_feed_delivered_over_http_day_after_day(tmp_path):
    """The real feed: day 1 every row as an upsert; a change, an opt-out and an erasure
    two days later as upserts and deletes; the same day again sends nothing."""
    con = make_world(tmp_path / "w.duckdb")
    with Receiver() as rx:
        f = feed(name="crm_sync", mode="diff", format="jsonl",
                 destination={"url": rx.url, "secret_env": "CRM_SECRET", "batch_rows": 2,
                              "timeout_s": 2},
                 fields=["customer_id", "first_name", {"field": "email", "name": "em", "hash": "email"}])
        env = {"CRM_SECRET": SECRET}
        s1 = build_feed(con, f, D1, tmp_path / "feeds", NOW, environ=env)
        assert s1["delivery"]["delivered_batches"] == 2 and s1["delivery"]["pending_batches"] == 0
        con.execute("UPDATE marts.contact_cards SET first_name = 'Johnny' WHERE customer_id = 1")
        con.execute("UPDATE marts.contact_cards SET email_consent = 'withdrawn' WHERE customer_id = 2")
        con.execute("DELETE FROM marts.contact_cards WHERE customer_id = 3")
        con.execute("DELETE FROM exports.crm_sync WHERE customer_id = 3")  # what forget does
        con.execute("INSERT INTO ops.erasures VALUES (3, 'r1', 1, 1, 0, ?)", [NOW])
        d3 = D1 + dt.timedelta(days=2)
        s3 = build_feed(con, f, d3, tmp_path / "feeds", NOW, environ=env)
        assert s3["delivery"]["delivered_batches"] == 2
        again = build_feed(con, f, d3, tmp_path / "feeds", NOW, environ=env)
        assert again["delivery"]["queued"] == 0 and again["delivery"]["delivery_attempts"] == 0
    assert rx.bad_signatures == 0 and rx.repeats == []
    bodies = list(rx.applied.values())
    assert [b["as_of_date"] for b in bodies] == [str(D1)] * 2 + [str(d3)] * 2
    day1 = [(r["op"], r["record"]["customer_id"]) for b in bodies[:2] for r in b["records"]]
    assert day1 == [("upsert", 1), ("upsert", 2), ("upsert", 3), ("upsert", 4)]
    day3 = [(r["op"], r["record"]) for b in bodies[2:] for r in b["records"]]
    assert day3[0] == ("upsert", {"customer_id": 1, "first_name": "Johnny",
                                  "em": "62a14e44f765419d10fea99367361a727c12365e2520f32218d505ed9aa0f62f"})
    deletes = {r["customer_id"]: r for op, r in day3 if op == "delete"}
    assert set(deletes) == {2, 3}
    assert deletes[3] == {"customer_id": 3, "em": None}  # erased: the id only, no reason
    assert "withdrawn" not in json.dumps(bodies) and "erasure" not in json.dumps(bodies)
    con.close()


def test_xml_bodies_are_signed_and_delivered_as_they_were_built(engine):
    records = [{"op": "upsert", "record": {"customer_id": 1, "note": 'a<b & "c"\r', "mobile": "+39 333"}},
               {"op": "delete", "record": {"customer_id": 2, "note": None}}]
    batches = xml_batches("crm", source="test", as_of=D1, records=records, batch_rows=1,
                          envelope={"feed": "test"}, root="Anagrafiche", item="Cliente")
    assert [b.content_type for b in batches] == ["application/xml"] * 2
    enqueue(engine, "crm", batches, NOW)
    with Receiver([503]) as rx:
        report = deliver_pending(engine, _dest(rx.url), sleep=lambda s: None)
    assert report.delivered == 2 and rx.bad_signatures == 0 and rx.repeats == []
    first, second = rx.applied.values()
    assert first.tag == "Anagrafiche" and first.get("batch") == "1" and first.get("batches") == "2"
    assert first.findtext("Cliente/op") == "upsert"
    assert first.findtext("Cliente/record/note") == 'a<b & "c"\r'  # exactly, CR included
    assert first.findtext("Cliente/record/mobile") == "+39 333"
    assert second.findtext("Cliente/op") == "delete" and second.find("Cliente/record/note") is None


def test_a_missing_secret_fails_the_day_before_anything_is_written(tmp_path):
    con = make_world(tmp_path / "w.duckdb")
    f = feed(name="nosecret", destination={"url": "http://127.0.0.1:9/", "secret_env": "NOPE_SECRET"})
    with pytest.raises(RuntimeError, match="NOPE_SECRET"):
        build_feed(con, f, D1, tmp_path / "feeds", NOW, environ={})
    assert not (tmp_path / "feeds" / "nosecret").exists()
    assert not con.execute("SELECT count(*) FROM information_schema.tables "
                           "WHERE table_name = 'feed_deliveries'").fetchone()[0]
    con.close()


def test_a_day_the_endpoint_was_down_goes_first_the_next_day(tmp_path):
    con = make_world(tmp_path / "w.duckdb")
    env = {"CRM_SECRET": SECRET}
    with Receiver([503] * 2) as rx:
        f = feed(name="sync", mode="diff", format="parquet", fields=["customer_id", "first_name"],
                 destination={"url": rx.url, "secret_env": "CRM_SECRET", "batch_rows": 10,
                              "max_attempts": 2, "timeout_s": 2})
        d1 = build_feed(con, f, D1, tmp_path / "feeds", NOW, environ=env, sleep=lambda s: None)
        assert d1["delivery"]["pending_batches"] == 1 and d1["delivery"]["delivered_batches"] == 0
        con.execute("UPDATE marts.contact_cards SET first_name = 'Johnny' WHERE customer_id = 1")
        d2 = build_feed(con, f, D1 + dt.timedelta(days=1), tmp_path / "feeds", NOW, environ=env,
                        sleep=lambda s: None)
        assert d2["delivery"]["delivered_batches"] == 2 and d2["delivery"]["pending_batches"] == 0
    days = [b["as_of_date"] for b in rx.applied.values()]
    assert days == [str(D1), str(D1 + dt.timedelta(days=1))]
    assert [r["record"]["customer_id"] for r in list(rx.applied.values())[0]["records"]] == [1, 2, 3, 4]
    assert list(rx.applied.values())[1]["records"] == [
        {"op": "upsert", "record": {"customer_id": 1, "first_name": "Johnny"}}]
    con.close()
