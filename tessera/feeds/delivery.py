"""The delivery mechanism: batches POSTed to an HTTP endpoint, signed, retried, idempotent,
and every attempt recorded in the warehouse. Feeds use it; so can any other stage that
has to push something to a receiver (automations' webhooks, say).

How to use it (everything goes through the warehouse, so nothing is lost between runs)::

    dest = HttpDestination(name="crm", url="https://crm.example/hooks/tessera",
                           secret=b"...")                       # or .from_settings(...)
    batches = json_batches(dest.name, source="my_stage", as_of=day,
                           records=[{...}, ...], batch_rows=500)
    enqueue(engine, dest.name, batches, now)      # 1. queue (idempotent per batch id)
    report = deliver_pending(engine, dest)        # 2. send what is pending, in order
    report.as_metadata()                          # counts for the asset's metadata

The guarantees, and how each is kept:

* **Signed.** Each request carries the Standard Webhooks headers ``webhook-id`` (the
  batch id), ``webhook-timestamp`` (Unix seconds) and ``webhook-signature``
  (``v1,`` + base64 HMAC-SHA256 of ``id.timestamp.body`` over the raw body bytes), and
  ``Idempotency-Key`` (the batch id again). A receiver checks it with :func:`verify`
  (or ``tessera feeds verify``): a bad signature, a timestamp more than 5 minutes off
  and a re-serialised body are all rejected.
* **Idempotent.** A batch id is a digest of the destination, the source, the day, the
  batch's position and its body: re-running a day that produced the same batches queues
  nothing new, and a batch already acknowledged is never sent again. If the process dies
  after the receiver acknowledged but before the warehouse recorded it, the next run
  sends the same id again, which is what the receiver de-duplicates on.
* **Retried.** 408, 425, 429, 5xx, time-outs and connection errors are retried with
  exponential back-off and jitter (``backoff_s * 2**n``, capped at ``max_backoff_s``,
  between half and all of it); a ``Retry-After`` (seconds or an HTTP date) is waited
  instead, unless it is longer than ``max_retry_after_s``, in which case the run stops
  and leaves the batch for the next one. Other 4xx answers mark the batch ``rejected``
  (the receiver refuses it; retrying cannot help) and delivery goes on.
* **Never lost, in order.** A batch not acknowledged after ``max_attempts`` stays
  ``pending`` and stops this run's delivery to the destination, so later batches never
  overtake it; the next run starts from it. A re-run of a day whose content changed
  marks that day's older pending batches ``superseded``.
* **Logged.** ``exports.delivery_attempts``: one row per attempt (time, duration, HTTP
  status, outcome, error class, wait). ``exports.delivery_batches``: one row per batch
  and its status; the body is dropped once acknowledged. No response body and no
  record content is ever logged.
"""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import hashlib
import hmac
import http.client
import json
import random
import socket
import time
import urllib.parse
from dataclasses import dataclass, field
import re
from typing import Any, Callable, Iterable, Mapping, Sequence
from xml.sax.saxutils import escape as xml_escape
from xml.sax.saxutils import quoteattr as xml_quoteattr

from tessera.engine import Engine, SqlStep, as_engine
from tessera.engine.steps import ddl_statements
from tessera.ingest.api import retry_after_seconds  # one parser of Retry-After for pull and push

SIGNATURE_TOLERANCE_S = 300
_XML_INVALID = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f]")
_RETRY_STATUS = {408, 425, 429, 500, 502, 503, 504}


def delivery_table_steps() -> list[SqlStep]:
    """DDL of the delivery log (``sql/delivery.sql``), idempotent."""
    return ddl_statements(__package__, "delivery.sql")


# --- signing -------------------------------------------------------------------------

def secret_bytes(secret: str | bytes) -> bytes:
    """The HMAC key: a Standard Webhooks ``whsec_<base64>`` secret is decoded, any other
    text is used as its UTF-8 bytes."""
    if isinstance(secret, bytes):
        return secret
    if secret.startswith("whsec_"):
        return base64.b64decode(secret.removeprefix("whsec_"))
    return secret.encode("utf-8")


def signature(secret: str | bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(secret_bytes(secret), f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256)
    return "v1," + base64.b64encode(mac.digest()).decode()


def sign(secret: str | bytes, msg_id: str, body: bytes, timestamp: int | None = None) -> dict[str, str]:
    """The signature headers of one request (Standard Webhooks)."""
    ts = int(time.time()) if timestamp is None else int(timestamp)
    return {"webhook-id": msg_id, "webhook-timestamp": str(ts),
            "webhook-signature": signature(secret, msg_id, ts, body)}


class SignatureError(ValueError):
    """A request that must not be trusted; the message says why (no content)."""


def verify(secret: str | bytes, headers: Mapping[str, str], body: bytes, *,
           now: float | None = None, tolerance_s: int = SIGNATURE_TOLERANCE_S) -> str:
    """Check a received request; return its message id, or raise :class:`SignatureError`.

    ``body`` must be the raw bytes received: parsing and re-serialising the JSON changes
    them and the signature no longer matches (on purpose)."""
    h = {k.lower(): v for k, v in headers.items()}
    msg_id, ts, sigs = h.get("webhook-id"), h.get("webhook-timestamp"), h.get("webhook-signature")
    if not msg_id or not ts or not sigs:
        raise SignatureError("missing webhook-id, webhook-timestamp or webhook-signature header")
    try:
        stamp = int(ts)
    except ValueError:
        raise SignatureError("webhook-timestamp is not a Unix time") from None
    now = time.time() if now is None else now
    if abs(now - stamp) > tolerance_s:
        raise SignatureError(f"timestamp is more than {tolerance_s} s away from now")
    expected = signature(secret, msg_id, stamp, body)
    if not any(hmac.compare_digest(expected, s) for s in sigs.split()):
        raise SignatureError("no signature matches")
    return msg_id


# --- destinations and batches --------------------------------------------------------

@dataclass(frozen=True)
class HttpDestination:
    """Where batches go, and the retry policy. ``name`` keys the delivery log."""

    name: str
    url: str
    secret: bytes = field(repr=False)
    timeout_s: float = 10.0
    max_attempts: int = 5
    backoff_s: float = 1.0
    max_backoff_s: float = 60.0
    max_retry_after_s: float = 300.0
    concurrency: int = 1     # batches in flight at once (1: strictly in queue order)

    @classmethod
    def from_settings(cls, name: str, settings, environ: Mapping[str, str]) -> "HttpDestination":
        """From an :class:`~tessera.settings.feeds.HttpDestinationDef`; the secret is read
        from the environment variable it names (so it is never in a file or in Dagster)."""
        secret = environ.get(settings.secret_env)
        if not secret:
            raise RuntimeError(f"destination {name}: environment variable {settings.secret_env} "
                               "(the signing secret) is not set")
        return cls(name=name, url=settings.url, secret=secret_bytes(secret),
                   timeout_s=settings.timeout_s, max_attempts=settings.max_attempts,
                   backoff_s=settings.backoff_s, max_backoff_s=settings.max_backoff_s,
                   concurrency=settings.concurrency)


@dataclass(frozen=True)
class Batch:
    batch_id: str
    source: str
    as_of_date: dt.date | None
    seq: int
    records: int
    body: bytes = field(repr=False)
    content_type: str = "application/json"
    # (position in the batch, customer id) of each record about a person: what an
    # erasure finds and drops while the batch is still unacknowledged (scrub_erased_batches)
    subjects: tuple[tuple[int, int], ...] = field(default=(), repr=False)


def batch_id(destination: str, source: str, as_of: dt.date | None, seq: int, body: bytes) -> str:
    h = hashlib.sha256(f"{destination}\n{source}\n{as_of}\n{seq}\n".encode() + body)
    return "msg_" + h.hexdigest()[:32]


def _json_default(v: Any):
    if isinstance(v, (dt.date, dt.datetime)):
        return v.isoformat()
    if isinstance(v, decimal.Decimal):
        return str(v)  # exact: a float would round money
    if isinstance(v, bytes):
        return base64.b64encode(v).decode()
    raise TypeError(f"cannot send a {type(v).__name__} as JSON")


def _chunk_subjects(subjects: Sequence[int | None] | None, n: int, batch_rows: int,
                    chunks: int) -> list[tuple[tuple[int, int], ...]]:
    """``subjects`` (the customer id each record is about, or None) cut like the records."""
    if subjects is None:
        return [()] * chunks
    subjects = list(subjects)
    if len(subjects) != n:
        raise ValueError("subjects must give one entry per record")
    return [tuple((j, int(c)) for j, c in enumerate(subjects[i:i + batch_rows]) if c is not None)
            for i in range(0, n, batch_rows)]


def _json_body(doc: Mapping[str, Any]) -> bytes:
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":"),
                      default=_json_default).encode("utf-8")


def json_batches(destination: str, *, source: str, as_of: dt.date | None,
                 records: Iterable[Mapping[str, Any]], batch_rows: int,
                 envelope: Mapping[str, Any] | None = None,
                 subjects: Sequence[int | None] | None = None) -> list[Batch]:
    """Records cut into JSON batches of ``batch_rows``: ``{...envelope, "batch": i,
    "batches": n, "records": [...]}``, compact, keys in the records' own order. The
    same records give the same bytes, hence the same batch ids. ``subjects``, one per
    record, names the customer a record is about (None: about nobody, e.g. an erasure
    notice carrying only an id): ``tessera forget`` drops those records from a batch
    not yet acknowledged."""
    records = list(records)
    chunks = [records[i:i + batch_rows] for i in range(0, len(records), batch_rows)]
    whose = _chunk_subjects(subjects, len(records), batch_rows, len(chunks))
    out = []
    for seq, chunk in enumerate(chunks, 1):
        doc = {**(envelope or {}), "batch": seq, "batches": len(chunks), "records": chunk}
        body = _json_body(doc)
        out.append(Batch(batch_id(destination, source, as_of, seq, body), source, as_of, seq,
                         len(chunk), body, subjects=whose[seq - 1]))
    return out


def _plain(v: Any) -> str:
    """A value as text (XML 1.0's forbidden control characters become U+FFFD)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    text = _json_default(v) if isinstance(v, (dt.date, dt.datetime, decimal.Decimal, bytes)) else str(v)
    return _XML_INVALID.sub("\ufffd", text)


def _xml_value(v: Any) -> str:
    return xml_escape(_plain(v), {"\r": "&#13;"})


def _xml_element(name: str, value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, Mapping):
        return f"<{name}>" + "".join(_xml_element(k, v) for k, v in value.items()) + f"</{name}>"
    return f"<{name}>{_xml_value(value)}</{name}>"


def xml_batches(destination: str, *, source: str, as_of: dt.date | None,
                records: Iterable[Mapping[str, Any]], batch_rows: int,
                envelope: Mapping[str, Any] | None = None, root: str = "batch",
                item: str = "item", subjects: Sequence[int | None] | None = None) -> list[Batch]:
    """Records cut into XML batches: ``<root ...envelope batch= batches=>`` with one
    ``<item>`` per record, a child element per key (nested for a mapping, none for a
    NULL). Keys must be XML names (feeds check theirs). Deterministic like
    :func:`json_batches`."""
    records = list(records)
    chunks = [records[i:i + batch_rows] for i in range(0, len(records), batch_rows)]
    whose = _chunk_subjects(subjects, len(records), batch_rows, len(chunks))
    out = []
    for seq, chunk in enumerate(chunks, 1):
        attrs = {**(envelope or {}), "batch": seq, "batches": len(chunks)}
        body = _xml_body(root, attrs, (_xml_element(item, r) for r in chunk))
        out.append(Batch(batch_id(destination, source, as_of, seq, body), source, as_of, seq,
                         len(chunk), body, "application/xml", subjects=whose[seq - 1]))
    return out


def _xml_body(root: str, attrs: Mapping[str, Any], items: Iterable[str]) -> bytes:
    head = " ".join(f"{k}={xml_quoteattr(_plain(v))}" for k, v in attrs.items())
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n<{root} {head}>' + "".join(items)
            + f"</{root}>\n").encode("utf-8")


def enqueue(engine: Engine, destination: str, batches: list[Batch], now: dt.datetime,
            supersede: bool = True) -> int:
    """Queue batches for ``destination``; a batch id already queued (pending, delivered
    or rejected) is not queued again. Pending batches of the same source and day that
    are not among ``batches`` are marked ``superseded`` (unless ``supersede`` is false:
    a caller whose batches add up, like the activation outbox, keeps them all).
    Returns how many were queued."""
    engine = as_engine(engine)
    engine.run(*delivery_table_steps())
    if not batches:
        return 0
    ids = [b.batch_id for b in batches]
    known = {r[0] for r in engine.rows(SqlStep(
        "delivery.known", "SELECT batch_id FROM exports.delivery_batches WHERE destination = ? "
        "AND batch_id IN (SELECT unnest(CAST(? AS VARCHAR[])))", [destination, ids]))}
    new = [b for b in batches if b.batch_id not in known]
    with engine.together():
        for source, day in sorted({(b.source, b.as_of_date) for b in batches} if supersede else (), key=str):
            engine.run(SqlStep("delivery.supersede", """
                UPDATE exports.delivery_batches SET status = 'superseded', body = NULL
                WHERE destination = ? AND source = ? AND as_of_date IS NOT DISTINCT FROM ?
                  AND status = 'pending' AND batch_id NOT IN (SELECT unnest(CAST(? AS VARCHAR[])))""",
                [destination, source, day, ids]))
        if new:
            engine.append("exports.delivery_batches", SqlStep("delivery.enqueue", """
                SELECT unnest(CAST(? AS VARCHAR[])), ?, unnest(CAST(? AS VARCHAR[])),
                       unnest(CAST(? AS DATE[])), unnest(CAST(? AS INTEGER[])),
                       unnest(CAST(? AS INTEGER[])), unnest(CAST(? AS VARCHAR[])),
                       unnest(CAST(? AS VARCHAR[])), unnest(CAST(? AS VARCHAR[])), 'pending',
                       CAST(? AS TIMESTAMP), CAST(NULL AS TIMESTAMP)""",
                [[b.batch_id for b in new], destination, [b.source for b in new],
                 [b.as_of_date for b in new], [b.seq for b in new], [b.records for b in new],
                 [b.content_type for b in new], [b.body.decode("utf-8") for b in new],
                 [hashlib.sha256(b.body).hexdigest() for b in new], now]))
            whose = [(b.batch_id, j, c) for b in new for j, c in b.subjects]
            if whose:
                engine.append("exports.delivery_batch_subjects", SqlStep(
                    "delivery.subjects", """
                    SELECT ?, unnest(CAST(? AS VARCHAR[])), unnest(CAST(? AS INTEGER[])),
                           unnest(CAST(? AS BIGINT[]))""",
                    [destination, [w[0] for w in whose], [w[1] for w in whose],
                     [w[2] for w in whose]]))
    return len(new)


# --- erasure -------------------------------------------------------------------------

def _without(body: bytes, content_type: str, drop: set[int]) -> tuple[bytes, int]:
    """The body with the records at positions ``drop`` left out; and how many are left.
    A JSON body is re-serialised the way :func:`json_batches` writes it and an XML body
    re-rendered the way :func:`xml_batches` does, so every other record keeps its bytes."""
    if content_type == "application/xml":
        from xml.etree import ElementTree as ET

        root = ET.fromstring(body)
        kept = [e for j, e in enumerate(root) if j not in drop]
        return _xml_body(root.tag, dict(root.attrib),
                         (_xml_element(e.tag, _xml_value_of(e)) for e in kept)), len(kept)
    doc = json.loads(body)
    doc["records"] = [r for j, r in enumerate(doc["records"]) if j not in drop]
    return _json_body(doc), len(doc["records"])


def _xml_value_of(e) -> Any:
    """An element back as what :func:`_xml_element` rendered it from (text or a mapping)."""
    if len(e):
        return {c.tag: _xml_value_of(c) for c in e}
    return e.text or ""


def scrub_erased_batches(engine: Engine, erased_sql: str = "SELECT customer_id FROM ops.erasures"
                         ) -> dict[str, int]:
    """Drop the records about erased customers (``erased_sql``, one column) from every
    batch body still kept (pending, rejected): a retried batch no longer carries them.

    The batch keeps its id, so a receiver that did get the earlier body (an attempt that
    timed out after it was applied) still de-duplicates it. A batch left with no record
    is marked ``erased`` and never sent. Idempotent: the subjects rows of erased people
    are deleted with the scrub, so a second call finds nothing. Called by ``tessera
    forget`` / ``purge`` after their transaction and at the start of every feed delivery,
    so an erasure killed in between is finished by the next run."""
    engine = as_engine(engine)
    engine.run(*delivery_table_steps())
    if "ops.erasures" in erased_sql and not engine.table_exists("ops", "erasures"):
        return {"batches_scrubbed": 0, "records_dropped": 0, "batches_erased": 0}
    return _scrub(engine, f"subject_id IN ({erased_sql})")


def scrub_batch_subjects(engine: Engine, triples_sql: str) -> dict[str, int]:
    """Like :func:`scrub_erased_batches`, for chosen people in chosen batches only:
    ``triples_sql`` selects ``(destination, batch_id, subject_id)``. The activation
    stage drops, at send time, whoever lost consent since their batch was queued."""
    engine = as_engine(engine)
    engine.run(*delivery_table_steps())
    return _scrub(engine, f"(destination, batch_id, subject_id) IN ({triples_sql})")


def _scrub(engine: Engine, subjects_where: str) -> dict[str, int]:
    """Drop the records whose ``exports.delivery_batch_subjects`` rows match
    ``subjects_where`` (over that table's columns) from the kept batch bodies."""
    out = {"batches_scrubbed": 0, "records_dropped": 0, "batches_erased": 0}
    hits = engine.rows(SqlStep("delivery.erased_records", f"""
        SELECT s.destination, s.batch_id, list(s.record ORDER BY s.record), b.body, b.content_type
        FROM (SELECT * FROM exports.delivery_batch_subjects WHERE {subjects_where}) s
        JOIN exports.delivery_batches b USING (destination, batch_id)
        WHERE b.body IS NOT NULL
        GROUP BY s.destination, s.batch_id, b.body, b.content_type ORDER BY 1, 2"""))
    with engine.together():
        for dest, bid, drop, body, ctype in hits:
            drop = set(drop)
            new, left = _without(body.encode("utf-8"), ctype, drop)
            shift = sorted(drop)
            engine.run(SqlStep("delivery.scrub_body", """
                UPDATE exports.delivery_batches
                SET body = CASE WHEN ? = 0 THEN NULL ELSE ? END, body_sha256 = ?, records = ?,
                    status = CASE WHEN ? = 0 AND status = 'pending' THEN 'erased' ELSE status END
                WHERE destination = ? AND batch_id = ?""",
                [left, new.decode("utf-8"), hashlib.sha256(new).hexdigest(), left, left, dest,
                 bid]))
            # the records after a dropped one move up: their positions follow
            engine.run(SqlStep("delivery.scrub_positions", """
                UPDATE exports.delivery_batch_subjects
                SET record = record - (SELECT count(*) FROM unnest(CAST(? AS INTEGER[])) d(p)
                                       WHERE d.p < record)
                WHERE destination = ? AND batch_id = ?
                  AND record NOT IN (SELECT unnest(CAST(? AS INTEGER[])))""",
                [shift, dest, bid, shift]))
            out["batches_scrubbed"] += 1
            out["records_dropped"] += len(drop)
            out["batches_erased"] += int(left == 0)
        engine.run(SqlStep("delivery.scrub_subjects", f"""
            DELETE FROM exports.delivery_batch_subjects WHERE {subjects_where}"""))
    return out


# --- sending -------------------------------------------------------------------------

@dataclass
class DeliveryReport:
    delivered: int = 0
    rejected: int = 0
    pending: int = 0
    attempts: int = 0
    retries: int = 0
    waited_s: float = 0.0
    stopped: str | None = None  # why the run stopped early, if it did

    def as_metadata(self) -> dict:
        return {"delivered_batches": self.delivered, "rejected_batches": self.rejected,
                "pending_batches": self.pending, "delivery_attempts": self.attempts,
                "delivery_retries": self.retries, "delivery_waited_s": round(self.waited_s, 3),
                "delivery_stopped": self.stopped or ""}


@dataclass(frozen=True)
class Attempt:
    status: int | None
    retry_after: str | None
    error: str | None
    duration_ms: float


def post(dest: HttpDestination, batch_id: str, body: bytes, content_type: str,
         timestamp: int | None = None) -> Attempt:
    """One signed POST. Never raises for network trouble: it comes back as ``error``
    (the exception's class name only, so no content can leak into the log)."""
    url = urllib.parse.urlsplit(dest.url)
    conn_cls = http.client.HTTPSConnection if url.scheme == "https" else http.client.HTTPConnection
    headers = {"Content-Type": content_type, "Idempotency-Key": batch_id,
               "User-Agent": "tessera-delivery/1", **sign(dest.secret, batch_id, body, timestamp)}
    started = time.monotonic()
    conn = conn_cls(url.hostname, url.port, timeout=dest.timeout_s)
    try:
        path = url.path or "/"
        if url.query:
            path += "?" + url.query
        conn.request("POST", path, body=body, headers=headers)
        resp = conn.getresponse()
        resp.read()
        return Attempt(resp.status, resp.getheader("Retry-After"), None,
                       (time.monotonic() - started) * 1000)
    except (OSError, http.client.HTTPException) as exc:
        kind = "timeout" if isinstance(exc, (socket.timeout, TimeoutError)) else type(exc).__name__
        return Attempt(None, None, kind, (time.monotonic() - started) * 1000)
    finally:
        conn.close()


def backoff_s(dest: HttpDestination, retry: int, rng: Callable[[], float] = random.random) -> float:
    """Exponential back-off with jitter: between half and all of ``backoff_s * 2**retry``
    (capped at ``max_backoff_s``)."""
    cap = min(dest.max_backoff_s, dest.backoff_s * (2 ** retry))
    return cap / 2 + rng() * cap / 2


def _log(engine: Engine, dest: HttpDestination, batch: str, attempt: int, started: dt.datetime,
         result: Attempt, outcome: str, wait: float | None) -> None:
    engine.run(SqlStep("delivery.log_attempt", """
        INSERT INTO exports.delivery_attempts VALUES
        (?, ?, ?, CAST(? AS TIMESTAMP), ?, ?, ?, ?, ?)""",
        [batch, dest.name, attempt, started, round(result.duration_ms, 3), result.status,
         outcome, result.error, wait]))


def _deliver_one(dest: HttpDestination, bid: str, body: str, ctype: str, report: DeliveryReport, *,
                 sleep: Callable[[float], Any], rng: Callable[[], float],
                 clock: Callable[[], dt.datetime], log: Callable[..., None]) -> tuple[str, Any]:
    """One batch until acknowledged ("delivered", when), refused ("rejected", None), or
    out of attempts / told to wait too long ("stopped", why). Touches no warehouse: the
    attempts go to ``log`` (the warehouse at once, or a list a worker thread fills)."""
    for attempt in range(1, dest.max_attempts + 1):
        started = clock()
        result = post(dest, bid, body.encode("utf-8"), ctype)
        report.attempts += 1
        if result.status is not None and 200 <= result.status < 300:
            log(bid, attempt, started, result, "delivered", None)
            return "delivered", clock()
        if result.status is not None and result.status not in _RETRY_STATUS:
            log(bid, attempt, started, result, "rejected", None)
            return "rejected", None
        if attempt == dest.max_attempts:
            log(bid, attempt, started, result, "gave_up", None)
            return "stopped", f"batch {bid}: no acknowledgement after {attempt} attempts"
        asked = retry_after_seconds(result.retry_after)
        if asked is not None and asked > dest.max_retry_after_s:
            log(bid, attempt, started, result, "deferred", asked)
            return "stopped", f"batch {bid}: the receiver asked to wait {asked:.0f} s"
        wait = asked if asked is not None else backoff_s(dest, attempt - 1, rng)
        log(bid, attempt, started, result, "retry", wait)
        report.retries += 1
        report.waited_s += wait
        sleep(wait)
    return "stopped", f"batch {bid}: no attempt allowed"


def _settle(engine: Engine, dest: HttpDestination, bid: str, outcome: str, when: Any,
            report: DeliveryReport) -> bool:
    if outcome == "delivered":
        engine.run(SqlStep("delivery.acknowledged", """
            UPDATE exports.delivery_batches SET status = 'delivered', body = NULL,
                   delivered_at = CAST(? AS TIMESTAMP)
            WHERE batch_id = ? AND destination = ?""", [when, bid, dest.name]))
        report.delivered += 1
        return True
    if outcome == "rejected":
        engine.run(SqlStep("delivery.rejected", """
            UPDATE exports.delivery_batches SET status = 'rejected'
            WHERE batch_id = ? AND destination = ?""", [bid, dest.name]))
        report.rejected += 1
        return True
    report.stopped = when
    return False


def deliver_pending(engine: Engine, dest: HttpDestination, *, sleep: Callable[[float], Any] = time.sleep,
                    rng: Callable[[], float] = random.random,
                    clock: Callable[[], dt.datetime] = lambda: dt.datetime.now().replace(tzinfo=None),
                    ) -> DeliveryReport:
    """Send every pending batch of ``dest`` in queue order (day, source, position), each
    until acknowledged, rejected, or out of attempts (then stop: order is kept).
    ``sleep`` and ``rng`` are the waits and the jitter (tests pass their own).

    With ``dest.concurrency`` above 1 (receivers that need no order, like the activation's
    messages), up to that many batches are in flight at once, a window at a time: the
    throughput is then the receiver's, not one round trip after another. The attempts are
    recorded when the window is back (the warehouse connection stays on this thread); a
    crash in a window re-sends its batches with the same ids."""
    engine = as_engine(engine)
    engine.run(*delivery_table_steps())
    pending = engine.rows(SqlStep("delivery.pending", """
        SELECT batch_id, body, content_type FROM exports.delivery_batches
        WHERE destination = ? AND status = 'pending'
        ORDER BY queued_at, as_of_date, source, seq""", [dest.name]))
    report = DeliveryReport()
    kw = {"sleep": sleep, "rng": rng, "clock": clock}
    if dest.concurrency <= 1:
        def log(bid, attempt, started, result, outcome, wait):
            _log(engine, dest, bid, attempt, started, result, outcome, wait)
        for i, (bid, body, ctype) in enumerate(pending):
            outcome, when = _deliver_one(dest, bid, body, ctype, report, log=log, **kw)
            if not _settle(engine, dest, bid, outcome, when, report):
                report.pending = len(pending) - i
                break
        return report
    from concurrent.futures import ThreadPoolExecutor
    n = dest.concurrency
    with ThreadPoolExecutor(max_workers=n) as pool:
        for w in range(0, len(pending), n):
            window = pending[w:w + n]

            def one(row):
                logged: list = []
                part = DeliveryReport()
                res = _deliver_one(dest, *row, part, log=lambda *a: logged.append(a), **kw)
                return res, logged, part
            done = 0
            for (bid, _, _), ((outcome, when), logged, part) in zip(window, pool.map(one, window)):
                for a in logged:
                    _log(engine, dest, *a)
                report.attempts += part.attempts
                report.retries += part.retries
                report.waited_s += part.waited_s
                done += _settle(engine, dest, bid, outcome, when, report)
            if done < len(window):
                report.pending = len(pending) - w - done
                break
    return report


def delivery_summary(engine: Engine, destination: str) -> dict[str, int]:
    """Batches of a destination by status (for metadata and checks)."""
    engine = as_engine(engine)
    engine.run(*delivery_table_steps())
    return {s: int(n) for s, n in engine.rows(SqlStep(
        "delivery.summary", "SELECT status, count(*) FROM exports.delivery_batches "
        "WHERE destination = ? GROUP BY status ORDER BY status", [destination]))}


__all__ = ["Batch", "DeliveryReport", "HttpDestination", "SignatureError", "backoff_s",
           "batch_id", "deliver_pending", "delivery_summary", "delivery_table_steps", "enqueue",
           "json_batches", "post", "scrub_erased_batches", "xml_batches", "retry_after_seconds",
           "secret_bytes", "sign", "signature",
           "verify"]
