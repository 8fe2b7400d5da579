"""Pull a REST API source: every page first, then one snapshot file, then one load.

A failed page (after its retries) means *nothing* is loaded: the pages already fetched
are discarded, no snapshot is written and ``raw`` stays as it was; the loader records the
failure in the import report. Only when every page arrived is the snapshot written, as
JSON lines under ``<landing>/_api/<source>/`` (temporary file, fsync, rename), and
loaded by the ordinary JSON lines path in one transaction, with rejects naming the
snapshot's line.

Retries: 429, 5xx, time-outs, connection errors (reset, refused, closed early) and
truncated bodies (``IncompleteRead``, a body that is cut JSON) are retried with exponential
back-off and jitter; a ``Retry-After`` header is honoured (capped by ``max_backoff_s``).
Other 4xx answers (a wrong token) fail at once. Messages name the page and the status,
never the token, the URL's query or a response body.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import http.client
import json
import os
import random
import socket
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Callable

from tessera.settings import ApiPull, Source

RETRY_STATUS = {429, 500, 502, 503, 504}


class ApiFailed(Exception):
    """The pull failed; the message is safe to store (no token, no data)."""


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """A ``Retry-After`` header in seconds (it may be a number or an HTTP date).

    Shared by the API pull and the feeds' HTTP delivery (``tessera.feeds.delivery``).
    """
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def backoff_delay(api: ApiPull, attempt: int, retry_after: float | None) -> float:
    """Seconds to wait before attempt ``attempt + 1`` (``attempt`` counts from 1)."""
    if retry_after is not None:
        return min(retry_after, api.max_backoff_s)
    base = min(api.max_backoff_s, api.backoff_s * (2 ** (attempt - 1)))
    return base * random.uniform(0.5, 1.0)  # jitter: clients that failed together spread out


def _get(api: ApiPull, url: str, headers: dict, page_no: int,
         sleep: Callable[[float], None]) -> tuple[object, dict]:
    last = ""
    for attempt in range(1, api.max_attempts + 1):
        retry_after = None
        try:
            req = urllib.request.Request(url, headers=headers, method="GET")
            with urllib.request.urlopen(req, timeout=api.timeout_s) as resp:
                body = resp.read()
                resp_headers = dict(resp.headers.items())
                declared = resp.headers.get("Content-Length")
            if declared is not None and declared.isdigit() and int(declared) != len(body):
                raise http.client.IncompleteRead(body, int(declared) - len(body))
            try:
                return json.loads(body), resp_headers
            except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
                # A body cut short by the network reads as broken JSON: try again; a
                # server that keeps answering something else fails after the attempts.
                last = "the response is not JSON"
        except urllib.error.HTTPError as exc:
            if exc.code not in RETRY_STATUS:
                raise ApiFailed(f"page {page_no}: HTTP {exc.code}; nothing loaded") from None
            last = f"HTTP {exc.code}"
            retry_after = retry_after_seconds(exc.headers.get("Retry-After") if exc.headers else None)
        except (socket.timeout, TimeoutError):
            last = f"timed out after {api.timeout_s:g} s"
        except urllib.error.URLError as exc:
            if isinstance(exc.reason, (socket.timeout, TimeoutError)):
                last = f"timed out after {api.timeout_s:g} s"
            else:
                last = f"connection failed ({type(exc.reason).__name__})"
        except http.client.IncompleteRead:
            last = "the response was cut short (IncompleteRead)"
        except (ConnectionError, OSError, http.client.HTTPException) as exc:
            last = f"connection failed ({type(exc).__name__})"
        if attempt < api.max_attempts:
            sleep(backoff_delay(api, attempt, retry_after))
    raise ApiFailed(f"page {page_no}: {last} after {api.max_attempts} attempts; nothing loaded")


def _path(obj, path: str):
    if not path:
        return obj
    cur = obj
    for part in path.split("."):
        if not isinstance(cur, dict) or part not in cur:
            return None
        cur = cur[part]
    return cur


def _next_link(headers: dict) -> str | None:
    link = next((v for k, v in headers.items() if k.lower() == "link"), None)
    if not link:
        return None
    for part in link.split(","):
        segs = [s.strip() for s in part.split(";")]
        if any(s.replace(" ", "") in ('rel="next"', "rel=next") for s in segs[1:]):
            return segs[0].strip("<>")
    return None


def _with_params(url: str, params: dict) -> str:
    parts = urllib.parse.urlsplit(url)
    query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    query = [(k, v) for k, v in query if k not in params] + [(k, str(v)) for k, v in params.items()]
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))


def fetch_records(api: ApiPull, token: str | None,
                  sleep: Callable[[float], None] = time.sleep) -> list[dict]:
    """Every record of every page, or ApiFailed. Nothing is kept from a failed pull."""
    headers = {"Accept": "application/json", "User-Agent": "tessera"}
    if api.token_env:
        if not token:
            raise ApiFailed(f"no token: the environment variable {api.token_env} is empty or unset")
        headers[api.auth_header] = f"{api.auth_scheme} {token}" if api.auth_scheme else token
    records: list[dict] = []
    page = api.first_page
    cursor = None
    url = api.url
    for page_no in range(1, api.max_pages + 1):
        if api.pagination == "page":
            url = _with_params(api.url, {api.page_param: page, api.size_param: api.page_size})
        elif api.pagination == "cursor":
            params = {api.size_param: api.page_size}
            if cursor is not None:
                params[api.cursor_param] = cursor
            url = _with_params(api.url, params)
        body, resp_headers = _get(api, url, headers, page_no, sleep)
        items = _path(body, api.records_path)
        if not isinstance(items, list):
            raise ApiFailed(f"page {page_no}: '{api.records_path}' is not a list of records; "
                            "nothing loaded")
        if not all(isinstance(i, dict) for i in items):
            raise ApiFailed(f"page {page_no}: a record is not a JSON object; nothing loaded")
        records.extend(items)
        if api.pagination == "none":
            return records
        if api.pagination == "page":
            if len(items) < api.page_size:
                return records
            page += 1
        elif api.pagination == "cursor":
            cursor = _path(body, api.next_cursor_path)
            if cursor in (None, "") or not items:
                return records
        else:  # link
            nxt = (_path(body, api.next_link_path) if api.next_link_path
                   else _next_link(resp_headers))
            if not nxt:
                return records
            url = urllib.parse.urljoin(url, str(nxt))
    raise ApiFailed(f"more than max_pages ({api.max_pages}) pages; nothing loaded")


def write_snapshot(records: list[dict], landing_dir: Path, source: Source,
                   now: dt.datetime, batch_id: str) -> Path:
    """Publish the pulled records as one JSON lines file, atomically."""
    folder = landing_dir / "_api" / source.name
    folder.mkdir(parents=True, exist_ok=True)
    safe_batch = "".join(c for c in batch_id if c.isalnum())[:12] or "run"
    final = folder / f"{source.name}_{now:%Y%m%dT%H%M%S}_{safe_batch}.jsonl"
    publish_jsonl(records, final)
    return final


def publish_jsonl(records: list[dict], final: Path, exclusive: bool = False) -> bool:
    """Write records as JSON lines to ``final`` atomically (temporary file, fsync, rename).

    With ``exclusive`` an existing ``final`` is never replaced (a hard link instead of a
    rename, so two writers racing for one name cannot both win); returns False then.
    """
    from tessera.engine.space import naming_space

    fd, tmp = tempfile.mkstemp(dir=final.parent, prefix=".", suffix=".tmp")
    try:
        with naming_space("the landing archive", final), \
                os.fdopen(fd, "w", encoding="utf-8", newline="\n") as fh:
            for rec in records:
                fh.write(json.dumps(rec, ensure_ascii=False, sort_keys=True) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        if not exclusive:
            os.replace(tmp, final)
            return True
        try:
            os.link(tmp, final)
        except FileExistsError:
            return False
        return True
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
