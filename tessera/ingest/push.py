"""The push endpoint: senders POST records, which land as files for the next batch.

The equivalent of Sendero's ``setSenderoAnagraficaB2C`` web service and Contacthub's
Sources, built the batch way: a request is validated only for shape (a JSON object, a
list of objects, or ``{"records": [...]}``) and size, then written as one JSON lines
file under ``<landing>/_push/<source>/`` (temporary file, fsync, rename). The contract is
enforced by the ordinary ingestion of the next run, so a pushed record is checked,
rejected with its file and line, suppressed or held exactly like a record of any other
file, and the file ledger makes a retried request with identical content a no-op.

Tokens are per source (``push.token_env``), so a token is scoped to one source and its
node. They are compared in constant time. The server logs the method, source, status
and record count only: never bodies, headers or tokens.

    POST /v1/sources/<source>/records     Authorization: Bearer <token>
         [Idempotency-Key: <client key>]  body: JSON
    -> 202 {"accepted": 3, "file": "...jsonl"}   (200 with "duplicate": true for a
       repeated Idempotency-Key; 400 bad JSON or shape, 401 bad token, 404 unknown
       source, 411 no length, 413 too large)
    GET  /v1/health -> 200 {"status": "ok"}
"""

from __future__ import annotations

import datetime as dt
import fcntl
import hashlib
import hmac
import json
import logging
import os
import re
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from tessera.settings import Deployment, Source
from tessera.ingest.api import publish_jsonl

log = logging.getLogger("tessera.push")

_ROUTE = re.compile(r"^/v1/sources/([a-z][a-z0-9_]{0,62})/records/?$")


class PushConfigError(Exception):
    """The deployment cannot serve pushes (no push source, or a token variable unset)."""


def push_sources(deployment: Deployment) -> dict[str, Source]:
    return {s.name: s for s in deployment.sources if s.format == "push"}


def read_tokens(deployment: Deployment, environ=os.environ) -> dict[str, bytes]:
    """Every push source's token from its environment variable; a missing one is an error
    that names the variable, never a value."""
    tokens: dict[str, bytes] = {}
    missing = []
    for name, source in push_sources(deployment).items():
        value = environ.get(source.push.token_env, "")
        if not value:
            missing.append(f"{source.push.token_env} (source {name})")
        tokens[name] = value.encode("utf-8")
    if missing:
        raise PushConfigError("push tokens not set in the environment: " + ", ".join(missing))
    return tokens


def parse_records(body: bytes, max_records: int) -> list[dict]:
    """The records of one request, or ValueError with a reason safe to send back."""
    try:
        doc = json.loads(body.decode("utf-8"))
    except UnicodeDecodeError:
        raise ValueError("body is not UTF-8") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"body is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})") from None
    if isinstance(doc, dict) and set(doc) == {"records"}:
        doc = doc["records"]
    records = doc if isinstance(doc, list) else [doc]
    if not records:
        raise ValueError("no records")
    if len(records) > max_records:
        raise ValueError(f"{len(records)} records; this source takes at most {max_records} per request")
    for i, rec in enumerate(records):
        if not isinstance(rec, dict):
            raise ValueError(f"record {i}: a JSON object is expected")
    return records


def _next_sequence(folder: Path, fh) -> int:
    """The next receipt sequence of the folder (``fh``: its ``.sequence`` file, locked)."""
    fh.seek(0)
    text = fh.read().strip()
    stored = int(text) if text.isdigit() else 0
    # a lost or stale counter never goes back: the names already there count too
    seen = [int(m.group(1)) for p in folder.glob("*.jsonl") if (m := _SEQ_NAME.match(p.name))]
    n = max([stored, *seen]) + 1
    fh.seek(0)
    fh.truncate()
    fh.write(str(n))
    fh.flush()
    os.fsync(fh.fileno())
    return n


_SEQ_NAME = re.compile(r"^[a-z][a-z0-9_]*?_r(\d{12})_")


def land_records(records: list[dict], landing: Path, source: Source, idempotency_key: str | None,
                 now: dt.datetime | None = None) -> tuple[Path, bool]:
    """Write the records as one JSON lines file, atomically; (file, already there).

    The file's name starts with a sequence assigned on receipt (``<source>_r<12 digits>_``),
    so files load, and their records supersede each other, in the order they were received,
    whatever the client's idempotency key hashes to. An idempotency key is the name's
    tail; a request repeating one finds its file and lands nothing. The counter file is
    locked for the whole check-and-write, so two servers on one landing folder agree.
    """
    folder = landing / "_push" / source.name
    folder.mkdir(parents=True, exist_ok=True)
    now = now or dt.datetime.now()
    tag = ("k" + hashlib.sha256(idempotency_key.encode("utf-8")).hexdigest()[:24] if idempotency_key
           else "u" + uuid.uuid4().hex[:12])
    with open(folder / ".sequence", "a+", encoding="ascii") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        if idempotency_key:
            for existing in (*folder.glob(f"{source.name}_r*_{tag}.jsonl"),
                             folder / f"{source.name}_{tag}.jsonl"):  # named before receipt sequences
                if existing.exists():
                    return existing, True
        seq = _next_sequence(folder, fh)
        final = folder / f"{source.name}_r{seq:012d}_{now:%Y%m%dT%H%M%S}_{tag}.jsonl"
        written = publish_jsonl(records, final, exclusive=True)
    return final, not written


def make_server(deployment: Deployment, landing: Path, host: str = "127.0.0.1", port: int = 8787,
                environ=os.environ) -> ThreadingHTTPServer:
    """A ready (not yet serving) HTTP server for the deployment's push sources."""
    sources = push_sources(deployment)
    if not sources:
        raise PushConfigError("the deployment has no push source (format: push)")
    tokens = read_tokens(deployment, environ)
    landing = Path(landing)
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        server_version = "tessera-push"
        sys_version = ""

        def log_message(self, fmt, *args):
            """Silenced: the default logs the raw request line; ``_reply`` logs counts only."""

        def _reply(self, status: int, body: dict, source: str = "-", records: int = 0) -> None:
            data = json.dumps(body).encode("utf-8")
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            log.info("push %s source=%s status=%d records=%d", self.command, source, status, records)

        def do_GET(self):
            if self.path.split("?")[0] == "/v1/health":
                self._reply(200, {"status": "ok", "sources": sorted(sources)})
            else:
                self._reply(404, {"error": "not found"})

        def do_POST(self):
            m = _ROUTE.match(self.path.split("?")[0])
            if not m or m.group(1) not in sources:
                self._reply(404, {"error": "unknown source"})
                return
            name = m.group(1)
            source = sources[name]
            auth = self.headers.get("Authorization", "")
            given = auth[7:].encode("utf-8") if auth.startswith("Bearer ") else b""
            if not hmac.compare_digest(given, tokens[name]):
                self._reply(401, {"error": "invalid token for this source"}, name)
                return
            length = self.headers.get("Content-Length")
            if length is None or not length.isdigit():
                self._reply(411, {"error": "Content-Length required"}, name)
                return
            if int(length) > source.push.max_body_kb * 1024:
                self._reply(413, {"error": f"body over {source.push.max_body_kb} kB"}, name)
                self.close_connection = True
                return
            body = self.rfile.read(int(length))
            try:
                records = parse_records(body, source.push.max_records)
            except ValueError as exc:
                self._reply(400, {"error": str(exc)}, name)
                return
            key = self.headers.get("Idempotency-Key")
            with lock:
                path, duplicate = land_records(records, landing, source, key)
            self._reply(200 if duplicate else 202,
                        {"accepted": 0 if duplicate else len(records), "file": path.name,
                         "duplicate": duplicate}, name, 0 if duplicate else len(records))

    return ThreadingHTTPServer((host, port), Handler)
