"""Sending throughput: the outbox's e-mails to an SMTP server and its webhooks to an HTTP
receiver on 127.0.0.1, with one connection / batch in flight versus several.

    .venv/bin/python bench/activation_send.py --messages 10000 --connections 1 4

Each receiver runs in its own process (aiosmtpd's Sink; a standard-library HTTP server
that holds every request ``--http-latency-ms``, the round trip of a remote receiver), so
the figures are Tessera's sender against a separate destination. For each setting a
fresh warehouse decides the same day (one e-mail and one webhook per page view), then
``dispatch`` sends everything; timed: the dispatch alone (rendering, the outbox's
sending / sent records, the hand-over). Prints messages/s per setting and writes
bench/out/activation_send.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DAY = dt.date(2026, 11, 2)
SECRET = "bench-secret"

HTTP_SERVER = r"""
import sys, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
delay = float(sys.argv[2]) / 1000
class H(BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers["Content-Length"]))
        time.sleep(delay)
        self.send_response(200); self.send_header("Content-Length", "0"); self.end_headers()
    def log_message(self, *a):
        return  # silent on purpose: one access-log line per request would cost the bench time
ThreadingHTTPServer.daemon_threads = True
ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"""


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(port: int) -> None:
    for _ in range(200):
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port}")


def _decide(con, messages: int, kind: str, smtp_port: int, http_port: int, parallel: int):
    """A warehouse with ``messages`` consenting contacts, one page view each, and one
    automation (an e-mail over SMTP, or a JSON webhook) that acts on it; decided, unsent."""
    from bench.activation import _world
    from tessera.activation.run import run_activation
    from tessera.deployment import load_deployment
    from tessera.settings.activation import Action, ActivationSettings, AutomationDef, EventFilter, SmtpSettings
    from tessera.settings.feeds import HttpDestinationDef

    _world(con, messages, 0)
    con.execute("UPDATE marts.contact_cards SET email_consent = 'granted'")
    con.execute(f"""INSERT INTO core.events SELECT 'P' || range, range, 'page_view',
                    TIMESTAMP '{DAY}' + INTERVAL 9 HOUR, '{{}}', 'web_events', 'email'
                    FROM range(1, {messages} + 1)""")
    action = (Action(email={"subject": "Ciao {{ first_name }}", "template": "download_thanks.html"})
              if kind == "email" else
              Action(webhook={"destination": "hook", "body": "json", "fields": ["customer_id", "email"]}))
    dep = load_deployment(ROOT / "examples" / "demo")
    settings = ActivationSettings(
        send=True, smtp=SmtpSettings(host="127.0.0.1", port=smtp_port, connections=parallel),
        destinations={"hook": HttpDestinationDef(url=f"http://127.0.0.1:{http_port}/hook",
                                                 secret_env="BENCH_SECRET", batch_rows=100,
                                                 concurrency=parallel)})
    dep = dep.model_copy(update={"activation": settings, "journeys": [], "automations": [
        AutomationDef(name=f"bench_{kind}", trigger=EventFilter(event="page_view"), action=action)]})
    run_activation(con, dep, DAY, dt.datetime.combine(DAY, dt.time(12)), send=False)
    return dep


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--messages", type=int, default=10_000)
    ap.add_argument("--connections", type=int, nargs="+", default=[1, 4])
    ap.add_argument("--http-latency-ms", type=float, default=50.0)
    args = ap.parse_args()
    from tessera.activation.send import dispatch
    from tessera.engine.warehouse import connect

    smtp_port, http_port = _port(), _port()
    servers = [subprocess.Popen([sys.executable, "-m", "aiosmtpd", "-n", "-l", f"127.0.0.1:{smtp_port}",
                                 "-c", "aiosmtpd.handlers.Sink"]),
               subprocess.Popen([sys.executable, "-c", HTTP_SERVER, str(http_port), str(args.http_latency_ms)])]
    results = []
    try:
        _wait(smtp_port)
        _wait(http_port)
        for kind in ("email", "webhook"):
            for n in args.connections:
                with tempfile.TemporaryDirectory() as tmp:
                    con = connect(Path(tmp) / "w.duckdb")
                    dep = _decide(con, args.messages, kind, smtp_port, http_port, n)
                    t = time.perf_counter()
                    report = dispatch(con, dep, dt.datetime.combine(DAY, dt.time(12)),
                                      environ={"BENCH_SECRET": SECRET})
                    seconds = time.perf_counter() - t
                    left = con.execute("SELECT count(*) FROM activation.outbox "
                                       "WHERE status <> 'sent'").fetchone()[0]
                    con.close()
                row = {"kind": kind, "in_flight": n, "sent": report.sent, "not_sent": left,
                       "seconds": round(seconds, 2), "per_s": round(report.sent / seconds)}
                results.append(row)
                print(f"  {kind:8s} {n:3d} in flight   {report.sent:7,} sent in {seconds:7.2f} s   "
                      f"{row['per_s']:>8,}/s   (left unsent: {left})")
    finally:
        for p in servers:
            p.terminate()
            p.wait()
    (ROOT / "bench" / "out").mkdir(exist_ok=True)
    (ROOT / "bench" / "out" / "activation_send.json").write_text(json.dumps(
        {"messages": args.messages, "http_latency_ms": args.http_latency_ms, "batch_rows": 100,
         "results": results}, indent=2))


if __name__ == "__main__":
    main()
