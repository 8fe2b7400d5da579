"""API pull sources against a real HTTP server on 127.0.0.1 (http.server in a thread):
pagination by page, cursor and Link header, the token header, 429 with Retry-After,
time-outs, and a 500 on page 3 that commits nothing."""
from __future__ import annotations

import datetime as dt
import json
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tessera.settings import ApiPull, Source
from tessera.deployment import load_deployment
from tessera.ingest.api import ApiFailed, backoff_delay, fetch_records
from tessera.ingest.load import ingest_source
from tessera.engine.warehouse import connect, ensure_warehouse

DEMO = Path(__file__).resolve().parents[2] / "examples" / "demo"
TOKEN = "s3cret-token-value"
PEOPLE = [{"id": f"U{i}", "profile": {"email": f"user{i}@example.it", "name": f"N{i}"},
           "updated": "2026-10-01T10:00:00"} for i in range(1, 8)]


class Api:
    """Scripted server: ``fail`` maps (page number) -> list of statuses to answer first."""

    def __init__(self, records=PEOPLE, mode="page", fail=None, delay=None, retry_after=None):
        self.records, self.mode = records, mode
        self.fail = {k: list(v) for k, v in (fail or {}).items()}
        self.delay = dict(delay or {})
        self.retry_after = retry_after
        self.requests: list[tuple[str, str | None]] = []

    def page(self, query: dict, path: str):
        size = int(query.get("page_size", 3))
        if self.mode == "page":
            n = int(query.get("page", 1))
        elif self.mode == "cursor":
            n = int(query.get("cursor", "c1")[1:])
        else:
            n = int(path.rsplit("/", 1)[-1]) if path.rsplit("/", 1)[-1].isdigit() else 1
        return n, self.records[(n - 1) * size: n * size], size


def serve(api: Api):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *a):
            """Quiet: the test output needs no request log."""

        def do_GET(self):
            parts = urllib.parse.urlsplit(self.path)
            query = dict(urllib.parse.parse_qsl(parts.query))
            api.requests.append((self.path, self.headers.get("Authorization")))
            if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                self.send_response(401)
                self.end_headers()
                return
            n, items, size = api.page(query, parts.path)
            if api.delay.get(n):
                time.sleep(api.delay.pop(n))
            if api.fail.get(n):
                status = api.fail[n].pop(0)
                if status == "cut":  # a body cut short by the network: IncompleteRead
                    self.send_response(200)
                    self.send_header("Content-Length", "500")
                    self.end_headers()
                    self.wfile.write(b'{"data": [{"id": "U1", "pro')
                    self.close_connection = True
                    return
                if status == "reset":  # the connection closes without an answer
                    self.close_connection = True
                    return
                self.send_response(status)
                if status == 429 and api.retry_after is not None:
                    self.send_header("Retry-After", str(api.retry_after))
                self.end_headers()
                self.wfile.write(b'{"error": "try later"}')
                return
            body = {"data": items}
            more = n * size < len(api.records)
            if api.mode == "cursor":
                body["meta"] = {"next": f"c{n + 1}" if more else None}
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            if api.mode == "link" and more:
                self.send_header("Link", f'</people/{n + 1}?page_size={size}>; rel="next"')
            self.end_headers()
            self.wfile.write(json.dumps(body).encode())

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return server


@pytest.fixture
def http():
    servers = []

    def start(api: Api) -> str:
        server = serve(api)
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield start
    for s in servers:
        s.shutdown()
        s.server_close()


def pull(base: str, **kw) -> ApiPull:
    opts = dict(url=f"{base}/people", page_size=3, token_env="TESSERA_TEST_TOKEN",
                backoff_s=0.01, max_backoff_s=2, timeout_s=2, max_attempts=3)
    opts.update(kw)
    return ApiPull(**opts)


def api_source(api: ApiPull) -> Source:
    return Source(name="crm_api", entity="contact", node="crm", format="api", api=api,
                  timestamp_format="%Y-%m-%dT%H:%M:%S",
                  columns={"source_record_id": "id", "email": "profile.email",
                           "first_name": "profile.name", "updated_at": "updated"})


@pytest.mark.parametrize("mode,extra", [
    ("page", {}),
    ("cursor", {"next_cursor_path": "meta.next"}),
    ("link", {}),
])
def test_every_page_is_fetched_with_the_token_header(http, mode, extra):
    api = Api(mode=mode)
    base = http(api)
    url = f"{base}/people/1" if mode == "link" else f"{base}/people"
    got = fetch_records(pull(base, pagination=mode, url=url, **extra), TOKEN)
    assert [r["id"] for r in got] == [p["id"] for p in PEOPLE]
    assert len(api.requests) == 3
    assert all(auth == f"Bearer {TOKEN}" for _, auth in api.requests)


def test_429_with_retry_after_is_retried_then_succeeds(http):
    api = Api(fail={2: [429]}, retry_after=1)
    base = http(api)
    start = time.monotonic()
    got = fetch_records(pull(base), TOKEN)
    assert len(got) == 7 and len(api.requests) == 4      # page 2 asked twice
    assert time.monotonic() - start >= 1.0                # Retry-After: 1 was honoured


def test_timeout_is_retried(http):
    api = Api(delay={1: 1.5})
    base = http(api)
    got = fetch_records(pull(base, timeout_s=0.5), TOKEN)
    assert len(got) == 7 and len(api.requests) == 4


def test_truncated_body_and_closed_connection_are_retried_then_succeed(http):
    api = Api(fail={2: ["cut", "reset"]})
    got = fetch_records(pull(http(api)), TOKEN, sleep=lambda s: None)
    assert [r["id"] for r in got] == [p["id"] for p in PEOPLE]
    assert [p for p, _ in api.requests].count("/people?page=2&page_size=3") == 3


def test_a_source_that_keeps_cutting_its_body_gets_a_failed_report_row(http, tmp_path):
    dep = load_deployment(DEMO)
    c = connect(tmp_path / "wh.duckdb")
    ensure_warehouse(c)
    landing = tmp_path / "landing"
    landing.mkdir()
    api = Api(fail={1: ["cut", "cut", "cut"]})
    out = ingest_source(c, dep, api_source(pull(http(api))), landing, "run1",
                        now=dt.datetime(2026, 11, 1, 6), token=TOKEN)
    (f,) = out.files
    assert (f.status, f.file) == ("failed", "_api/crm_api")
    assert f.message == ("page 1: the response was cut short (IncompleteRead) after 3 attempts; "
                         "nothing loaded")
    assert c.execute("SELECT status, message FROM ops.import_report").fetchall() == [
        ("failed", f.message)]
    c.close()


def test_wrong_token_fails_at_once_and_says_nothing_secret(http):
    api = Api()
    base = http(api)
    with pytest.raises(ApiFailed) as exc:
        fetch_records(pull(base), "wrong-token")
    assert str(exc.value) == "page 1: HTTP 401; nothing loaded"
    assert len(api.requests) == 1
    with pytest.raises(ApiFailed, match="TESSERA_TEST_TOKEN is empty or unset"):
        fetch_records(pull(base), None)


def test_backoff_grows_exponentially_with_jitter_and_honours_retry_after():
    api = ApiPull(url="http://127.0.0.1/x", backoff_s=1, max_backoff_s=30)
    for attempt, base in [(1, 1), (2, 2), (3, 4), (4, 8), (6, 30)]:
        d = backoff_delay(api, attempt, None)
        assert base * 0.5 <= d <= base
    assert backoff_delay(api, 1, 7.0) == 7.0
    assert backoff_delay(api, 1, 300.0) == 30.0


# --------------------------------------------------------------------------- #
# Through the loader: one transaction after all pages, or nothing
# --------------------------------------------------------------------------- #
def test_pull_loads_one_snapshot_and_500_on_page_3_commits_nothing(http, con, tmp_path):
    dep = load_deployment(DEMO)
    landing = tmp_path / "landing"
    landing.mkdir()
    records = PEOPLE[:6] + [{"id": "U7", "profile": {"email": "not-an-email"}}]
    api = Api(records=records)
    src = api_source(pull(http(api)))
    out = ingest_source(con, dep, src, landing, "run1", now=dt.datetime(2026, 11, 1, 6), token=TOKEN)
    (f,) = out.files
    assert (f.status, f.records, f.new, f.rejected) == ("loaded", 7, 6, 1)
    assert f.file.startswith("_api/crm_api/crm_api_20261101T060000_run1")
    assert con.execute("SELECT count(*) FROM raw.crm_api").fetchone()[0] == 6
    assert con.execute("SELECT line, field, reason FROM ops.rejects").fetchall() == [
        (7, "email", "not a valid e-mail address")]

    # Next run: the records changed, but page 3 keeps failing: nothing is committed.
    changed = [dict(p, updated="2026-10-02T10:00:00") for p in PEOPLE]
    api2 = Api(records=changed, fail={3: [500, 500, 500]})
    src2 = api_source(pull(http(api2)))
    out2 = ingest_source(con, dep, src2, landing, "run2", now=dt.datetime(2026, 11, 2, 6), token=TOKEN)
    (f2,) = out2.files
    assert (f2.status, f2.file) == ("failed", "_api/crm_api")
    assert f2.message == "page 3: HTTP 500 after 3 attempts; nothing loaded"
    assert con.execute("SELECT count(*), max(updated_at) FROM raw.crm_api").fetchone() == (
        6, dt.datetime(2026, 10, 1, 10))
    assert con.execute("SELECT status, records, message FROM ops.import_report "
                       "WHERE batch_id = 'run2'").fetchall() == [
        ("failed", 0, "page 3: HTTP 500 after 3 attempts; nothing loaded")]
    assert len(list((landing / "_api" / "crm_api").glob("*.jsonl"))) == 1  # no second snapshot
    everything = " ".join(str(v) for r in con.execute(
        "SELECT * FROM ops.import_report UNION ALL BY NAME SELECT * FROM ops.rejects").fetchall()
        for v in r)
    assert TOKEN not in everything and "127.0.0.1" not in everything
